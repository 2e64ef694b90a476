"""The issue-2 acceptance regimes, every method on its default options (slow: `make test-slow`)."""

import jax
import numpy as np
import pytest

import composed_vi as cvi
from composed_vi import gmm, metrics
from composed_vi.lab import toys


def _mmd_ratio(method, seeds=3, n=512):
  (a, b), exact = toys.asymmetric_product_2d()
  target = cvi.compose([a, b])
  ours, floor = [], []
  for s in range(seeds):
    x, _ = cvi.sample(jax.random.key(s), target, n, method)
    ref = exact.sample(jax.random.key(100 + s), n)
    ours.append(float(metrics.mmd(x, ref)))
    floor.append(float(metrics.mmd(exact.sample(jax.random.key(200 + s), n), ref)))
  return np.mean(ours) / np.mean(floor)


def _coverage(method, dim, seeds=40):
  (a, b), exact = toys.four_modes(dim)
  target = cvi.compose([a, b])
  covered, on = [], []
  for s in range(seeds):
    x, _ = cvi.sample(jax.random.key(1000 + s), target, 4, method)
    c, o = gmm.mode_coverage(x, exact)
    covered.append(float(c))
    on.append(float(o))
  return np.mean(covered), np.mean(on)


@pytest.mark.slow
def test_many_particles_accuracy():
  ratios = {m: _mmd_ratio(m) for m in ("ctrl_vi", "annealed_langevin", "ode")}
  assert ratios["ctrl_vi"] <= 3.0, ratios
  assert ratios["annealed_langevin"] <= 3.0, ratios
  assert ratios["ode"] > 1.2 * max(ratios["ctrl_vi"], ratios["annealed_langevin"]), ratios


@pytest.mark.slow
def test_few_particles_mode_coverage():
  cov2, on2 = _coverage("ctrl_vi", 2)
  cov_hd, on_hd = _coverage("ctrl_vi", 4096)
  lang_hd, _ = _coverage("annealed_langevin", 4096)
  assert cov2 >= 3.9 and on2 >= 0.95, (cov2, on2)
  assert cov_hd >= 3.6 and on_hd >= 0.95, (cov_hd, on_hd)
  assert cov_hd >= lang_hd + 0.4, (cov_hd, lang_hd)
