"""Stein variational directions with the closed-form RBF kernel update (METHOD.md section 4).

``phi_i = drive_i + gamma * (1/N) sum_j grad_{x_j} K_ij`` with
``K_ij = exp(-|f(x_i) - f(x_j)|^2 / h)`` for a linear feature map ``f(x) = F x`` and

    sum_j grad_{x_j} K_ij = (2 / h) F^T (f_i sum_j K_ij - (K f)_i)

so only the N x N kernel and (N x N)(N x D) products are formed: memory O(N^2 + N D), never
an N x N x D tensor. Squared distances come from one Gram product of the centred particles,
with each particle's nearest pair recomputed from differences (:func:`pairwise_sq_dists`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi.errors import check_choice, fail

DRIVES = ("kernel", "self", "local", "normalized")
_GATHER_BUDGET = 2**22
_RECOMPUTE_BELOW = 0.1  # nearest pairs closer than this fraction of |a|^2 + |b|^2 (centred)


class SteinInfo(NamedTuple):
  """Diagnostics of one Stein direction (scalars)."""

  bandwidth: jax.Array  # h
  mean_offdiag_kernel: jax.Array  # mean K_ij over i != j (1/N means the kernel is blind)
  drive_norm: jax.Array  # |drive| (Frobenius over particles)
  repulsion_norm: jax.Array  # |gamma * repulsion|
  ratio: jax.Array  # |repulsion| / |drive|


@functools.partial(jax.jit, static_argnames=("axis_name",))
def pairwise_sq_dists(f: jax.Array, axis_name=None) -> jax.Array:
  """``(N, P) -> (N, N)`` squared distances at the speed of one Gram product, float32-accurate.

  The features are centred (the common offset of near-identical particles is what makes the
  raw Gram identity ``|a|^2 + |b|^2 - 2 a.b`` cancel catastrophically), the identity is then
  applied to the centred features in one ``(N, P) x (P, N)`` product, and each particle's
  nearest pair (where the remaining cancellation is largest: distances far below the spread) is
  recomputed from float32 differences. Exactly symmetric, zero diagonal, never negative.

  With ``axis_name`` the features are a shard of the coordinates: the norms, the Gram matrix
  and the nearest pairs' distances are ``psum``-ed over that mesh axis (``O(N^2)`` floats).
  """
  return _centred_sq_dists(centre(f.astype(jnp.float32)), axis_name)


def centre(f: jax.Array) -> jax.Array:
  """``f - mean over particles`` of ``(N, P)`` float32 features.

  The mean is a ``(1, N) x (N, P)`` product: XLA:CPU's column reduction was 15x slower than
  the Gram product itself at N = 16, P = 65536. The barrier keeps XLA from fusing the
  subtraction into the consumers' products (measured 4x slower than materialising it). Every
  particle is in each shard of a sharded call, so the mean is local there.
  """
  return jax.lax.optimization_barrier(f - _mean_row(f))


def _mean_row(f: jax.Array) -> jax.Array:
  n = f.shape[0]
  return jnp.matmul(jnp.full((1, n), 1.0 / n, jnp.float32), f,
                    precision=jax.lax.Precision.HIGHEST)


def _centred_sq_dists(fc: jax.Array, axis_name=None) -> jax.Array:
  """:func:`pairwise_sq_dists` of features already centred over the particles."""
  return _sq_dists_from_gram(fc, _gram(fc, axis_name), axis_name)


def _gram(f: jax.Array, axis_name=None) -> jax.Array:
  gram = jnp.matmul(f, f.T, precision=jax.lax.Precision.HIGHEST)
  return gram if axis_name is None else jax.lax.psum(gram, axis_name)


def _sq_dists_from_gram(f: jax.Array, gram: jax.Array, axis_name=None) -> jax.Array:
  """Squared distances of the rows of ``f`` from their Gram matrix (``psum``-ed over
  ``axis_name``), each row's nearest pair recomputed from float32 differences when it is close.

  Accurate when ``f``'s rows are centred, or when their common offset is small against their
  spread (:func:`stein_direction` centres otherwise)."""
  n = f.shape[0]
  norms = jnp.diagonal(gram)
  sq = norms[:, None] + norms[None, :] - 2.0 * gram
  eye = jnp.eye(n, dtype=bool)
  sq = jnp.where(eye, 0.0, jnp.maximum(0.5 * (sq + sq.T), 0.0))
  if n < 2:
    return sq
  # The identity's rounding is about 1e-7 of |a|^2 + |b|^2 (times the accumulation's growth):
  # a pair far closer than the particles' spread loses digits. Each particle's nearest pair is
  # then recomputed from float32 differences (one N x P pass, skipped when no pair is that close).
  masked = jnp.where(eye, jnp.inf, sq)
  nearest = jnp.argmin(masked, axis=1)
  close = jnp.any(jnp.min(masked, axis=1) < _RECOMPUTE_BELOW * (norms + norms[nearest]))

  def recompute(sq):
    if n * f.shape[1] <= _GATHER_BUDGET:  # one gather
      exact = jnp.sum(jnp.square(f - jnp.take(f, nearest, axis=0)), axis=-1)
    else:  # rows in batches, so no N x P copy is made for video latents
      batch = max(1, _GATHER_BUDGET // max(f.shape[1], 1))
      exact = jax.lax.map(lambda ij: jnp.sum(jnp.square(f[ij[0]] - f[ij[1]])),
                          (jnp.arange(n), nearest), batch_size=batch)
    if axis_name is not None:
      exact = jax.lax.psum(exact, axis_name)
    rows = jnp.arange(n)
    # (i, j) and (j, i) get the same value from both ends (the squares are order-independent).
    return sq.at[rows, nearest].set(exact).at[nearest, rows].set(exact)

  return jax.lax.cond(close, recompute, lambda sq: sq, sq)


def _kth_smallest_pairs(sq: jax.Array, upper: jax.Array, ks: tuple[int, ...]) -> jax.Array:
  """The ``ks``-th smallest (0-based) of ``sq[upper]`` for ``sq >= 0``, by bisection on the bits.

  Non-negative float32 values order like their int32 bit patterns, so 32 counting passes over
  the N x N matrix find each exact order statistic: far faster than sorting N^2 / 2 values.
  All ``ks`` share one loop (one loop's overhead, not one per order statistic).
  """
  bits = jax.lax.bitcast_convert_type(jnp.maximum(sq, 0.0), jnp.int32)
  ks = jnp.asarray(ks, jnp.int32)

  def body(_, lohi):
    lo, hi = lohi
    mid = lo + (hi - lo) // 2
    count = jnp.sum((bits[None] <= mid[:, None, None]) & upper[None], axis=(1, 2))
    found = count >= ks + 1
    return jnp.where(found, lo, mid + 1), jnp.where(found, mid, hi)

  top = jnp.max(jnp.where(upper, bits, 0))
  lo, _ = jax.lax.fori_loop(0, 32, body, (jnp.zeros_like(ks), jnp.full_like(ks, top)))
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


#: Up to this many pairs (N <= 46) the median is taken by sorting them: one sort is cheaper
#: than the bisection's 32 passes there (measured 16 us against 47 us at N = 16; from N = 64 on
#: the bisection wins, 144 us against 309 us).
_SORT_PAIRS_UP_TO = 1024


def median_of_pairs(sq: jax.Array) -> jax.Array:
  """Median of the strictly upper-triangular entries of ``sq`` (as ``jnp.median`` would give)."""
  n = sq.shape[0]
  m = n * (n - 1) // 2
  ks = (m // 2,) if m % 2 else (m // 2 - 1, m // 2)
  if m <= _SORT_PAIRS_UP_TO:
    rows, cols = np.triu_indices(n, k=1)
    middle = jnp.sort(jnp.maximum(sq[rows, cols], 0.0))[np.asarray(ks)]
  else:
    middle = _kth_smallest_pairs(sq, jnp.triu(jnp.ones((n, n), bool), k=1), ks)
  return jnp.mean(middle)


def median_bandwidth(sq: jax.Array, scale: float = 1.0) -> jax.Array:
  """Guarded median heuristic ``h = scale * median_{i<j} d_ij^2 / log(max(N, 2))``.

  Guards: N = 1 has no pairs (h = 1, the kernel is then unused); coincident particles give a
  median of 0, floored at 1e-6 of the mean squared distance (or a tiny value if all coincide,
  where the repulsion is set to exactly 0).
  """
  n = sq.shape[0]
  if n < 2:
    return jnp.asarray(1.0, jnp.float32)
  med = median_of_pairs(sq)
  mean_sq = jnp.sum(sq) / (n * (n - 1))  # zero diagonal
  # When most pairs coincide the median is 0: floor h relative to the mean squared distance,
  # so 1/h stays bounded by the scale of the particles that do differ.
  floor = jnp.maximum(1e-6 * mean_sq, jnp.finfo(jnp.float32).tiny * 1e6)
  return jnp.maximum(scale * med / math.log(max(n, 2)), floor)


class FeatureMap(NamedTuple):
  """A linear feature map ``f(x) = F x`` on flattened particles and its transpose ``F^T``."""

  apply: Callable  # (N, D) -> (N, P)
  transpose: Callable  # (N, P) -> (N, D)


def identity_features() -> FeatureMap:
  return _IDENTITY


_IDENTITY = FeatureMap(lambda x: x, lambda g: g)


def linear_features(fn: Callable, dim: int) -> FeatureMap:
  """Wraps a linear ``fn: (D,) -> (P,)`` (pooling, a projection, ...); ``F^T`` by transposition."""
  batched = jax.vmap(fn)

  def transpose(g):
    (out,) = jax.linear_transpose(batched, jax.ShapeDtypeStruct((g.shape[0], dim), g.dtype))(g)
    return out

  return FeatureMap(batched, transpose)


def mask_features(mask, shape: tuple[int, ...]) -> FeatureMap:
  """``f(x) = m * x`` (self-adjoint) for a mask broadcastable to the event ``shape``: the
  kernel's distances, bandwidth and repulsion see only the coordinates where ``m > 0``."""
  m = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), tuple(shape)).reshape(1, -1)
  return FeatureMap(lambda x: x * m, lambda g: g * m)


def projection_features(key, dim: int, num_features: int) -> FeatureMap:
  """Random Gaussian projection ``F`` of shape (P, D), scaled by ``1/sqrt(P)``."""
  proj = jax.random.normal(key, (num_features, dim), jnp.float32) / math.sqrt(num_features)
  return FeatureMap(lambda x: x @ proj.T, lambda g: g @ proj)


def pool_features(shape: tuple[int, ...], factor: int) -> FeatureMap:
  """Average pooling over the spatial axes of ``(T, H, W, C)`` events (or the last axis)."""
  shape = tuple(shape)
  if len(shape) >= 3:
    t, h, w, c = shape if len(shape) == 4 else (1,) + shape
    if h % factor or w % factor:
      fail("pool_factor", f"a divisor of the spatial size {(h, w)}", factor)

    def pool(x):
      x = x.reshape(t, h // factor, factor, w // factor, factor, c)
      return x.mean(axis=(2, 4)).reshape(-1)
  else:
    d = math.prod(shape)
    if d % factor:
      fail("pool_factor", f"a divisor of the dimension {d}", factor)

    def pool(x):
      return x.reshape(d // factor, factor).mean(axis=1)

  return linear_features(pool, math.prod(shape))


#: With identity features the particles are centred only when the norm of their mean exceeds
#: this fraction of their root-mean-square norm: below it the raw Gram identity rounds with at
#: most (1 + 0.5^2) / (1 - 0.5^2) = 1.7x the centred one's error, and a pass over N x D is saved.
_CENTRE_ABOVE = 0.5


def _one_product_direction(xf, g, *, bandwidth, bandwidth_scale, drive, repulsion, axis_name):
  """:func:`stein_direction` with identity features, no region and no calibration: besides the
  Gram matrix, one ``(N, N) x (N, D)`` product per term of the direction.

  The repulsion is ``gamma L x`` with the kernel's Laplacian ``L = c (diag(rowsum) - K)``
  (``c = 2 / (h N)``; ``'normalized'`` divides its rows by ``rowsum / N``), one product whose
  diagonal carries the ``x_i sum_j K_ij`` term; the drive is the product ``(K / N) g``
  (``'kernel'``) or ``w * g`` per row (``w = rowsum / N`` for ``'local'``, 1 for ``'self'`` and
  ``'normalized'``). Each N x D array is read once per product and the sum is one pass, which
  also gives the drive's norm (no Gram matrix of the scores).

  ``L`` annihilates constants (its rows sum to 0), so ``x`` may carry any common offset: the
  particles are centred only when their mean is large against their spread
  (:data:`_CENTRE_ABOVE`, decided from the Gram matrix), where float32 would lose the
  distances' and the repulsion's digits; that branch then recomputes the Gram matrix of the
  centred particles and runs the rest on them, the other branch on ``x`` as given. The
  diagnostics are exact: ``|L x|^2 = tr(L G L^T)`` from the Gram matrix ``G`` (``L G L^T`` is
  unchanged by the offset), the drive's norm from the drive itself (kernel drive) or the
  scores' row norms; unused, XLA drops them.
  """
  gram = _gram(xf, axis_name)
  finish = functools.partial(_finish_one_product, xf, g, bandwidth=bandwidth,
                             bandwidth_scale=bandwidth_scale, drive=drive, repulsion=repulsion,
                             axis_name=axis_name)
  # Each branch runs the whole remainder, so the common case (no large offset) subtracts no
  # mean (no (1, D) zeros are broadcast and no subtraction enters the N x D passes).
  return jax.lax.cond(_offset_is_large(gram),
                      lambda _: finish(*_centred_gram(xf, axis_name)),
                      lambda _: finish(xf, gram), None)


def _finish_one_product(xf, g, f, gram, *, bandwidth, bandwidth_scale, drive, repulsion,
                        axis_name):
  """:func:`_one_product_direction` given ``f``, the particles ``xf`` or ``xf`` centred, and
  ``f``'s Gram matrix."""
  n = xf.shape[0]
  hi = jax.lax.Precision.HIGHEST
  sq = _sq_dists_from_gram(xf, gram, axis_name)  # nearest pairs from offset-free differences
  h = median_bandwidth(sq, bandwidth_scale) if bandwidth is None else jnp.asarray(
      bandwidth, jnp.float32)
  k = jnp.exp(-sq / h)
  rowsum = jnp.sum(k, axis=1)
  a = repulsion * jnp.where(sq.max() > 0, 2.0 / (h * n), 0.0)
  lap = a * (jnp.diag(rowsum) - k)
  if drive == "normalized":  # repulsion divided by the kernel density estimate rowsum / N
    lap = lap * (n / rowsum)[:, None]
  rep = jnp.matmul(lap, f, precision=hi)
  if drive == "kernel":
    drive_term = jnp.matmul(k / n, g, precision=hi)
    phi = drive_term + rep
    dn2 = jnp.sum(jnp.square(drive_term))
    if axis_name is not None:
      dn2 = jax.lax.psum(dn2, axis_name)
  else:
    w = rowsum / n if drive == "local" else jnp.ones((n,), jnp.float32)
    phi = rep + w[:, None] * g
    g2 = jnp.sum(jnp.square(g), axis=1)
    if axis_name is not None:
      g2 = jax.lax.psum(g2, axis_name)
    dn2 = jnp.sum(jnp.square(w) * g2)
  rn2 = jnp.sum(jnp.matmul(lap, gram, precision=hi) * lap)  # tr(L G L^T)
  return phi, h, k, jnp.maximum(dn2, 0.0), jnp.maximum(rn2, 0.0)


def _offset_is_large(gram: jax.Array) -> jax.Array:
  """Whether the rows' mean has a norm above :data:`_CENTRE_ABOVE` of their rms norm."""
  n = gram.shape[0]
  return jnp.sum(gram) / n**2 > _CENTRE_ABOVE**2 * jnp.trace(gram) / n


def _centred_gram(f: jax.Array, axis_name=None):
  """``(f - mean, Gram matrix of f - mean)`` (:func:`centre`)."""
  fc = centre(f)
  return fc, _gram(fc, axis_name)


def _offset_checked_gram(f: jax.Array, axis_name=None) -> tuple[jax.Array, jax.Array]:
  """``(f, f f^T)``, or the centred features and their Gram matrix where the offset is large."""
  gram = _gram(f, axis_name)
  return jax.lax.cond(_offset_is_large(gram), lambda _: _centred_gram(f, axis_name),
                      lambda _: (f, gram), None)


def stein_direction(
    x: jax.Array,
    scores: jax.Array,
    *,
    features: FeatureMap | None = None,
    bandwidth: float | None = None,
    bandwidth_scale: float = 1.0,
    drive: str = "kernel",
    repulsion: float | jax.Array = 1.0,
    axis_name=None,
    feature_values: jax.Array | None = None,
    calibrate: bool = False,
    dim: int | None = None,
    region: jax.Array | None = None,
) -> tuple[jax.Array, SteinInfo]:
  """The SVGD direction for particles ``x`` with scores ``scores`` (both ``(N, *shape)``).

  Args:
    features: linear feature map of the kernel (identity by default).
    bandwidth: fixed ``h``; ``None`` uses the guarded median heuristic times
      ``bandwidth_scale``.
    drive: ``'kernel'`` (textbook ``(1/N) sum_j K_ij G_j``), ``'self'`` (``G_i``),
      ``'local'`` (``(1/N) sum_j K_ij G_i``: the kernel average with each particle's own score,
      exact when the score is constant over the kernel's width, and free of the cross-talk
      between particles' scores that a blind kernel causes in high dimension), or
      ``'normalized'`` (``G_i`` with the repulsion divided by ``(1/N) sum_j K_ij``: the same
      fixed point as ``'local'`` with a larger effective step).
    calibrate: scale the repulsion so the population spreads as Langevin diffusion would.
    repulsion: ``gamma``, weight of the repulsive term.
    axis_name: mesh axis over which the coordinates are sharded (inside ``shard_map``).
    feature_values: precomputed (nonlinear) features ``(N, P)`` of the particles, e.g. their
      denoised ``x0_hat``; their Jacobian is then taken as the identity (``features`` unused).
    dim: the latent dimension, when ``x`` is a (zero-padded) shard of it (for ``calibrate``).
    region: optional mask broadcastable to ``x``'s shape (per coordinate, shared by the
      particles): the direction is confined to it (SVGD with the matrix-valued kernel
      ``k(x, y) diag(region)``); the diagnostics measure the confined drive and repulsion.

  Returns:
    ``(phi, SteinInfo)``, ``phi`` float32 with the shape of ``x``.
  """
  check_choice("drive", drive, DRIVES)
  n = x.shape[0]
  xf = x.reshape(n, -1).astype(jnp.float32)
  g = scores.reshape(n, -1).astype(jnp.float32)
  r = None if region is None else jnp.broadcast_to(
      jnp.asarray(region, jnp.float32), x.shape).reshape(n, -1)
  features = identity_features() if features is None else features
  if n > 1 and features is _IDENTITY and feature_values is None and r is None and not calibrate:
    phi, h, k, dn2, rn2 = _one_product_direction(
        xf, g, bandwidth=bandwidth, bandwidth_scale=bandwidth_scale, drive=drive,
        repulsion=repulsion, axis_name=axis_name)
    dn, rn = jnp.sqrt(dn2), jnp.sqrt(rn2)
    off = (jnp.sum(k) - jnp.trace(k)) / (n * (n - 1))
    return phi.reshape(x.shape), SteinInfo(h, off, dn, rn, rn / jnp.maximum(dn, 1e-30))
  if n == 1:  # no pairs: the direction is the score itself
    rep, dr = jnp.zeros_like(g), g
    h = jnp.asarray(1.0, jnp.float32)
    k = jnp.ones((1, 1), jnp.float32)
  else:
    if feature_values is not None:
      f = feature_values.reshape(n, -1).astype(jnp.float32)
      features = identity_features()
    else:
      f = features.apply(xf)
    # Features centred where their offset is large (the distances' Gram identity and the
    # repulsion's product then round with the spread, not the magnitude, of the particles).
    fc, gram = _offset_checked_gram(f, axis_name)
    sq = _sq_dists_from_gram(fc, gram, axis_name)
    h = median_bandwidth(sq, bandwidth_scale) if bandwidth is None else jnp.asarray(
        bandwidth, jnp.float32)
    k = jnp.exp(-sq / h)
    rowsum = jnp.sum(k, axis=1, keepdims=True)
    # f_i sum_j K_ij - (K f)_i is unchanged by a common shift: one product with the kernel's
    # Laplacian diag(rowsum) - K (rows sum to 0) on the centred features.
    # Every scale is folded into the N x N matrices, so each N x D product is one pass.
    # All particles coincide: no repulsion (h is at its floor; rounding would be amplified).
    coef = jnp.where(sq.max() > 0, 2.0 / (h * n), 0.0)
    lap = coef * (jnp.diag(rowsum[:, 0]) - k)
    if drive == "normalized":  # repulsion divided by the kernel density estimate rowsum / N
      lap = lap * (n / rowsum)
    if not calibrate:
      lap = repulsion * lap
    rep = features.transpose(jnp.matmul(lap, fc, precision=jax.lax.Precision.HIGHEST))
    if drive == "kernel":
      dr = jnp.matmul(k / n, g, precision=jax.lax.Precision.HIGHEST)
    elif drive == "local":
      dr = (rowsum / n) * g
    else:  # 'self' and 'normalized': the particle's own score
      dr = g
    if calibrate:
      # Scale the repulsion so that it spreads the population as fast as Langevin's diffusion
      # would: Stein's identity E_p[(x - c) . grad log p] = -D says the spread is stationary
      # at the target when sum_i w_i (x_i - xbar) . G_i + gamma sum_i (x_i - xbar) . R_i = 0
      # with sum_i w_i D on the second term. Confined to a region (the matrix-valued kernel
      # k diag(r)), the identity reads E[(x - c) . diag(r) grad log p] = -sum(r): D is the
      # region's size and the spread is the confined repulsion's.
      w = jnp.ones((n, 1), jnp.float32) if drive == "self" else rowsum / n
      centred = xf - jnp.mean(xf, axis=0, keepdims=True)
      spread = jnp.sum(centred * rep) if r is None else jnp.sum(centred * rep * r)
      if r is not None:
        dim = jnp.sum(r[0])
      if axis_name is not None:
        spread = jax.lax.psum(spread, axis_name)
        if r is not None:
          dim = jax.lax.psum(dim, axis_name)
      dim = jnp.asarray(xf.shape[1] if dim is None else dim, jnp.float32)
      rep = repulsion * rep * (jnp.sum(w) * dim / jnp.maximum(spread, 1e-30))
  phi = dr + rep
  if r is not None:
    phi, dr, rep = phi * r, dr * r, rep * r
  dn2 = jnp.sum(jnp.square(dr))
  rn2 = jnp.sum(jnp.square(rep))
  if axis_name is not None:
    dn2, rn2 = jax.lax.psum((dn2, rn2), axis_name)
  dn, rn = jnp.sqrt(dn2), jnp.sqrt(rn2)
  off = (jnp.sum(k) - jnp.trace(k)) / max(n * (n - 1), 1)
  info = SteinInfo(h, off, dn, rn, rn / jnp.maximum(dn, 1e-30))
  return phi.reshape(x.shape), info


def sharded_stein_direction(x: jax.Array, scores: jax.Array, *, mesh=None,
                            features: FeatureMap | None = None,
                            feature_values: jax.Array | None = None,
                            region: jax.Array | None = None,
                            **kwargs) -> tuple[jax.Array, SteinInfo]:
  """:func:`stein_direction` on a device mesh, under ``jax.shard_map``.

  Inside the map every device holds all ``N`` particles but only ``1 / num_devices`` of their
  (flattened, zero-padded) coordinates: an all-to-all over ``data`` turns the
  ``('data', 'model')`` layout into that one (and back), never an all-gather. The devices'
  partial squared distances are combined by one ``N x N`` ``psum``; the kernel, the bandwidth
  and the Laplacian product are then local. Memory per device is ``O(N^2 + N D / num_devices)``.

  Feature maps other than the identity (pooling, projections, ``x0`` features) mix
  coordinates across shards; they run as :func:`stein_direction` under jit's automatic
  partitioning instead. ``kwargs`` are those of :func:`stein_direction`.
  """
  ident = features is None or features is _IDENTITY
  if mesh is None or mesh.size == 1 or not ident or feature_values is not None:
    return stein_direction(x, scores, features=features, feature_values=feature_values,
                           region=region, **kwargs)
  from jax.sharding import PartitionSpec as P

  n = x.shape[0]
  xf = x.reshape(n, -1).astype(jnp.float32)
  g = scores.reshape(n, -1).astype(jnp.float32)
  d = xf.shape[1]
  pad = (-d) % mesh.size
  # A region rides along as one more (N, D) array in the particles' layout.
  arrays = [xf, g] if region is None else [
      xf, g, jnp.broadcast_to(jnp.asarray(region, jnp.float32), x.shape).reshape(n, -1)]
  if pad:  # zero coordinates change no distance, no repulsion and no drive
    arrays = [jnp.pad(a, ((0, 0), (0, pad))) for a in arrays]
  axes = tuple(mesh.axis_names)  # ("data", "model")
  spec = P(axes[0], axes[1])

  def local(xl, gl, *rl):
    # (N / data, D / model) -> (N, D / (model * data)): whole particles, a slice of coordinates.
    def gather_rows(a):
      return jax.lax.all_to_all(a, axes[0], split_axis=1, concat_axis=0, tiled=True)

    phi, info = stein_direction(gather_rows(xl), gather_rows(gl), axis_name=axes, dim=d,
                                region=gather_rows(rl[0]) if rl else None, **kwargs)
    return jax.lax.all_to_all(phi, axes[0], split_axis=0, concat_axis=1, tiled=True), info

  info_spec = SteinInfo(*([P()] * len(SteinInfo._fields)))
  phi, info = jax.shard_map(local, mesh=mesh, in_specs=(spec,) * len(arrays),
                            out_specs=(spec, info_spec))(*arrays)
  if pad:
    phi = phi[:, :d]
  return phi.reshape(x.shape), info


def naive_stein_direction(x, scores, bandwidth, drive="kernel", repulsion=1.0):
  """Reference implementation with a double vmap over particle pairs (BlackJAX style).

  Materialises N x N x D: for tests and benchmarks only.
  """
  n = x.shape[0]
  xf = x.reshape(n, -1).astype(jnp.float32)
  g = scores.reshape(n, -1).astype(jnp.float32)

  def kern(a, b):
    return jnp.exp(-jnp.sum((a - b) ** 2) / bandwidth)

  def summand(xi, xj, gj, gi):
    kij = kern(xj, xi)
    grad_j = jax.grad(kern)(xj, xi)
    own = {"kernel": kij * gj, "self": gi, "local": kij * gi}[drive]
    return own + repulsion * grad_j

  phi = jax.vmap(lambda xi, gi: jnp.mean(
      jax.vmap(lambda xj, gj: summand(xi, xj, gj, gi))(xf, g), axis=0))(xf, g)
  return phi.reshape(x.shape)
