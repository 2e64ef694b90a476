"""Experts: models of the noisy marginals ``p_t(x | y)`` on the rectified-flow path.

The protocol (METHOD.md section 2): an expert has an event ``shape`` and returns a velocity
``v(x, t) ~= E[eps - x0 | x_t = x]`` for a batch ``x`` of shape ``(N, *shape)`` at a scalar level
``t``. Score, ``x0_hat`` and ``eps_hat`` derive from it (:mod:`composed_vi.paths`). Analytic
experts also expose their exact score and energy (``log_prob``), which MALA uses.

Experts are pytrees (frozen dataclasses, :mod:`composed_vi.pytree`): they pass through jit.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi import paths, pytree
from composed_vi.errors import check_choice, check_finite, fail


class Expert:
  """Base class of the expert protocol.

  Subclasses define ``shape`` (the event shape) and :meth:`velocity`; they may override
  :meth:`velocity_and_score` when the score has a more accurate closed form.
  """

  shape: tuple[int, ...]
  #: Where the expert has an opinion (broadcastable to ``shape``); ``None`` means everywhere.
  support = None

  def velocity(self, x, t):
    """Flow-matching velocity ``E[eps - x0 | x_t = x]``; ``x``: ``(N, *shape)``."""
    raise NotImplementedError

  def velocity_and_score(self, x, t):
    """``(velocity, score)`` from one forward of the expert."""
    v = self.velocity(x, t)
    return v, paths.score_from_velocity(x, t, v)

  def score(self, x, t):
    return self.velocity_and_score(x, t)[1]

  def x0(self, x, t):
    return paths.x0_from_velocity(x, t, self.velocity(x, t))

  def eps(self, x, t):
    return paths.eps_from_velocity(x, t, self.velocity(x, t))

  #: Experts with an energy set this to True and implement ``log_prob(x, t) -> (N,)``.
  has_log_prob = False

  def log_prob(self, x, t):
    raise NotImplementedError(f"{type(self).__name__} has no energy (log_prob)")


def _as_shape(shape) -> tuple[int, ...]:
  return tuple(int(s) for s in shape)


@pytree.dataclass
class GaussianMixture(Expert):
  """Isotropic Gaussian mixture ``sum_k w_k N(mu_k, std_k^2 I)`` with exact noisy marginals.

  On the path the marginal is ``sum_k w_k N((1 - t) mu_k, ((1 - t)^2 std_k^2 + t^2) I)``.

  Args:
    means: ``(K, *shape)`` component means.
    stds: ``(K,)`` positive component standard deviations.
    weights: ``(K,)`` non-negative mixture weights (normalised here).
  """

  means: jax.Array
  stds: jax.Array
  weights: jax.Array
  support: Any = None

  def __init__(self, means, stds, weights=None, support=None):
    means = np.asarray(means, dtype=np.float32) if not isinstance(means, jax.Array) else means
    if means.ndim < 2:
      fail("means", "an array of shape (K, *shape) with K >= 1", f"shape {tuple(means.shape)}")
    k = means.shape[0]
    stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), (k,)) if np.ndim(stds) == 0 else stds
    stds = jnp.asarray(stds, jnp.float32)
    if stds.shape != (k,):
      fail("stds", f"shape ({k},) matching means", f"shape {tuple(stds.shape)}")
    weights = jnp.ones((k,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    if weights.shape != (k,):
      fail("weights", f"shape ({k},) matching means", f"shape {tuple(weights.shape)}")
    for name, arr in (("means", means), ("stds", stds), ("weights", weights)):
      check_finite(name, arr)
    if not isinstance(stds, jax.core.Tracer) and np.any(np.asarray(stds) <= 0):
      fail("stds", "positive standard deviations", np.asarray(stds).tolist())
    if not isinstance(weights, jax.core.Tracer):
      w = np.asarray(weights)
      if np.any(w < 0) or w.sum() <= 0:
        fail("weights", "non-negative weights with a positive sum", w.tolist())
    object.__setattr__(self, "means", jnp.asarray(means, jnp.float32))
    object.__setattr__(self, "stds", stds)
    object.__setattr__(self, "weights", weights / jnp.sum(weights))
    object.__setattr__(self, "support", support)

  @property
  def shape(self) -> tuple[int, ...]:
    return _as_shape(self.means.shape[1:])

  @property
  def dim(self) -> int:
    return int(np.prod(self.shape))

  has_log_prob = True

  def _parts(self, x, t):
    """Per-component residuals, variances and log-responsibility numerators."""
    lead = x.shape[: x.ndim - len(self.shape)]
    xf = x.reshape(lead + (1, self.dim)).astype(jnp.float32)
    mu = self.means.reshape(-1, self.dim)
    var = (1.0 - t) ** 2 * self.stds**2 + t**2  # (K,)
    r = xf - (1.0 - t) * mu  # (..., K, D), differences: no cancellation
    sq = jnp.sum(r * r, axis=-1)
    logn = -0.5 * sq / var - 0.5 * self.dim * jnp.log(2 * jnp.pi * var) + jnp.log(self.weights)
    return lead, r, var, logn

  def log_prob(self, x, t):
    """Exact log-density of the noisy marginal at ``t``; returns shape ``x.shape[:-ndim]``."""
    return jax.nn.logsumexp(self._parts(x, t)[3], axis=-1)

  def velocity_and_score(self, x, t):
    lead, r, var, logn = self._parts(x, t)
    resp = jax.nn.softmax(logn, axis=-1)[..., None]  # (..., K, 1)
    mu = self.means.reshape(-1, self.dim)
    coef = ((t - (1.0 - t) * self.stds**2) / var)[:, None]
    v = jnp.sum(resp * (coef * r - mu), axis=-2)
    s = jnp.sum(resp * (-r / var[:, None]), axis=-2)
    return v.reshape(lead + self.shape), s.reshape(lead + self.shape)

  def velocity(self, x, t):
    return self.velocity_and_score(x, t)[0]

  def sample(self, key, num: int):
    """Exact samples of the clean distribution, ``(num, *shape)``."""
    kc, kn = jax.random.split(key)
    comp = jax.random.categorical(kc, jnp.log(self.weights), shape=(num,))
    noise = jax.random.normal(kn, (num,) + self.shape)
    std = self.stds[comp].reshape((num,) + (1,) * len(self.shape))
    return self.means[comp] + std * noise


def Gaussian(mean, std, support=None) -> GaussianMixture:  # noqa: N802 (a constructor)
  """Isotropic Gaussian ``N(mean, std^2 I)`` (a one-component :class:`GaussianMixture`)."""
  mean = jnp.asarray(mean, jnp.float32)
  return GaussianMixture(mean[None], jnp.asarray([std], jnp.float32), None, support=support)


def Context(context, sigma: float = 0.1, visibility=None) -> GaussianMixture:  # noqa: N802
  """The context expert of METHOD.md section 5.

  ``p(x | c) ~ exp(-|V * (x - c)|^2 / (2 sigma^2))``: a Gaussian around the context ``c`` on the
  visible coordinates ``V`` (broadcastable to ``c.shape``, values in [0, 1]), flat elsewhere. Its
  noisy marginal per visible coordinate is ``N((1 - t) c, (1 - t)^2 sigma^2 + t^2)``; the
  composition multiplies its weight by ``V`` so it has no say where ``V = 0``.

  Args:
    context: the context video/latent, shape ``shape``.
    sigma: how tightly particles follow the context where visible.
    visibility: ``V``, broadcastable to ``shape``; ``None`` means fully visible.
  """
  context = jnp.asarray(context, jnp.float32)
  check_finite("context", context)
  if visibility is not None:
    visibility = jnp.asarray(visibility, jnp.float32)
    check_finite("visibility", visibility)
    try:
      jnp.broadcast_shapes(visibility.shape, context.shape)
    except ValueError:
      fail("visibility", f"an array broadcastable to {tuple(context.shape)}",
           f"shape {tuple(visibility.shape)}")
  if not (np.isfinite(sigma) and sigma > 0):
    fail("sigma", "a finite number > 0", sigma)
  return Gaussian(context, sigma, support=visibility)


@pytree.dataclass
class ClassifierFreeGuidance(Expert):
  """CFG inside an expert: ``v = v_uncond + scale * (v_cond - v_uncond)``."""

  conditional: Any
  unconditional: Any
  scale: float = pytree.field(pytree_node=False, default=1.0)

  @property
  def shape(self):
    return self.conditional.shape

  @property
  def support(self):
    return self.conditional.support

  def velocity(self, x, t):
    vc = self.conditional.velocity(x, t)
    vu = self.unconditional.velocity(x, t)
    return vu + self.scale * (vc - vu)


@pytree.dataclass
class FunctionExpert(Expert):
  """Wraps a callable ``velocity_fn(x, t) -> v`` (e.g. a jitted backbone) as an expert."""

  velocity_fn: Callable = pytree.field(pytree_node=False)
  event_shape: tuple = pytree.field(pytree_node=False)
  support: Any = None

  @property
  def shape(self):
    return _as_shape(self.event_shape)

  def velocity(self, x, t):
    return self.velocity_fn(x, t)


PREDICTIONS = ("eps", "x0", "v")


@pytree.dataclass
class VPAdapter(Expert):
  """Adapts a model trained on a variance-preserving path to our flow convention.

  ``predict_fn(x_vp, alpha, sigma)`` sees ``x_vp = alpha x0 + sigma eps`` (``alpha^2 +
  sigma^2 = 1``) and predicts ``eps``, ``x0`` or ``v = alpha eps - sigma x0`` (``prediction``).
  The flow point ``x_t`` at the same signal-to-noise ratio is ``x_vp * sqrt((1-t)^2 + t^2)``.
  eps-prediction is singular at ``t = 1`` and x0-prediction at ``t = 0``, as for any sampler.
  """

  predict_fn: Callable = pytree.field(pytree_node=False)
  prediction: str = pytree.field(pytree_node=False)
  event_shape: tuple = pytree.field(pytree_node=False)
  support: Any = None

  def __post_init__(self):
    check_choice("prediction", self.prediction, PREDICTIONS)

  @property
  def shape(self):
    return _as_shape(self.event_shape)

  def velocity(self, x, t):
    alpha, sigma, norm = paths.vp_coefficients(t)
    x_vp = x / norm
    out = self.predict_fn(x_vp, alpha, sigma)
    if self.prediction == "eps":
      eps = out
      x0 = (x_vp - sigma * eps) / alpha
    elif self.prediction == "x0":
      x0 = out
      eps = (x_vp - alpha * x0) / sigma
    else:
      x0 = alpha * x_vp - sigma * out
      eps = sigma * x_vp + alpha * out
    return eps - x0


def to_vp_predictor(expert: Expert, prediction: str) -> Callable:
  """The inverse adapter: a flow expert seen as a VP model ``fn(x_vp, alpha, sigma)``."""
  check_choice("prediction", prediction, PREDICTIONS)

  def predict_fn(x_vp, alpha, sigma):
    t = paths.flow_time_from_vp(alpha, sigma)
    x = x_vp / (alpha + sigma)
    v = expert.velocity(x, t)
    x0 = paths.x0_from_velocity(x, t, v)
    eps = paths.eps_from_velocity(x, t, v)
    return {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[prediction]

  return predict_fn


class WrappedExpert(Expert):
  """Base of an expert that wraps one other, ``self.expert``: it has the inner one's event
  shape and support."""

  @property
  def shape(self):
    return self.expert.shape

  @property
  def support(self):
    return self.expert.support


@pytree.dataclass
class NoiseMatched(WrappedExpert):
  """Queries ``expert`` on an input re-noised to the level it was trained at.

  In the raw-weight product (METHOD.md section 3) a coordinate of total weight ``W`` has noise
  ``t / sqrt(W)`` at level ``t``, where every backbone was trained on inputs noisy at ``t``
  everywhere. This expert adds ``t * extra * eps`` (``extra = sqrt(1 - 1 / W)``, fresh
  standard-normal ``eps`` per level, particle and coordinate) before the query, so that the
  backbone sees its own noise level at every coordinate, and returns the velocity and score
  *at* ``x`` that predict the backbone's clean estimate ``x0_hat`` of the re-noised input.
  The noise is a function of ``key`` and the level alone: a run is deterministic.
  """

  expert: Any
  extra: Any
  key: Any

  def _x0(self, x, t):
    t = jnp.asarray(t, jnp.float32)
    key = jax.random.fold_in(jax.random.wrap_key_data(self.key),
                             jax.lax.bitcast_convert_type(t, jnp.uint32))
    eps = jax.random.normal(key, x.shape, jnp.float32)
    x_query = x + t * self.extra * eps
    return paths.x0_from_velocity(x_query, t, self.expert.velocity(x_query, t))

  def velocity(self, x, t):
    return paths.velocity_from_x0(x, t, self._x0(x, t))


def noise_matched(expert: Expert, total_weight, seed: int = 0) -> NoiseMatched:
  """``expert`` queried at its own noise level in a product of total weight ``total_weight``
  (an array broadcastable to the event shape); where it is 1 or less nothing is added (the
  product is as noisy as the expert there, or noisier)."""
  total = jnp.asarray(total_weight, jnp.float32)
  extra = jnp.sqrt(jnp.clip(1.0 - 1.0 / jnp.maximum(total, 1e-6), 0.0, 1.0))
  return NoiseMatched(expert, extra, jax.random.key_data(jax.random.key(seed)))
