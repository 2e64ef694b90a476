"""The 3D-cache context of a real first frame (composed_vi.lab.scene_context)."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from PIL import Image

from composed_vi.errors import ConfigError
from composed_vi.lab import scene_context
from composed_vi.lab.camera_file import CameraPath
from composed_vi.models import conditioning
from composed_vi.models.wan import convert_vae


def _camera(shifts, h=16, w=32, f=20.0):
  """Cameras looking down +z, translated along x by ``shifts`` (world units)."""
  k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float32)
  extr = np.stack([np.concatenate([np.eye(3), [[-s], [0], [0]]], 1) for s in shifts])
  return CameraPath(np.repeat(k[None], len(shifts), 0), extr.astype(np.float32), h, w)


def test_plane_moves_by_its_parallax():
  """A fronto-parallel plane at depth 5 seen by a camera moving 0.5 right: with f = 20 every
  point moves f * 0.5 / 5 = 2 px left, and the 2 columns revealed on the right are unseen."""
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (16, 32, 3)).astype(np.float32)
  depth = np.full((16, 32), 5.0, np.float32)
  ctx, vis = scene_context.splat(image, depth, _camera([0.0, 0.5]))
  np.testing.assert_array_equal(ctx[0], image)
  assert vis[0].min() == 1
  np.testing.assert_array_equal(ctx[1][:, :30], image[:, 2:])
  np.testing.assert_array_equal(vis[1][:, :30, 0], 1)
  np.testing.assert_array_equal(vis[1][:, 30:, 0], 0)
  np.testing.assert_array_equal(ctx[1][:, 30:], 0)
  # Pixels without depth are never lifted.
  depth[:, :4] = 0
  _, vis = scene_context.splat(image, depth, _camera([0.0]))
  np.testing.assert_array_equal(vis[0, :, :4, 0], 0)


def test_latent_context_pools_visibility_conservatively():
  torch.manual_seed(0)
  module = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                            latents_std=[1.0] * 4).eval()
  vae, params = convert_vae.from_diffusers(
      module, {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
  rng = np.random.default_rng(1)
  image = rng.uniform(-1, 1, (16, 32, 3)).astype(np.float32)
  depth = np.full((16, 32), 5.0, np.float32)
  out = scene_context.latent_context(vae, params, image, depth,
                                     _camera([0.0] + [0.5] * 4))  # 5 frames -> 2 latent frames
  assert out.latents.shape == (2, 2, 4, 4) and out.visibility.shape == (2, 2, 4, 1)
  np.testing.assert_allclose(np.asarray(out.latents),
                             np.asarray(conditioning.encode(vae, params, out.pixels)), atol=1e-6)
  # Latent frame 0 (pixel frame 0) is fully seen; in latent frame 1 the last column of cells
  # holds the revealed strip, so it is not visible, the others are.
  np.testing.assert_array_equal(out.visibility[0, ..., 0], 1)
  np.testing.assert_array_equal(out.visibility[1, ..., 0], [[1, 1, 1, 0], [1, 1, 1, 0]])


def test_read_depth(tmp_path):
  d = np.arange(12, dtype=np.float32).reshape(3, 4)
  np.save(tmp_path / "d.npy", d)
  np.testing.assert_array_equal(scene_context.read_depth(str(tmp_path / "d.npy"), height=3,
                                                         width=4), d)
  # 16-bit PNG in millimetres, scaled to metres, and resized by nearest neighbour.
  Image.fromarray((d * 1000).astype(np.uint16)).save(tmp_path / "d.png")
  got = scene_context.read_depth(str(tmp_path / "d.png"), height=6, width=8, scale=1e-3)
  np.testing.assert_allclose(got, np.repeat(np.repeat(d, 2, 0), 2, 1), rtol=1e-6)
  np.save(tmp_path / "neg.npy", -d)
  np.save(tmp_path / "rgb.npy", np.zeros((3, 4, 3)))
  (tmp_path / "junk.png").write_bytes(b"junk")
  for name, match in (("neg.npy", "finite depths >= 0"), ("rgb.npy", "one channel"),
                      ("junk.png", "Pillow can read"), ("none.npy", "existing depth file")):
    with pytest.raises(ConfigError, match=match):
      scene_context.read_depth(str(tmp_path / name), height=3, width=4)


def test_bad_inputs_are_refused():
  cam = _camera([0.0, 0.1])
  with pytest.raises(ConfigError, match=r"image: expected \(16, 32, 3\)"):
    scene_context.splat(np.zeros((16, 16, 3)), np.ones((16, 16)), cam)
  with pytest.raises(ConfigError, match="depth: expected the image's size"):
    scene_context.splat(np.zeros((16, 32, 3)), np.ones((16, 16)), cam)
  zoom = cam._replace(intrinsics=cam.intrinsics * np.array([1, 2])[:, None, None])
  with pytest.raises(ConfigError, match="one intrinsic matrix"):
    scene_context.splat(np.zeros((16, 32, 3)), np.ones((16, 32)), zoom)
