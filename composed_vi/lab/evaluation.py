"""The paper's comparison on the built-in world: methods and ablations against ground truth.

A *case* is one world scene built from listed seeds: a background (floor and wall textures,
light), a camera path of a given kind from a start pose, and an object simulation
(``Case``). Cases are the product ``backgrounds x cameras x simulations`` of a split
(``configs/evaluate.py``): the ``dev`` split is where the demo's defaults were chosen, the
``test`` split is held out. Every method samples ``N`` particles per case from the same key
(common random numbers, so differences between methods are paired), and every particle is
scored by :func:`composed_vi.world.metrics.all_metrics` against the scene's ground truth.

Methods (:data:`METHODS`):

- ``t2v``, ``i2v``, ``cam2v``, ``sim2v``: one backbone alone with its own control (ODE);
- ``average``: velocity averaging of the composed target (Composable Diffusion: the ODE on
  ``v_bar``), same experts, masks and context as Ctrl-VI; ``average_normalized`` with the
  weights divided by their sum per pixel (started from ``N(0, I)``, not ``N(0, I / W)``);
- ``langevin``: annealed Langevin (ULA) on the composed target;
- ``poe_smc``: annealed Langevin with SMC resampling on a reward (agreement of ``x0_hat`` with
  the 3D-cache context on visible pixels: the product-of-experts baseline);
- ``ctrl_vi``: the method, and its ablations ``ctrl_vi_no_context``, ``ctrl_vi_no_repulsion``,
  ``ctrl_vi_no_annealing`` (every SVGD step at ``t_min``, the same number of steps),
  ``ctrl_vi_kernel_drive`` (textbook SVGD drive), ``ctrl_vi_normalized`` (weights normalised
  per pixel: the previous defaults), ``ctrl_vi_full_kernel`` (the kernel, and so the
  repulsion, on every coordinate instead of the unspecified ones alone) and
  ``ctrl_vi_stein_everywhere`` (``stein_region='all'``: today's default, so the same as
  ``ctrl_vi`` unless the config's region changes; kept for the earlier tables),
  ``ctrl_vi_stein_unspecified`` (Stein steps on the unspecified pixels only),
  ``ctrl_vi_every_level`` (Stein steps at every level, not only at ``t >= stein_min_t``), and
  the variant ``ctrl_vi_stein_unpinned``.

The score-following samplers (Ctrl-VI, Langevin, PoE-SMC) share ``config.precondition``: steps
of ``eta t^2 / W`` per pixel (:func:`composed_vi.samplers.base.step_sizes`).

:func:`run` writes one row per (case, method) to ``results.jsonl`` as it goes (a rerun resumes
after the last finished row); :func:`composed_vi.lab.stats.aggregate` gives the mean and a 95%
bootstrap interval over cases per method and metric, and the paired difference to Ctrl-VI.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from composed_vi import io
from composed_vi.composition import compose
from composed_vi.errors import ConfigError, check_choice, check_positive_int, fail
from composed_vi.lab import runner
from composed_vi.samplers import smc
from composed_vi.sampling import sample
from composed_vi.world import backbones as tb
from composed_vi.world import demo as world_demo

KINDS = ("t2v", "i2v", "cam2v", "sim2v")

#: Fields that may change when a run is resumed: rows are keyed by (case, method), so methods
#: and cases can be added to a finished run and the report covers what the config names.
RESUMABLE_FIELDS = ("methods", "max_cases", "gallery_cases", "reuse_from", "reuse_check_cases")
#: Top-level fields every row depends on (with the method's options and composition).
_ROW_FIELDS = ("seed", "split", "num_particles", "world", "backbones")


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark case: a scene assembled from three listed seeds and a camera kind."""

  split: str
  background_seed: int
  camera_kind: str
  camera_seed: int
  objects_seed: int

  @property
  def name(self) -> str:
    return (f"{self.split}-bg{self.background_seed}-{self.camera_kind}-cam{self.camera_seed}"
            f"-sim{self.objects_seed}")


@dataclasses.dataclass(frozen=True)
class Method:
  """How a method samples: which experts, which sampler, which option overrides."""

  name: str
  experts: str  # "composed" or one backbone kind
  sampler: str  # a key of composed_vi.samplers.METHODS
  context: bool = True
  options: tuple = ()  # ((name, value), ...) on top of the sampler's evaluation options
  description: str = ""
  composition: tuple = ()  # ((name, value), ...) on top of the config's world_demo.Composition


METHODS = {m.name: m for m in [
    Method("t2v", "t2v", "ode", description="text backbone alone (caption)"),
    Method("i2v", "i2v", "ode", description="image backbone alone (first frame + caption)"),
    Method("cam2v", "cam2v", "ode", description="camera backbone alone (Pluecker rays)"),
    Method("sim2v", "sim2v", "ode", description="simulation backbone alone (objects alone)"),
    Method("average", "composed", "ode",
           description="velocity averaging of the composed target (Composable Diffusion)"),
    Method("average_normalized", "composed", "ode",
           composition=(("normalize_weights", True),),
           description="velocity averaging with the weights normalised per pixel: the same "
                       "v_bar, started from N(0, I) instead of N(0, I / W)"),
    Method("langevin", "composed", "annealed_langevin",
           description="annealed Langevin on the composed target (ULA)"),
    Method("poe_smc", "composed", "poe_smc",
           description="annealed Langevin + SMC on a context-agreement reward (PoE baseline)"),
    Method("ctrl_vi", "composed", "ctrl_vi", description="Ctrl-VI (the method)"),
    Method("ctrl_vi_no_context", "composed", "ctrl_vi", context=False,
           description="ablation: no context expert"),
    Method("ctrl_vi_no_repulsion", "composed", "ctrl_vi", options=(("repulsion", 0.0),),
           description="ablation: repulsion 0"),
    Method("ctrl_vi_no_annealing", "composed", "ctrl_vi", options=(("anneal", False),),
           description="ablation: every SVGD step at t_min, same number of steps"),
    Method("ctrl_vi_kernel_drive", "composed", "ctrl_vi", options=(("drive", "kernel"),),
           description="ablation: textbook SVGD drive (kernel-averaged scores)"),
    Method("ctrl_vi_normalized", "composed", "ctrl_vi",
           composition=(("normalize_weights", True),), options=(("repulsion", 1e4),),
           description="ablation: weights normalised per pixel (the target at temperature 1, "
                       "started from N(0, I), W = 1); repulsion 1e4 as the same strength on "
                       "the unspecified pixels (the previous defaults)"),
    Method("ctrl_vi_full_kernel", "composed", "ctrl_vi", options=(("feature_map", "identity"),),
           description="ablation: kernel (and repulsion) on every pixel, not only the "
                       "unspecified ones"),
    Method("ctrl_vi_stein_everywhere", "composed", "ctrl_vi", options=(("stein_region", "all"),),
           description="ablation: Stein steps on every pixel (the specified ones too), not "
                       "only the unspecified ones"),
    Method("ctrl_vi_stein_unspecified", "composed", "ctrl_vi",
           options=(("stein_region", "target_mask"),),
           description="ablation: Stein steps on the unspecified pixels only (the repulsion "
                       "mask), not on every pixel"),
    Method("ctrl_vi_every_level", "composed", "ctrl_vi", options=(("stein_min_t", 0.0),),
           description="ablation: Stein steps at every level, not only at t >= stein_min_t"),
    Method("ctrl_vi_stein_unpinned", "composed", "ctrl_vi",
           options=(("stein_region", "unpinned"),),
           description="variant: Stein steps everywhere but the pixels the controls give "
                       "exactly (first frame, the 3D cache's background)"),
]}

#: Reported metrics: (name, better direction, label).
METRICS = (
    ("first_frame_l1", "lower", "first-frame L1"),
    ("track_error_px", "lower", "object track error (px)"),
    ("camera_background_error", "lower", "camera/background L1"),
    ("consistency_3d", "lower", "3D consistency error"),
    ("diversity", "higher", "diversity (unspecified)"),
    ("valid_all", "higher", "valid particles"),
    ("seconds", "lower", "seconds per case"),
)


# ------------------------------------------------------------------------------- cases


def cases(split_config, split: str) -> list[Case]:
  """The cases of a split: ``backgrounds x cameras x simulations`` in that order.

  ``split_config`` has tuples ``backgrounds`` and ``simulations`` (seeds) and ``cameras``
  (camera kinds); the camera start pose is drawn from the seed ``camera_seed_base + i`` for
  the ``i``-th (background, camera) pair, so every case has its own start pose.
  """
  from composed_vi.world import scene

  out = []
  for field in ("backgrounds", "cameras", "simulations"):
    if not len(split_config[field]):
      fail(f"splits.{split}.{field}", "a non-empty list", split_config[field])
  for kind in split_config.cameras:
    check_choice(f"splits.{split}.cameras", kind, scene.CAMERA_KINDS)
  pairs = list(itertools.product(split_config.backgrounds, split_config.cameras))
  for (bg, kind), sim in itertools.product(pairs, split_config.simulations):
    out.append(Case(split, int(bg), str(kind),
                     int(split_config.camera_seed_base + pairs.index((bg, kind))), int(sim)))
  return out


def case_example(case: Case, scene_config) -> dict:
  """The world example of a case (numpy arrays; deterministic)."""
  from composed_vi.world import dataset, scene

  cam_config = dataclasses.replace(scene_config, camera_kinds=(case.camera_kind,))
  sc = scene.Scene(scene.sample_camera(jax.random.key(case.camera_seed), cam_config),
                   scene.sample_objects(jax.random.key(case.objects_seed), scene_config),
                   scene.sample_background(jax.random.key(case.background_seed)))
  ex = dataset.example_from_scene(sc, scene_config)
  return {k: np.asarray(v) for k, v in ex.items()}


# ----------------------------------------------------------------------------- methods


@smc.target_reward
def context_reward(x0, target):
  """PoE-SMC's reward: ``-0.5 mean_V (x0 - c)^2 / sigma_c^2`` with the target's context
  expert (its last expert) ``c``, ``sigma_c`` and visibility ``V``; ``(N,)``."""
  ctx = target.experts[-1]
  c, sigma = ctx.means[0], ctx.stds[0]
  vis = jnp.broadcast_to(ctx.support if ctx.support is not None else 1.0, c.shape)
  sq = jnp.sum(vis * jnp.square(x0 - c), axis=tuple(range(1, x0.ndim)))
  return -0.5 * sq / jnp.maximum(jnp.sum(vis), 1.0) / sigma**2


def sampler_options(method: Method, config) -> dict:
  """The options of ``method`` under an evaluation ``config`` (same levels for every method)."""
  opts = dict(num_levels=config.num_levels)
  if method.sampler != "ode":
    opts["inner_steps"] = config.inner_steps
    opts["precondition"] = config.precondition
  if method.sampler == "poe_smc":
    opts.update(reward=context_reward, reward_scale=config.poe_smc_reward_scale)
  if method.sampler == "ctrl_vi":  # the config's Ctrl-VI settings (chosen on the dev split)
    opts.update({k: v for k, v in config.ctrl_vi.to_dict().items() if v is not None})
  extra = dict(method.options)
  if extra.pop("anneal", True) is False:
    t_min = 0.02
    opts["levels"] = (t_min,)
    opts["inner_steps"] = config.num_levels * config.inner_steps
    opts["stein_min_t"] = 0.0  # every step is at t_min: none would run below a stein_min_t
    del opts["num_levels"]
  opts.update(extra)
  return opts


class Sampler:
  """Loads the backbones once and samples any method on any case (compiled once per method)."""

  def __init__(self, config, backbones: dict | None = None):
    self.config = config
    self.composition = world_demo.Composition.from_config(config).validate()
    self.backbones = backbones or world_demo.load_backbones(config.backbones, KINDS)
    self.fns = {k: tb.model_fn(spec) for k, (spec, _) in self.backbones.items()}

  def target(self, method: Method, example: dict):
    if method.experts == "composed":
      composition = dataclasses.replace(self.composition, **dict(method.composition))
      return world_demo.build_target(example, self.backbones, composition, self.fns,
                                     context=method.context)
    spec, params = self.backbones[method.experts]
    return compose([tb.expert(spec, params, example,
                              guidance_scale=self.composition.guidance_scale,
                              fn=self.fns[method.experts])])

  def __call__(self, method: Method, example: dict, key) -> np.ndarray:
    target = self.target(method, example)
    out, _ = sample(key, target, self.config.num_particles, method.sampler,
                    **sampler_options(method, self.config))
    return np.asarray(jax.block_until_ready(out))


# --------------------------------------------------------------------------------- run


def validate(config) -> tuple[list[Case], list[Method], dict]:
  """Checks everything that needs no compute; returns the cases and methods to run and the
  loaded backbones (``{kind: (spec, params)}``, for :class:`Sampler`)."""
  from composed_vi.sampling import build_options

  split = check_choice("split", config.split, tuple(config.splits.keys()))
  case_list = cases(config.splits[split], split)
  if config.max_cases:
    case_list = case_list[:check_positive_int("max_cases", config.max_cases)]
  names = [m for m in config.methods.split(",") if m]
  if not names:
    fail("methods", f"a comma-separated list of {sorted(METHODS)}", config.methods)
  methods = [METHODS[check_choice("methods", m, tuple(METHODS))] for m in names]
  check_positive_int("num_particles", config.num_particles)
  check_positive_int("num_levels", config.num_levels)
  check_positive_int("inner_steps", config.inner_steps)
  check_positive_int("gallery_cases", config.gallery_cases, minimum=0)
  check_positive_int("reuse_check_cases", config.reuse_check_cases)
  if config.reuse_from and not all(os.path.isfile(os.path.join(config.reuse_from, n))
                                   for n in ("config.json", "results.jsonl")):
    fail("reuse_from", "an evaluation workdir holding config.json and results.jsonl",
         config.reuse_from)
  world_demo.Composition.from_config(config).validate()
  for m in methods:
    try:
      build_options(m.sampler, **sampler_options(m, config))
    except ConfigError as e:
      raise ConfigError(f"methods[{m.name}]: {e}") from None
  return case_list, methods, world_demo.load_backbones(config.backbones, KINDS)


def method_settings(method: Method, config):
  """What the rows of ``method`` depend on besides the code and the backbones' weights: its
  resolved sampler options, its composition and the shared fields (``_ROW_FIELDS``); ``None``
  when ``config`` (for instance an older run's ``config.json``) lacks a field they need."""
  from composed_vi.sampling import build_options

  try:
    options = build_options(method.sampler, **sampler_options(method, config))
    composition = dataclasses.replace(world_demo.Composition.from_config(config),
                                      **dict(method.composition))
    shared = json.dumps({k: runner.config_dict(config[k]) if hasattr(config[k], "to_dict")
                         else config[k] for k in _ROW_FIELDS}, sort_keys=True, default=str)
  except (AttributeError, KeyError, TypeError, ConfigError):
    return None
  return options, composition, shared


def _same_metrics(a: dict, b: dict) -> str | None:
  """``None`` when every metric of ``a`` equals ``b``'s exactly (NaN equals NaN), else the
  first that differs, as text."""
  for k, v in a.items():
    w = b.get(k)
    if isinstance(v, float) and isinstance(w, float) and math.isnan(v) and math.isnan(w):
      continue
    if v != w:
      return f"{k} {w!r} there, {v!r} now"
  return None


def _sample_row(sampler, method: Method, case: Case, ci: int, example: dict, key, workdir: str,
                gallery, compiled: set) -> dict:
  """Samples ``method`` on one case and scores it: its ``results.jsonl`` row (the first call of
  a method in a process, tracked in ``compiled``, includes its compilation); the samples of a
  ``gallery`` case are written beside."""
  from composed_vi.world import metrics as wm

  t0 = time.perf_counter()
  samples = sampler(method, example, key)
  seconds = time.perf_counter() - t0
  metrics = wm.all_metrics(samples, example)
  row = dict(case=case.name, case_index=ci, method=method.name, seconds=seconds,
             includes_compile=method.name not in compiled, **metrics)
  compiled.add(method.name)
  if case.name in gallery:
    io.write_npz(os.path.join(workdir, "gallery", case.name, f"{method.name}.npz"),
                 samples=samples.astype(np.float16))
  return row


def reuse_rows(config, workdir: str, case_list, methods, done, sampler, scene_config,
               gallery, compiled: set):
  """Rows of ``config.reuse_from`` (an earlier evaluation workdir) for the methods whose
  settings (:func:`method_settings`) are the same in both runs, on the same cases.

  Each such method's first ``config.reuse_check_cases`` cases are sampled again and must give
  bit-identical metrics (which also checks the code and the backbones' weights); those rows
  are kept as new rows, the others are copied with ``reused_from`` set, and their gallery
  samples with them. A method that does not reproduce is logged and sampled afresh.
  """
  import ml_collections

  src = config.reuse_from
  paths = [os.path.join(src, n) for n in ("config.json", "results.jsonl")]

  with open(paths[0]) as f:
    old_config = ml_collections.ConfigDict(json.load(f))
  old_rows = {(r["case"], r["method"]): r for r in read_rows(paths[1])}
  index = {c.name: i for i, c in enumerate(case_list)}
  out = []
  for method in methods:
    settings = method_settings(method, config)
    if settings is None or method_settings(method, old_config) != settings:
      logging.info("reuse_from: %s has other settings there; not reused", method.name)
      continue
    todo = [c for c in case_list if (c.name, method.name) not in done
            and old_rows.get((c.name, method.name), {}).get("case_index") == index[c.name]]
    checked = []
    for case in todo[:config.reuse_check_cases]:
      ci = index[case.name]
      key = jax.random.fold_in(jax.random.key(config.seed), ci)
      row = _sample_row(sampler, method, case, ci, case_example(case, scene_config), key,
                        workdir, gallery, compiled)
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
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(shot, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
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
    key = jax.random.fold_in(jax.random.key(config.seed), ci)
    for method in pending:
      row = _sample_row(sampler, method, case, ci, example, key, workdir, gallery, compiled)
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
  from composed_vi.lab import evaluation_report

  return evaluation_report.write(workdir, config, case_list, methods, rows, scene_config)
