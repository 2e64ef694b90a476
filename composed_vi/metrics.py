"""Sample-quality metrics against exact samples: MMD (multi-scale and fine), energy distance,
nearest-neighbour distances."""

from __future__ import annotations

import jax.numpy as jnp

from composed_vi.kernels import pairwise_sq_dists


def _flat(x):
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def mmd(x, y, bandwidths=None, scales=(0.25, 1.0, 4.0)):
  """Biased (V-statistic) MMD with a sum of RBF kernels; returns MMD (not squared).

  Bandwidths default to ``scales`` times the median squared distance of the pooled samples.
  """
  x, y = _flat(x), _flat(y)
  z = jnp.concatenate([x, y])
  sq = pairwise_sq_dists(z)
  if bandwidths is None:
    med = jnp.median(sq[jnp.triu_indices(z.shape[0], 1)])
    bandwidths = [s * med for s in scales]
  k = sum(jnp.exp(-sq / h) for h in bandwidths) / len(bandwidths)
  n = x.shape[0]
  kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
  mmd2 = kxx.mean() + kyy.mean() - 2 * kxy.mean()
  return jnp.sqrt(jnp.maximum(mmd2, 0.0))


def energy_distance(x, y):
  """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (V-statistic)."""
  x, y = _flat(x), _flat(y)
  z = jnp.concatenate([x, y])
  d = jnp.sqrt(jnp.maximum(pairwise_sq_dists(z), 0.0))
  n = x.shape[0]
  return 2 * d[:n, n:].mean() - d[:n, :n].mean() - d[n:, n:].mean()



def nearest_neighbour_distances(x):
  """``(N,)`` Euclidean distance of each sample to its nearest other sample (``N >= 2``).

  Clumped particles (several samples on one point) show as distances far below exact samples'
  at the same ``N``, which a kernel at the median bandwidth does not see.
  """
  x = _flat(x)
  sq = pairwise_sq_dists(x)
  sq = jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.inf, sq)
  return jnp.sqrt(jnp.maximum(jnp.min(sq, axis=1), 0.0))


def nearest_neighbour_ratio(x, reference):
  """Median nearest-neighbour distance of ``x`` over that of ``reference`` (exact samples, the
  same number of them): 1 for exact samples, below 1 for clumps, above for over-spread."""
  return (jnp.median(nearest_neighbour_distances(x))
          / jnp.median(nearest_neighbour_distances(reference)))


def close_pair_fraction(x, radius: float):
  """Fraction of samples with another sample within ``radius``."""
  return jnp.mean((nearest_neighbour_distances(x) < radius).astype(jnp.float32))


def fine_mmd(x, y, bandwidth: float):
  """MMD with one RBF kernel of length scale ``bandwidth`` (``exp(-|x - y|^2 / (2 h^2))``):
  at the narrowest component's std it sees structure inside a mode (clumps, a deconvolved
  population) that the median-scaled kernels of :func:`mmd` average away."""
  return mmd(x, y, bandwidths=(2.0 * float(bandwidth) ** 2,))
