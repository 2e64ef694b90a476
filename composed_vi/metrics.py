"""Sample-quality metrics against exact samples: MMD and energy distance."""

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

