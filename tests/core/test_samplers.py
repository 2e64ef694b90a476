"""``cvi.sample`` end to end on the exact 2-D product of mixtures: shapes, determinism, tracing,
argument validation, diagnostics, reward-guided SMC, context pinning and mode coverage."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import composed_vi as cvi
from composed_vi import experts, gmm, schedules
from composed_vi.samplers import base

N, LEVELS = 8, 8
TARGET_MODE = np.asarray([1.0, 1.0], np.float32)


def reward_top_right(x0):
  """Log-reward favouring the (1, 1) mode (module level: options are hashed by identity)."""
  return -jnp.sum(jnp.square(x0 - jnp.asarray([1.0, 1.0])), axis=-1)


_assign_modes = jax.jit(gmm.assign_modes)


def _raises(field):
  return pytest.raises(cvi.ConfigError, match=re.escape(field))


def _sample(target, method, seed=0, n=N, **options):
  return cvi.sample(jax.random.key(seed), target, num_particles=n, method=method,
                    num_levels=LEVELS, **options)


@pytest.mark.parametrize("method", sorted(cvi.METHODS))
def test_sample_shapes_determinism(product_target, method):
  x, info = _sample(product_target, method)
  assert x.shape == (N, 2) and x.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(x)))
  for name, leaf in info._asdict().items():
    assert leaf.shape[0] == LEVELS, name
  np.testing.assert_allclose(info.t, schedules.flow_levels(LEVELS), rtol=1e-6)
  again, info_again = _sample(product_target, method)
  np.testing.assert_array_equal(again, x)
  chex.assert_trees_all_equal(info_again, info)
  other, _ = _sample(product_target, method, seed=1)
  assert float(jnp.min(jnp.linalg.norm(other - x, axis=-1))) > 1e-4
  if method in ("annealed_langevin", "poe_smc"):
    acc = np.asarray(info.acceptance)
    assert np.all((acc >= 0) & (acc <= 1)) and np.all(np.isfinite(acc))


def test_ctrl_vi_info_diagnostics(product_target):
  _, info = _sample(product_target, "ctrl_vi")
  for name in ("bandwidth", "ratio", "mean_offdiag_kernel", "drive_norm", "repulsion_norm"):
    assert np.all(np.isfinite(np.asarray(getattr(info, name)))), name
  assert np.all(np.asarray(info.bandwidth) > 0)
  assert np.all(np.asarray(info.ratio) >= 0)
  kern = np.asarray(info.mean_offdiag_kernel)
  assert np.all((kern > 0) & (kern <= 1))
  np.testing.assert_allclose(info.ratio, info.repulsion_norm / info.drive_norm, rtol=1e-4)


def test_level_loop_traces_the_step_once():
  chex.clear_trace_counter()

  @chex.assert_max_traces(n=1)
  def step(state):
    return state * 0.5 + 1.0, state

  run = jax.jit(lambda s: base.run_levels(step, s, 10))
  final, seen = run(jnp.float32(0.0))
  np.testing.assert_allclose(final, 2.0 - 2.0 ** -9, rtol=1e-6)
  assert seen.shape == (10,)
  final, _ = run(jnp.float32(4.0))  # cached: no second trace
  np.testing.assert_allclose(final, 2.0 + 2.0 * 2.0 ** -10, rtol=1e-6)

  # The check is live: a Python loop over levels traces the step once per level.
  @chex.assert_max_traces(n=1)
  def unrolled_step(state):
    return state + 1.0

  def unrolled(s):
    for _ in range(10):
      s = unrolled_step(s)
    return s

  with pytest.raises(AssertionError):
    jax.jit(unrolled)(jnp.float32(0.0))


def test_sample_does_not_retrace():
  traces = []
  mixture = experts.GaussianMixture([[1.0, 0.0], [-1.0, 0.0]], [0.3, 0.3])

  def velocity_fn(x, t):
    traces.append(t)
    return mixture.velocity(x, t)

  expert = experts.FunctionExpert(velocity_fn, (2,))
  x1, _ = cvi.sample(jax.random.key(0), cvi.compose([expert]), 4, "ode", num_levels=4)
  first = len(traces)
  assert first > 0
  # A fresh target with the same structure and another key: served from the cache.
  x2, _ = cvi.sample(jax.random.key(1), cvi.compose([expert], [1.0]), 4, "ode", num_levels=4)
  x3, _ = cvi.sample(jax.random.key(2), expert, 4, "ode", num_levels=4)
  assert len(traces) == first
  assert float(jnp.max(jnp.abs(x1 - x2))) > 1e-4
  assert bool(jnp.all(jnp.isfinite(x3)))
  # The counter is live: another number of particles is another compilation.
  cvi.sample(jax.random.key(0), expert, 5, "ode", num_levels=4)
  assert len(traces) > first


def test_bad_arguments(product_target, mixtures):
  key = jax.random.key(0)

  def run(method="ctrl_vi", n=4, target=product_target, **options):
    return cvi.sample(key, target, n, method, **options)

  for n in (0, -3, 2.5, True):
    with _raises("num_particles"):
      run(n=n)
  with _raises("method"):
    run("svgd")
  with _raises("drvie"):
    run(drvie="self")
  with _raises("drive"):  # an option of another method
    run("ode", drive="self")
  for levels in ((0.5, 0.8), (1.5, 0.5), (0.5, 0.0), (0.5, 0.5), (), (0.9, float("nan"))):
    with _raises("levels"):
      run(levels=levels)
  with _raises("t_min"):
    run(t_min=0.5, t_max=0.2)
  with _raises("t_min"):
    run(t_min=0.0)
  with _raises("t_max"):
    run(t_max=1.5)
  for step_size in (0.0, -0.1, float("inf")):
    with _raises("step_size"):
      run(step_size=step_size)
  with _raises("num_levels"):
    run(num_levels=0)
  with _raises("inner_steps"):
    run(inner_steps=-1)
  with _raises("drive"):
    run(drive="textbook")
  with _raises("repulsion"):
    run(repulsion=-1.0)
  with _raises("reward"):
    run("poe_smc", reward=3.0)
  with _raises("ess_threshold"):
    run("poe_smc", ess_threshold=1.5)
  with _raises("solver"):
    run("ode", solver="rk4")
  with _raises("target"):
    run(target="not a target")
  with _raises("context_weight"):
    run(context=experts.Context(jnp.zeros(2), 0.3), context_weight=-1.0)
  masked = cvi.compose(mixtures, [jnp.asarray([1.0, 0.5]), 1.0])
  with _raises("mala"):
    run("annealed_langevin", target=masked, mala=True, num_levels=2)
  with _raises("mala"):
    run("poe_smc", target=masked, mala=True, num_levels=2)


def test_explicit_levels(product_target):
  levels = (0.9, 0.5, 0.2, 0.05)
  x, info = cvi.sample(jax.random.key(0), product_target, 4, "ode", levels=levels)
  np.testing.assert_allclose(info.t, levels, rtol=1e-6)
  assert x.shape == (4, 2)


def test_poe_smc_reward_selects_one_mode(product_target):
  n = 64
  x, info = cvi.sample(jax.random.key(0), product_target, n, "poe_smc",
                       reward=reward_top_right, reward_scale=10.0)
  dist = np.linalg.norm(np.asarray(x) - TARGET_MODE, axis=-1)
  assert np.mean(dist < 0.75) >= 0.9, np.sort(dist)
  ess = np.asarray(info.ess)
  assert ess.shape == info.t.shape  # one per level
  assert np.all(ess <= n * (1 + 1e-5)) and np.all(ess >= 1 - 1e-5)
  assert bool(np.any(np.asarray(info.resampled)))


def test_poe_smc_reward_scale_5_every_seed(product_target):
  fractions = []
  for seed in range(6):
    x, _ = cvi.sample(jax.random.key(seed), product_target, 64, "poe_smc",
                      reward=reward_top_right, reward_scale=5.0)
    dist = np.linalg.norm(np.asarray(x) - TARGET_MODE, axis=-1)
    fractions.append(float(np.mean(dist < 0.75)))
  assert min(fractions) >= 0.9, fractions


def _pinned_modes(target, exact_product, **options):
  context = experts.Context(jnp.asarray([-1.0, 1.0]), sigma=0.3)
  x, _ = cvi.sample(jax.random.key(0), target, 16, "ctrl_vi", context=context, **options)
  modes, on = _assign_modes(x, exact_product)
  pinned = int(np.argmin(np.linalg.norm(np.asarray(exact_product.means) - [-1.0, 1.0], axis=-1)))
  return np.asarray(modes), np.asarray(on), pinned


def test_context_pins_every_particle(product_target, exact_product):
  modes, on, pinned = _pinned_modes(product_target, exact_product, drive="self")
  np.testing.assert_array_equal(modes, pinned)
  assert on.all()
  # Without the context the particles spread over the four modes (same call as above: cached).
  x, _ = _sample(product_target, "ctrl_vi")
  assert len(set(np.asarray(_assign_modes(x, exact_product)[0]).tolist())) >= 3


def test_context_pins_every_particle_default_options(product_target, exact_product):
  modes, _, pinned = _pinned_modes(product_target, exact_product)
  np.testing.assert_array_equal(modes, pinned)


@pytest.mark.slow
def test_ctrl_vi_mode_coverage(product_target, exact_product):
  """N = 4 particles in D = 2 cover the four modes of the product (METHOD.md section 4)."""
  covered, on_mode = [], []
  for seed in range(20):
    x, _ = cvi.sample(jax.random.key(seed), product_target, 4, "ctrl_vi")
    c, frac = gmm.mode_coverage(x, exact_product)
    covered.append(int(c))
    on_mode.append(float(frac))
  assert np.mean(covered) >= 3.9, covered
  assert np.mean(on_mode) >= 0.9, on_mode


@pytest.mark.parametrize("weight", (-1.0, np.ones(3, np.float32)))
def test_bad_context_weight_is_named(product_target, weight):
  context = experts.Context(jnp.asarray([-1.0, 1.0]), sigma=0.3)
  with pytest.raises(cvi.ConfigError, match="context_weight"):
    cvi.sample(jax.random.key(0), product_target, 4, "ctrl_vi", context=context,
               context_weight=weight)


def _half_specified(d):
  """An exact Gaussian target on ``d`` coordinates: a sharp expert on the first half (the
  specified coordinates), a broad prior on the second, which is the repulsion mask. Returns
  ``(specified, target, broad)``."""
  specified = np.arange(d) < d // 2
  free = (~specified).astype(np.float32)
  sharp = experts.Gaussian(jnp.full((d,), 0.5), 0.05)
  broad = experts.Gaussian(jnp.zeros((d,)), 1.0)
  return specified, cvi.compose([sharp, broad], [1.0 - free, free], repulsion_mask=free), broad


def test_stein_region_unpinned_keeps_the_steps_off_the_pinned_coordinates():
  """``stein_region='unpinned'``: three thirds of an exact Gaussian target, given exactly
  (the pinned mask), given softly, and unspecified (the repulsion mask). The pinned third
  follows the transport alone (bit-identical to a level without Stein steps), the other two
  move as with Stein steps everywhere (the kernel reads the unspecified third only), so the
  soft third is pulled towards its mode, which ``'target_mask'`` leaves to the transport.
  The diagnostics measure the confined drive; a target without a pinned mask, and a pinned
  mask above 1, are refused by field."""
  from composed_vi.samplers import ctrl_vi

  d = 24
  part = np.arange(d) * 3 // d  # 0: pinned, 1: soft, 2: unspecified
  pinned, soft, free = ((part == i).astype(np.float32) for i in range(3))
  exact = experts.Gaussian(jnp.full((d,), 0.5), 0.02)
  softer = experts.Gaussian(jnp.full((d,), -0.5), 0.3)
  broad = experts.Gaussian(jnp.zeros((d,)), 1.0)
  target = cvi.compose([exact, softer, broad], [pinned, soft, free], repulsion_mask=free,
                       pinned_mask=pinned)
  levels = jnp.asarray([0.6, 0.5], jnp.float32)
  x = jax.random.normal(jax.random.key(3), (4, d))
  state = ctrl_vi.CtrlVIState(x, jnp.zeros((), jnp.int32), jax.random.key(0))
  common = dict(step_size=0.3, inner_steps=3, repulsion=5.0, feature_map="target_mask")

  def run(**o):
    s, info = ctrl_vi.step(state, target, levels, ctrl_vi.CtrlVIOptions(**{**common, **o}))
    return np.asarray(s.particles), info

  unpinned, info_u = run(stein_region="unpinned")
  transport, _ = run(inner_steps=0)
  everywhere, info_a = run(stein_region="all")
  confined, _ = run(stein_region="target_mask")
  p, q = part == 0, part == 1
  np.testing.assert_array_equal(unpinned[:, p], transport[:, p])
  np.testing.assert_allclose(unpinned[:, ~p], everywhere[:, ~p], rtol=1e-6)
  np.testing.assert_array_equal(confined[:, q], transport[:, q])
  mode = (1 - 0.5) * -0.5
  assert (np.abs(unpinned[:, q] - mode).mean() < 0.9 * np.abs(transport[:, q] - mode).mean())
  assert float(info_u.drive_norm) < float(info_a.drive_norm)
  with _raises("stein_region"):
    cvi.sample(jax.random.key(0), cvi.compose([broad], repulsion_mask=free), 4, "ctrl_vi",
               num_levels=2, stein_region="unpinned")
  with _raises("pinned_mask"):
    cvi.compose([broad], pinned_mask=2.0 * pinned)


def test_stein_min_t_skips_the_stein_steps_below_it():
  """``stein_min_t``: a level below it is the transport alone (bit-identical to
  ``inner_steps=0``, with NaN diagnostics), a level at or above it is the default's; in a
  whole run the diagnostics are NaN exactly at the levels below it, and the samples differ
  from both Stein steps everywhere and none. Values outside [0, 1] are refused by field."""
  from composed_vi.samplers import ctrl_vi

  _, target, _ = _half_specified(16)
  levels = jnp.asarray([0.6, 0.5], jnp.float32)
  x = jax.random.normal(jax.random.key(4), (4, 16))
  state = ctrl_vi.CtrlVIState(x, jnp.zeros((), jnp.int32), jax.random.key(0))
  common = dict(step_size=0.3, inner_steps=2, repulsion=5.0, feature_map="target_mask",
                stein_region="target_mask")

  def run(**o):
    s, info = jax.jit(lambda st: ctrl_vi.step(st, target, levels,
                                              ctrl_vi.CtrlVIOptions(**{**common, **o})))(state)
    return np.asarray(s.particles), info

  default, info_d = run()
  transport, _ = run(inner_steps=0)
  above, info_a = run(stein_min_t=0.6)
  below, info_b = run(stein_min_t=0.61)
  np.testing.assert_array_equal(above, default)
  np.testing.assert_array_equal(below, transport)
  assert not np.array_equal(default, transport)
  assert np.isfinite(float(info_a.drive_norm)) and np.isnan(float(info_b.drive_norm))
  assert float(info_a.drive_norm) == float(info_d.drive_norm)
  # A run: the Stein steps run at the two levels above 0.7 only, and change the samples.
  lv = (1.0, 0.8, 0.5, 0.3)
  run_opts = dict(common, levels=lv)
  samples, info = cvi.sample(jax.random.key(5), target, 4, "ctrl_vi", stein_min_t=0.7,
                             **run_opts)
  np.testing.assert_array_equal(np.isnan(np.asarray(info.drive_norm)),
                                [False, False, True, True])
  full, _ = cvi.sample(jax.random.key(5), target, 4, "ctrl_vi", **run_opts)
  none, _ = cvi.sample(jax.random.key(5), target, 4, "ctrl_vi", **dict(run_opts, inner_steps=0))
  assert not np.array_equal(np.asarray(samples), np.asarray(full))
  assert not np.array_equal(np.asarray(samples), np.asarray(none))
  for bad in (-0.1, 1.5, "0.3", True):
    with _raises("stein_min_t"):
      cvi.sample(jax.random.key(0), target, 4, "ctrl_vi", num_levels=2, stein_min_t=bad,
                 feature_map="target_mask")


def test_target_mask_kernel_repels_only_where_unspecified():
  """``feature_map='target_mask'``: an exact Gaussian target in 64-D whose second half no
  control specifies (broad prior); a strong repulsion restricted to that half spreads it and
  leaves the specified half where it is specified. Without a mask it is refused."""
  specified, target, broad = _half_specified(64)
  # The Stein step confined to the mask too: a kernel blind to the specified half cannot repel
  # there, and its deterministic drive would collapse the particles onto the mode (measured:
  # std 0.0 with stein_region='all'); there they follow the transport, exact for this target.
  opts = dict(num_levels=24, inner_steps=4, feature_map="target_mask",
              stein_region="target_mask")
  spread = lambda x: np.asarray(x)[:, ~specified].std(0).mean()  # noqa: E731
  rep, _ = cvi.sample(jax.random.key(0), target, 4, "ctrl_vi", repulsion=50.0, **opts)
  none, _ = cvi.sample(jax.random.key(0), target, 4, "ctrl_vi", repulsion=0.0, **opts)
  assert spread(rep) > 1.2 * spread(none)
  # The specified half follows the sharp expert, N(0.5, 0.05^2) per coordinate, with or
  # without the repulsion: the 4 x 32 values' mean within 4 standard errors and their std
  # within 25% of 0.05 (its sampling error is ~6%; a collapsed population, as the earlier local
  # drive gave, is at 0.002).
  for x in (rep, none):
    values = np.asarray(x)[:, specified].ravel()
    assert abs(values.mean() - 0.5) < 4 * 0.05 / np.sqrt(values.size), values.mean()
    assert values.std() == pytest.approx(0.05, rel=0.25), values.std()
  with _raises("feature_map"):
    cvi.sample(jax.random.key(0), cvi.compose([broad]), 4, "ctrl_vi",
               **dict(opts, stein_region="all"))
  with _raises("repulsion_mask"):
    cvi.compose([broad], repulsion_mask=np.ones(3, np.float32))


def _two_gaussians(d=8):
  """Two Gaussian experts on ``d`` coordinates with per-coordinate weights summing to 4 on the
  first half and 6 on the second (so ``W`` varies across the event)."""
  half = np.arange(d) < d // 2
  a = experts.Gaussian(jnp.linspace(-1.0, 1.0, d), 0.3)
  b = experts.Gaussian(jnp.full((d,), 0.5), 0.6)
  m_a = np.where(half, 3.0, 1.0).astype(np.float32)
  m_b = np.where(half, 1.0, 5.0).astype(np.float32)
  return [a, b], [m_a, m_b]


def test_precondition_step_sizes():
  exps, weights = _two_gaussians()
  target = cvi.compose(exps, weights)
  t = jnp.float32(0.5)
  plain = base.step_sizes(target, t, base.AnnealingOptions(step_size=0.1))
  pre = base.step_sizes(target, t, base.AnnealingOptions(step_size=0.1, precondition=True))
  assert np.ndim(plain) == 0
  np.testing.assert_allclose(float(plain), 0.1 * 0.25, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(pre), 0.025 / np.asarray(weights[0] + weights[1]),
                             rtol=1e-6)
  # A target without weights counts as W = 1.
  assert float(base.step_sizes(exps[0], t, base.AnnealingOptions(precondition=True))) == (
      pytest.approx(0.1 * 0.25))
  with _raises("precondition"):
    cvi.sample(jax.random.key(0), target, 2, "ctrl_vi", precondition="yes")


def test_precondition_on_raw_weights_equals_plain_step_on_normalised():
  """Without repulsion, a preconditioned Ctrl-VI level on the raw-weight product is exactly a
  plain level on the normalised one (the score is divided by ``W``, ``v_bar`` is the same);
  the two differ only in their target's temperature (``pi_1 = N(0, I / W)`` or ``N(0, I)``)."""
  from composed_vi.samplers import ctrl_vi

  exps, weights = _two_gaussians()
  raw = cvi.compose(exps, weights)
  normalised = cvi.compose(exps, weights, normalize=True)
  levels = jnp.asarray([0.8, 0.6], jnp.float32)
  x = jax.random.normal(jax.random.key(3), (4, 8))
  state = ctrl_vi.CtrlVIState(x, jnp.zeros((), jnp.int32), jax.random.key(0))
  common = dict(step_size=0.3, inner_steps=3, repulsion=0.0, step_rule="noise")
  a, _ = ctrl_vi.step(state, raw, levels, ctrl_vi.CtrlVIOptions(precondition=True, **common))
  b, _ = ctrl_vi.step(state, normalised, levels, ctrl_vi.CtrlVIOptions(**common))
  np.testing.assert_allclose(np.asarray(a.particles), np.asarray(b.particles), rtol=1e-5,
                             atol=1e-6)
  c, _ = ctrl_vi.step(state, raw, levels, ctrl_vi.CtrlVIOptions(**common))
  assert np.max(np.abs(np.asarray(c.particles) - np.asarray(a.particles))) > 1e-2
  # The stiffness rule (the default) divides by W itself, so the raw product steps as the
  # normalised one; the kernel mass it also divides by depends on the particles alone.
  stiff = dict(common, step_rule="stiffness")
  d, _ = ctrl_vi.step(state, raw, levels, ctrl_vi.CtrlVIOptions(**stiff))
  e, _ = ctrl_vi.step(state, normalised, levels, ctrl_vi.CtrlVIOptions(**stiff))
  np.testing.assert_allclose(np.asarray(d.particles), np.asarray(e.particles), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("mala", [False, True])
def test_preconditioned_langevin_keeps_its_target(mala):
  """Preconditioned Langevin at a fixed level samples the exact noisy product
  ``prod_i N((1 - t) mu_i, (1 - t)^2 s_i^2 + t^2) ** m_i`` (per-coordinate weights for ULA,
  scalar ones with an energy for MALA): mean and variance per coordinate."""
  from composed_vi.samplers import langevin

  exps, weights = _two_gaussians()
  if mala:
    weights = [3.0, 1.0]
  target = cvi.compose(exps, weights)
  t = 0.5
  var = [(1 - t) ** 2 * s**2 + t**2 for s in (0.3, 0.6)]
  means = [(1 - t) * np.linspace(-1.0, 1.0, 8), np.full(8, (1 - t) * 0.5)]
  prec = sum(np.broadcast_to(m, (8,)) / v for m, v in zip(weights, var))
  mean = sum(np.broadcast_to(m, (8,)) / v * mu for m, v, mu in zip(weights, var, means)) / prec
  opts = langevin.LangevinOptions(step_size=0.02, inner_steps=800, precondition=True,
                                  mala=mala)
  x0 = jax.random.normal(jax.random.key(1), (4000, 8)) * 0.1
  x, acc, _ = jax.jit(lambda k, x: langevin.langevin_steps(k, target, x, t, opts))(
      jax.random.key(2), x0)
  x = np.asarray(x)
  np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
  # ULA's bias on a Gaussian is O(step): the per-coordinate step is 0.005 / W here.
  np.testing.assert_allclose(x.var(0), 1.0 / prec, rtol=0.08)
  if mala:
    assert 0.5 < float(acc) <= 1.0


def test_stein_region_target_mask_moves_only_the_unspecified_coordinates():
  """``stein_region='target_mask'``: the Stein step is confined to the repulsion mask, so the
  specified coordinates follow the transport alone (bit-identical to a level without Stein
  steps there) while the unspecified ones are moved; with ``'all'`` the deterministic drive
  pulls the specified coordinates towards the mode (their spread shrinks below the
  transport's). Without a repulsion mask it is refused, naming the field."""
  from composed_vi.samplers import ctrl_vi

  d = 16
  specified, target, broad = _half_specified(d)
  levels = jnp.asarray([0.6, 0.5], jnp.float32)
  x = jax.random.normal(jax.random.key(1), (4, d))
  state = ctrl_vi.CtrlVIState(x, jnp.zeros((), jnp.int32), jax.random.key(0))
  common = dict(step_size=0.3, inner_steps=3, repulsion=5.0, feature_map="target_mask")
  run = lambda **o: np.asarray(  # noqa: E731
      ctrl_vi.step(state, target, levels, ctrl_vi.CtrlVIOptions(**{**common, **o}))[0].particles)
  confined = run(stein_region="target_mask")
  transport = run(inner_steps=0)
  everywhere = run(stein_region="all")
  np.testing.assert_array_equal(confined[:, specified], transport[:, specified])
  assert np.max(np.abs(confined[:, ~specified] - transport[:, ~specified])) > 1e-2
  np.testing.assert_allclose(everywhere[:, ~specified], confined[:, ~specified], rtol=1e-6)
  mode = (1 - 0.5) * 0.5
  assert (np.abs(everywhere[:, specified] - mode).mean()
          < 0.9 * np.abs(transport[:, specified] - mode).mean())
  with _raises("stein_region"):
    cvi.sample(jax.random.key(0), cvi.compose([broad]), 4, "ctrl_vi", num_levels=2,
               stein_region="target_mask")
  with _raises("stein_region"):
    cvi.sample(jax.random.key(0), target, 4, "ctrl_vi", num_levels=2, stein_region="free")
