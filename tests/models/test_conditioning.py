"""Wan conditioning builders (composed_vi.models.conditioning) against the diffusers pipelines'
own ``prepare_*`` methods, on a tiny random VAE (weights perturbed)."""

import types

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from diffusers.pipelines.wan.pipeline_wan_vace import WanVACEPipeline

from composed_vi.errors import ConfigError
from composed_vi.models import conditioning
from composed_vi.models.wan import convert_vae

TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
            temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
            latents_std=[1.5, 0.5, 2.0, 1.0])
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# The VAE's own parity tolerance (tests/models/test_wan_vae.py), on normalised latents.
ATOL, RTOL_SCALE = 5e-5, 1e-4


@pytest.fixture(scope="module")
def vae():
  torch.manual_seed(0)
  module = AutoencoderKLWan(**TINY).eval()
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.1 * torch.randn_like(p))
  ours, params = convert_vae.from_diffusers(module, FAST_COMPILE)
  return module, ours, params


def _close(ours, ref, what):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  err, tol = np.abs(ours - ref).max(), ATOL + RTOL_SCALE * np.abs(ref).max()
  assert err <= tol, f"{what}: max |ours - diffusers| = {err:.3g} > {tol:.3g}"


def _pipe(module, cls, patch=2):
  return types.SimpleNamespace(
      vae=module, vae_scale_factor_temporal=4, vae_scale_factor_spatial=8,
      config=types.SimpleNamespace(expand_timesteps=False), _execution_device="cpu",
      transformer=types.SimpleNamespace(config=types.SimpleNamespace(patch_size=(1, patch, patch))),
      transformer_2=None, cls=cls)


@pytest.mark.parametrize("last", [False, True])
def test_i2v_condition_equals_the_pipeline(vae, last):
  module, ours, params = vae
  rng = np.random.default_rng(1)
  frames, h, w = 9, 16, 24
  image = rng.uniform(-1, 1, (h, w, 3)).astype(np.float32)
  last_image = rng.uniform(-1, 1, (h, w, 3)).astype(np.float32) if last else None
  to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
  with torch.no_grad():
    _, ref = WanImageToVideoPipeline.prepare_latents(
        _pipe(module, None), to_t(image), 1, 4, h, w, frames, torch.float32, "cpu",
        latents=torch.zeros(1, 4, 3, 2, 3), last_image=None if last_image is None else
        to_t(last_image))
  ref = ref[0].permute(1, 2, 3, 0).numpy()  # (C, T', h, w) -> (T', h, w, C)
  got = conditioning.i2v_condition(ours, params, image, frames, last_image=last_image)
  np.testing.assert_array_equal(np.asarray(got[..., :4]), ref[..., :4])  # the mask, exactly
  _close(got[..., 4:], ref[..., 4:], "i2v latents")


@pytest.mark.parametrize("refs", [0, 2])
def test_vace_control_equals_the_pipeline(vae, refs):
  module, ours, params = vae
  rng = np.random.default_rng(2)
  frames, h, w = 9, 32, 16
  video = rng.uniform(-1, 1, (frames, h, w, 3)).astype(np.float32)
  mask = (rng.uniform(0, 1, (frames, h, w)) > 0.4).astype(np.float32)
  ref_images = [rng.uniform(-1, 1, (h, w, 3)).astype(np.float32) for _ in range(refs)]
  pipe = _pipe(module, None)
  tv = torch.from_numpy(video).permute(3, 0, 1, 2)[None]
  tm = torch.from_numpy(mask)[None, None].expand(1, 3, frames, h, w).contiguous()
  # The pipeline passes its preprocessed references, an empty list per video when there are
  # none (``None`` would make prepare_masks add a padding frame).
  tref = [[torch.from_numpy(r).permute(2, 0, 1) for r in ref_images]]
  with torch.no_grad():
    lat = WanVACEPipeline.prepare_video_latents(pipe, tv, tm, tref, device="cpu")
    msk = WanVACEPipeline.prepare_masks(pipe, tm, tref)
  ref = torch.cat([lat, msk], 1)[0].permute(1, 2, 3, 0).numpy()
  got = conditioning.vace_control(ours, params, video, mask, reference_images=ref_images)
  assert got.shape == (refs + 3, h // 8, w // 8, 2 * 4 + 64)
  np.testing.assert_array_equal(np.asarray(got[..., 8:]), ref[..., 8:])  # mask channels
  _close(got[..., :8], ref[..., :8], "vace latents")


def test_vace_mask_resamples_odd_frame_counts():
  """nearest-exact in time for frame counts that are not 1 + 4 k (the pipeline allows them)."""
  rng = np.random.default_rng(3)
  for frames in (7, 13, 81):
    mask = (rng.uniform(0, 1, (frames, 16, 16)) > 0.5).astype(np.float32)
    tm = torch.from_numpy(mask)[None, None].expand(1, 3, frames, 16, 16).contiguous()
    ref = WanVACEPipeline.prepare_masks(_pipe(None, None), tm, [[]])[0].permute(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(conditioning.vace_mask(mask), ref)


def test_latent_mask_pools_cells():
  mask = np.zeros((9, 16, 16), np.float32)
  mask[0, :8, :8] = 1.0  # frame 0 alone is latent frame 0
  mask[2, 8:, 8:] = 1.0  # one frame of 1..4: latent frame 1
  m = conditioning.latent_mask(mask)
  assert m.shape == (3, 2, 2, 1)
  np.testing.assert_array_equal(m[..., 0], [[[1, 0], [0, 0]], [[0, 0], [0, 1]], [[0, 0], [0, 0]]])
  every = conditioning.latent_mask(mask, mode="all")
  assert every[0, 0, 0, 0] == 1 and every.sum() == 1  # frame 0's block is full; the other not
  np.testing.assert_allclose(conditioning.latent_mask(mask, mode="mean")[1, 1, 1, 0], 0.25)
  with pytest.raises(ConfigError, match=r"mask: expected \(1 \+ 4 k, H, W\)"):
    conditioning.latent_mask(np.zeros((8, 16, 16)))
  with pytest.raises(ConfigError, match="mode"):
    conditioning.latent_mask(mask, mode="max")


def test_bad_shapes_are_refused(vae):
  _, ours, params = vae
  with pytest.raises(ConfigError, match=r"image: expected \(H, W, 3\)"):
    conditioning.i2v_condition(ours, params, np.zeros((16, 16)), 5)
  with pytest.raises(ConfigError, match="last_image"):
    conditioning.i2v_condition(ours, params, np.zeros((16, 16, 3)), 5,
                               last_image=np.zeros((8, 16, 3)))
  with pytest.raises(ConfigError, match="mask: expected"):
    conditioning.vace_control(ours, params, np.zeros((5, 16, 16, 3)), np.zeros((5, 8, 16)))
