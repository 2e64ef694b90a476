"""Exact products of isotropic Gaussian mixtures (the targets whose answer is known).

The product of ``N(a, s^2 I)`` and ``N(b, u^2 I)`` is ``N(c, v^2 I)`` with
``1/v^2 = 1/s^2 + 1/u^2``, ``c = v^2 (a/s^2 + b/u^2)`` and mass ``N(a - b; 0, (s^2 + u^2) I)``,
so a product of mixtures is a mixture over pairs of components with closed-form weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi.experts import GaussianMixture


def product(*mixtures: GaussianMixture) -> GaussianMixture:
  """The normalised product ``prod_i p_i`` of isotropic Gaussian mixtures (unit weights)."""
  out = mixtures[0]
  for other in mixtures[1:]:
    out = _product2(out, other)
  return out


def _product2(p: GaussianMixture, q: GaussianMixture) -> GaussianMixture:
  d = p.dim
  a = p.means.reshape(-1, 1, d)
  b = q.means.reshape(1, -1, d)
  s2 = (p.stds**2)[:, None]
  u2 = (q.stds**2)[None, :]
  tot = s2 + u2
  v2 = s2 * u2 / tot
  mean = v2[..., None] * (a / s2[..., None] + b / u2[..., None])
  sq = jnp.sum(jnp.square(a - b), axis=-1)
  logw = (jnp.log(p.weights)[:, None] + jnp.log(q.weights)[None, :]
          - 0.5 * sq / tot - 0.5 * d * jnp.log(2 * math.pi * tot))
  w = jax.nn.softmax(logw.reshape(-1))
  return GaussianMixture(mean.reshape((-1,) + p.shape), jnp.sqrt(v2).reshape(-1), w)


def chi2_quantile(dof: int, z: float = 3.09) -> float:
  """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: the 0.999 quantile)."""
  k = float(dof)
  return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def assign_modes(samples, mixture: GaussianMixture, z: float = 3.09):
  """Nearest component (by standardised distance) and whether the sample lies on it.

  A sample lies on component ``k`` when ``|x - mu_k|^2 / std_k^2`` is below the chi-square
  quantile (``z`` standard deviations, 0.999 by default) with ``D`` degrees of freedom.

  Returns:
    ``(modes, on_mode)``: int ``(N,)`` and bool ``(N,)``.
  """
  n = samples.shape[0]
  x = samples.reshape(n, 1, -1)
  mu = mixture.means.reshape(1, -1, mixture.dim)
  sq = jnp.sum(jnp.square(x - mu), axis=-1) / mixture.stds[None, :] ** 2
  modes = jnp.argmin(sq, axis=1)
  best = jnp.min(sq, axis=1)
  return modes, best < chi2_quantile(mixture.dim, z)


def mode_coverage(samples, mixture: GaussianMixture):
  """``(distinct modes covered by on-mode samples, fraction of samples on a mode)``."""
  modes, on = assign_modes(samples, mixture)
  hit = jnp.zeros((mixture.means.shape[0],), bool).at[modes].max(on)
  return jnp.sum(hit), jnp.mean(on.astype(jnp.float32))


def mode_weight_error(samples, mixture: GaussianMixture, reference=None):
  """Total-variation distance between nearest-mode frequencies and the true ones.

  With ``reference`` (exact samples) the frequencies are compared with the reference's own
  nearest-mode frequencies, which is the right comparison when components overlap; without it,
  with the mixture weights (right for well-separated components).
  """
  k = mixture.means.shape[0]

  def freq(x):
    return jnp.bincount(assign_modes(x, mixture)[0], length=k) / x.shape[0]

  expected = mixture.weights if reference is None else freq(reference)
  return 0.5 * jnp.sum(jnp.abs(freq(samples) - expected))


def mode_moment_errors(samples, mixture: GaussianMixture, reference, min_weight: float = 0.05):
  """Per-mode mean and variance errors against exact ``reference`` samples (host numpy).

  Both sets are assigned to their nearest component (:func:`assign_modes`); for every
  component holding at least ``min_weight`` of the reference, the distance between the two
  sets' means in units of the component's std, and ``|log|`` of the ratio of their mean
  per-coordinate variances, over the components the samples reach (at least 2 of them);
  the reference mass of the others is reported as missed.

  Returns:
    ``(mean_error, variance_error, missed_mass)``: the errors averaged with the reference's
    frequencies as weights.
  """
  x = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
  ref = np.asarray(reference, np.float64).reshape(reference.shape[0], -1)
  mx = np.asarray(assign_modes(samples, mixture)[0])
  mr = np.asarray(assign_modes(reference, mixture)[0])
  stds = np.asarray(mixture.stds, np.float64)
  errs, var_errs, weights, missed = [], [], [], 0.0
  for k in range(stds.shape[0]):
    w = np.mean(mr == k)
    if w < min_weight:
      continue
    a, b = x[mx == k], ref[mr == k]
    if a.shape[0] < 2:
      missed += w
      continue
    weights.append(w)
    errs.append(np.linalg.norm(a.mean(0) - b.mean(0)) / stds[k])
    var_errs.append(abs(np.log(a.var(0).mean() / b.var(0).mean())))
  if not weights:
    return float("nan"), float("nan"), float(missed)
  weights = np.asarray(weights) / np.sum(weights)
  return float(np.dot(weights, errs)), float(np.dot(weights, var_errs)), float(missed)
