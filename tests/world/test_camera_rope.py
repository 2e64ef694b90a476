"""Rotary positions that follow the camera: the Wan extension (``rope_position_channels``), the
world's first-frame coordinates of the empty room, and the camera backbone's condition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from composed_vi.errors import ConfigError
from composed_vi.models.wan import transformer as wan
from composed_vi.world import backbones as tb
from composed_vi.world import controls, scene
from composed_vi.world import dataset as world

CFG = scene.SceneConfig(num_frames=4, height=16, width=16, antialias=1)
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=5,
            out_channels=3, text_dim=8, freq_dim=16, ffn_dim=16, num_layers=2,
            rope_max_seq_len=32)


def _params(config, seed=0):
  _, abstract = wan.split_abstract(config)
  rng = np.random.default_rng(seed)
  return nnx.from_flat_state([
      (path, var.replace(value=jnp.asarray(0.3 * rng.standard_normal(var.shape), jnp.float32)))
      for path, var in nnx.to_flat_state(abstract)])


def _grid(frames, height, width):
  v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  return np.broadcast_to(np.stack([v, u], -1), (1, frames, height, width, 2)).astype(np.float32)


def test_pixel_grid_positions_are_wans_and_only_relative_positions_count():
  """Fed the pixel grid, a model with ``rope_position_channels=2`` is Wan with the same
  parameters (the position channels are not embedded); a common shift of every position
  changes nothing (rotary attention sees differences only); other positions change the
  output. Bad settings are refused by field."""
  base = wan.WanConfig(**{**TINY, "in_channels": 3})
  ours = wan.WanConfig(**TINY, rope_position_channels=2)
  params = _params(base)
  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, 2, 8, 6, 3)).astype(np.float32)
  t, ctx = np.array([400.0], np.float32), rng.standard_normal((1, 3, 8)).astype(np.float32)
  f_base, f_ours = wan.make_model_fn(base), wan.make_model_fn(ours)
  ref = np.asarray(f_base(params, x, t, ctx))
  grid = _grid(2, 8, 6)
  out = np.asarray(f_ours(params, np.concatenate([x, grid], -1), t, ctx))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  shifted = np.asarray(f_ours(params, np.concatenate([x, grid + np.float32(6.5)], -1), t, ctx))
  np.testing.assert_allclose(shifted, ref, rtol=1e-4, atol=1e-4)
  swapped = np.asarray(f_ours(params, np.concatenate([x, grid[..., ::-1]], -1), t, ctx))
  assert np.abs(swapped - ref).max() > 1e-3
  with pytest.raises(ValueError, match="rope_position_channels"):
    wan.WanConfig(**TINY, rope_position_channels=1)
  with pytest.raises(ValueError, match="in_channels"):
    wan.WanConfig(**{**TINY, "in_channels": 2}, rope_position_channels=2)


@pytest.fixture(scope="module")
def examples():
  base = world.sample_scene(jax.random.key(7), CFG)
  out = {}
  for kind, amount in (("static", 0.0), ("pan_left", 0.35), ("dolly_in", 0.8), ("orbit", 0.5)):
    camera = scene.Camera(jnp.int32(scene.CAMERA_KINDS.index(kind)), jnp.array([0.0, 1.0, -1.5]),
                          jnp.array([0.0, 0.45, 1.5]), jnp.float32(amount))
    out[kind] = jax.device_get(world.example_from_scene(base._replace(camera=camera), CFG))
  return out


def test_first_frame_coordinates_are_where_the_renderer_saw_the_room(examples):
  """Frame 0 and a static camera give the pixel grid; for moving cameras every background
  pixel's coordinates are its rendered 3D point (ground-truth depth) projected into frame 0."""
  grid = _grid(CFG.num_frames, CFG.height, CFG.width)[0]
  for kind, ex in examples.items():
    coords = np.asarray(controls.first_frame_coordinates(ex.intrinsics, ex.extrinsics,
                                                         CFG.height, CFG.width))
    assert coords.shape == (CFG.num_frames, CFG.height, CFG.width, 2)
    np.testing.assert_allclose(coords[0], grid[0], atol=1e-4)
    if kind == "static":
      np.testing.assert_allclose(coords, grid, atol=1e-4)
      continue
    assert np.abs(coords[-1] - grid[-1]).max() > 1.0, kind  # the camera moved
    K = ex.intrinsics
    pix = np.concatenate([grid[0][..., ::-1], np.ones((CFG.height, CFG.width, 1))], -1)
    for t in range(1, CFG.num_frames):
      R, tr = ex.extrinsics[t, :, :3], ex.extrinsics[t, :, 3]
      points = (ex.depth[t, ..., None] * (pix @ np.linalg.inv(K).T) - tr) @ R
      seen, z = (np.asarray(a) for a in controls.project(K, ex.extrinsics[0], points))
      background = (ex.object_ids[t] < 0) & (z > 0)
      np.testing.assert_allclose(coords[t][background], seen[..., ::-1][background], atol=2e-3)


def test_camera_backbone_condition_carries_the_positions(examples):
  """``camera_rope``: the camera backbone's condition is the Pluecker rays and the first-frame
  coordinates, alone and batched; the option is refused for other kinds."""
  spec = tb.TinySpec(kind="cam2v", camera_rope=True, vocab_size=8)
  assert spec.wan_config().in_channels == 3 + 6 + 2
  ex = examples["orbit"]
  one = np.asarray(tb.condition(spec, ex))
  assert one.shape == (CFG.num_frames, CFG.height, CFG.width, 8)
  np.testing.assert_array_equal(one[..., :6], ex.plucker)
  np.testing.assert_allclose(one[..., 6:], controls.first_frame_coordinates(
      ex.intrinsics, ex.extrinsics, CFG.height, CFG.width), atol=1e-6)
  both = jax.tree.map(lambda a, b: np.stack([a, b]), examples["static"], ex)
  batched = np.asarray(tb.condition(spec, both))
  np.testing.assert_allclose(batched[1], one, atol=1e-6)
  np.testing.assert_allclose(batched[0], tb.condition(spec, examples["static"]), atol=1e-6)
  assert tb.condition(tb.TinySpec(kind="cam2v"), ex).shape[-1] == 6
  with pytest.raises(ConfigError, match="camera_rope"):
    tb.TinySpec(kind="sim2v", camera_rope=True).wan_config()
