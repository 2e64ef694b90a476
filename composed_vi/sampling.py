"""``cvi.sample`` and the one level-loop driver that it and the launcher share.

:func:`driver` compiles a method's ``init``, its level loop and the final ``x0_hat`` once per
(method, options, number of particles, mesh): this is the only place that constrains the
particles' sharding and donates their buffers. ``cvi.sample`` runs every level in one call;
the launcher (:mod:`composed_vi.lab.runner`) runs them one level at a time, with checkpoints
between calls, through the same compiled functions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi import distributed, faults, samplers
from composed_vi.composition import ComposedTarget, check_weight, compose
from composed_vi.errors import check_choice, check_positive_int, fail
from composed_vi.experts import Expert
from composed_vi.samplers import METHODS, base


def build_options(method: str, **options):
  """Validated, hashable options of ``method`` (unknown names are refused by name)."""
  check_choice("method", method, METHODS)
  _, cls = METHODS[method]
  opts = base.make_options(cls, method, options)
  if opts.levels is not None:  # hashable, so the options can be a static jit argument
    opts = dataclasses.replace(opts, levels=tuple(float(t) for t in opts.levels))
  return opts


def with_context(target: ComposedTarget, context: Expert | None, weight=1.0) -> ComposedTarget:
  """Adds a context expert (METHOD.md section 5) to a composed target."""
  if context is None:
    return target
  extra = compose([context], [weight])
  if tuple(context.shape) != target.shape:
    fail("context.shape", f"{target.shape} (the target's shape)", tuple(context.shape))
  return ComposedTarget(experts=target.experts + extra.experts,
                        weights=target.weights + extra.weights,
                        scalar_weights=target.scalar_weights and extra.scalar_weights,
                        repulsion_mask=target.repulsion_mask, pinned_mask=target.pinned_mask)


# ------------------------------------------------------------------------------- the driver

_STATIC = ("method", "options", "mesh")


@functools.partial(jax.jit, static_argnames=_STATIC + ("num_particles",))
def _init(key, target, *, method, options, mesh, num_particles):
  state = samplers.make(method, options, mesh).init(key, target, num_particles)
  return state._replace(particles=distributed.constrain_particles(state.particles, mesh))


def _advance(state, target, *, method, options, mesh, num_levels):
  sampler = samplers.make(method, options, mesh)

  def step(s):
    s, info = sampler.step(s, target)
    return s._replace(particles=distributed.constrain_particles(s.particles, mesh)), info

  if num_levels is None:  # one level, no scan around it (the launcher's per-level call)
    return step(state)
  return base.run_levels(step, state, num_levels)


_advance_kept = jax.jit(_advance, static_argnames=_STATIC + ("num_levels",))
_advance_donated = jax.jit(_advance, static_argnames=_STATIC + ("num_levels",),
                           donate_argnames=("state",))


@functools.partial(jax.jit, static_argnames=_STATIC)
def _x0(particles, target, *, method, options, mesh):
  del method
  t = options.schedule()[-1]  # a constant of the program, as in the level loop
  return distributed.constrain_particles(target.x0(particles, t), mesh)


class Driver(NamedTuple):
  """A method compiled for one (options, number of particles, mesh).

  Attributes:
    init: ``init(key, target) -> state`` (particles ``(N, *shape)``, in the particle layout).
    step: ``step(state, target) -> (state, info)``: the next level.
    advance: ``advance(state, target, num_levels) -> (state, info)``: the next ``num_levels``
      levels under one ``lax.scan``; ``info`` has a leading level axis.
    Both donate the input state's buffers where the backend supports it (not on CPU): do not
    reuse a state passed to them.
    x0: ``x0(state, target) -> samples``: ``x0_hat`` at the last level, ``(N, *shape)``.
    levels: the ``(K,)`` noise levels.
    options: the validated options.
  """

  init: Callable
  step: Callable
  advance: Callable
  x0: Callable
  levels: jax.Array
  options: Any


def driver(method: str, options, num_particles: int, mesh=None, donate: bool | None = None
           ) -> Driver:
  """The compiled level loop of ``method`` with validated ``options`` (:func:`build_options`).

  ``mesh``: particles on its ``data`` axis, the latent on ``model``
  (:func:`composed_vi.distributed.make_mesh`); ``donate``: donate the state's buffers between
  levels (default: on every backend but CPU, which does not support donation).
  """
  num_particles = check_positive_int("num_particles", num_particles)
  levels = options.schedule()
  static = dict(method=method, options=options, mesh=mesh)
  advance_fn = _advance_kept
  if donate or (donate is None and jax.default_backend() != "cpu"):
    advance_fn = _advance_donated

  def init(key, target):
    return _init(key, target, num_particles=num_particles, **static)

  def step(state, target):
    return advance_fn(state, target, num_levels=None, **static)

  def advance(state, target, num_levels: int):
    return advance_fn(state, target, num_levels=int(num_levels), **static)

  def x0(state, target):
    return _x0(state.particles, target, **static)

  return Driver(init, step, advance, x0, levels, options)


# ----------------------------------------------------------------------------- cvi.sample


def check_target(target) -> ComposedTarget:
  """``target`` as a :class:`ComposedTarget` (a single expert is composed alone)."""
  if isinstance(target, Expert):
    target = compose([target])
  if not isinstance(target, ComposedTarget):
    fail("target", "a ComposedTarget (cvi.compose) or an Expert", type(target).__name__)
  return target


def sample(key, target, num_particles: int, method: str = "ctrl_vi", *, context=None,
           context_weight=1.0, mesh=None, check_finite: bool = False, **options):
  """Samples a population from a composed target.

  Args:
    key: a JAX PRNG key.
    target: a :class:`ComposedTarget` (from :func:`compose`) or a single expert.
    num_particles: ``N >= 1``.
    method: ``'ctrl_vi'``, ``'annealed_langevin'``, ``'poe_smc'`` or ``'ode'``.
    context: optional context expert (:func:`composed_vi.experts.Context`) added to the target.
    context_weight: its weight (a scalar or a mask).
    mesh: optional ``("data", "model")`` mesh (:func:`composed_vi.distributed.make_mesh`):
      particles on ``data``, the latent on ``model``; the same samples as without it, to
      float32 rounding of the sharded reductions.
    check_finite: raise :class:`composed_vi.faults.NonFiniteError` when the particles, the
      samples or a diagnostic are not finite, naming the first level where it happened, its
      ``t`` and the expert that returned NaN or inf there. The check costs one reduction at the
      end; only a failed check replays the levels one at a time to find the level (the same
      result, deterministic given ``key``).
    **options: keyword options of the method, see ``composed_vi.samplers.*Options``.

  Returns:
    ``(samples, info)``: ``samples`` ``(N, *shape)`` float32 (``x0_hat`` at the last level),
    ``info`` a NamedTuple of per-level diagnostics with a leading level axis.
  """
  target = check_target(target)
  check_positive_int("num_particles", num_particles)
  if context is not None:
    if not isinstance(context, Expert):
      fail("context", "an Expert such as cvi.experts.Context(...)", type(context).__name__)
    check_weight(0, context_weight, target.shape, field="context_weight")
  opts = build_options(method, **options)
  if mesh is not None and num_particles % mesh.shape["data"]:
    fail("num_particles", f"a multiple of the mesh's data axis ({mesh.shape['data']})",
         num_particles)
  target = with_context(target, context, context_weight)
  opts.check_target(target)  # options that read the target are checked before compute
  run = driver(method, opts, int(num_particles), mesh, donate=False if check_finite else None)
  state = run.init(key, target)
  state, info = run.advance(state, target, int(run.levels.shape[0]))
  samples = run.x0(state, target)
  if check_finite:
    # Per level: an infinite diagnostic (NaN means "not computed" there).
    infinite = np.asarray(jnp.stack([jnp.isinf(v.reshape(v.shape[0], -1)).any(axis=1)
                                     for v in info]).any(axis=0))
    if infinite.any() or not bool(faults.all_finite((state.particles, samples))):
      _locate_fault(run, key, target, infinite)
  return samples, info


def _locate_fault(run, key, target, infinite):
  """Replays the levels one at a time to the first non-finite one and raises there;
  ``infinite``: per level, whether a diagnostic was infinite."""
  levels = np.asarray(run.levels)
  state = run.init(key, target)
  for k in range(levels.shape[0]):
    previous = state
    state, _ = run.step(state, target)
    if not bool(faults.all_finite(state.particles)):
      raise faults.NonFiniteError(k + 1, levels[k], faults.blame(target, previous.particles,
                                                                 levels[k]))
    if infinite[k]:
      raise faults.NonFiniteError(k + 1, levels[k], where="diagnostics")
  raise faults.NonFiniteError(levels.shape[0], levels[-1],
                              faults.blame(target, state.particles, levels[-1]),
                              where="samples (x0_hat at the last level)")
