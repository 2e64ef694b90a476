"""Velocity-averaging baseline: Euler or Heun integration of ``v_bar`` (Composable Diffusion).

With one expert this is plain single-backbone sampling.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from composed_vi.errors import check_choice
from composed_vi.samplers import base


@dataclasses.dataclass(frozen=True)
class ODEOptions(base.AnnealingOptions):
  """Options of ``ode``. ``inner_steps`` and ``step_size`` are unused.

  Attributes:
    solver: ``'euler'`` or ``'heun'``.
  """

  solver: str = "euler"

  def validate(self):
    super().validate()
    check_choice("solver", self.solver, ("euler", "heun"))


class ODEState(NamedTuple):
  particles: jax.Array
  level: jax.Array
  key: jax.Array


class ODEInfo(NamedTuple):
  t: jax.Array
  velocity_norm: jax.Array


def init(key, target, num_particles: int, options) -> ODEState:
  k_init, k_state = jax.random.split(key)
  x = base.init_particles(k_init, target, num_particles)
  return ODEState(x, jnp.zeros((), jnp.int32), k_state)


def step(state: ODEState, target, levels, options, mesh=None):
  del mesh  # particle layout is set by the caller; no explicit collectives here
  t, t_next = base.level_times(levels, state.level)
  x = state.particles
  v, _ = target.evaluate(x, t)
  dt = t_next - t
  if options.solver == "heun":
    def heun(x):
      v2, _ = target.evaluate(x + dt * v, t_next)
      return x + dt * 0.5 * (v + v2)
    x = jax.lax.cond(dt < 0, heun, lambda x: x, x)
  else:
    x = x + dt * v
  norm = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1)))
  return ODEState(x, state.level + 1, state.key), ODEInfo(t, norm)
