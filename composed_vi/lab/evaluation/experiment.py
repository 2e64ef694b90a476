"""The evaluation run: every method on every case of a split, resumable, with its report.

A *case* is one world scene built from listed seeds: a background (floor and wall textures,
light), a camera path of a given kind from a start pose, and an object simulation
(``Case``). Cases are the product ``backgrounds x cameras x simulations`` of a split
(``configs/evaluate.py``): the ``dev`` split is where the demo's defaults were chosen, the
``test`` split is held out. Every method samples ``N`` particles per case from the same key
(common random numbers, so differences between methods are paired), and every particle is
scored by :func:`composed_vi.world.metrics.all_metrics` against the scene's ground truth.

Methods are declared in the config (``config.method_specs``, :func:`methods_from_config`):
single backbones alone with their own control (ODE), velocity averaging of the composed target
(Composable Diffusion), annealed Langevin, PoE-SMC (annealed Langevin with SMC resampling on a
reward: agreement of ``x0_hat`` with the 3D-cache context on the pixels it sees), Ctrl-VI and
its ablations; ``config.methods`` names those to run.

The score-following samplers (Ctrl-VI, Langevin, PoE-SMC) share ``config.precondition``: steps
of ``eta t^2 / W`` per pixel (:func:`composed_vi.samplers.base.step_sizes`).

:func:`run` writes one row per (case, method) to ``results.jsonl`` as it goes (a rerun resumes
after the last finished row); :func:`composed_vi.lab.stats.aggregate` gives the mean and a 95%
bootstrap interval over cases per method and metric, and the paired difference to Ctrl-VI.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from composed_vi import io
from composed_vi.errors import ConfigError, check_choice, check_positive_int, fail
from composed_vi.lab import runner
from composed_vi.lab.evaluation import report, tuning
from composed_vi.lab.evaluation.methods import (
  KINDS,
  Method,
  Sampler,
  method_settings,
  methods_from_config,
  sampler_options,
)
from composed_vi.lab.evaluation.splits import Case, case_absent_video, case_example, cases
from composed_vi.sampling import build_options
from composed_vi.world import dataset
from composed_vi.world import demo as world_demo
from composed_vi.world import metrics as wm

#: Fields that may change when a run is resumed: rows are keyed by (case, method), so methods
#: and cases can be added to a finished run and the report covers what the config names.
RESUMABLE_FIELDS = ("methods", "max_cases", "gallery_cases", "reuse_from", "reuse_check_cases",
                    "step_grid", "repulsion_grid")


def validate(config) -> tuple[list[Case], list[Method], dict]:
  """Checks everything that needs no compute; returns the cases and methods to run and the
  loaded backbones (``{kind: (spec, params)}``, for :class:`Sampler`)."""
  split = check_choice("split", config.split, tuple(config.splits.keys()))
  case_list = cases(config.splits[split], split)
  if config.max_cases:
    case_list = case_list[:check_positive_int("max_cases", config.max_cases)]
  known = methods_from_config(config)
  names = [m for m in config.methods.split(",") if m]
  if not names:
    fail("methods", f"a comma-separated list of {sorted(known)}", config.methods)
  # With a step grid, every tuned method named also runs once per grid value (and ctrl_vi
  # once per value of a repulsion grid).
  if tuning.repulsion_grid(config) and not {tuning.REPULSION_METHOD,
                                            tuning.REPULSION_BASELINE} <= set(names):
    fail("repulsion_grid", f"'{tuning.REPULSION_METHOD}' and '{tuning.REPULSION_BASELINE}' "
         "among config.methods (the rule compares one with the other)", config.methods)
  names += tuning.variant_names(config, names)
  methods = [known[check_choice("methods", m, tuple(known))] for m in names]
  check_positive_int("num_particles", config.num_particles)
  check_positive_int("num_levels", config.num_levels)
  check_positive_int("inner_steps", config.inner_steps)
  check_positive_int("gallery_cases", config.gallery_cases, minimum=0)
  check_positive_int("reuse_check_cases", config.reuse_check_cases)
  check_positive_int("seeds_per_case", config.seeds_per_case)
  if config.reuse_from and not all(os.path.isfile(os.path.join(config.reuse_from, n))
                                   for n in ("config.json", "results.jsonl")):
    fail("reuse_from", "an evaluation workdir holding config.json and results.jsonl",
         config.reuse_from)
  world_demo.Composition.from_config(config)  # validates, naming composition.<field>
  for m in methods:
    try:
      build_options(m.sampler, **sampler_options(m, config))
    except ConfigError as e:
      raise ConfigError(f"methods[{m.name}]: {e}") from None
  return case_list, methods, world_demo.load_backbones(config.backbones, KINDS)


def _same_metrics(a: dict, b: dict) -> str | None:
  """``None`` when every metric of ``a`` equals ``b``'s exactly (NaN equals NaN), else the
  first that differs, as text. Metrics ``b`` lacks (added since its run) are not compared;
  the reused rows go on lacking them (NaN in the table)."""
  for k, v in a.items():
    if k not in b:
      continue
    w = b.get(k)
    if isinstance(v, float) and isinstance(w, float) and math.isnan(v) and math.isnan(w):
      continue
    if v != w:
      return f"{k} {w!r} there, {v!r} now"
  return None


def _nanmean(values) -> float:
  finite = [float(v) for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else float("nan")


def _sample_row(sampler, method: Method, case: Case, ci: int, example: dataset.Example, key,
                workdir: str, gallery, compiled: set, seeds: int = 1,
                absent_video=None) -> dict:
  """Samples ``method`` on one case with ``seeds`` sampler seeds and scores it: its
  ``results.jsonl`` row holds each metric's mean over the seeds (so the intervals stay over
  cases, and diversity is measured within each seed's population); ``seconds`` per seed (the
  first call of a method in a process, tracked in ``compiled``, includes its compilation). The
  first seed's samples of a ``gallery`` case are written beside. ``absent_video`` (the case
  without its unsimulated objects) gives the unsimulated object's presence."""
  per_seed, seconds, samples = [], 0.0, None
  for s in range(int(seeds)):
    t0 = time.perf_counter()
    # Seed 0 is the case's key itself (the rows of one-seed runs are unchanged).
    out = sampler(method, example, key if s == 0 else jax.random.fold_in(key, s))
    seconds += time.perf_counter() - t0
    per_seed.append(wm.all_metrics(out, example, absent_video=absent_video))
    samples = out if samples is None else samples
  metrics = {k: _nanmean([m[k] for m in per_seed]) for k in per_seed[0]}
  row = dict(case=case.name, case_index=ci, method=method.name, seconds=seconds / len(per_seed),
             includes_compile=method.name not in compiled, seeds=int(seeds), **metrics)
  compiled.add(method.name)
  if case.name in gallery:
    io.write_npz(os.path.join(workdir, "gallery", case.name, f"{method.name}.npz"),
                 samples=samples.astype(np.float16))
  return row


def same_settings(method: Method, config, old_config) -> bool:
  """Whether ``method`` of ``config`` has the same settings (:func:`method_settings`) in the
  earlier run of ``old_config``, each resolved from its own config: a step-grid method's step
  comes from its run's ``step_grid``, so one name can mean another step there."""
  settings = method_settings(method, config)
  try:
    old = methods_from_config(old_config).get(method.name)
  except ConfigError:
    return False
  return settings is not None and old is not None and method_settings(old, old_config) == settings


def reuse_rows(config, workdir: str, case_list, methods, done, sampler, scene_config,
               gallery, compiled: set):
  """Rows of ``config.reuse_from`` (an earlier evaluation workdir) for the methods whose
  settings (:func:`method_settings`) are the same in both runs, on the same cases.

  Each such method's first ``config.reuse_check_cases`` cases are sampled again and must give
  bit-identical metrics (which also checks the code and the backbones' weights); those rows
  are kept as new rows, the others are copied with ``reused_from`` set, and their gallery
  samples with them. A method that does not reproduce is logged and sampled afresh.
  """
  src = config.reuse_from
  paths = [os.path.join(src, n) for n in ("config.json", "results.jsonl")]

  with open(paths[0]) as f:
    old_config = ml_collections.ConfigDict(json.load(f))
  if old_config.get("seeds_per_case", 1) != config.seeds_per_case:
    logging.info("reuse_from: %d seeds per case there, %d here; nothing reused",
                 old_config.get("seeds_per_case", 1), config.seeds_per_case)
    return []
  old_rows = {(r["case"], r["method"]): r for r in read_rows(paths[1])}
  index = {c.name: i for i, c in enumerate(case_list)}
  out = []
  for method in methods:
    if not same_settings(method, config, old_config):
      logging.info("reuse_from: %s has other settings there; not reused", method.name)
      continue
    todo = [c for c in case_list if (c.name, method.name) not in done
            and old_rows.get((c.name, method.name), {}).get("case_index") == index[c.name]]
    checked = []
    for case in todo[:config.reuse_check_cases]:
      ci = index[case.name]
      key = jax.random.fold_in(jax.random.key(config.seed), ci)
      row = _sample_row(sampler, method, case, ci, case_example(case, scene_config), key,
                        workdir, gallery, compiled, config.seeds_per_case,
                        case_absent_video(case, scene_config))
      checked.append(row)
      metrics = {k: v for k, v in row.items() if k not in ("seconds", "includes_compile")}
      differs = _same_metrics(metrics, old_rows[(case.name, method.name)])
      if differs:
        logging.warning("reuse_from: %s on %s does not reproduce (%s); not reused",
                        method.name, case.name, differs)
        todo = []
        break
    out += checked
    for case in todo[len(checked):]:
      row = dict(old_rows[(case.name, method.name)], reused_from=src)
      out.append(row)
      shot = os.path.join(src, "gallery", case.name, f"{method.name}.npz")
      if case.name in gallery and os.path.isfile(shot):
        dest = os.path.join(workdir, "gallery", case.name, f"{method.name}.npz")
        with io.atomic_path(dest) as tmp:
          shutil.copyfile(shot, tmp)
    logging.info("reuse_from: %s: %d rows checked, %d copied", method.name, len(checked),
                 max(0, len(todo) - len(checked)))
  return out


def read_rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run(config, workdir: str) -> dict:
  """Samples every (case, method) not yet in ``results.jsonl`` and writes the report."""
  case_list, methods, backbones = validate(config)
  workdir = runner.check_workdir(workdir)
  if config.reuse_from and os.path.realpath(config.reuse_from) == os.path.realpath(workdir):
    fail("reuse_from", "another workdir than --workdir", config.reuse_from)
  runner.check_previous_run(workdir, runner.config_dict(config), RESUMABLE_FIELDS)
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "config.json"), runner.config_dict(config))
  results = os.path.join(workdir, "results.jsonl")
  rows = read_rows(results)
  done = {(r["case"], r["method"]) for r in rows}
  scene_config = world_demo.scene_config(config)
  sampler = None
  gallery = {c.name for c in case_list[:config.gallery_cases]}
  compiled = set()  # methods already compiled in this process
  if config.reuse_from:
    sampler = Sampler(config, backbones)
    rows += reuse_rows(config, workdir, case_list, methods, done, sampler, scene_config,
                       gallery, compiled)
    io.write_text(results, "".join(json.dumps(r) + "\n" for r in rows))
    done = {(r["case"], r["method"]) for r in rows}
  todo = [(c, m) for c in case_list for m in methods if (c.name, m.name) not in done]
  logging.info("%d cases x %d methods: %d rows done, %d to run", len(case_list), len(methods),
               len(done), len(todo))
  if todo and sampler is None:
    sampler = Sampler(config, backbones)
  t_start = time.perf_counter()
  for ci, case in enumerate(case_list):
    pending = [m for m in methods if (case.name, m.name) not in done]
    if not pending:
      continue
    example = case_example(case, scene_config)
    absent = case_absent_video(case, scene_config)
    key = jax.random.fold_in(jax.random.key(config.seed), ci)
    for method in pending:
      row = _sample_row(sampler, method, case, ci, example, key, workdir, gallery, compiled,
                        config.seeds_per_case, absent)
      rows.append(row)
      io.write_text(results, "".join(json.dumps(r) + "\n" for r in rows))
      left = sum(1 for c in case_list[ci + 1:] for m in methods
                 if (c.name, m.name) not in done) + len(pending) - pending.index(method) - 1
      elapsed = time.perf_counter() - t_start
      logging.info("case %d/%d %s %-22s %.1f s | first-frame %.3f track %.2f px bg %.3f "
                   "div %.3f | %d rows left, elapsed %.0f s", ci + 1, len(case_list),
                   case.name, method.name, row["seconds"], row["first_frame_l1"],
                   row["track_error_px"], row["camera_background_error"],
                   row["diversity"], left, elapsed)
  return report.write(workdir, config, case_list, methods, rows, scene_config)
