"""Product-of-experts SMC baseline: annealed Langevin, reward log-weights, ESS resampling.

The log-weight of a particle gains ``reward_scale * (r(x0_hat_k) - r(x0_hat_{k-1}))`` at each
level (a telescoping twist, so the final population is weighted by ``exp(scale * r(x0))``), and
the population is resampled (systematic) whenever ``ESS < ess_threshold * N``, and at the last
level whenever the weights are not uniform, so the returned particles are tilted by the reward.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from composed_vi import paths
from composed_vi.errors import check_positive_float, fail
from composed_vi.samplers import base, langevin


@dataclasses.dataclass(frozen=True)
class SMCOptions(langevin.LangevinOptions):
  """Options of ``poe_smc`` (with those of annealed Langevin).

  Attributes:
    reward: ``reward(x0_hat) -> (N,)`` log-reward, or ``None`` (uniform weights). A reward made
      by :func:`target_reward` is called as ``reward(x0_hat, target)``: it can read its data
      (e.g. a context) from the traced target, so one compiled sampler serves many targets.
    reward_scale: inverse temperature of the reward.
    ess_threshold: resample when the effective sample size falls below this fraction of N.
  """

  reward: Any = None
  reward_scale: float = 1.0
  ess_threshold: float = 0.5

  def validate(self):
    super().validate()
    if self.reward is not None and not callable(self.reward):
      fail("reward", "a callable reward(x0_hat) -> (N,) or None", self.reward)
    check_positive_float("reward_scale", self.reward_scale, allow_zero=True)
    if not 0 <= self.ess_threshold <= 1:
      fail("ess_threshold", "a fraction in [0, 1]", self.ess_threshold)


class SMCState(NamedTuple):
  particles: jax.Array
  level: jax.Array
  key: jax.Array
  log_weights: jax.Array  # (N,)
  reward: jax.Array  # (N,) scaled reward at the previous level


class SMCInfo(NamedTuple):
  t: jax.Array
  ess: jax.Array  # effective sample size before any resampling at this level
  resampled: jax.Array  # bool
  acceptance: jax.Array


def target_reward(fn):
  """Marks ``fn(x0_hat, target) -> (N,)`` as a reward that reads the target (returns ``fn``)."""
  fn.uses_target = True
  return fn


def init(key, target, num_particles: int, options) -> SMCState:
  k_init, k_state = jax.random.split(key)
  x = base.init_particles(k_init, target, num_particles)
  zeros = jnp.zeros((num_particles,), jnp.float32)
  return SMCState(x, jnp.zeros((), jnp.int32), k_state, zeros, zeros)


def effective_sample_size(log_weights):
  w = jax.nn.softmax(log_weights)
  return 1.0 / jnp.sum(w * w)


def systematic_resample(key, log_weights):
  """Indices of a systematic resampling of ``N`` particles."""
  n = log_weights.shape[0]
  w = jax.nn.softmax(log_weights)
  u = (jax.random.uniform(key, ()) + jnp.arange(n)) / n
  return jnp.clip(jnp.searchsorted(jnp.cumsum(w), u), 0, n - 1)


def step(state: SMCState, target, levels, options, mesh=None):
  del mesh  # particle layout is set by the caller; no explicit collectives here
  t, t_next = base.level_times(levels, state.level)
  key = jax.random.fold_in(state.key, state.level)
  k_move, k_res = jax.random.split(key)
  x, acc, _ = langevin.langevin_steps(k_move, target, state.particles, t, options)
  v, _ = target.evaluate(x, t)
  if options.reward is not None:
    x0 = paths.x0_from_velocity(x, t, v)
    args = (x0, target) if getattr(options.reward, "uses_target", False) else (x0,)
    r = options.reward_scale * options.reward(*args).astype(jnp.float32)
  else:
    r = state.reward
  logw = state.log_weights + r - state.reward
  ess = effective_sample_size(logw)
  n = x.shape[0]
  # The last level always resamples non-uniform weights, so the output carries the reward.
  last = t_next >= t
  do = (ess < options.ess_threshold * n) | (last & (ess < n * (1 - 1e-6)))
  idx = jnp.where(do, systematic_resample(k_res, logw), jnp.arange(n))
  x, v, r = x[idx], v[idx], r[idx]
  logw = jnp.where(do, jnp.zeros_like(logw), logw)
  x = jnp.where(t_next < t, x + (t_next - t) * v, x)
  new = SMCState(x, state.level + 1, state.key, logw, r)
  return new, SMCInfo(t, ess, do, acc)
