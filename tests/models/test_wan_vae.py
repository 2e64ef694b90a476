"""Parity of the JAX Wan VAE with diffusers' ``AutoencoderKLWan`` at tiny random configs (CPU).

Every torch weight is perturbed away from its initial value so that unit gammas and zero biases
cannot hide a layout error.
"""

import functools

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from composed_vi.models.wan import convert_vae, from_diffusers  # noqa: E402
from composed_vi.models.wan.vae import (  # noqa: E402
    WanVAE,
    WanVAEConfig,
    denormalize_latents,
    normalize_latents,
)

WAN21_TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                  temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                  latents_std=[1.5, 0.5, 2.0, 1.0])
# Wan2.2 layout: residual down/up blocks, patchify 2, its own decoder width.
WAN22_TINY = dict(base_dim=8, decoder_base_dim=12, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=2,
                  temperal_downsample=[True, True], latents_mean=[0.0] * 4,
                  latents_std=[1.0] * 4, is_residual=True, patch_size=2, in_channels=12,
                  out_channels=12)


# About 3x faster XLA compilation on CPU, at the cost of slower (still fast) tiny runs.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _torch_vae(kwargs, seed=0):
  torch.manual_seed(seed)
  vae = diffusers.AutoencoderKLWan(**kwargs).eval()
  with torch.no_grad():
    for p in vae.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return vae


def _assert_close(ours, ref, what):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  err = np.abs(ours - ref).max()
  tol = 5e-5 + 1e-4 * np.abs(ref).max()
  assert err <= tol, f"{what}: max |ours - torch| = {err:.3g} > {tol:.3g}"


@pytest.fixture(scope="module")
def wan21():
  module = _torch_vae(WAN21_TINY)
  return (module,) + convert_vae.from_diffusers(module, FAST_COMPILE)


@pytest.fixture(scope="module")
def wan22():
  module = _torch_vae(WAN22_TINY, seed=1)
  return (module,) + convert_vae.from_diffusers(module, FAST_COMPILE)


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_wan21_encode_decode_parity(wan21, frames):
  module, vae, params = wan21
  gen = torch.Generator().manual_seed(frames)
  video = torch.rand(2, 3, frames, 16, 24, generator=gen) * 2 - 1  # non-square frames
  z = torch.randn(2, 4, 1 + (frames - 1) // 4, 2, 3, generator=gen)
  with torch.no_grad():
    ref_mode = module.encode(video).latent_dist.mode()
    ref_video = module.decode(z).sample
  _assert_close(vae.encode(params, video), ref_mode, f"encode T={frames}")
  _assert_close(vae.decode(params, z.numpy()), ref_video, f"decode T={frames}")


def test_wan22_residual_parity(wan22):
  module, vae, params = wan22
  gen = torch.Generator().manual_seed(0)
  video = torch.rand(1, 3, 5, 16, 32, generator=gen) * 2 - 1
  z = torch.randn(1, 4, 2, 1, 2, generator=gen)
  with torch.no_grad():
    ref_mode = module.encode(video).latent_dist.mode()
    ref_video = module.decode(z).sample
  _assert_close(vae.encode(params, video), ref_mode, "wan2.2 encode")
  _assert_close(vae.decode(params, z), ref_video, "wan2.2 decode")


def test_scanned_model_matches_chunk_loop():
  """The jittable ``lax.scan`` path of the NNX model equals the wrapper's chunk loop."""
  vae = WanVAE(WanVAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 2), num_res_blocks=1,
                            temperal_downsample=(True,), latents_mean=(0.0,) * 4,
                            latents_std=(1.0,) * 4), FAST_COMPILE)
  params = vae.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  video = rng.uniform(-1, 1, (1, 9, 8, 6, 3)).astype(np.float32)
  z = rng.standard_normal((1, 3, 4, 3, 4)).astype(np.float32)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def scanned(params, video, z):
    model = vae.model(params)
    return model.encode_bthwc(video), model.decode_bthwc(z)

  enc, dec = scanned(params, video, z)
  assert enc.shape == (1, 5, 4, 3, 4) and dec.shape == (1, 5, 8, 6, 3)  # time ratio 2
  np.testing.assert_allclose(enc, vae.encode_bthwc(params, video), atol=1e-5)
  np.testing.assert_allclose(dec, vae.decode_bthwc(params, z), atol=1e-5)


def test_real_config_shapes_match_diffusers():
  with torch.device("meta"):
    module = diffusers.AutoencoderKLWan()
  ref = {k: tuple(v.shape) for k, v in module.state_dict().items()}
  config = convert_vae.config_from_diffusers(module.config)
  assert config == WanVAEConfig()
  assert convert_vae.expected_shapes(config) == ref


def test_key_table_errors_name_the_key():
  config = convert_vae.config_from_diffusers(WAN21_TINY)
  state = {k: np.zeros(s, np.float32) for k, s in convert_vae.expected_shapes(config).items()}
  params = convert_vae.convert_state_dict(config, state)
  assert len(jax.tree.leaves(params)) == len(state)

  key = "decoder.up_blocks.1.upsamplers.0.time_conv.weight"
  bad = dict(state, **{key: np.zeros((1, 2, 3), np.float32)})
  with pytest.raises(ValueError, match=r"time_conv\.weight.*\(32, 16, 3, 1, 1\).*\(1, 2, 3\)"):
    convert_vae.convert_state_dict(config, bad)
  missing = {k: v for k, v in state.items() if k != "encoder.conv_in.bias"}
  with pytest.raises(ValueError, match=r"missing key 'encoder\.conv_in\.bias'"):
    convert_vae.convert_state_dict(config, missing)
  with pytest.raises(ValueError, match=r"'encoder\.extra\.weight' .*not used"):
    convert_vae.convert_state_dict(config, dict(state, **{"encoder.extra.weight": np.zeros(2)}))


def test_config_refuses_unsupported_fields():
  with pytest.raises(ValueError, match="clip_output"):
    convert_vae.config_from_diffusers(dict(WAN21_TINY, clip_output=True))
  with pytest.raises(ValueError, match="attn_scales"):
    convert_vae.config_from_diffusers(dict(WAN21_TINY, attn_scales=[0.5]))
  with pytest.raises(ValueError, match="temperal_downsample"):
    convert_vae.config_from_diffusers(dict(WAN21_TINY, temperal_downsample=[True]))


def test_input_validation(wan21):
  _, vae, params = wan21
  with pytest.raises(ValueError, match="1 \\+ 4k frames, got 4"):
    vae.encode(params, np.zeros((1, 3, 4, 16, 16), np.float32))
  with pytest.raises(ValueError, match="z: expected shape"):
    vae.decode_bthwc(params, np.zeros((1, 2, 2, 2, 5), np.float32))


def test_latent_normalisation_matches_pipeline():
  config = WanVAEConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in WAN21_TINY.items()})
  z = np.random.default_rng(0).standard_normal((1, 4, 2, 3, 5)).astype(np.float32)
  mean = np.asarray(config.latents_mean, np.float32).reshape(1, 4, 1, 1, 1)
  inv_std = 1.0 / np.asarray(config.latents_std, np.float32).reshape(1, 4, 1, 1, 1)
  normed = normalize_latents(z, config, axis=1)
  np.testing.assert_allclose(normed, (z - mean) * inv_std, rtol=1e-6)
  np.testing.assert_allclose(denormalize_latents(normed, dict(WAN21_TINY), axis=1), z, atol=1e-6)
  last = normalize_latents(np.moveaxis(z, 1, -1), config)
  np.testing.assert_allclose(np.moveaxis(np.asarray(last), -1, 1), normed, rtol=1e-6)
  with pytest.raises(ValueError, match="latents_mean / latents_std have 4 values"):
    normalize_latents(z, config)  # channels are on axis 1, not -1


def test_package_dispatch(wan21):
  """``composed_vi.models.wan.from_diffusers`` routes the VAE here, with the same parameters."""
  module, _, params = wan21
  vae, converted = from_diffusers(module)
  assert isinstance(vae, WanVAE) and vae.config == convert_vae.config_from_diffusers(module.config)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
