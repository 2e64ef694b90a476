"""Stationarity on exact targets: started at exact samples of the noisy target at one level,
a correct sampler's population keeps the exact mean, variance and nearest-neighbour distances.

A sampler whose fixed point is not the target (a drive that deconvolves it, steps that collapse
the particles) fails these: the variance shrinks and the nearest-neighbour distances with it.
Annealed Langevin is checked here, with MALA (exact stationarity) and ULA (a bias of order
the step), and Ctrl-VI with its defaults (textbook SVGD drive, stiffness step: its mean-field
fixed point is the target, docs/method.md). The earlier ``'local'`` drive is checked to fail
(its fixed point is the target deconvolved by the kernel), so the test can see the bias.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import composed_vi as cvi
from composed_vi import experts, metrics, samplers, sampling

N = 2048
T = 0.3  # the level: noisy marginals N((1 - t) mu, (1 - t)^2 s^2 + t^2)


def _noisy(mixture, t):
  """The exact marginal of ``mixture`` at level ``t`` (a mixture of the same components)."""
  stds = jnp.sqrt((1 - t) ** 2 * mixture.stds ** 2 + t ** 2)
  return experts.GaussianMixture((1 - t) * mixture.means, stds, mixture.weights)


TARGETS = {
    "gaussian": experts.GaussianMixture([[0.5, -1.0]], [0.7]),
    "two_modes": experts.GaussianMixture([[-1.5, 0.0], [1.5, 0.0]], [0.4, 0.4], [0.3, 0.7]),
}


def _run(mixture, method, num_steps, n=N, **options):
  noisy = _noisy(mixture, T)
  target = cvi.compose([mixture])
  opts = sampling.build_options(method, levels=(T,), inner_steps=num_steps, **options)
  sampler = samplers.make(method, opts)
  state = sampler.init(jax.random.key(1), target, n)
  state = state._replace(particles=noisy.sample(jax.random.key(2), n))
  state, _ = jax.jit(sampler.step)(state, target)
  return np.asarray(state.particles), noisy


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("mala,variance_tolerance", [(True, 0.1), (False, 0.1)])
def test_langevin_keeps_exact_samples_exact(name, mala, variance_tolerance):
  x, noisy = _run(TARGETS[name], "annealed_langevin", 200, mala=mala, step_size=0.05)
  # Variance within 10%: its sampling error at N = 2048 is about 3% per coordinate; the
  # deconvolving drive measured 19% to 52% low.
  _check_exact(x, noisy, variance_tolerance)


def _check_exact(x, noisy, variance_tolerance):
  """Mean within 4 standard errors, variance within ``variance_tolerance``, nearest-neighbour
  distances within 25% of exact samples' at the same N."""
  n = x.shape[0]
  ref = np.asarray(noisy.sample(jax.random.key(3), n))
  exact = np.asarray(noisy.sample(jax.random.key(4), 200_000))
  mean, var = exact.mean(0), exact.var(0)
  np.testing.assert_array_less(np.abs(x.mean(0) - mean), 4 * np.sqrt(var / n))
  np.testing.assert_allclose(x.var(0), var, rtol=variance_tolerance)
  assert float(metrics.nearest_neighbour_ratio(x, ref)) == pytest.approx(1.0, abs=0.25)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_ctrl_vi_default_keeps_exact_samples_exact(name):
  """N = 512 (the regime of the study), 200 SVGD steps at the level with every default: the
  variance within 15% (its sampling error at N = 512 is about 6% per coordinate)."""
  x, noisy = _run(TARGETS[name], "ctrl_vi", 200, n=512)
  _check_exact(x, noisy, 0.15)


def test_ctrl_vi_local_drive_is_biased():
  """The earlier default, ``drive='local'``, shrinks the Gaussian's variance by more than
  the tolerance above: the population it keeps is the target deconvolved by the kernel."""
  x, noisy = _run(TARGETS["gaussian"], "ctrl_vi", 200, n=512, drive="local")
  exact_var = np.asarray(noisy.stds)[0] ** 2
  assert np.all(x.var(0) < 0.85 * exact_var), (x.var(0), exact_var)
