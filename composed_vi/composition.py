"""The composed target of METHOD.md section 3.

``log pi_t(x) = sum_i m_i * log p_t^i(x | y_i)`` with non-negative weights ``m_i`` (scalars or
spatio-temporal masks broadcastable to the event shape). Its score is ``sum_i m_i s_i``; the
transport velocity is the normalised ``v_bar = sum_i m_i v_i / sum_i m_i``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi import paths, pytree
from composed_vi.errors import check_finite, fail
from composed_vi.experts import Expert


@pytree.dataclass
class ComposedTarget:
  """A weighted product of experts. Build it with :func:`compose`.

  Attributes:
    experts: tuple of experts sharing one event shape.
    weights: tuple of float32 arrays broadcastable to the shape, already multiplied by each
      expert's ``support`` (so a context expert has no say where it is not visible).
    scalar_weights: True when every weight is a scalar (the product then has an energy).
    repulsion_mask: ``None`` or a float32 array broadcastable to the shape: the coordinates
      no control specifies, where the samples should stay diverse. Ctrl-VI's
      ``feature_map='target_mask'`` restricts its kernel (and so its repulsion) to them.
    pinned_mask: ``None`` or a float32 array in [0, 1] broadcastable to the shape: the
      coordinates a control gives exactly (in the built-in world, the first frame and the
      static background the 3D cache sees). Ctrl-VI's ``stein_region='unpinned'`` keeps its
      Stein steps off them.
  """

  experts: tuple
  weights: tuple
  scalar_weights: bool = pytree.field(pytree_node=False, default=True)
  repulsion_mask: Any = None
  pinned_mask: Any = None

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.experts[0].shape)

  @property
  def total_weight(self) -> jax.Array:
    """``W = sum_i m_i``, broadcast to the event shape."""
    return jnp.broadcast_to(sum(self.weights), self.shape).astype(jnp.float32)

  def init_std(self) -> jax.Array:
    """Per-coordinate std of ``pi_1 = N(0, I / W)`` (every expert's marginal is N(0, I) at t=1)."""
    return jax.lax.rsqrt(self.total_weight)

  def evaluate(self, x, t):
    """``(v_bar, score)`` at level ``t``, one forward of every expert; ``x``: ``(N, *shape)``."""
    v_sum = 0.0
    s_sum = 0.0
    for expert, m in zip(self.experts, self.weights):
      v, s = expert.velocity_and_score(x, t)
      v_sum = v_sum + m * v.astype(jnp.float32)
      s_sum = s_sum + m * s.astype(jnp.float32)
    return v_sum / self.total_weight, s_sum

  def velocity(self, x, t):
    return self.evaluate(x, t)[0]

  def score(self, x, t):
    return self.evaluate(x, t)[1]

  def x0(self, x, t):
    return paths.x0_from_velocity(x, t, self.velocity(x, t))

  @property
  def has_log_prob(self) -> bool:
    return self.scalar_weights and all(e.has_log_prob for e in self.experts)

  def log_prob(self, x, t):
    """Unnormalised composed energy ``sum_i m_i log p_t^i`` (scalar weights only)."""
    if not self.has_log_prob:
      raise ValueError("log_prob needs scalar weights and experts that all have an energy")
    return sum(m * e.log_prob(x, t) for e, m in zip(self.experts, self.weights))


def check_weight(i: int, w, shape, field: str | None = None) -> tuple[jax.Array, bool]:
  """Validates one weight (scalar or mask broadcastable to ``shape``); errors name ``field``."""
  field = field or f"weights[{i}]"
  try:
    arr = jnp.asarray(w, jnp.float32)
  except (TypeError, ValueError):
    fail(field, "a number or an array broadcastable to the latent shape", w)
  try:
    if jnp.broadcast_shapes(arr.shape, shape) != tuple(shape):
      raise ValueError
  except ValueError:
    fail(field, f"an array broadcastable to the latent shape {tuple(shape)}",
         f"shape {tuple(arr.shape)}")
  check_finite(field, arr)
  if not isinstance(arr, jax.core.Tracer) and np.any(np.asarray(arr) < 0):
    fail(field, "non-negative weights", f"minimum {float(np.min(np.asarray(arr)))}")
  return arr, arr.ndim == 0 or arr.size == 1


def compose(experts: Sequence[Expert], weights: Sequence[Any] | None = None,
            repulsion_mask: Any = None, normalize: bool = False,
            pinned_mask: Any = None) -> ComposedTarget:
  """Composes experts into the target ``pi_t ~ prod_i p_t^i ^ m_i``.

  Args:
    experts: experts with the same event ``shape``.
    weights: one per expert, each a scalar or an array broadcastable to the shape (a mask at
      latent resolution); ``None`` means all ones.
    repulsion_mask: optional, broadcastable to the shape, non-negative: where no control
      specifies the sample (:class:`ComposedTarget`).
    normalize: divide the (support-masked) weights by their sum at every coordinate, so that
      they sum to 1: the per-region geometric mixture of METHOD.md section 3, with the experts'
      relative weights kept. Its noisy target at level ``t`` then has the experts' own noise
      scale (``pi_1 = N(0, I)``) where the unnormalised product has ``t / sqrt(W)``; samplers
      that follow the score (Ctrl-VI, Langevin, SMC) then evaluate the experts on inputs as
      noisy as those they were trained on. ``v_bar`` is unchanged.
    pinned_mask: optional, broadcastable to the shape, in [0, 1]: where a control gives the
      sample exactly (:class:`ComposedTarget`).

  Returns:
    A :class:`ComposedTarget`.
  """
  experts = tuple(experts)
  if not experts:
    fail("experts", "at least one expert", experts)
  for i, e in enumerate(experts):
    if not isinstance(e, Expert):
      fail(f"experts[{i}]", "an Expert (composed_vi.experts)", type(e).__name__)
  shape = tuple(experts[0].shape)
  for i, e in enumerate(experts[1:], start=1):
    if tuple(e.shape) != shape:
      fail(f"experts[{i}].shape", f"{shape} (the shape of experts[0])", tuple(e.shape))
  if weights is None:
    weights = [1.0] * len(experts)
  weights = list(weights) if not isinstance(weights, (jax.Array, np.ndarray)) else list(weights)
  if len(weights) != len(experts):
    fail("weights", f"{len(experts)} entries (one per expert)", f"{len(weights)} entries")
  eff, scalar = [], True
  for i, (e, w) in enumerate(zip(experts, weights)):
    arr, is_scalar = check_weight(i, w, shape)
    if arr.size == 1:
      arr = arr.reshape(())
    if e.support is not None:
      sup = jnp.asarray(e.support, jnp.float32)
      arr = arr * sup
      is_scalar = False
    eff.append(arr)
    scalar = scalar and is_scalar
  total = np.asarray(jnp.broadcast_to(sum(eff), shape)) if not any(
      isinstance(a, jax.core.Tracer) for a in eff) else None
  if total is not None and np.any(total <= 0):
    fail("weights", "a positive total weight at every coordinate (so v_bar is defined)",
         f"{int(np.sum(total <= 0))} coordinates with total weight 0")
  if normalize:
    total_weight = sum(eff)
    eff = [a / total_weight for a in eff]
    scalar = scalar and all(a.ndim == 0 for a in eff)
  if repulsion_mask is not None:
    repulsion_mask, _ = check_weight(0, repulsion_mask, shape, field="repulsion_mask")
  if pinned_mask is not None:
    pinned_mask, _ = check_weight(0, pinned_mask, shape, field="pinned_mask")
    if not isinstance(pinned_mask, jax.core.Tracer) and np.any(np.asarray(pinned_mask) > 1):
      fail("pinned_mask", "values in [0, 1]", f"maximum {float(np.max(np.asarray(pinned_mask)))}")
  return ComposedTarget(experts=experts, weights=tuple(eff), scalar_weights=scalar,
                        repulsion_mask=repulsion_mask, pinned_mask=pinned_mask)
