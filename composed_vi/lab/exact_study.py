"""The exact-target study: every sampler on products of Gaussian mixtures with known answers.

Targets come from seeded families (:data:`composed_vi.lab.toys.FAMILIES`: random products in
D = 2 and D = 16, the rotated ring-of-8 product, wide-times-narrow products); the dev seeds
choose each method's step size from a grid of the same size for every method, the test seeds
(never used to choose) report the chosen settings and the ablations, each of which changes one
option of Ctrl-VI's chosen setting.

Many particles (N = 512): MMD at a fine bandwidth (the narrowest component's std, which sees
clumps and deconvolved populations) and at the multi-scale median bandwidths, each over its
exact-vs-exact floor; the median nearest-neighbour distance over exact samples'; per-mode mean
and variance errors against exact samples. Few particles (N = 4): distinct modes covered and
the fraction of particles on a mode, on four separated modes in D = 2 and D = ``few.high_dim``
and on the ring product. Writes ``results.json``, ``results.md`` and ``particles.png``.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np
from absl import logging

from composed_vi import gmm, io, metrics
from composed_vi.composition import compose
from composed_vi.lab import toys
from composed_vi.sampling import sample

MANY_COLUMNS = ("fine_mmd_ratio", "mmd_ratio", "nn_ratio", "mode_mean_error",
                "mode_var_error", "missed_mass")


def shared_options(config) -> dict:
  return {name: config.get(name) for name in ("num_levels", "inner_steps")
          if config.get(name) is not None}


def split_seeds(config, split: str) -> list[int]:
  """The dev seeds are ``0 .. n - 1``; the test seeds ``test_offset .. test_offset + n - 1``."""
  start = 0 if split == "dev" else config.test_offset
  return list(range(start, start + config.seeds_per_split))


def fine_bandwidth(exact, min_weight: float = 0.01) -> float:
  """The narrowest std among the exact product's components of weight >= ``min_weight``."""
  w, s = np.asarray(exact.weights), np.asarray(exact.stds)
  return float(np.min(s[w >= min_weight]))


def many_particles(config, method: str, options: dict, family: str, seed: int) -> dict:
  """One run on one target: the metrics of :data:`MANY_COLUMNS` (ratios to exact floors)."""
  experts, exact = toys.FAMILIES[family](seed)
  n = config.many.num_particles
  key = jax.random.fold_in(jax.random.key(config.seed), seed)
  k_run, k_a, k_b = jax.random.split(key, 3)
  start = time.perf_counter()
  x, _ = sample(k_run, compose(list(experts)), n, method, **options)
  x = np.asarray(jax.block_until_ready(x))
  seconds = time.perf_counter() - start
  ref, ref2 = np.asarray(exact.sample(k_a, n)), np.asarray(exact.sample(k_b, n))
  h = fine_bandwidth(exact)
  mean_err, var_err, missed = gmm.mode_moment_errors(x, exact, ref)
  floor_mean, floor_var, _ = gmm.mode_moment_errors(ref2, exact, ref)
  return dict(
      fine_mmd_ratio=float(metrics.fine_mmd(x, ref, h) / metrics.fine_mmd(ref2, ref, h)),
      mmd_ratio=float(metrics.mmd(x, ref) / metrics.mmd(ref2, ref)),
      nn_ratio=float(metrics.nearest_neighbour_ratio(x, ref)),
      mode_mean_error=mean_err, mode_mean_floor=floor_mean,
      mode_var_error=var_err, mode_var_floor=floor_var, missed_mass=missed,
      fine_bandwidth=h, seconds=seconds, particles=x)


def few_particles(config, method: str, options: dict, target: str, seeds) -> dict:
  """Modes covered by N = ``few.num_particles`` on ``'four_2d'``, ``'four_high'`` or
  ``'ring'`` (a rotation per seed), over ``seeds``."""
  covered, on_mode, last = [], [], None
  for s in seeds:
    if target == "ring":
      experts, exact = toys.FAMILIES["ring"](s)
    else:
      experts, exact = toys.four_modes(2 if target == "four_2d" else config.few.high_dim)
    key = jax.random.fold_in(jax.random.key(config.seed + 1), s)
    x, _ = sample(key, compose(list(experts)), config.few.num_particles, method, **options)
    c, o = gmm.mode_coverage(x, exact)
    covered.append(float(c))
    on_mode.append(float(o))
    last = np.asarray(x)
  return dict(modes=float(np.mean(covered)), modes_std=float(np.std(covered)),
              on_mode=float(np.mean(on_mode)), particles=last)


def _geomean(values) -> float:
  return float(math.exp(np.mean(np.log(np.maximum(values, 1e-12)))))


def many_rows(config, method: str, options: dict, split: str) -> dict:
  """``family -> {column: mean over the split's seeds}`` plus the last particles of each."""
  out = {}
  for family in config.families:
    runs = [many_particles(config, method, options, family, s)
            for s in split_seeds(config, split)]
    row = {c: float(np.mean([r[c] for r in runs])) for c in MANY_COLUMNS + (
        "mode_mean_floor", "mode_var_floor", "seconds")}
    # Ratios are averaged geometrically (a 2x and a 0.5x are equally far from 1).
    for c in ("fine_mmd_ratio", "mmd_ratio", "nn_ratio"):
      row[c] = _geomean([r[c] for r in runs])
    row["per_seed"] = [{c: r[c] for c in MANY_COLUMNS} for r in runs]
    row["particles"] = runs[-1]["particles"] if config.families[0] == family else None
    out[family] = row
  return out


def dev_score(rows: dict) -> float:
  """The choosing criterion: the geometric mean over families of the fine-MMD ratio."""
  return _geomean([r["fine_mmd_ratio"] for r in rows.values()])


def cached(workdir: str, name: str, fn):
  """``fn()`` (a JSON-able dict), saved under ``workdir/rows/name.json`` (atomically) and read
  back on a rerun: a study that crashes resumes from its finished rows."""
  path = os.path.join(workdir, "rows", name + ".json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  out = fn()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  io.write_json(path, out)
  # Every target shape compiles its own programs; hundreds of them exhausted the process's
  # memory mappings ("LLVM compilation error: Cannot allocate memory") in the full study.
  jax.clear_caches()
  return out


def _row_name(split: str, method: str, options: dict) -> str:
  body = "_".join(f"{k}={options[k]}" for k in sorted(options)) or "defaults"
  return f"{split}__{method}__{body}"


FEW_TARGETS = ("four_2d", "four_high", "ring")


def choose(config, workdir: str) -> dict:
  """``method -> {'grid': [...], 'chosen': options}`` on the dev seeds.

  Each grid value is scored by the geometric mean of its fine-MMD ratios over the families
  (:func:`dev_score`); the chosen value is the best-scoring one among those whose mean modes
  covered with few particles (ring and four modes in high dimension, dev seeds) is within 0.1
  of the method's best, so a step that wins on accuracy by losing modes is not chosen.
  """
  shared = shared_options(config)
  out = {}
  for method, grid in config.grids.items():
    name, values = (next(iter(grid.items())) if grid else (None, (None,)))
    tried = []
    for v in values:
      options = dict(shared) if name is None else {**shared, name: v}
      logging.info("exact study, dev: %s %s", method, options)

      def row(method=method, options=options):
        rows = many_rows(config, method, options, "dev")
        few = {t: _public(few_particles(config, method, options, t,
                                        range(config.few.num_dev_seeds)))
               for t in ("four_high", "ring")}
        return dict(options=options, score=dev_score(rows),
                    modes=float(np.mean([f["modes"] for f in few.values()])),
                    rows={f: _public(r) for f, r in rows.items()}, few=few)

      tried.append(cached(workdir, _row_name("dev", method, options), row))
    top = max(r["modes"] for r in tried)
    best = min((r for r in tried if r["modes"] >= top - 0.1), key=lambda r: r["score"])
    out[method] = dict(grid=tried, chosen=best["options"])
  return out


def _public(row: dict) -> dict:
  return {k: v for k, v in row.items() if k != "particles"}


def report_rows(config, chosen: dict) -> dict:
  """``label -> (method, options)`` reported on the test seeds: every method at its chosen
  setting, then each ablation (one option of Ctrl-VI's chosen setting changed)."""
  rows = {m: (m, c["chosen"]) for m, c in chosen.items()}
  base = chosen.get("ctrl_vi", {}).get("chosen", shared_options(config))
  for label, change in config.ablations.items():
    rows[label] = ("ctrl_vi", {**base, **dict(change)})
  return rows


def run(config, workdir: str) -> dict:
  """Chooses on dev, reports on test once; writes the tables and the plot."""
  chosen = choose(config, workdir)
  results, particles = {}, {}
  for label, (method, options) in report_rows(config, chosen).items():
    logging.info("exact study, test: %s (%s %s)", label, method, options)

    def row(method=method, options=options):
      many = many_rows(config, method, options, "test")
      few_seeds = range(config.test_offset, config.test_offset + config.few.num_seeds)
      few = {t: few_particles(config, method, options, t, few_seeds) for t in FEW_TARGETS}
      return dict(method=method, options=options, test_seeds=split_seeds(config, "test"),
                  many={f: _public(r) for f, r in many.items()},
                  few={t: _public(r) for t, r in few.items()},
                  particles=dict(many=np.asarray(many[config.families[0]]["particles"]
                                                 ).tolist(),
                                 few=np.asarray(few["four_2d"]["particles"]).tolist()))

    results[label] = cached(workdir, _row_name("test", method, options), row)
    saved = results[label].pop("particles")
    particles[label] = {k: np.asarray(v) for k, v in saved.items()}
  summary = dict(config=config.to_dict(), dev=chosen, results=results)
  io.write_json(os.path.join(workdir, "results.json"), summary)
  io.write_text(os.path.join(workdir, "results.md"), markdown(config, chosen, results))
  if config.plots:
    plot(os.path.join(workdir, "particles.png"), particles, config)
  return summary


def markdown(config, chosen: dict, results: dict) -> str:
  """The dev grid (what was chosen) and the test tables (what is reported)."""
  lines = ["## Dev seeds: the step-size grid (fine MMD / floor per family, their geometric "
           "mean, and modes covered by N = %d on the ring and in D = %d)" % (
               config.few.num_particles, config.few.high_dim), "",
           "| method | option | " + " | ".join(config.families) + " | score | modes |",
           "|---|---|" + "---|" * len(config.families) + "---|---|"]
  for method, c in chosen.items():
    for tried in c["grid"]:
      opt = {k: v for k, v in tried["options"].items() if k not in shared_options(config)}
      mark = " (chosen)" if tried["options"] == c["chosen"] else ""
      lines.append("| %s | %s%s | %s | %.2f | %.2f |" % (
          method, opt or "-", mark,
          " | ".join("%.2f" % tried["rows"][f]["fine_mmd_ratio"] for f in config.families),
          tried["score"], tried["modes"]))
  lines += ["", "## Test seeds (N = %d): fine MMD / floor, MMD / floor, NN distance / exact, "
            "mode mean error (stds), mode variance error (|log ratio|), mass of missed modes" %
            config.many.num_particles, ""]
  head = "| run | " + " | ".join(config.families) + " |"
  lines += [head, "|---|" + "---|" * len(config.families)]
  floors = {}
  for label, r in results.items():
    cells = []
    for f in config.families:
      m = r["many"][f]
      cells.append("%.2f / %.2f / %.2f / %.2f / %.2f / %.2f" % tuple(
          m[c] for c in MANY_COLUMNS))
      floors[f] = (m["mode_mean_floor"], m["mode_var_floor"])
    lines.append("| %s | %s |" % (label, " | ".join(cells)))
  lines.append("| exact (floor) | %s |" % " | ".join(
      "1 / 1 / 1 / %.2f / %.2f / 0" % floors[f] for f in config.families))
  hd = config.few.high_dim
  lines += ["", "## Test seeds (N = %d): modes covered (of 4), on-mode fraction" %
            config.few.num_particles, "",
            "| run | four modes D=2 | four modes D=%d | ring |" % hd, "|---|---|---|---|"]
  for label, r in results.items():
    lines.append("| %s | %s |" % (label, " | ".join(
        "%.2f / %.2f" % (r["few"][t]["modes"], r["few"][t]["on_mode"])
        for t in ("four_2d", "four_high", "ring"))))
  return "\n".join(lines) + "\n"


def plot(path: str, particles: dict, config) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  first = config.families[0]
  _, exact = toys.FAMILIES[first](split_seeds(config, "test")[-1])
  _, exact4 = toys.four_modes(2)
  labels = list(particles)
  fig, axes = plt.subplots(2, len(labels), figsize=(3.0 * len(labels), 6.0), squeeze=False)
  grid = np.linspace(-3, 3, 200)
  xx, yy = np.meshgrid(grid, grid)
  pts = np.stack([xx.ravel(), yy.ravel()], -1)
  for row, (mix, name) in enumerate(((exact, "many"), (exact4, "few"))):
    if mix.dim != 2:
      continue
    dens = np.exp(np.asarray(mix.log_prob(pts, 0.0))).reshape(xx.shape)
    for col, label in enumerate(labels):
      ax = axes[row, col]
      ax.contourf(xx, yy, dens, levels=20, cmap="Blues")
      p = particles[label][name]
      ax.scatter(p[:, 0], p[:, 1], s=2 if name == "many" else 30, c="tab:red")
      ax.set_xlim(-3, 3)
      ax.set_ylim(-3, 3)
      ax.set_title(f"{label} (N={p.shape[0]})", fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  io.write_figure(path, fig, dpi=80)
  plt.close(fig)
