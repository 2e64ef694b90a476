"""Exact-target toys: products of Gaussian mixtures in the style of Reduce-Reuse-Recycle."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from composed_vi import gmm
from composed_vi.experts import GaussianMixture


def asymmetric_product_2d():
  """Two asymmetric 2-D mixtures (unequal weights and widths); their product has 6 modes.

  Returns:
    ``(experts, exact)``: the two experts and their exact normalised product.
  """
  a = GaussianMixture(jnp.array([[-1.5, 0.0], [1.0, 1.0], [0.5, -1.5]]),
                      jnp.array([0.6, 0.4, 0.5]), jnp.array([0.5, 0.3, 0.2]))
  b = GaussianMixture(jnp.array([[0.0, 0.5], [1.5, -0.5]]), jnp.array([0.8, 0.6]),
                      jnp.array([0.6, 0.4]))
  return (a, b), gmm.product(a, b)


def four_modes(dim: int = 2, separation: float = 2.0, std: float = 0.5):
  """Two "stripe" mixtures whose product has 4 separated equal-weight modes at ``(+-1, +-1)``.

  Expert A has components at ``+-separation e_1``, expert B at ``+-separation e_2`` (equal
  stds), so the product modes sit at ``(+-s/2, +-s/2, 0, ...)`` with std ``std / sqrt(2)``. In
  ``dim > 2`` the extra coordinates carry only noise: the regime where an RBF kernel on raw
  coordinates is nearly blind (every off-diagonal ``K_ij ~ 1/N``).
  """
  if dim < 2:
    raise ValueError(f"dim: expected >= 2, got {dim}")
  e1 = np.zeros(dim, np.float32)
  e1[0] = 1
  e2 = np.zeros(dim, np.float32)
  e2[1] = 1
  a = GaussianMixture(jnp.asarray(np.stack([separation * e1, -separation * e1])),
                      jnp.array([std, std]))
  b = GaussianMixture(jnp.asarray(np.stack([separation * e2, -separation * e2])),
                      jnp.array([std, std]))
  return (a, b), gmm.product(a, b)


def ring_product(rotation: float = 0.0, std: float = 0.075, radius: float = 1.0):
  """Reduce-Reuse-Recycle's ring of 8 times its left half: 4 modes of std ``std / sqrt(2)``.

  The ring's components sit at angles ``22.5 + 45 k`` degrees (plus ``rotation``, radians) on a
  circle of ``radius``; the second expert has the four whose first coordinate is negative
  before the rotation, so the product keeps those four, ``0.77 radius`` apart.
  """
  ang = np.deg2rad(22.5 + 45.0 * np.arange(8))
  means = np.stack([np.cos(ang), np.sin(ang)], -1)
  left = means[:, 0] < 0
  c, s = np.cos(rotation), np.sin(rotation)
  means = (radius * means @ np.array([[c, s], [-s, c]])).astype(np.float32)
  ring = GaussianMixture(jnp.asarray(means), jnp.full((8,), std, jnp.float32))
  half = GaussianMixture(jnp.asarray(means[left]), jnp.full((4,), std, jnp.float32))
  return (ring, half), gmm.product(ring, half)


def random_product(seed: int, dim: int = 2, stds=(0.15, 1.2)):
  """Two random isotropic mixtures in ``dim`` dimensions and their exact product.

  Per expert: 2 to 4 components, means uniform in ``[-2, 2]^dim``, stds uniform in ``stds``,
  weights from a flat Dirichlet. The seed decides everything (numpy's generator).
  """
  rng = np.random.default_rng(seed)
  mixtures = []
  for _ in range(2):
    k = int(rng.integers(2, 5))
    mixtures.append(GaussianMixture(
        jnp.asarray(rng.uniform(-2.0, 2.0, (k, dim)).astype(np.float32)),
        jnp.asarray(rng.uniform(*stds, k).astype(np.float32)),
        jnp.asarray(rng.dirichlet(np.ones(k)).astype(np.float32))))
  return tuple(mixtures), gmm.product(*mixtures)


def wide_narrow_product(seed: int):
  """A wide expert (2 components, stds 1.0 to 1.6) times a narrow one (3 components, stds
  0.08 to 0.2) in 2-D: the product is narrow where the wide expert barely varies."""
  rng = np.random.default_rng(seed)
  wide = GaussianMixture(jnp.asarray(rng.uniform(-1.5, 1.5, (2, 2)).astype(np.float32)),
                         jnp.asarray(rng.uniform(1.0, 1.6, 2).astype(np.float32)))
  narrow = GaussianMixture(jnp.asarray(rng.uniform(-1.0, 1.0, (3, 2)).astype(np.float32)),
                           jnp.asarray(rng.uniform(0.08, 0.2, 3).astype(np.float32)),
                           jnp.asarray(rng.dirichlet(np.ones(3)).astype(np.float32)))
  return (wide, narrow), gmm.product(wide, narrow)


#: The seeded families of the exact-target study: ``name -> (seed -> (experts, exact))``.
FAMILIES = {
    "random_2d": lambda seed: random_product(seed, 2),
    "random_16d": lambda seed: random_product(seed, 16),
    "ring": lambda seed: ring_product(rotation=float(np.random.default_rng(seed).uniform(
        0, 2 * np.pi))),
    "wide_narrow": wide_narrow_product,
}
