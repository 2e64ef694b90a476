"""Sample metrics with known answers: nearest-neighbour distances, the fine-bandwidth MMD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from composed_vi import metrics


def test_nearest_neighbour_distances_known_answer():
  x = jnp.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.5], [10.0, 0.0]])
  np.testing.assert_allclose(metrics.nearest_neighbour_distances(x),
                             [5.0, 0.5, 0.5, np.hypot(7.0, 4.0)], rtol=1e-6)
  assert float(metrics.close_pair_fraction(x, 1.0)) == 0.5


def test_clumps_are_seen_by_the_ratio_and_the_fine_mmd_not_the_median_kernel():
  """Exact samples of N(0, I) in 2-D against the same law's samples snapped to a grid of spacing
  0.5 (the particles gathered into clumps): the multi-scale MMD moves by 13%, the fine MMD at
  0.1 more than doubles and the nearest-neighbour ratio falls to 0 (duplicates)."""
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  exact = jax.random.normal(k1, (512, 2))
  other = jax.random.normal(k2, (512, 2))
  clumped = jnp.round(jax.random.normal(k3, (512, 2)) / 0.5) * 0.5
  assert float(metrics.nearest_neighbour_ratio(other, exact)) == pytest.approx(1.0, abs=0.15)
  assert float(metrics.nearest_neighbour_ratio(clumped, exact)) < 0.05
  assert float(metrics.close_pair_fraction(clumped, 0.01)) > 0.9
  assert float(metrics.close_pair_fraction(other, 0.01)) < 0.05
  floor, fine = (float(metrics.fine_mmd(z, exact, 0.1)) for z in (other, clumped))
  assert fine > 2.0 * floor
  coarse_floor, coarse = (float(metrics.mmd(z, exact)) for z in (other, clumped))
  assert coarse < 1.3 * coarse_floor
  # The same kernel as a one-element ``bandwidths`` of :func:`metrics.mmd` (h = 2 s^2).
  np.testing.assert_allclose(metrics.fine_mmd(clumped, exact, 0.1),
                             metrics.mmd(clumped, exact, bandwidths=(0.02,)), rtol=1e-6)
