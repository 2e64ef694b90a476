"""Annealed Langevin baseline (Reduce-Reuse-Recycle): ULA, or MALA when the target has an energy.

At each level ``t_k``: ``J`` steps ``x <- x + eta s + sqrt(2 eta) xi`` with ``eta = step_size t^2``
(MALA adds the Metropolis correction), then transport to ``t_{k+1}`` with ``v_bar``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from composed_vi.errors import check_choice, fail
from composed_vi.samplers import base


@dataclasses.dataclass(frozen=True)
class LangevinOptions(base.AnnealingOptions):
  """Options of annealed Langevin (with those of :class:`AnnealingOptions`).

  Attributes:
    mala: ``'auto'`` (MALA when every expert has an energy and weights are scalars, else ULA),
      ``True`` (MALA, an error if the target has no energy) or ``False`` (ULA).
  """

  mala: object = "auto"

  def validate(self):
    super().validate()
    check_choice("mala", self.mala, ("auto", True, False))

  def check_target(self, target) -> None:
    """``mala=True`` needs a target whose experts all have energies (and scalar weights)."""
    use_mala(target, self)


class LangevinState(NamedTuple):
  particles: jax.Array
  level: jax.Array
  key: jax.Array


class LangevinInfo(NamedTuple):
  t: jax.Array
  acceptance: jax.Array  # mean MALA acceptance at the level (1 for ULA)
  score_norm: jax.Array  # RMS score norm per particle


def use_mala(target, options) -> bool:
  if options.mala is True and not target.has_log_prob:
    fail("mala", "a target whose experts all have energies and scalar weights", True)
  return bool(options.mala is True or (options.mala == "auto" and target.has_log_prob))


def init(key, target, num_particles: int, options) -> LangevinState:
  k_init, k_state = jax.random.split(key)
  x = base.init_particles(k_init, target, num_particles)
  return LangevinState(x, jnp.zeros((), jnp.int32), k_state)


def langevin_steps(key, target, x, t, options):
  """``inner_steps`` ULA/MALA steps at level ``t``; returns ``(x, acceptance, score_norm)``."""
  eta = base.step_sizes(target, t, options)
  mala = use_mala(target, options)
  n = x.shape[0]
  axes = tuple(range(1, x.ndim))

  def log_q(x_to, x_from, s_from):  # log density of the Langevin proposal, up to a constant
    return -jnp.sum(jnp.square(x_to - x_from - eta * s_from) / (4 * eta), axis=axes)

  def one(carry, k):
    x, acc, _ = carry
    kn, ku = jax.random.split(k)
    s = target.score(x, t)
    prop = x + eta * s + jnp.sqrt(2 * eta) * jax.random.normal(kn, x.shape, x.dtype)
    if mala:
      s_prop = target.score(prop, t)
      log_a = (target.log_prob(prop, t) - target.log_prob(x, t)
               + log_q(x, prop, s_prop) - log_q(prop, x, s))
      accept = jnp.log(jax.random.uniform(ku, (n,))) < log_a
      prop = jnp.where(accept.reshape((n,) + (1,) * (x.ndim - 1)), prop, x)
      acc = acc + jnp.mean(accept.astype(jnp.float32))
    else:
      acc = acc + 1.0
    norm = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(s), axis=axes)))
    return (prop, acc, norm), None

  keys = jax.random.split(key, max(options.inner_steps, 1))
  init = (x, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
  if options.inner_steps == 0:
    return x, jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
  (x, acc, norm), _ = jax.lax.scan(one, init, keys[: options.inner_steps])
  return x, acc / options.inner_steps, norm


def step(state: LangevinState, target, levels, options, mesh=None):
  del mesh  # particle layout is set by the caller; no explicit collectives here
  t, t_next = base.level_times(levels, state.level)
  key = jax.random.fold_in(state.key, state.level)
  x, acc, norm = langevin_steps(key, target, state.particles, t, options)
  x = base.transport(target, x, t, t_next)
  return LangevinState(x, state.level + 1, state.key), LangevinInfo(t, acc, norm)
