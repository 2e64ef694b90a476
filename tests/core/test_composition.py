"""The composed target (weights, masks, score, v_bar, validation) and exact mixture products."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import composed_vi as cvi
from composed_vi import experts, gmm

_evaluate = jax.jit(lambda target, x, t: target.evaluate(x, t))
_velocity_and_score = jax.jit(lambda e, x, t: e.velocity_and_score(x, t))
_log_prob = jax.jit(lambda e, x, t: e.log_prob(x, t))
_product = jax.jit(gmm.product)
_assign_modes = jax.jit(gmm.assign_modes)
_mode_coverage = jax.jit(gmm.mode_coverage)
_mode_weight_error = jax.jit(gmm.mode_weight_error)

SHAPE = (2, 3)


def _mixture(seed, k=2, shape=SHAPE):
  rng = np.random.default_rng(seed)
  return experts.GaussianMixture((1.5 * rng.standard_normal((k,) + shape)).astype(np.float32),
                                 rng.uniform(0.4, 1.0, k).astype(np.float32),
                                 rng.uniform(0.3, 1.0, k).astype(np.float32))


def _x(seed, n=5, shape=SHAPE):
  return np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)


def _raises(field):
  """``pytest.raises`` for a ConfigError whose message starts with ``field:``."""
  return pytest.raises(cvi.ConfigError, match="^" + re.escape(field) + ":")


WEIGHTS = {
    "scalars": (1.0, 2.5, 0.5),
    "masks": (np.asarray([[1.0, 0.0, 0.5]]), np.asarray([[0.0], [2.0]]), 0.25),
    "full_masks": (np.full(SHAPE, 0.3), np.eye(2, 3), np.ones(SHAPE)),
}


@pytest.mark.parametrize("name", sorted(WEIGHTS))
@pytest.mark.parametrize("t", (0.1, 0.5, 0.9))
def test_composed_score_and_velocity(name, t):
  es = [_mixture(s) for s in range(3)]
  ws = WEIGHTS[name]
  target = cvi.compose(es, ws)
  assert target.shape == SHAPE
  assert target.scalar_weights == (name == "scalars")
  x = _x(10)
  m = [np.broadcast_to(np.asarray(w, np.float32), SHAPE) for w in ws]
  total = sum(m)
  np.testing.assert_allclose(target.total_weight, total, rtol=1e-6)
  np.testing.assert_allclose(target.init_std(), 1.0 / np.sqrt(total), rtol=1e-5)
  parts = [_velocity_and_score(e, x, t) for e in es]
  v, s = _evaluate(target, x, t)
  assert v.shape == s.shape == x.shape
  np.testing.assert_allclose(s, sum(mi * si for mi, (_, si) in zip(m, parts)), rtol=1e-4,
                             atol=1e-4)
  v_bar = sum(mi * vi for mi, (vi, _) in zip(m, parts)) / total
  np.testing.assert_allclose(v, v_bar, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(target.x0(x, t), x - t * v_bar, rtol=1e-4, atol=1e-4)


def test_default_weights_and_single_expert():
  a, b = _mixture(0), _mixture(1)
  target = cvi.compose([a, b])
  assert target.scalar_weights and target.has_log_prob
  np.testing.assert_allclose(target.total_weight, np.full(SHAPE, 2.0))
  np.testing.assert_allclose(target.init_std(), np.full(SHAPE, 2**-0.5), rtol=1e-6)
  single = cvi.compose([a])
  x = _x(11)
  v, s = _evaluate(single, x, 0.3)
  va, sa = _velocity_and_score(a, x, 0.3)
  np.testing.assert_allclose(v, va, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s, sa, rtol=1e-5, atol=1e-6)
  # A length-1 array weight counts as a scalar.
  assert cvi.compose([a, b], [np.ones((1,)), 2.0]).scalar_weights


def test_composed_log_prob():
  a, b = _mixture(0), _mixture(1)
  x = _x(12)
  target = cvi.compose([a, b], [0.5, 2.0])
  expected = 0.5 * np.asarray(_log_prob(a, x, 0.4)) + 2.0 * np.asarray(_log_prob(b, x, 0.4))
  np.testing.assert_allclose(_log_prob(target, x, 0.4), expected, rtol=1e-5)
  # Its gradient is the composed score.
  grad = jax.jit(jax.grad(lambda y: jnp.sum(target.log_prob(y, 0.4))))(x)
  np.testing.assert_allclose(grad, _evaluate(target, x, 0.4)[1], rtol=1e-4, atol=1e-4)
  masked = cvi.compose([a, b], [np.ones(SHAPE), 1.0])
  assert not masked.has_log_prob
  with pytest.raises(ValueError, match="scalar weights"):
    masked.log_prob(x, 0.4)


def test_compose_errors():
  a, b = _mixture(0), _mixture(1)
  other = _mixture(2, shape=(3, 2))
  assert issubclass(cvi.ConfigError, ValueError)
  with _raises("experts[1].shape"):
    cvi.compose([a, other])
  with _raises("experts[1]"):
    cvi.compose([a, "not an expert"])
  with _raises("experts"):
    cvi.compose([])
  with _raises("weights[0]"):  # not broadcastable
    cvi.compose([a, b], [np.ones(4), 1.0])
  with _raises("weights[1]"):  # broadcastable, but to a larger shape than the latent
    cvi.compose([a, b], [1.0, np.ones((4, 2, 3))])
  with _raises("weights"):
    cvi.compose([a, b], [1.0])
  with _raises("weights"):
    cvi.compose([a, b], [1.0, 1.0, 1.0])
  with _raises("weights[0]"):
    cvi.compose([a, b], [-1.0, 1.0])
  with _raises("weights[1]"):
    cvi.compose([a, b], [1.0, np.asarray([[0.0, -0.1, 0.0]])])
  with _raises("weights[1]"):
    cvi.compose([a, b], [1.0, float("nan")])
  with _raises("weights[0]"):
    cvi.compose([a, b], [np.asarray([[1.0, np.inf, 1.0]]), 1.0])
  with _raises("weights") as err:  # total weight zero at one coordinate
    cvi.compose([a, b], [np.asarray([[1.0, 0.0, 1.0]]), np.asarray([[1.0, 0.0, 0.0]])])
  assert "total weight" in str(err.value)
  with _raises("weights"):
    cvi.compose([a, b], [0.0, 0.0])


def test_compose_zero_weight_by_support():
  """A visibility of 0 everywhere leaves nothing where no other expert has weight."""
  a = _mixture(0)
  ctx = experts.Context(np.zeros(SHAPE, np.float32), 0.2, visibility=np.zeros(SHAPE, np.float32))
  with _raises("weights"):
    cvi.compose([ctx])
  target = cvi.compose([a, ctx])
  x = _x(13)
  v, s = _evaluate(target, x, 0.5)
  va, sa = _velocity_and_score(a, x, 0.5)
  np.testing.assert_allclose(s, sa, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v, va, rtol=1e-5, atol=1e-6)


def test_with_context_adds_an_expert():
  a, b = _mixture(0), _mixture(1)
  target = cvi.compose([a, b], [1.0, 2.0])
  ctx = experts.Context(np.zeros(SHAPE, np.float32), 0.3)
  assert cvi.with_context(target, None) is target
  full = cvi.with_context(target, ctx, 0.5)
  assert len(full.experts) == 3 and full.scalar_weights
  np.testing.assert_allclose(full.total_weight, np.full(SHAPE, 3.5))
  with _raises("context.shape"):
    cvi.with_context(target, experts.Context(np.zeros((3,), np.float32), 0.3))


# --- exact products -------------------------------------------------------------------------------


def test_product_log_density_is_sum_up_to_constant():
  p = _mixture(20, k=3, shape=(3,))
  q = _mixture(21, k=2, shape=(3,))
  prod = _product(p, q)
  assert prod.means.shape == (6, 3) and prod.stds.shape == (6,)
  np.testing.assert_allclose(float(jnp.sum(prod.weights)), 1.0, rtol=1e-6)
  x = np.random.default_rng(22).uniform(-2.5, 2.5, (64, 3)).astype(np.float32)
  lp = np.asarray(_log_prob(p, x, 0.0), np.float64) + np.asarray(_log_prob(q, x, 0.0), np.float64)
  diff = lp - np.asarray(_log_prob(prod, x, 0.0), np.float64)
  assert np.ptp(lp) > 5.0  # the points probe very different densities
  np.testing.assert_allclose(diff - diff.mean(), 0.0, atol=2e-3)


def test_product_of_three_and_gaussians():
  # Two Gaussians: N(a, s^2) N(b, u^2) ~ N(c, v^2) with 1/v^2 = 1/s^2 + 1/u^2.
  g = _product(experts.Gaussian([1.0, 0.0], 0.5), experts.Gaussian([0.0, 2.0], 1.0))
  v2 = 1.0 / (1 / 0.25 + 1.0)
  np.testing.assert_allclose(g.stds, [np.sqrt(v2)], rtol=1e-6)
  np.testing.assert_allclose(g.means[0], v2 * np.asarray([1.0 / 0.25, 2.0]), rtol=1e-6)
  # Associativity on three mixtures (modes of the product of the conftest mixtures).
  a = experts.GaussianMixture([[2.0, 0.0], [-2.0, 0.0]], [0.5, 0.5])
  b = experts.GaussianMixture([[0.0, 2.0], [0.0, -2.0]], [0.5, 0.5])
  c = experts.GaussianMixture([[1.0, 1.0], [-1.0, -1.0]], [1.0, 1.0], [0.9, 0.1])
  x = np.random.default_rng(23).uniform(-2, 2, (32, 2)).astype(np.float32)
  lp = sum(np.asarray(_log_prob(m, x, 0.0), np.float64) for m in (a, b, c))
  diff = lp - np.asarray(_log_prob(_product(a, b, c), x, 0.0), np.float64)
  np.testing.assert_allclose(diff - diff.mean(), 0.0, atol=2e-3)


def test_mode_assignment_and_coverage(exact_product):
  np.testing.assert_allclose(np.sort(np.abs(np.asarray(exact_product.means)), axis=0), 1.0)
  np.testing.assert_allclose(exact_product.weights, 0.25, rtol=1e-5)
  samples = np.asarray(exact_product.means) + 0.05
  modes, on = _assign_modes(samples, exact_product)
  np.testing.assert_array_equal(modes, np.arange(4))
  assert bool(np.all(on))
  covered, frac = _mode_coverage(samples[:3], exact_product)
  assert int(covered) == 3 and float(frac) == 1.0
  far = np.asarray([[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]], np.float32)
  covered, frac = _mode_coverage(far, exact_product)
  assert int(covered) == 1 and abs(float(frac) - 1 / 3) < 1e-6
  err = _mode_weight_error(np.repeat(samples, 5, axis=0), exact_product)
  np.testing.assert_allclose(err, 0.0, atol=1e-6)
  err = _mode_weight_error(np.repeat(samples[:1], 8, axis=0), exact_product)
  np.testing.assert_allclose(err, 0.75, atol=1e-6)


def test_normalized_weights_sum_to_one_and_keep_the_velocity():
  """``normalize=True``: weights m_i / sum_j m_j (support included), the score divided by the
  total weight, v_bar unchanged, pi_1 = N(0, I)."""
  d = 6
  a = experts.Gaussian(jnp.full((d,), 0.5), 0.3)
  b = experts.Gaussian(jnp.full((d,), -0.2), 0.7)
  mask = np.asarray([1.0, 1.0, 0.0, 0.0, 1.0, 0.0], np.float32)
  weights = [3.0, 1.0 + mask]
  plain = cvi.compose([a, b], weights)
  norm = cvi.compose([a, b], weights, normalize=True)
  total = 3.0 + 1.0 + mask
  np.testing.assert_allclose(np.asarray(sum(norm.weights)), np.ones(d), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(norm.weights[0]), 3.0 / total, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(norm.init_std()), np.ones(d))
  x = jax.random.normal(jax.random.key(0), (3, d))
  for t in (0.9, 0.3, 0.05):
    v_plain, s_plain = plain.evaluate(x, t)
    v_norm, s_norm = norm.evaluate(x, t)
    np.testing.assert_allclose(v_norm, v_plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_norm, s_plain / total, rtol=1e-5, atol=1e-6)
  # Scalar weights stay scalar (the product keeps its energy), scaled by 1 / sum.
  scalar = cvi.compose([a, b], [3.0, 1.0], normalize=True)
  assert scalar.has_log_prob
  np.testing.assert_allclose(scalar.log_prob(x, 0.5),
                             cvi.compose([a, b], [3.0, 1.0]).log_prob(x, 0.5) / 4.0, rtol=1e-5)
