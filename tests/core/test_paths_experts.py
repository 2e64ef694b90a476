"""Noise-path conversions, exact Gaussian-mixture experts, VP adapters, CFG and context experts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import composed_vi as cvi
from composed_vi import experts, paths

TIMES = (0.1, 0.5, 0.9)


# Jitted entry points (one compilation per expert type and shape instead of one per eager op).
_velocity_and_score = jax.jit(lambda e, x, t: e.velocity_and_score(x, t))
_velocity = jax.jit(lambda e, x, t: e.velocity(x, t))
_evaluate = jax.jit(lambda target, x, t: target.evaluate(x, t))
_log_prob = jax.jit(lambda e, x, t: e.log_prob(x, t))
_grad_log_prob = jax.jit(lambda e, x, t: jax.grad(lambda y: jnp.sum(e.log_prob(y, t)))(x))


def _normal(seed, shape, scale=1.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _mixture(seed=0, k=3, shape=(4,)):
  """A random isotropic mixture with distinct stds and unequal weights."""
  rng = np.random.default_rng(seed)
  means = 1.5 * rng.standard_normal((k,) + shape)
  stds = rng.uniform(0.3, 1.2, k)
  weights = rng.uniform(0.2, 1.0, k)
  return experts.GaussianMixture(means.astype(np.float32), stds.astype(np.float32),
                                 weights.astype(np.float32))


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", (0.05, 0.3, 0.5, 0.77, 0.95))
def test_paths_round_trips(t):
  x = _normal(0, (5, 7))
  v = _normal(1, (5, 7))
  s = paths.score_from_velocity(x, t, v)
  np.testing.assert_allclose(paths.velocity_from_score(x, t, s), v, rtol=1e-4, atol=1e-4)
  x0 = paths.x0_from_velocity(x, t, v)
  np.testing.assert_allclose(paths.velocity_from_x0(x, t, x0), v, rtol=1e-4, atol=1e-4)
  eps = paths.eps_from_velocity(x, t, v)
  np.testing.assert_allclose(paths.velocity_from_eps(x, t, eps), v, rtol=1e-4, atol=1e-4)
  # The predictions are consistent with the path x = (1 - t) x0 + t eps and v = eps - x0.
  np.testing.assert_allclose((1 - t) * x0 + t * eps, x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(eps - x0, v, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s, -eps / t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", (0.05, 0.3, 0.5, 0.95))
def test_vp_coefficients(t):
  alpha, sigma, norm = paths.vp_coefficients(jnp.float32(t))
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-6)
  np.testing.assert_allclose(alpha / sigma, (1 - t) / t, rtol=1e-5)
  np.testing.assert_allclose(alpha * norm, 1 - t, rtol=1e-6)
  np.testing.assert_allclose(paths.flow_time_from_vp(alpha, sigma), t, rtol=1e-6)


# --- Gaussian mixtures ----------------------------------------------------------------------------


@pytest.mark.parametrize("t", (0.05, 0.2, 0.5, 0.8, 0.97))
def test_mixture_score_is_grad_of_log_prob(t):
  g = _mixture()
  x = _normal(2, (6, 4), 2.0)
  _, s = _velocity_and_score(g, x, t)
  grad = _grad_log_prob(g, x, t)
  assert float(np.max(np.abs(grad))) > 0.1
  np.testing.assert_allclose(s, grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t", (0.2, 0.6))
def test_mixture_score_matches_finite_differences(t):
  g = _mixture(seed=3, shape=(3,))
  x = np.asarray(_normal(4, (2, 3)), np.float64)
  h = 1e-2
  fd = np.zeros_like(x)
  for j in range(3):
    e = np.zeros(3)
    e[j] = h
    up = np.asarray(_log_prob(g, (x + e).astype(np.float32), t), np.float64)
    down = np.asarray(_log_prob(g, (x - e).astype(np.float32), t), np.float64)
    fd[:, j] = (up - down) / (2 * h)
  _, s = _velocity_and_score(g, x.astype(np.float32), t)
  np.testing.assert_allclose(s, fd, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("t", (0.05, 0.2, 0.5, 0.8, 0.97))
def test_mixture_velocity_consistent_with_score(t):
  g = _mixture(seed=5, shape=(2, 3))
  x = _normal(6, (4, 2, 3), 2.0)
  v, s = _velocity_and_score(g, x, t)
  assert v.shape == s.shape == x.shape
  np.testing.assert_allclose(paths.velocity_from_score(x, t, s), v, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(_velocity(g, x, t), v, rtol=1e-6)
  # The log-density is the exact one: at t = 1 every marginal is N(0, I).
  d = 6
  ref = -0.5 * np.sum(x.reshape(4, -1) ** 2, -1) - 0.5 * d * np.log(2 * np.pi)
  np.testing.assert_allclose(_log_prob(g, x, 1.0), ref, rtol=1e-5)


@pytest.mark.parametrize("t", (0.05, 0.3, 0.5, 0.9))
def test_single_gaussian_velocity_closed_form(t):
  mu = np.asarray([0.5, -1.0, 2.0], np.float32)
  s = 0.7
  g = experts.Gaussian(mu, s)
  x = _normal(7, (5, 3), 1.5)
  var = (1 - t) ** 2 * s**2 + t**2
  expected = ((t - (1 - t) * s**2) / var) * (x - (1 - t) * mu) - mu
  v, score = _velocity_and_score(g, x, t)
  np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(score, -(x - (1 - t) * mu) / var, rtol=1e-5, atol=1e-5)


def test_mixture_exact_samples():
  g = experts.GaussianMixture([[3.0, 0.0], [-3.0, 0.0]], [0.2, 0.2], [0.25, 0.75])
  x = np.asarray(jax.jit(g.sample, static_argnums=1)(jax.random.key(0), 4000))
  assert x.shape == (4000, 2)
  frac_right = float(np.mean(x[:, 0] > 0))
  assert abs(frac_right - 0.25) < 0.03
  np.testing.assert_allclose(np.std(x[:, 1]), 0.2, rtol=0.1)
  np.testing.assert_allclose(np.mean(np.abs(x[:, 0])), 3.0, rtol=0.05)


def test_mixture_validation():
  with pytest.raises(cvi.ConfigError, match="stds"):
    experts.GaussianMixture([[0.0], [1.0]], [1.0, -1.0])
  with pytest.raises(cvi.ConfigError, match="stds"):
    experts.GaussianMixture([[0.0], [1.0]], [1.0, 1.0, 1.0])
  with pytest.raises(cvi.ConfigError, match="weights"):
    experts.GaussianMixture([[0.0], [1.0]], 1.0, [1.0, -0.5])
  with pytest.raises(cvi.ConfigError, match="means"):
    experts.GaussianMixture([0.0, 1.0], 1.0)
  with pytest.raises(cvi.ConfigError, match="means"):
    experts.GaussianMixture([[0.0], [np.nan]], 1.0)


# --- VP adapters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", experts.PREDICTIONS)
@pytest.mark.parametrize("t", TIMES)
def test_vp_adapter_round_trip(prediction, t):
  g = _mixture(seed=8, shape=(2, 2))
  x = _normal(9, (5, 2, 2), 1.5)
  fn = experts.to_vp_predictor(g, prediction)
  adapted = experts.VPAdapter(fn, prediction, g.shape)
  assert adapted.shape == g.shape
  np.testing.assert_allclose(_velocity(adapted, x, t), _velocity(g, x, t), rtol=1e-4, atol=1e-4)


def _analytic_vp_predictor(mu, s, prediction):
  """Exact VP predictors of N(mu, s^2 I) at x_vp = alpha x0 + sigma eps."""

  def fn(x_vp, alpha, sigma):
    denom = alpha**2 * s**2 + sigma**2
    resid = x_vp - alpha * mu
    eps = sigma * resid / denom
    x0 = mu + alpha * s**2 * resid / denom
    return {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[prediction]

  return fn


@pytest.mark.parametrize("prediction", experts.PREDICTIONS)
@pytest.mark.parametrize("t", TIMES)
def test_vp_adapter_analytic_gaussian(prediction, t):
  mu = np.asarray([1.0, -0.5, 0.25], np.float32)
  s = 0.6
  x = _normal(10, (6, 3), 1.5)
  fn = _analytic_vp_predictor(mu, s, prediction)
  adapted = experts.VPAdapter(fn, prediction, (3,))
  g = experts.Gaussian(mu, s)
  np.testing.assert_allclose(_velocity(adapted, x, t), _velocity(g, x, t), rtol=1e-4, atol=1e-4)
  # The other way: the flow expert seen as a VP model is the analytic predictor.
  alpha, sigma = np.float32((1 - t) / np.hypot(1 - t, t)), np.float32(t / np.hypot(1 - t, t))
  x_vp = _normal(11, (6, 3))
  ours = jax.jit(experts.to_vp_predictor(g, prediction))(x_vp, alpha, sigma)
  np.testing.assert_allclose(ours, fn(x_vp, alpha, sigma), rtol=1e-4, atol=1e-4)


def test_vp_adapter_rejects_unknown_prediction():
  with pytest.raises(cvi.ConfigError, match="prediction"):
    experts.VPAdapter(lambda x, a, s: x, "score", (2,))
  with pytest.raises(cvi.ConfigError, match="prediction"):
    experts.to_vp_predictor(experts.Gaussian([0.0], 1.0), "velocity")


# --- classifier-free guidance ---------------------------------------------------------------------


@pytest.mark.parametrize("t", TIMES)
def test_classifier_free_guidance(t):
  cond = experts.Gaussian([1.0, 2.0], 0.5, support=jnp.asarray([1.0, 0.0]))
  uncond = _mixture(seed=12, shape=(2,))
  x = _normal(13, (5, 2))
  vc, vu = np.asarray(_velocity(cond, x, t)), np.asarray(_velocity(uncond, x, t))
  assert float(np.max(np.abs(vc - vu))) > 1e-2  # the branches differ

  def cfg(scale):
    return _velocity(experts.ClassifierFreeGuidance(cond, uncond, scale), x, t)

  np.testing.assert_allclose(cfg(1.0), vc, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cfg(0.0), vu, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cfg(3.0), vu + 3.0 * (vc - vu), rtol=1e-5, atol=1e-5)
  # The guidance scale is static: each scale is its own computation, not a traced value.
  assert experts.ClassifierFreeGuidance(cond, uncond, 3.0).scale == 3.0
  guided = experts.ClassifierFreeGuidance(cond, uncond, 3.0)
  assert guided.shape == (2,)
  np.testing.assert_array_equal(guided.support, cond.support)


# --- context expert -------------------------------------------------------------------------------


def test_context_support_respected_in_compose():
  base = experts.GaussianMixture([[2.0, 0.0, -1.0], [-2.0, 0.0, 1.0]], [0.5, 0.5])
  visibility = jnp.asarray([1.0, 0.0, 0.5])
  ctx = experts.Context(jnp.asarray([-1.0, 1.0, 3.0]), sigma=0.3, visibility=visibility)
  target = cvi.compose([base, ctx], [1.0, 2.0])
  assert not target.scalar_weights
  np.testing.assert_allclose(target.weights[1], 2.0 * visibility)
  np.testing.assert_allclose(target.total_weight, 1.0 + 2.0 * visibility)
  x = _normal(14, (4, 3))
  for t in TIMES:
    v, s = _evaluate(target, x, t)
    vb, sb = _velocity_and_score(base, x, t)
    vc, sc = _velocity_and_score(ctx, x, t)
    # Invisible coordinate: the context has no say at all.
    np.testing.assert_allclose(s[:, 1], sb[:, 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v[:, 1], vb[:, 1], rtol=1e-5, atol=1e-5)
    # Visible coordinates: it does, with its weight times the visibility.
    np.testing.assert_allclose(s[:, 0], sb[:, 0] + 2.0 * sc[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s[:, 2], sb[:, 2] + 1.0 * sc[:, 2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(v[:, 2], (vb[:, 2] + vc[:, 2]) / 2.0, rtol=1e-4, atol=1e-4)


def test_context_marginal_and_validation():
  c = jnp.asarray([0.5, -1.0])
  ctx = experts.Context(c, sigma=0.2)
  assert ctx.support is None
  t = 0.3
  x = _normal(15, (3, 2))
  var = (1 - t) ** 2 * 0.04 + t**2
  _, s = _velocity_and_score(ctx, x, t)
  np.testing.assert_allclose(s, -(x - (1 - t) * np.asarray(c)) / var, rtol=1e-4, atol=1e-4)
  with pytest.raises(cvi.ConfigError, match="sigma"):
    experts.Context(c, sigma=0.0)
  with pytest.raises(cvi.ConfigError, match="visibility"):
    experts.Context(c, sigma=0.2, visibility=jnp.ones(3))
  with pytest.raises(cvi.ConfigError, match="context"):
    experts.Context(jnp.asarray([np.nan, 0.0]))


# --- pytrees through jit --------------------------------------------------------------------------


def _all_experts():
  g = _mixture(seed=16, shape=(3,))
  gauss = experts.Gaussian([0.1, 0.2, 0.3], 0.8)
  return {
      "mixture": g,
      "context": experts.Context(jnp.asarray([1.0, 0.0, -1.0]), 0.3, jnp.asarray([1.0, 0.0, 1.0])),
      "cfg": experts.ClassifierFreeGuidance(gauss, g, 2.5),
      "function": experts.FunctionExpert(lambda x, t: -x * (1 - t), (3,)),
      "vp": experts.VPAdapter(experts.to_vp_predictor(gauss, "eps"), "eps", (3,)),
  }


@pytest.mark.parametrize("name", sorted(_all_experts()))
def test_experts_pass_through_jit(name):
  expert = _all_experts()[name]
  x = _normal(17, (4, 3))

  @jax.jit
  def f(e, x, t):
    return e.velocity_and_score(x, t)

  v, s = f(expert, x, 0.4)
  # Reference: the same computation with the expert closed over (constants, not arguments).
  v_ref, s_ref = jax.jit(lambda x, t: expert.velocity_and_score(x, t))(x, 0.4)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s, s_ref, rtol=1e-5, atol=1e-5)
  leaves, treedef = jax.tree.flatten(expert)
  rebuilt = jax.tree.unflatten(treedef, leaves)
  assert type(rebuilt) is type(expert) and rebuilt.shape == expert.shape == (3,)
  np.testing.assert_allclose(_velocity(rebuilt, x, 0.4), v_ref, rtol=1e-5, atol=1e-5)


def test_mixture_parameters_are_traced_leaves():
  """Two mixtures with different parameters of the same shapes share one compilation."""
  traces = []

  @jax.jit
  def f(e, x):
    traces.append(None)
    return e.velocity(x, 0.5)

  x = _normal(18, (2, 4))
  g1, g2 = _mixture(seed=19), _mixture(seed=20)
  v1, v2 = f(g1, x), f(g2, x)
  assert len(traces) == 1
  np.testing.assert_allclose(v1, _velocity(g1, x, 0.5), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(v2, _velocity(g2, x, 0.5), rtol=1e-5, atol=1e-5)
  assert float(np.max(np.abs(v1 - v2))) > 1e-3
  target = cvi.compose([g1, g2], [1.0, 0.5])
  vj, sj = jax.jit(lambda tg, x: tg.evaluate(x, 0.5))(target, x)
  vr, sr = target.evaluate(x, 0.5)
  np.testing.assert_allclose(vj, vr, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sj, sr, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [0.0, 0.05, 0.5, 0.95, 1.0])
def test_preconditioning_skip_is_the_gaussian_posterior_mean(t):
  """For data N(0, s^2 I), ``c_skip x_t`` is E[x0 | x_t]: with ``F = 0`` the preconditioned
  velocity is the exact Gaussian expert's, and it is finite at t = 0 and t = 1."""
  s = 0.4
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
  got = paths.velocity_from_preconditioned(x, t, jnp.zeros_like(x), s)
  want = experts.Gaussian(np.zeros(5), s).velocity(x, t)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if 0 < t:
    f = jnp.ones_like(x)
    c_skip, c_out = paths.preconditioning(t, s)
    np.testing.assert_allclose(paths.velocity_from_preconditioned(x, t, f, s),
                               (x - (c_skip * x + c_out * f)) / t, rtol=1e-4, atol=1e-5)
  # The target (x0 - c_skip x_t) / c_out has unit variance on such data.
  if 0 < t < 1:
    rng = np.random.default_rng(1)
    x0 = s * rng.normal(size=200_000)
    xt = (1 - t) * x0 + t * rng.normal(size=x0.size)
    c_skip, c_out = paths.preconditioning(t, s)
    assert np.std((x0 - c_skip * xt) / c_out) == pytest.approx(1.0, rel=0.01)


# --- noise-matched queries -----------------------------------------------------------------------


def test_noise_matched_is_the_expert_where_the_product_is_as_noisy_as_it():
  g = experts.Gaussian(_normal(0, (4, 3)), 0.5)
  x = _normal(1, (5, 4, 3))
  total = np.array([1.0, 4.0, 16.0], np.float32)  # one per channel
  matched = experts.noise_matched(g, total)
  np.testing.assert_allclose(np.asarray(matched.extra),
                             np.sqrt(1.0 - 1.0 / total), rtol=1e-6)
  v_ref = np.asarray(_velocity(g, x, 0.4))
  v = np.asarray(_velocity(matched, x, 0.4))
  # W = 1: nothing added, the expert's own velocity (to float32 round-off).
  np.testing.assert_allclose(v[..., 0], v_ref[..., 0], atol=1e-5)
  assert np.abs(v[..., 1:] - v_ref[..., 1:]).max() > 0.05
  # A function of the key and the level alone.
  np.testing.assert_array_equal(v, np.asarray(_velocity(matched, x, 0.4)))
  assert np.abs(v - np.asarray(_velocity(matched, x, 0.41))).max() > 0.05


@pytest.mark.parametrize("t", (0.2, 0.7))
def test_noise_matched_is_unbiased_for_a_linear_posterior_mean(t):
  """A Gaussian's posterior mean is linear in the input, so the re-noised query's velocity at
  ``x`` averages, over the added noise, to the expert's velocity at ``x`` (exact answer)."""
  std = 0.5
  g = experts.Gaussian(_normal(0, (6,)), std)
  x = _normal(1, (3, 6))
  base = experts.noise_matched(g, 9.0)
  keys = jax.vmap(lambda i: jax.random.key_data(jax.random.key(i)))(jnp.arange(4000))
  batch = jax.vmap(lambda k: experts.NoiseMatched(g, base.extra, k).velocity(x, t))(keys)
  mean = np.asarray(jnp.mean(batch, 0))
  # x0_hat = a x + b with a = (1 - t) s^2 / ((1 - t)^2 s^2 + t^2); v = (x - x0_hat) / t, so the
  # added noise t * c * eps moves v by a * c * eps.
  a = (1 - t) * std**2 / ((1 - t) ** 2 * std**2 + t**2)
  spread = a * float(base.extra)
  np.testing.assert_allclose(np.asarray(batch).std(0), spread, rtol=0.1)
  np.testing.assert_allclose(mean, np.asarray(_velocity(g, x, t)), atol=5 * spread / np.sqrt(4000))
