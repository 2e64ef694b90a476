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
