"""The report of ``experiments/evaluate.py``: table (markdown + JSON), plots, HTML gallery.

Files written to the workdir (atomically):

- ``table.json``: per method and metric the mean over cases, its 95% bootstrap interval, the
  number of cases, and the paired difference to Ctrl-VI with its interval; plus the cases,
  methods and the command that reproduces it;
- ``table.md``: the same as a markdown table (``mean [low, high]``), a paired table of
  differences to Ctrl-VI marked better / worse / tied (interval containing 0), and per metric
  the best method with those tied with it (:func:`composed_vi.lab.stats.best_or_tied`);
- ``metrics.png``: one panel per metric, a bar per method with its interval;
- ``gallery/index.html``: for the first ``gallery_cases`` cases, the inputs, the ground truth and
  every method's particles side by side (one GIF per method, particles left to right).
"""

from __future__ import annotations

import os

import numpy as np

from composed_vi import io
from composed_vi.lab import media, stats
from composed_vi.lab.evaluation import tuning
from composed_vi.lab.evaluation.methods import METRICS, sampler_options
from composed_vi.lab.evaluation.splits import case_example


def _digits(metric: str) -> int:
  """Decimals of a metric's means in the table."""
  return 2 if metric in ("track_error_px", "seconds", "unsimulated_motion_spread") else 3


def _fmt(x: float, metric: str, diff: bool = False) -> str:
  """A mean, or with ``diff`` a paired difference: signed and one decimal finer (composed
  methods differ by 1e-4 L1, which the means' precision prints as 0.000)."""
  if not np.isfinite(x):
    return "n/a"
  digits = _digits(metric)
  return f"{x:+.{digits + 1}f}" if diff else f"{x:.{digits}f}"


def _fmt_diff(entry: dict, metric: str) -> str:
  """``diff [low, high]`` of a paired difference, with :func:`_fmt`'s fixed decimals; in
  scientific notation when every nonzero one of the three would print as 0 there (Ctrl-VI and
  averaging differ by 1e-6 to 1e-5 L1 on some metrics)."""
  vals = [entry["diff"], entry["diff_low"], entry["diff_high"]]
  mags = [abs(v) for v in vals if np.isfinite(v)]
  if mags and 0 < max(mags) < 0.5 * 10.0 ** -(_digits(metric) + 1):
    a, lo, hi = (f"{v:+.1e}" if np.isfinite(v) else "n/a" for v in vals)
  else:
    a, lo, hi = (_fmt(v, metric, True) for v in vals)
  return f"{a} [{lo}, {hi}]"


def verdict(entry: dict, better: str, negligible: float | None = None) -> str:
  """``better``/``worse``/``tied`` of a method against Ctrl-VI from the paired interval; a
  detectable difference whose mean is within ``negligible`` gets `` (negligible)``."""
  lo, hi = entry.get("diff_low", np.nan), entry.get("diff_high", np.nan)
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return "n/a"
  if lo <= 0 <= hi:
    return "tied"
  method_lower = hi < 0
  word = "better" if method_lower == (better == "lower") else "worse"
  if negligible is not None and abs(entry.get("diff", np.nan)) <= negligible:
    word += " (negligible)"
  return word


def markdown(table: dict, methods, command: str, num_cases: int, best=None) -> str:
  names = [m.name for m in methods]
  lines = [f"Mean over {num_cases} cases, [95% bootstrap interval over cases]. Reproduce: "
           f"`{command}`", ""]
  head = "| method | " + " | ".join(
      f"{label} {'↓' if better == 'lower' else '↑'}" for _, better, label in METRICS) + " |"
  lines += [head, "|" + "---|" * (len(METRICS) + 1)]
  for name in names:
    cells = []
    for metric, _, _ in METRICS:
      e = table[name][metric]
      cells.append(f"{_fmt(e['mean'], metric)} [{_fmt(e['low'], metric)}, "
                   f"{_fmt(e['high'], metric)}]")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if "ctrl_vi" in names:
    lines += ["", "Paired difference to Ctrl-VI (method minus Ctrl-VI, same cases and seeds), "
              "[95% interval]; *better*/*worse* is the method against Ctrl-VI, *tied* when the "
              "interval holds 0, *(negligible)* when the mean is within the amount below "
              "(tuning.NEGLIGIBLE: " + ", ".join(f"{m} {v:g}" for m, v in tuning.NEGLIGIBLE.items())
              + "; one grey level is 0.0078).", ""]
    lines += ["| method | " + " | ".join(label for _, _, label in METRICS[:-1]) + " |",
              "|" + "---|" * len(METRICS)]
    for name in names:
      if name == "ctrl_vi":
        continue
      cells = []
      for metric, better, _ in METRICS[:-1]:
        e = table[name][metric]
        if "diff" not in e:
          cells.append("n/a")
          continue
        cells.append(f"{_fmt_diff(e, metric)} {verdict(e, better, tuning.NEGLIGIBLE.get(metric))}")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if best:
    lines += ["", "Best or tied-best per metric (on the cases every method has; tied: the 95% "
              "interval of the paired difference to the best holds 0):", ""]
    for metric, _, label in METRICS:
      if metric in best:
        b = best[metric]
        tied = ", ".join(f"`{n}`" for n in b["tied"]) or "none"
        line = f"- {label}: `{b['best']}`; tied: {tied}"
        if b.get("negligible"):
          line += (f"; not tied but within {tuning.NEGLIGIBLE[metric]:g} of it (negligible): "
                   + ", ".join(f"`{n}`" for n in b["negligible"]))
        lines.append(line)
  lines += ["", "Methods:", ""]
  lines += [f"- `{m.name}`: {m.description}" for m in methods]
  return "\n".join(lines) + "\n"


def plot(path: str, table: dict, methods) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = [m.name for m in methods]
  metrics = METRICS
  cols = 3
  rows = -(-len(metrics) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 0.28 * len(names) * rows + 1.5))
  axes = np.atleast_1d(axes).ravel()
  for ax, (metric, better, label) in zip(axes, metrics):
    means = np.array([table[n][metric]["mean"] for n in names])
    lo = np.array([table[n][metric]["low"] for n in names])
    hi = np.array([table[n][metric]["high"] for n in names])
    y = np.arange(len(names))
    colours = ["tab:red" if n == "ctrl_vi" else ("tab:orange" if n.startswith("ctrl_vi")
                                                 else "tab:blue") for n in names]
    ax.barh(y, np.nan_to_num(means), color=colours,
            xerr=np.nan_to_num(np.stack([means - lo, hi - means])), capsize=2)
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(f"{label} ({better} is better)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
  for ax in axes[len(metrics):]:
    ax.axis("off")
  fig.tight_layout()
  io.write_figure(path, fig, dpi=110)
  plt.close(fig)


def _tile(samples: np.ndarray) -> np.ndarray:
  """``(N, T, H, W, 3)`` -> ``(T, H, N * W + gaps, 3)``: particles left to right."""
  n, t, h, w, c = samples.shape
  gap = np.ones((t, h, 1, c), np.float32)
  parts = []
  for i in range(n):
    parts.append(samples[i])
    if i < n - 1:
      parts.append(gap)
  return np.concatenate(parts, axis=2)


def gallery(workdir: str, case_list, methods, scene_config) -> str | None:
  """``gallery/index.html``: every gallery case, every method side by side."""
  folder = os.path.join(workdir, "gallery")
  sections = []
  for case in case_list:
    case_dir = os.path.join(folder, case.name)
    have = [m for m in methods if os.path.exists(os.path.join(case_dir, f"{m.name}.npz"))]
    if not have:
      continue
    example = case_example(case, scene_config)
    sim = example.sim_rgba
    sim_rgb = sim[..., :3] * sim[..., 3:] + (1 - sim[..., 3:])
    media.write_png(os.path.join(case_dir, "first_frame.png"), example.first_frame,
                    upscale=4)
    media.write_gif(os.path.join(case_dir, "ground_truth.gif"), example.video, upscale=4)
    media.write_gif(os.path.join(case_dir, "simulation.gif"), sim_rgb, upscale=4)
    media.write_gif(os.path.join(case_dir, "context.gif"), example.background_context,
                    upscale=4)
    items = [dict(label="first frame", image=f"{case.name}/first_frame.png"),
             dict(label="simulation input", gif=f"{case.name}/simulation.gif"),
             dict(label="3D-cache context", gif=f"{case.name}/context.gif"),
             dict(label="ground truth", gif=f"{case.name}/ground_truth.gif")]
    for m in have:
      with np.load(os.path.join(case_dir, f"{m.name}.npz")) as z:
        samples = z["samples"].astype(np.float32)
      media.write_gif(os.path.join(case_dir, f"{m.name}.gif"), _tile(samples), upscale=4)
      items.append(dict(label=f"{m.name}: {m.description}", gif=f"{case.name}/{m.name}.gif"))
    sections.append(dict(heading=f"{case.name} (camera {case.camera_kind})", items=items))
  if not sections:
    return None
  return media.write_html(os.path.join(folder, "index.html"),
                          "composed_vi evaluation: every method on the same case", sections)


def write(workdir: str, config, case_list, methods, rows, scene_config) -> dict:
  """Writes ``table.json``, ``table.md``, ``metrics.png`` and the gallery; returns the table."""
  names = {c.name for c in case_list}
  rows = [r for r in rows if r["case"] in names and r["method"] in {m.name for m in methods}]
  table = stats.aggregate(rows, methods, METRICS)
  best = stats.best_or_tied(rows, methods, METRICS, negligible=tuning.NEGLIGIBLE)
  variant = f":{config.variant}" if config.get("variant") else ""
  split = f" --config.split={config.split}" if config.split != "test" else ""
  command = (f"python -m experiments.main --config=configs/evaluate.py{variant} "
             f"--workdir=<dir>{split} --config.methods={config.methods}")
  io.write_json(os.path.join(workdir, "table.json"), dict(
      table=table, cases=[c.name for c in case_list], methods=[m.name for m in methods],
      metrics=[m for m, _, _ in METRICS], num_particles=config.num_particles,
      num_levels=config.num_levels, command=command, rows=len(rows), best_or_tied=best))
  text = markdown(table, methods, command, len(case_list), best)
  steps = tuning.choose(rows, config)
  if steps:
    io.write_json(os.path.join(workdir, "steps.json"), dict(
        rule=tuning.__doc__.split("\n\n")[1].replace("\n", " "), grid=list(
            tuning.grid(config)), split=config.split, chosen=steps))
    text += "\n## Steps chosen on this split (tuning.choose)\n\n| method | step_size | " + \
        "score per grid value (1 = best on every control) |\n|---|---|---|\n" + "".join(
            f"| {m} | {c['step_size']:g} | " + ", ".join(
                f"{v}: {sc:.3f}" for v, sc in c["scores"].items()) + " |\n"
            for m, c in steps.items())
  ctrl_vi = {m.name: m for m in methods}.get(tuning.REPULSION_METHOD)
  rep = tuning.choose_repulsion(rows, config, own=None if ctrl_vi is None else (
      sampler_options(ctrl_vi, config).get("repulsion")))
  if rep is not None:
    io.write_json(os.path.join(workdir, "repulsion.json"), dict(
        rule=tuning.__doc__.split("\n\n")[2].replace("\n", " "),
        grid=list(tuning.repulsion_grid(config)), split=config.split, chosen=rep))
    text += tuning.repulsion_markdown(rep)
  io.write_text(os.path.join(workdir, "table.md"), text)
  plot(os.path.join(workdir, "metrics.png"), table, methods)
  gallery(workdir, case_list[:config.gallery_cases], methods, scene_config)
  print(text)
  return table


def compare_runs(new_rows: list[dict], old_rows: list[dict], metrics=METRICS) -> str:
  """Markdown: per method both runs have, the paired difference ``new - old`` over their
  common cases with its 95% interval, and how many cases changed at all (any metric but
  ``seconds``). For two runs of one config on two versions of the code."""
  new = stats.by_method(new_rows)
  old = stats.by_method(old_rows)
  shown = [(m, label) for m, _, label in metrics if m != "seconds"]
  lines = ["| method | cases changed | " + " | ".join(label for _, label in shown) + " |",
           "|---|---|" + "---|" * len(shown)]
  for method in sorted(set(new) & set(old)):
    cases = sorted(set(new[method]) & set(old[method]))
    values = {m: ([stats.row_value(new[method][c], m) for c in cases],
                  [stats.row_value(old[method][c], m) for c in cases]) for m, _ in shown}
    changed = sum(any(not (a[i] == b[i] or (np.isnan(a[i]) and np.isnan(b[i])))
                      for a, b in values.values()) for i in range(len(cases)))
    cells = []
    for m, _ in shown:
      diff, low, high = stats.paired_difference(*values[m])
      cells.append(_fmt_diff(dict(diff=diff, diff_low=low, diff_high=high), m))
    lines.append(f"| {method} | {changed} of {len(cases)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
