"""Ctrl-VI: annealed, step-wise KL minimisation with Stein variational gradient descent.

At each level ``t_k``: ``J`` SVGD steps towards ``pi_{t_k}`` (closed-form RBF kernel update,
:mod:`composed_vi.kernels`), then transport to ``t_{k+1}`` with ``v_bar`` (METHOD.md section 4).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from composed_vi import kernels, paths, schedules
from composed_vi.errors import check_choice, check_positive_float, check_positive_int, fail
from composed_vi.samplers import base

FEATURE_MAPS = ("identity", "pool", "projection", "x0", "target_mask")
STEIN_REGIONS = ("all", "target_mask", "unpinned")
STEP_RULES = ("stiffness", "noise")


@dataclasses.dataclass(frozen=True)
class CtrlVIOptions(base.AnnealingOptions):
  """Options of Ctrl-VI (with those of :class:`AnnealingOptions`).

  Defaults were chosen on the dev half of the exact-target study's seeds (RESULTS.md): one
  setting for both the many-particle / low-dimension and the few-particle / high-dimension
  regimes. The default drive is textbook SVGD's, whose mean-field fixed point is the level's
  target itself (docs/method.md); the others converge to the target deconvolved by the kernel
  and are kept as ablations.

  Attributes:
    step_size: ``eta``, in units of relaxation per step (``step_rule``).
    step_rule: ``'stiffness'`` (default): the step at level ``t`` is
      ``eta * t^2 / (W * m)`` per coordinate, where ``W / t^2`` bounds the stiffness
      ``-grad^2 log pi_t`` of the composed target (each expert's noisy marginal is at most
      ``1 / t^2`` stiff) and ``m = (1/N^2) sum_ij K_ij`` is the kernel mass the drive gives
      each score; the stiffest direction the target can have then relaxes by ``eta`` per
      step, in both regimes (``m ~ 2 / N`` with few particles in high dimension, a local
      fraction with many). ``'noise'``: ``eta * t^2`` (``/ W`` with ``precondition``), the
      earlier rule, as an ablation.
    drive: ``'kernel'`` (default: textbook SVGD), ``'local'``, ``'self'`` or ``'normalized'``;
      see :func:`composed_vi.kernels.stein_direction`.
    repulsion: ``gamma``, weight of the repulsive term.
    repulsion_schedule: ``'constant'``, ``'linear'`` (``gamma t``) or ``'sqrt'``.
    feature_map: ``'identity'``, ``'pool'`` (average pooling by ``pool_factor``),
      ``'projection'`` (random projection to ``num_features``), ``'target_mask'`` (the
      coordinates of the target's ``repulsion_mask``: the kernel, and so the repulsion, sees
      only where no control specifies the sample), or a
      :class:`composed_vi.kernels.FeatureMap`.
    bandwidth: fixed ``h`` or ``None`` for the guarded median heuristic.
    bandwidth_scale: factor on the median heuristic.
    calibrate_repulsion: rescale the repulsion so that it spreads the population as fast as
      Langevin diffusion would (Stein's identity); measured worse, kept as an ablation.
    stein_region: where the Stein step moves the particles. ``'all'``: every coordinate.
      ``'target_mask'``: only the coordinates of the target's ``repulsion_mask`` (SVGD with the
      matrix-valued kernel ``k(x, y) diag(mask)``); elsewhere the particles are transported
      by ``v_bar`` alone. Where no repulsion reaches, the deterministic drive is gradient
      ascent on ``log pi_t`` and shrinks the particles' noise below the level's (RESULTS.md).
      ``'unpinned'``: every coordinate but those of the target's ``pinned_mask`` (the ones a
      control gives exactly), which follow ``v_bar`` alone; the Stein step then also moves
      the coordinates a soft control specifies (in the world, the object region). The
      per-level diagnostics measure the confined step.
    stein_min_t: the Stein steps run at the levels ``t >= stein_min_t`` only; below it the
      particles follow ``v_bar``'s transport alone (0: at every level). At low noise the
      population's layout is set, and the deterministic drive only sharpens each particle
      below its level's noise.
  """

  step_size: float = 1.0
  step_rule: str = "stiffness"
  drive: str = "kernel"
  repulsion: float = 1.0
  repulsion_schedule: str = "constant"
  feature_map: Any = "identity"
  pool_factor: int = 2
  num_features: int = 256
  feature_seed: int = 0
  bandwidth: Any = None
  bandwidth_scale: float = 1.0
  calibrate_repulsion: bool = False
  stein_region: str = "all"
  stein_min_t: float = 0.0

  def validate(self):
    super().validate()
    check_choice("drive", self.drive, kernels.DRIVES)
    check_choice("step_rule", self.step_rule, STEP_RULES)
    check_positive_float("repulsion", self.repulsion, allow_zero=True)
    check_choice("repulsion_schedule", self.repulsion_schedule, schedules.REPULSION_SCHEDULES)
    if not isinstance(self.feature_map, kernels.FeatureMap):
      check_choice("feature_map", self.feature_map, FEATURE_MAPS)
    check_positive_int("pool_factor", self.pool_factor)
    check_positive_int("num_features", self.num_features)
    if self.bandwidth is not None:
      check_positive_float("bandwidth", self.bandwidth)
    check_positive_float("bandwidth_scale", self.bandwidth_scale)
    check_choice("stein_region", self.stein_region, STEIN_REGIONS)
    if not (isinstance(self.stein_min_t, (int, float)) and not isinstance(self.stein_min_t, bool)
            and 0 <= self.stein_min_t <= 1):
      fail("stein_min_t", "a level in [0, 1]", self.stein_min_t)

  def check_target(self, target) -> None:
    """The feature map and the Stein region that read the target (its ``repulsion_mask`` or
    ``pinned_mask``) are built once here, so a target without them is refused before compute."""
    self.features(target.shape, target)
    self.step_region(target.shape, target)

  def features(self, shape, target=None) -> kernels.FeatureMap:
    """The kernel's feature map; ``'target_mask'`` reads ``target.repulsion_mask``."""
    if isinstance(self.feature_map, kernels.FeatureMap):
      return self.feature_map
    if self.feature_map in ("identity", "x0"):
      return kernels.identity_features()
    if self.feature_map == "target_mask":
      mask = getattr(target, "repulsion_mask", None)
      if mask is None:
        fail("feature_map", "'target_mask' with a target that has a repulsion_mask "
             "(composed_vi.compose(..., repulsion_mask=...))", "a target without one")
      return kernels.mask_features(mask, shape)
    if self.feature_map == "pool":
      return kernels.pool_features(shape, self.pool_factor)
    dim = math.prod(shape)
    if self.num_features > dim:
      fail("num_features", f"at most the latent dimension {dim}", self.num_features)
    return kernels.projection_features(jax.random.key(self.feature_seed), dim,
                                       self.num_features)

  def step_region(self, shape, target=None):
    """``None`` (every coordinate) or the float32 mask, broadcast to ``shape``, that the Stein
    step is confined to (``stein_region``)."""
    if self.stein_region == "all":
      return None
    field = "repulsion_mask" if self.stein_region == "target_mask" else "pinned_mask"
    mask = getattr(target, field, None)
    if mask is None:
      fail("stein_region", f"{self.stein_region!r} with a target that has a {field} "
           f"(composed_vi.compose(..., {field}=...))", "a target without one")
    mask = jnp.asarray(mask, jnp.float32)
    if self.stein_region == "unpinned":
      mask = 1.0 - mask
    return jnp.broadcast_to(mask, tuple(shape))


def _total_weight(target):
  """``W`` per coordinate (1 for a target without weights)."""
  total = getattr(target, "total_weight", None)
  return 1.0 if total is None else total


class CtrlVIState(NamedTuple):
  particles: jax.Array  # (N, *shape) float32
  level: jax.Array  # int32 index into the levels
  key: jax.Array  # unused by SVGD itself (deterministic); kept for a uniform state


class CtrlVIInfo(NamedTuple):
  t: jax.Array
  bandwidth: jax.Array
  mean_offdiag_kernel: jax.Array
  drive_norm: jax.Array
  repulsion_norm: jax.Array
  ratio: jax.Array  # |repulsion| / |drive| at the level's last SVGD step


def init(key, target, num_particles: int, options: CtrlVIOptions) -> CtrlVIState:
  k_init, k_state = jax.random.split(key)
  x = base.init_particles(k_init, target, num_particles)
  return CtrlVIState(x, jnp.zeros((), jnp.int32), k_state)


def step(state: CtrlVIState, target, levels, options: CtrlVIOptions, mesh=None):
  """One level: ``inner_steps`` SVGD steps at ``t_k``, then transport to ``t_{k+1}``.

  With a ``mesh`` the Stein direction runs under ``shard_map``
  (:func:`composed_vi.kernels.sharded_stein_direction`).
  """
  t, t_next = base.level_times(levels, state.level)
  if options.step_rule == "noise":
    eta = base.step_sizes(target, t, options)
  else:  # the stiffness bound W / t^2, per coordinate
    eta = options.step_size * t**2 / _total_weight(target)
  n = state.particles.shape[0]
  gamma = schedules.repulsion_weight(options.repulsion_schedule, options.repulsion, t)
  features = options.features(target.shape, target)
  region = options.step_region(target.shape, target)

  def svgd_step(x, _):
    v, score = target.evaluate(x, t)
    fv = paths.x0_from_velocity(x, t, v) if options.feature_map == "x0" else None
    phi, info = kernels.sharded_stein_direction(
        x, score, mesh=mesh, features=features, bandwidth=options.bandwidth,
        bandwidth_scale=options.bandwidth_scale, drive=options.drive, repulsion=gamma,
        feature_values=fv, calibrate=options.calibrate_repulsion, region=region)
    if options.step_rule == "stiffness" and options.drive in ("kernel", "local"):
      # The kernel mass m = (1/N^2) sum_ij K_ij that weighs each score in the drive.
      mass = (1.0 + (n - 1) * info.mean_offdiag_kernel) / n
      return x + (eta / mass) * phi, info
    return x + eta * phi, info

  nan = jnp.full((), jnp.nan, jnp.float32)
  skipped = kernels.SteinInfo(nan, nan, nan, nan, nan)

  def stein_steps(x):
    x, infos = jax.lax.scan(svgd_step, x, None, length=options.inner_steps)
    return x, jax.tree.map(lambda a: a[-1], infos)

  x = state.particles
  if options.inner_steps == 0:
    last = skipped
  elif options.stein_min_t > 0:  # no Stein step (and no forward for it) below stein_min_t
    x, last = jax.lax.cond(t >= options.stein_min_t, stein_steps,
                           lambda x: (x, skipped), x)
  else:
    x, last = stein_steps(x)
  x = base.transport(target, x, t, t_next)
  info = CtrlVIInfo(t, *last)
  return CtrlVIState(x, state.level + 1, state.key), info
