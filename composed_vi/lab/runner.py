"""One sampling run from a config: validate, shard, sample level by level, checkpoint, resume.

``run(config, workdir)`` is what ``experiments/main.py`` calls. Order of work:

1. validate every field and input file (problem, method options, mesh, workdir) -- a user
   error raises :class:`composed_vi.errors.ConfigError` before any compute or output;
2. refuse a workdir holding a run of a different config (naming the fields that differ);
3. take the workdir's lock (:mod:`composed_vi.lab.workdir_lock`: a second launch on a live
   run's workdir is refused, naming the holder), write ``config.json``, restore the newest
   intact checkpoint (damaged ones are skipped with a warning,
   :meth:`~composed_vi.lab.checkpoint.Checkpoints.restore_intact`) or initialise the particles;
4. run the levels one jitted call at a time (per-level progress with ETA), writing
   ``diagnostics.jsonl`` and an orbax checkpoint every ``checkpoint_every`` levels; each level
   checks that the particles and diagnostics are finite (:mod:`composed_vi.faults`: one
   reduction, fetched with the diagnostics) and stops naming the level, ``t`` and the expert
   before a bad state is checkpointed; a SIGTERM or SIGINT finishes the level, writes a
   checkpoint and stops as preempted (:mod:`composed_vi.lab.preemption`, exit code 75);
5. write ``samples.npz`` (``samples``: ``x0_hat`` at the last level, ``(N, *shape)``) and
   ``summary.json``.

Every file is written atomically (temporary file + rename) by process 0; checkpoints are written
by every process (orbax coordinates them). The result depends on the seed only: the same
samples on 1 device or a mesh of many (to float32 rounding of the sharded reductions), and
bit-identical after a resume.
"""

from __future__ import annotations

import json
import logging as pylogging
import math
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from composed_vi import distributed, faults, gmm, io, sampling
from composed_vi.errors import ConfigError, check_choice, check_positive_int, fail
from composed_vi.lab import cli, preemption, problems, workdir_lock
from composed_vi.lab.checkpoint import SamplerCheckpoints
from composed_vi.samplers import METHODS
from composed_vi.sampling import build_options

#: Fields that may change between a run and its resume (they do not change the samples beyond
#: float32 rounding of sharded reductions).
RESUMABLE_FIELDS = ("mesh", "checkpoint_every")


def flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, name + "."))
    else:
      out[name] = v
  return out


def config_dict(config) -> dict:
  """The resolved config as JSON-compatible data (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def config_diff(old: dict, new: dict, ignore=RESUMABLE_FIELDS) -> list[str]:
  """``["field: old -> new", ...]`` for every differing leaf field (sorted)."""
  a, b = flatten(old), flatten(new)
  diffs = []
  for name in sorted(set(a) | set(b)):
    if name in ignore:
      continue
    if a.get(name, "<absent>") != b.get(name, "<absent>"):
      diffs.append(f"{name}: {a.get(name, '<absent>')!r} -> {b.get(name, '<absent>')!r}")
  return diffs


#: ``config.sampler.mala`` as a flag gives it -> LangevinOptions.mala.
_MALA = {"auto": "auto", "true": True, "false": False}


def sampler_options(config) -> dict:
  """``config.num_levels`` plus the set (non-None) fields of ``config.sampler`` (every option
  of the method's options dataclass can be set there; ``configs/common.py``)."""
  opts = {k: v for k, v in config.sampler.to_dict().items() if v is not None}
  opts["num_levels"] = config.num_levels
  if "levels" in opts:
    opts["levels"] = tuple(opts["levels"])
  if isinstance(opts.get("mala"), str):
    opts["mala"] = _MALA[check_choice("sampler.mala", opts["mala"].lower(), tuple(_MALA))]
  return opts


def check_workdir(workdir: str) -> str:
  """Refuses a ``workdir`` that cannot be created or written (probed, so it holds for root)."""
  if not workdir:
    fail("workdir", "a folder path", workdir)
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    fail("workdir", "a folder (or a path where one can be created)", f"{workdir} (a file)")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    fail("workdir", "a path below a folder", f"{workdir} ({parent} is a file)")
  try:
    with tempfile.TemporaryFile(dir=parent):
      pass
  except OSError as e:
    fail("workdir", "a writable folder", f"{workdir} ({parent}: {e.strerror})")
  return path


def check_previous_run(workdir: str, resolved: dict, resumable=RESUMABLE_FIELDS) -> None:
  """Refuses a workdir whose ``config.json`` differs from ``resolved`` (naming the fields)
  in any field but the ``resumable`` ones."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  diffs = config_diff(old, resolved, ignore=resumable)
  if diffs:
    raise ConfigError(
        f"workdir: expected a new folder or one holding a run of the same config, got "
        f"{workdir} whose run differs in {len(diffs)} field(s): " + "; ".join(diffs)
        + " (use a new --workdir, or pass the old values to resume)")


class Progress:
  """Per-level progress with ETA on the terminal (a rewritten line on a TTY)."""

  def __init__(self, total: int, start: int, stream=None):
    self.total, self.start = total, start
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.t0 = time.perf_counter()
    self.t1 = None  # end of the first level (which includes compilation)
    self.every = 1 if self.tty else max(1, total // 16)

  def update(self, level: int, t: float) -> str:
    now = time.perf_counter()
    done = level - self.start
    elapsed = now - self.t0
    if self.t1 is None:
      self.t1 = now
    rate = (now - self.t1) / (done - 1) if done > 1 else elapsed
    eta = rate * (self.total - level)
    line = (f"level {level}/{self.total} t={t:.4f} | {rate:.3f} s/level | "
            f"elapsed {elapsed:.1f} s | ETA {eta:.1f} s")
    if distributed.is_primary() and (self.tty or level % self.every == 0
                                     or level == self.total):
      self.stream.write(("\r" + line + " " * 4) if self.tty else line + "\n")
      if self.tty and level == self.total:
        self.stream.write("\n")
      self.stream.flush()
    return line


def validate(config):
  """Every check that needs no compute: returns ``(problem, method, options, mesh)``."""
  check_choice("experiment", config.experiment, problems.PROBLEMS)
  check_choice("method", config.method, METHODS)
  num_particles = check_positive_int("num_particles", config.num_particles)
  check_positive_int("num_levels", config.num_levels)
  check_positive_int("checkpoint_every", config.checkpoint_every, minimum=0)
  if not isinstance(config.seed, int) or isinstance(config.seed, bool):
    fail("seed", "an integer", config.seed)
  try:
    options = build_options(config.method, **sampler_options(config))
  except ConfigError as e:
    raise ConfigError(f"sampler: {e}") from None
  mesh = distributed.make_mesh(config.mesh, num_particles)
  problem = problems.PROBLEMS[config.experiment](config, mesh=mesh)
  try:  # options that read the target (e.g. feature_map='target_mask')
    options.check_target(problem.target)
  except ConfigError as e:
    raise ConfigError(f"sampler: {e}") from None
  return problem, options, mesh


def run(config, workdir: str) -> dict:
  """Runs ``config`` into ``workdir`` (resuming from its latest checkpoint); returns a summary."""
  problem, options, mesh = validate(config)
  workdir = check_workdir(workdir)
  resolved = config_dict(config)
  check_previous_run(workdir, resolved)

  primary = distributed.is_primary()
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir):
    if primary:
      io.write_json(os.path.join(workdir, "config.json"), resolved)
    if primary:
      handler = log_to(os.path.join(workdir, "log.txt"))
    else:  # process 0 logs the progress; the others' terminals would repeat it every level
      handler = None
      _filter_terminal()
    try:
      return _sample(config, workdir, problem, options, mesh)
    finally:
      if handler is not None:
        logging.get_absl_logger().removeHandler(handler)
        handler.close()


def _not_progress(record) -> bool:
  """Progress lines go to the log file; the terminal has its own progress line."""
  return not getattr(record, "progress", False)


class _LogFile(pylogging.FileHandler):
  """The run's ``log.txt``; a write it cannot make (full disk) stops it with one warning on
  stderr instead of logging's traceback per record."""

  def handleError(self, record):  # noqa: N802 - logging.Handler API
    del record
    if not getattr(self, "_failed", False):
      self._failed = True
      print(f"warning: stopped writing {self.baseFilename}: {sys.exc_info()[1]}",
            file=sys.stderr)

  def emit(self, record):
    if not getattr(self, "_failed", False):
      super().emit(record)

  def flush(self):
    try:
      super().flush()
    except OSError:
      self.handleError(None)

  def close(self):
    try:
      super().close()
    except OSError:
      self.handleError(None)


def log_to(path: str):
  """Adds ``path`` as a log file of the absl logger (libraries' chatter filtered out)."""
  handler = _LogFile(path)
  handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  handler.addFilter(cli.quiet_libraries)
  logging.get_absl_logger().addHandler(handler)
  _filter_terminal()
  return handler


def _filter_terminal() -> None:
  """Libraries' chatter and the per-level progress lines kept off the terminal's log."""
  absl_handler = logging.get_absl_handler()
  for f in (cli.quiet_libraries, _not_progress):
    if f not in absl_handler.filters:
      absl_handler.addFilter(f)
  logging.set_verbosity(logging.INFO)


def _sample(config, workdir, problem, options, mesh) -> dict:
  n = config.num_particles
  run = sampling.driver(config.method, options, n, mesh, donate=False)
  levels = run.levels
  num_levels = int(levels.shape[0])
  shape = problem.target.shape
  logging.info("run: %s / %s, N=%d, %d levels, latent %s, mesh %s on %d device(s), %d "
               "process(es)", config.experiment, config.method, n, num_levels, shape,
               dict(mesh.shape), mesh.size, jax.process_count())
  target = distributed.replicate(problem.target, mesh)
  key = distributed.replicate(jax.random.key(config.seed), mesh)

  state = run.init(key, target)
  diagnostics: list[dict] = []
  ckpts = SamplerCheckpoints(os.path.join(workdir, "checkpoints"))
  host_levels = np.asarray(levels)
  try:
    found = ckpts.restore_intact(state)
    level = 0
    if found is not None:
      level, state, diagnostics = found
      logging.info("resumed from the checkpoint at level %d", level)
    progress = Progress(num_levels, level)
    diag_path = os.path.join(workdir, "diagnostics.jsonl")
    every = config.checkpoint_every
    with preemption.Watcher(ckpts.manager) as watcher:
      while level < num_levels:
        start = time.perf_counter()
        previous = state  # not donated (donate=False above): faults.blame reads it
        state, info = run.step(state, target)
        finite = faults.all_finite(state.particles)
        info = {k: float(distributed.local_value(v)) for k, v in info._asdict().items()}
        level += 1
        _check_finite(bool(finite), info, level, float(host_levels[level - 1]), previous,
                      target, problem, ckpts)
        record = dict(level=level, seconds=time.perf_counter() - start, **info)
        diagnostics.append(record)
        line = progress.update(level, info.get("t", float("nan")))
        logging.get_absl_logger().info(line, extra={"progress": True})
        stop = level < num_levels and watcher.should_stop(level)
        if stop or (every and (level % every == 0 or level == num_levels)):
          ckpts.save(level, state, diagnostics)
          if distributed.is_primary():
            _write_jsonl(diag_path, diagnostics)
        if stop:
          raise preemption.PreemptedError(level, num_levels, workdir)
    if distributed.is_primary():
      _write_jsonl(diag_path, diagnostics)
  finally:
    ckpts.close()

  samples = distributed.to_host(run.x0(state, target))
  summary = dict(num_particles=n, num_levels=num_levels, shape=list(shape),
                 finite=bool(np.all(np.isfinite(samples))),
                 seconds=float(sum(d["seconds"] for d in diagnostics)))
  if problem.exact is not None:
    covered, on_mode = gmm.mode_coverage(jnp.asarray(samples), problem.exact)
    summary.update(modes_covered=float(covered), num_modes=int(problem.exact.means.shape[0]),
                   fraction_on_mode=float(on_mode))
  if distributed.is_primary():
    io.write_npz(os.path.join(workdir, "samples.npz"), samples=samples,
                 levels=np.asarray(levels))
  if problem.decode is not None:  # e.g. the VAE: latents -> videos (B, T, H, W, 3) in [-1, 1]
    videos = distributed.to_host(problem.decode(samples))
    summary["videos_shape"] = list(videos.shape)
    if distributed.is_primary():
      io.write_npz(os.path.join(workdir, "videos.npz"), videos=videos)
  if problem.report is not None and distributed.is_primary():
    summary.update(problem.report(samples, workdir) or {})
  if distributed.is_primary():
    io.write_json(os.path.join(workdir, "summary.json"), summary)
  logging.info("done: %s", summary)
  return summary


def _check_finite(finite: bool, info: dict, level: int, t: float, previous, target, problem,
                  ckpts) -> None:
  """Raises :class:`composed_vi.faults.NonFiniteError` for non-finite particles (naming the
  expert that returns NaN or inf at the level's starting particles) or infinite diagnostics,
  before the bad state can be checkpointed."""
  bad = faults.infinite_diagnostics(info)
  if finite and not bad:
    return
  last = ckpts.latest_step()
  detail = ("no checkpoint was written" if last is None else
            f"the newest checkpoint (level {last}) is the last good one")
  if not finite:
    expert = faults.blame(target, previous.particles, t, problem.expert_names)
    raise faults.NonFiniteError(level, t, expert, detail=detail)
  raise faults.NonFiniteError(level, t, where=f"diagnostics ({', '.join(bad)})",
                              detail=detail)


def _write_jsonl(path: str, records: list[dict]) -> None:
  def clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v

  io.write_text(path, "".join(json.dumps({k: clean(v) for k, v in r.items()}) + "\n"
                              for r in records))
