"""Closed-form Stein directions against double-vmap references; guards, precision and memory."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import composed_vi as cvi
from composed_vi import kernels

REPULSION = 0.7
NAIVE_DRIVES = tuple(d for d in kernels.DRIVES if d != "normalized")
SIZES = ((2, 1), (5, 7), (16, 24))  # (N, D)

_naive = jax.jit(kernels.naive_stein_direction, static_argnames=("drive",))
_stein = jax.jit(kernels.stein_direction, static_argnames=("features", "drive"))


def _inputs(n, shape, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n,) + tuple(shape)).astype(np.float32)
  g = rng.standard_normal((n,) + tuple(shape)).astype(np.float32)
  return x, g


def _assert_close(actual, expected, rtol=1e-5):
  """Relative error in the Frobenius norm (elementwise errors are meaningless near 0)."""
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  assert np.all(np.isfinite(actual))
  err = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
  assert err < rtol, f"relative error {err:.3g} >= {rtol}"


def _rowsum(x, h):
  xf = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  sq = ((xf[:, None] - xf[None]) ** 2).sum(-1)
  return np.exp(-sq / h).sum(1)


def _naive_features(x, g, fn, h, drive, repulsion):
  """Double-vmap SVGD with the kernel on features ``fn`` (per particle), gradients by autodiff."""
  n = x.shape[0]
  xf = x.reshape(n, -1)
  gf = g.reshape(n, -1)

  def kern(a, b):
    return jnp.exp(-jnp.sum(jnp.square(fn(a) - fn(b))) / h)

  def summand(xi, gi, xj, gj):
    kij = kern(xj, xi)
    own = {"kernel": kij * gj, "self": gi, "local": kij * gi}[drive]
    return own + repulsion * jax.grad(kern)(xj, xi)

  phi = jax.vmap(lambda xi, gi: jnp.mean(
      jax.vmap(lambda xj, gj: summand(xi, gi, xj, gj))(xf, gf), axis=0))(xf, gf)
  return phi.reshape(x.shape)


class SteinDirectionTest(chex.TestCase):
  """Closed form vs the double-vmap reference, jitted and not."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(drive=NAIVE_DRIVES, size=SIZES)
  def test_matches_naive(self, drive, size):
    n, d = size
    x, g = _inputs(n, (d,), seed=n * 100 + d)
    phi_median, info = _stein(x, g)  # drive 'kernel', repulsion 1, median heuristic
    h = float(info.bandwidth)
    # The bandwidth is the median heuristic: median_{i<j} |x_i - x_j|^2 / log N.
    xd = x.astype(np.float64)
    sq = ((xd[:, None] - xd[None]) ** 2).sum(-1)
    np.testing.assert_allclose(h, np.median(sq[np.triu_indices(n, 1)]) / math.log(n), rtol=1e-5)
    fixed = self.variant(functools.partial(kernels.stein_direction, bandwidth=h, drive=drive,
                                           repulsion=REPULSION))
    phi, info_fixed = fixed(x, g)
    ref = _naive(x, g, h, drive=drive, repulsion=REPULSION)
    _assert_close(phi, ref)
    _assert_close(phi_median, _naive(x, g, h, drive="kernel"))
    assert phi.dtype == jnp.float32 and phi.shape == x.shape
    # Diagnostics: |repulsion| / |drive| from the two parts of phi.
    rep = np.asarray(_naive(x, g, h, drive="self", repulsion=REPULSION)) - g
    np.testing.assert_allclose(info_fixed.repulsion_norm, np.linalg.norm(rep), rtol=1e-4)
    np.testing.assert_allclose(info_fixed.drive_norm, np.linalg.norm(np.asarray(ref) - rep),
                               rtol=1e-4)
    np.testing.assert_allclose(info_fixed.ratio,
                               info_fixed.repulsion_norm / info_fixed.drive_norm, rtol=1e-5)
    off = (np.exp(-sq / h).sum() - n) / (n * (n - 1))
    np.testing.assert_allclose(info_fixed.mean_offdiag_kernel, off, rtol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*SIZES)
  def test_normalized_drive(self, n, d):
    x, g = _inputs(n, (d,), seed=7 + n + d)
    h = float(_stein(x, g)[1].bandwidth)
    fn = self.variant(functools.partial(kernels.stein_direction, bandwidth=h, drive="normalized",
                                        repulsion=REPULSION))
    phi, _ = fn(x, g)
    # Own score, plus the 'self' repulsion divided by the kernel density estimate rowsum / N.
    rep = np.asarray(_naive(x, g, h, drive="self", repulsion=1.0), np.float64) - g
    expected = g + REPULSION * rep * (n / _rowsum(x, h))[:, None]
    _assert_close(phi, expected)


def test_event_shape_preserved():
  x, g = _inputs(4, (2, 3, 5), seed=3)
  phi, info = _stein(x, g)
  flat, _ = _stein(x.reshape(4, -1), g.reshape(4, -1))
  assert phi.shape == x.shape
  np.testing.assert_allclose(np.asarray(phi).reshape(4, -1), flat, rtol=1e-6)
  assert np.isfinite(float(info.ratio))


def test_unknown_drive_refused():
  x, g = _inputs(3, (2,))
  with pytest.raises(cvi.ConfigError, match="^drive:"):
    kernels.stein_direction(x, g, drive="textbook")


# --- feature maps ---------------------------------------------------------------------------------


_FEATURE_MAPS = {
    "pool_video": ((2, 4, 4, 3), kernels.pool_features((2, 4, 4, 3), 2)),
    "pool_image": ((4, 6, 2), kernels.pool_features((4, 6, 2), 2)),
    "pool_flat": ((12,), kernels.pool_features((12,), 3)),
    "projection": ((12,), kernels.projection_features(jax.random.key(0), 12, 5)),
    "mask": ((2, 3, 2), kernels.mask_features(
        np.asarray([[[1.0], [0.0], [1.0]], [[0.0], [1.0], [1.0]]]), (2, 3, 2))),
}


@pytest.mark.parametrize("name, drive", [
    ("pool_video", "kernel"), ("pool_video", "self"), ("pool_image", "local"),
    ("pool_flat", "kernel"), ("projection", "kernel"), ("projection", "local"),
    ("mask", "local"), ("mask", "kernel")])
def test_feature_map_matches_naive(name, drive):
  shape, fm = _FEATURE_MAPS[name]
  x, g = _inputs(5, shape, seed=11)
  phi, info = _stein(x, g, features=fm, drive=drive, repulsion=REPULSION)
  h = float(info.bandwidth)
  # The median heuristic is taken on the features.
  f = np.asarray(fm.apply(x.reshape(5, -1)), np.float64)
  assert f.shape[1] < x[0].size or name == "mask"
  sq = ((f[:, None] - f[None]) ** 2).sum(-1)
  np.testing.assert_allclose(h, np.median(sq[np.triu_indices(5, 1)]) / math.log(5), rtol=1e-5)
  per_particle = lambda v: fm.apply(v[None])[0]
  ref = jax.jit(lambda x, g: _naive_features(x, g, per_particle, h, drive, REPULSION))(x, g)
  _assert_close(phi, ref)


@pytest.mark.parametrize("name", sorted(_FEATURE_MAPS))
def test_feature_map_transpose_is_adjoint(name):
  shape, fm = _FEATURE_MAPS[name]
  d = math.prod(shape)
  rng = np.random.default_rng(12)
  x = rng.standard_normal((3, d)).astype(np.float32)
  fx = np.asarray(fm.apply(x))
  y = rng.standard_normal(fx.shape).astype(np.float32)
  fty = np.asarray(fm.transpose(y))
  assert fty.shape == x.shape and (fx.shape[1] < d or name == "mask")
  np.testing.assert_allclose(np.sum(fx * y), np.sum(x * fty), rtol=1e-4)


def test_mask_features_repel_only_inside_the_mask():
  """Outside the mask the direction is the drive alone; inside, the repulsion is that of the
  kernel on the masked coordinates only (bandwidth from their distances)."""
  shape = (2, 3, 2)
  mask = np.zeros(shape, np.float32)
  mask[1, :2] = 1.0
  x, g = _inputs(4, shape, seed=5)
  with_rep, info = _stein(x, g, features=kernels.mask_features(mask, shape), drive="local",
                          repulsion=3.0)
  no_rep, _ = _stein(x, g, features=kernels.mask_features(mask, shape), drive="local",
                     repulsion=0.0)
  outside = np.broadcast_to(mask == 0, x.shape)
  np.testing.assert_allclose(np.asarray(with_rep)[outside], np.asarray(no_rep)[outside],
                             rtol=1e-6, atol=1e-7)
  assert np.abs(np.asarray(with_rep - no_rep)[~outside]).min() > 0
  f = np.asarray(x).reshape(4, -1)[:, mask.reshape(-1) > 0]
  sq = ((f[:, None] - f[None]) ** 2).sum(-1)
  np.testing.assert_allclose(float(info.bandwidth),
                             np.median(sq[np.triu_indices(4, 1)]) / math.log(4), rtol=1e-5)


def test_pool_features_values_and_errors():
  fm = kernels.pool_features((1, 2, 2, 1), 2)
  np.testing.assert_allclose(fm.apply(np.asarray([[1.0, 2.0, 3.0, 6.0]])), [[3.0]])
  with pytest.raises(cvi.ConfigError, match="pool_factor"):
    kernels.pool_features((2, 4, 5, 3), 2)
  with pytest.raises(cvi.ConfigError, match="pool_factor"):
    kernels.pool_features((7,), 2)


def test_precomputed_feature_values():
  x, g = _inputs(6, (4,), seed=13)
  phi_id, info_id = _stein(x, g, drive="kernel")
  phi_fv, info_fv = _stein(x, g, drive="kernel", feature_values=x)
  np.testing.assert_allclose(phi_fv, phi_id, rtol=1e-6, atol=1e-6)
  # Features shifted by a constant leave every distance (so every kernel value) unchanged.
  phi_sh, _ = _stein(x, g, drive="kernel", feature_values=x + 3.0)
  np.testing.assert_allclose(phi_sh, phi_id, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(info_fv.bandwidth, info_id.bandwidth, rtol=1e-6)


@pytest.mark.parametrize("drive", kernels.DRIVES)
def test_region_confines_the_direction_and_its_diagnostics(drive):
  """``region``: the direction is the unconfined one times the mask (a matrix-valued kernel
  ``k diag(region)``), and the diagnostics measure the confined drive and repulsion."""
  x, g = _inputs(5, (3, 4), seed=16)
  region = (np.arange(4) % 2).astype(np.float32)  # broadcast over the leading event axis
  full, info = _stein(x, g, drive=drive, repulsion=REPULSION)
  conf, cinfo = _stein(x, g, drive=drive, repulsion=REPULSION, region=region)
  np.testing.assert_allclose(np.asarray(conf), np.asarray(full) * region, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(conf)[..., region == 0] == 0)
  drive_only, _ = _stein(x, g, drive=drive, repulsion=0.0, region=region)
  np.testing.assert_allclose(float(cinfo.drive_norm), np.linalg.norm(np.asarray(drive_only)),
                             rtol=1e-5)
  rep = np.asarray(conf) - np.asarray(drive_only)
  np.testing.assert_allclose(float(cinfo.repulsion_norm), np.linalg.norm(rep), rtol=1e-4)
  assert float(cinfo.drive_norm) < float(info.drive_norm)
  np.testing.assert_array_equal(cinfo.bandwidth, info.bandwidth)


@pytest.mark.parametrize("confined", [False, True])
def test_calibrated_repulsion_keeps_the_spread_stationary(confined):
  """``calibrate=True`` on particles drawn from ``N(0, I)`` with its exact score ``-x``: the
  calibrated step leaves the population's spread stationary, sum_i (x_i - xbar) . phi_i ~ 0
  (Stein's identity: the drive's part is -sum_i w_i D in expectation). Confined to a region,
  D is the region's size, also when the kernel reads the region alone (``mask_features``, as
  the world's ``target_mask`` does); the full D would spread twice too fast here."""
  n, d = 256, 64
  x = np.random.default_rng(21).standard_normal((n, d)).astype(np.float32)
  region = (np.arange(d) < d // 2).astype(np.float32) if confined else None
  features = kernels.mask_features(region, (d,)) if confined else None
  stein = functools.partial(kernels.stein_direction, drive="local", calibrate=True,
                            features=features, region=region)
  phi, _ = jax.jit(lambda x: stein(x, -x, repulsion=1.0))(x)
  dr, _ = jax.jit(lambda x: stein(x, -x, repulsion=0.0))(x)
  centred = x - x.mean(0, keepdims=True)
  drive_part = float(np.sum(centred * np.asarray(dr)))  # ~ -sum_i w_i D_region
  total = float(np.sum(centred * np.asarray(phi)))
  assert drive_part < 0
  assert abs(total) < 0.1 * abs(drive_part), (total, drive_part)
  if confined:
    assert np.all(np.asarray(phi)[:, d // 2:] == 0)


# --- median-heuristic guards ----------------------------------------------------------------------


@pytest.mark.parametrize("drive", kernels.DRIVES)
def test_single_particle(drive):
  x, g = _inputs(1, (5,), seed=14)
  phi, info = _stein(x, g, drive=drive)
  np.testing.assert_array_equal(phi, g)
  assert float(info.repulsion_norm) == 0.0 and float(info.ratio) == 0.0
  assert all(np.isfinite(float(v)) for v in info)
  np.testing.assert_array_equal(kernels.median_bandwidth(np.zeros((1, 1), np.float32)), 1.0)


def _coincident(n, d=37, seed=15):
  rng = np.random.default_rng(seed)
  x = np.broadcast_to(rng.standard_normal((1, d)), (n, d)).astype(np.float32)
  g = rng.standard_normal((n, d)).astype(np.float32)
  return x, g


def _check_coincident(n):
  x, g = _coincident(n)
  for drive in ("kernel", "self", "normalized"):
    phi, info = _stein(x, g, drive=drive)
    assert np.all(np.isfinite(np.asarray(phi))), drive
    assert all(np.isfinite(float(v)) for v in info), (drive, info)
    assert float(info.repulsion_norm) == 0.0, (drive, info)
    assert float(info.bandwidth) > 0.0
    expected = {"kernel": np.broadcast_to(g.mean(0), g.shape)}.get(drive, g)
    np.testing.assert_allclose(phi, expected, rtol=1e-5, atol=1e-6)


def test_coincident_particles():
  # N = 2: f * 2 - (f + f) is exact, so the repulsion is exactly 0.
  _check_coincident(2)


@pytest.mark.parametrize("n", (3, 16))
def test_coincident_particles_many(n):
  _check_coincident(n)


@pytest.mark.parametrize("n", (2, 3, 16, 46, 47, 64, 129))
def test_median_of_pairs_is_exact_on_both_paths(n):
  """Sorting (up to 1024 pairs) and bisection on the bits (beyond) give ``np.median`` of the
  upper triangle exactly, odd and even pair counts, with ties and zeros."""
  rng = np.random.default_rng(n)
  x = rng.standard_normal((n, 3)).astype(np.float32)
  x[1] = x[0]  # one zero distance
  sq = np.asarray(kernels.pairwise_sq_dists(jnp.asarray(x)))
  sq = np.round(sq, 1)  # ties
  rows, cols = np.triu_indices(n, k=1)
  expected = np.median(sq[rows, cols].astype(np.float64))
  assert float(jax.jit(kernels.median_of_pairs)(jnp.asarray(sq))) == pytest.approx(
      expected, rel=1e-7, abs=0)


def test_two_particles_kernel_is_one_half():
  x, g = _inputs(2, (9,), seed=16)
  phi, info = _stein(x, g)
  d2 = float(np.sum((x[0].astype(np.float64) - x[1]) ** 2))
  np.testing.assert_allclose(info.bandwidth, d2 / math.log(2), rtol=1e-6)
  np.testing.assert_allclose(info.mean_offdiag_kernel, 0.5, rtol=0, atol=1e-6)
  assert np.all(np.isfinite(np.asarray(phi)))


# --- precision and memory -------------------------------------------------------------------------


def test_pairwise_sq_dists_precision_near_identical():
  """Particles 1e-3 of their norm apart at D = 2^21: every distance within 1e-4 of float64."""
  rng = np.random.default_rng(17)
  d = 2**21
  base = rng.standard_normal(d)
  x = (base + 1e-3 * rng.standard_normal((4, d))).astype(np.float32)
  x64 = x.astype(np.float64)
  ref = ((x64[:, None] - x64[None]) ** 2).sum(-1)
  sq = np.asarray(jax.jit(kernels.pairwise_sq_dists)(x), np.float64)
  off = ~np.eye(4, dtype=bool)
  np.testing.assert_array_equal(np.diag(sq), 0.0)
  np.testing.assert_allclose(sq[off], ref[off], rtol=1e-4)
  np.testing.assert_allclose(sq, sq.T, rtol=1e-6)
  # The test is sensitive: the Gram identity |x|^2 + |y|^2 - 2 x.y in float32 fails it badly.
  n2 = np.sum(x * x, -1)
  gram = n2[:, None] + n2[None] - 2 * (x @ x.T)
  assert np.max(np.abs(gram - ref)[off] / ref[off]) > 1e-2


def _float64_direction(x, g, h, drive, repulsion):
  """The closed form in float64 (dense N x N), the reference for precision tests."""
  n = x.shape[0]
  x, g = np.asarray(x, np.float64).reshape(n, -1), np.asarray(g, np.float64).reshape(n, -1)
  sq = ((x[:, None] - x[None]) ** 2).sum(-1)
  k = np.exp(-sq / h)
  rowsum = k.sum(1)
  rep = repulsion * (2.0 / (h * n)) * (rowsum[:, None] * x - k @ x)
  if drive == "normalized":
    return g + rep * (n / rowsum)[:, None]
  return {"kernel": k @ g / n, "self": g, "local": (rowsum / n)[:, None] * g}[drive] + rep


@pytest.mark.parametrize("drive", kernels.DRIVES)
@pytest.mark.parametrize("offset", [0.0, 0.4, 1e3])
def test_stein_direction_precision_with_an_offset(drive, offset):
  """Particles with a common offset (0, 0.4 of their spread: the uncentred path; 1e3 times it:
  the centred one, where float32's raw Gram identity and repulsion product lose every digit):
  the direction and the bandwidth within 1e-4 of float64, and the offset changes neither
  beyond that (the kernel's Laplacian annihilates constants)."""
  rng = np.random.default_rng(23)
  n, d = 8, 4096
  z = rng.standard_normal((n, d))
  g = rng.standard_normal((n, d)).astype(np.float32)
  shift = offset * rng.standard_normal(d)
  x = (z + shift).astype(np.float32)
  x64 = x.astype(np.float64)
  sq = ((x64[:, None] - x64[None]) ** 2).sum(-1)
  h = float(np.median(sq[np.triu_indices(n, 1)]) / math.log(n))
  phi, info = _stein(x, g, drive=drive, repulsion=REPULSION)
  np.testing.assert_allclose(float(info.bandwidth), h, rtol=1e-4)
  _assert_close(phi, _float64_direction(x, g, h, drive, REPULSION), rtol=1e-4)
  phi0, _ = _stein(z.astype(np.float32), g, drive=drive, repulsion=REPULSION)
  _assert_close(phi, phi0, rtol=1e-4)


def test_pairwise_sq_dists_close_pair_in_a_spread_population():
  """A pair 1e-4 of the spread apart among spread particles: the Gram identity alone loses
  most of its digits there; the recomputed nearest pair is within 1e-5 of float64, and every
  other distance within 1e-5 too."""
  rng = np.random.default_rng(19)
  d = 2**18
  x = rng.standard_normal((8, d))
  x[1] = x[0] + 1e-4 * rng.standard_normal(d)
  x = x.astype(np.float32)
  x64 = x.astype(np.float64)
  ref = ((x64[:, None] - x64[None]) ** 2).sum(-1)
  sq = np.asarray(jax.jit(kernels.pairwise_sq_dists)(x), np.float64)
  off = ~np.eye(8, dtype=bool)
  np.testing.assert_allclose(sq[off], ref[off], rtol=1e-5)
  assert sq[0, 1] == sq[1, 0]
  # Without the recomputation (the identity on centred particles) the pair is far off.
  xc = x - x.mean(0)
  n2 = np.sum(xc * xc, -1)
  gram = n2[0] + n2[1] - 2 * float(xc[0] @ xc[1])
  assert abs(gram - ref[0, 1]) / ref[0, 1] > 1e-3


def test_stein_direction_memory_is_linear_in_n_times_d():
  """Compiled (not run) at N = 64, D = 2^21: scratch memory O(N D), never N x N x D."""
  n, d = 64, 2**21
  spec = jax.ShapeDtypeStruct((n, d), jnp.float32)
  stats = jax.jit(kernels.stein_direction).lower(spec, spec).compile().memory_analysis()
  assert stats is not None
  nd_bytes = n * d * 4
  assert stats.temp_size_in_bytes < 3 * nd_bytes, stats
  assert stats.temp_size_in_bytes < n * nd_bytes / 16, stats


@pytest.mark.slow
def test_stein_direction_large():
  """Runs N = 64 particles at D = 2^21 (about 2.5 GB of host memory, ~20 s on 2 cores)."""
  n, d = 64, 2**21
  kx, kg = jax.random.split(jax.random.key(18))
  x = jax.random.normal(kx, (n, d), jnp.float32)
  g = jax.random.normal(kg, (n, d), jnp.float32)
  phi, info = jax.jit(kernels.stein_direction)(x, g)
  assert phi.shape == (n, d) and phi.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(phi)))
  assert all(np.isfinite(float(v)) for v in info)
  assert float(info.bandwidth) > 0
