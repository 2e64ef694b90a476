"""Shared pieces of the annealed samplers: options, the sampler constructor, the level loop.

Every method is a module with a pair of pure functions over NamedTuple states:
``init(key, target, num_particles, options) -> State`` and
``step(state, target, levels, options, mesh=None) -> (State, Info)``, one call per noise level.
:func:`make_sampler` closes over the options, their levels and the mesh (optax's
``GradientTransformation`` / BlackJAX's ``SamplingAlgorithm`` pattern) and returns a
:class:`Sampler` whose ``init(key, target, num_particles)`` and ``step(state, target)`` keep the
target an argument: it can hold billions of parameters, so it is a jit argument, never a
constant baked into the compiled program. The noise level is read from the state's ``level``
index, so running the levels in chunks (for checkpoints) never recompiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from composed_vi import schedules
from composed_vi.errors import (
  check_positive_float,
  check_positive_int,
  check_schedule,
  fail,
)


@dataclasses.dataclass(frozen=True)
class AnnealingOptions:
  """Options common to every method.

  Attributes:
    num_levels: number of noise levels ``K`` (ignored when ``levels`` is given).
    t_max: first (noisiest) level, in (0, 1].
    t_min: last level, in (0, t_max]; samples are ``x0_hat`` there.
    shift: scheduler time shift (Wan uses 3.0-5.0 at 480p; 1.0 is no shift).
    levels: explicit decreasing levels in (0, 1], overriding the four above.
    inner_steps: correction steps per level (``J``).
    step_size: ``eta``; the step at level ``t`` is ``eta * t^2`` (the score scales like 1/t).
    precondition: divide the step per coordinate by the target's total weight ``W`` (so the
      step at level ``t`` is ``eta * t^2 / W``; see :func:`step_sizes`).
  """

  num_levels: int = 128
  t_max: float = 1.0
  t_min: float = 0.02
  shift: float = 1.0
  levels: Any = None
  inner_steps: int = 4
  step_size: float = 0.1
  precondition: bool = False

  def validate(self):
    check_positive_int("num_levels", self.num_levels)
    if not isinstance(self.precondition, bool):
      fail("precondition", "True or False", self.precondition)
    check_positive_int("inner_steps", self.inner_steps, minimum=0)
    check_positive_float("step_size", self.step_size)
    for name in ("t_max", "t_min"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and 0 < v <= 1):
        fail(name, "a number in (0, 1]", v)
    if self.t_min > self.t_max:
      fail("t_min", f"a level <= t_max = {self.t_max}", self.t_min)
    check_positive_float("shift", self.shift)
    if self.levels is not None:
      check_schedule("levels", self.levels)

  def check_target(self, target) -> None:
    """Refuses (``ConfigError``, naming the option) a target these options cannot sample,
    before any compute. Every option that reads the target checks it here."""
    del target

  def schedule(self) -> jax.Array:
    if self.levels is not None:
      return jnp.asarray(check_schedule("levels", self.levels), jnp.float32)
    return jnp.asarray(schedules.flow_levels(self.num_levels, self.t_max, self.t_min,
                                             self.shift))


class Sampler(NamedTuple):
  """A method with its options, levels and mesh closed over.

  Attributes:
    init: ``init(key, target, num_particles) -> State`` (particles ``(N, *shape)``).
    step: ``step(state, target) -> (State, Info)``: one noise level.
    levels: the ``(K,)`` float32 noise levels, decreasing.
    options: the validated options.
  """

  init: Callable
  step: Callable
  levels: jax.Array
  options: Any


def make_sampler(module, options, mesh=None) -> Sampler:
  """Closes ``module``'s ``init`` / ``step`` over ``options``, their levels and ``mesh``."""
  levels = options.schedule()

  def init(key, target, num_particles: int):
    return module.init(key, target, num_particles, options)

  def step(state, target):
    return module.step(state, target, levels, options, mesh=mesh)

  return Sampler(init, step, levels, options)


def make_options(cls, method: str, options: dict):
  """Builds ``cls(**options)`` with an error naming unknown options."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(options) - names)
  if unknown:
    fail(f"options for method {method!r}", f"names among {sorted(names)}",
         f"unknown option(s) {unknown}")
  opts = cls(**options)
  opts.validate()
  return opts


def init_particles(key, target, num_particles: int) -> jax.Array:
  """Draws ``N`` particles from ``pi_1 = N(0, I / W)``, shape ``(N, *shape)`` float32."""
  check_positive_int("num_particles", num_particles)
  noise = jax.random.normal(key, (num_particles,) + tuple(target.shape), jnp.float32)
  return noise * target.init_std()


def step_sizes(target, t, options: AnnealingOptions):
  """The correction step at level ``t``: ``eta t^2``, or ``eta t^2 / W`` per coordinate.

  The score of ``pi_t = prod_i p_t^i ** m_i`` scales like ``W / t^2`` where the weights sum to
  ``W``: at high noise ``pi_t`` is ``N(., t^2 / W)``, so a step of ``eta t^2`` contracts the
  particles ``W`` times faster where more experts (or a heavier one) speak. Dividing by ``W``
  is a constant diagonal preconditioner: it keeps each sampler's target (SVGD with the
  matrix-valued kernel ``k(x, y) diag(1 / W)``, preconditioned Langevin) and gives every
  coordinate the stiffness of one expert. Returns a scalar, or an array of the event shape
  (targets without ``total_weight`` count as ``W = 1``).
  """
  eta = options.step_size * t**2
  if not options.precondition:
    return eta
  total = getattr(target, "total_weight", None)
  if total is None:
    return eta
  return eta / total


def level_times(levels: jax.Array, level):
  """``(t_k, t_next)`` for level index ``level``; the last level transports nowhere."""
  last = levels.shape[0] - 1
  t = levels[level]
  t_next = levels[jnp.minimum(level + 1, last)]
  return t, t_next


def run_levels(step: Callable, state, num: int):
  """Runs ``num`` levels of ``step(state) -> (state, info)`` under one ``lax.scan``."""
  def body(s, _):
    return step(s)

  return jax.lax.scan(body, state, None, length=num)


def transport(target, x, t, t_next):
  """Euler step of ``v_bar`` from ``t`` to ``t_next`` (identity at the last level)."""
  def move(x):
    v, _ = target.evaluate(x, t)
    return x + (t_next - t) * v

  return jax.lax.cond(t_next < t, move, lambda x: x, x)
