"""The i2v and sim2v backbones' output composite with their exact controls (TinySpec.output_pin)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from composed_vi.errors import ConfigError
from composed_vi.models import wan_expert
from composed_vi.sampling import sample
from composed_vi.world import backbones as tb
from composed_vi.world import dataset, scene


@pytest.fixture(scope="module")
def examples():
  return [dataset.to_numpy(dataset.render_example(jax.random.key(s), scene.SceneConfig()))
          for s in (3, 7, 12)]


def _simulated_pixels(ex):
  """Pixels fully covered by a simulated object that is also what the camera sees there."""
  alpha = ex.sim_rgba[..., 3] > 0.999
  ids = np.asarray(ex.object_ids)
  seen = (ids >= 0) & np.asarray(ex.object_simulated)[np.maximum(ids, 0)]
  return alpha & seen


def test_sim2v_pin_value_is_the_video_on_the_simulated_objects(examples):
  spec = tb.TinySpec(kind="sim2v", vocab_size=64)
  checked = 0
  for ex in examples:
    pin, value = (np.asarray(a) for a in tb.output_pin(spec, ex))
    np.testing.assert_array_equal(pin, ex.sim_rgba[..., 3:])
    where = _simulated_pixels(ex)
    checked += int(where.sum())
    # value + (1 - 1) * background: the video itself (the renderer composites the same way)
    np.testing.assert_allclose(value[where], ex.video[where], atol=1e-5)
    # off the objects the pin is 0 and the value 0: nothing is imposed
    empty = ex.sim_rgba[..., 3] == 0
    assert np.all(value[empty] == 0) and np.all(pin[empty] == 0)
  assert checked > 500


def test_pinned_expert_reproduces_the_control_and_keeps_the_network_elsewhere(examples):
  ex = examples[0]
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2,) + ex.video.shape), jnp.float32)
  t = 0.6
  for kind in ("i2v", "sim2v"):
    spec = tb.TinySpec(kind=kind, vocab_size=64, dim=24, num_heads=2, num_layers=1, ffn_dim=32)
    params = tb.init_params(spec, seed=1)
    pinned = tb.expert(spec, params, ex)
    free = tb.expert(spec.__class__(**{**spec.__dict__, "output_pin": False}), params, ex)
    assert free.pin is None and pinned.pin is not None
    x0_pinned = np.asarray(x - t * pinned.velocity(x, t))
    x0_free = np.asarray(x - t * free.velocity(x, t))
    pin, value = (np.asarray(a) for a in tb.output_pin(spec, ex))
    np.testing.assert_allclose(x0_pinned, value + (1 - pin) * x0_free, atol=2e-5)
    if kind == "i2v":
      np.testing.assert_allclose(x0_pinned[:, 0], np.broadcast_to(ex.first_frame, (2,) +
                                 ex.first_frame.shape), atol=2e-5)
      np.testing.assert_allclose(x0_pinned[:, 1:], x0_free[:, 1:], atol=2e-5)


def test_pinned_i2v_ode_sample_has_the_exact_first_frame(examples):
  ex = examples[1]
  spec = tb.TinySpec(kind="i2v", vocab_size=64, dim=24, num_heads=2, num_layers=1, ffn_dim=32)
  e = tb.expert(spec, tb.init_params(spec, seed=2), ex)
  x, _ = sample(jax.random.key(0), e, 2, "ode", num_levels=6)
  x = np.asarray(x)
  np.testing.assert_allclose(x[:, 0], np.broadcast_to(ex.first_frame, x[:, 0].shape), atol=1e-4)
  free = tb.expert(spec.__class__(**{**spec.__dict__, "output_pin": False}),
                   tb.init_params(spec, seed=2), ex)
  y, _ = sample(jax.random.key(0), free, 2, "ode", num_levels=6)
  assert np.abs(np.asarray(y)[:, 0] - ex.first_frame).mean() > 0.05  # random weights: far off


def _tiny_expert_inputs():
  """A 1-layer WanConfig, make_expert's required keywords, and a latent shape ``(2, 4, 4, 3)``."""
  from composed_vi.models.wan import transformer as wan

  config = wan.WanConfig(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=8,
                         in_channels=3, out_channels=3, text_dim=4, freq_dim=8, ffn_dim=8,
                         num_layers=1)
  return config, dict(params=None, model_fn=None, context=np.zeros((2, 4), np.float32)), (
      2, 4, 4, 3)


def test_pin_is_validated_by_field():
  config, kw, shape = _tiny_expert_inputs()
  with pytest.raises(ConfigError, match=r"b\.pin.*\(2, 4, 4, 1\).*\(2, 4, 4, 3\)"):
    wan_expert.make_expert(config, shape, pin=np.zeros(shape), pin_value=np.zeros(shape),
                           field="b", **kw)
  with pytest.raises(ConfigError, match=r"b\.pin.*\[0, 1\]"):
    wan_expert.make_expert(config, shape, pin=np.full((2, 4, 4, 1), 2.0),
                           pin_value=np.zeros(shape), field="b", **kw)
  with pytest.raises(ConfigError, match=r"b\.pin_value.*together"):
    wan_expert.make_expert(config, shape, pin=np.zeros((2, 4, 4, 1)), field="b", **kw)


def _warp(x0, warp):
  index, weights, valid = (np.asarray(a) for a in warp)
  first = x0[0].reshape(-1, x0.shape[-1])
  return valid * np.sum(first[index] * weights[..., None], -2) + (1 - valid) * x0


def test_camera_warp_is_the_identity_for_a_static_camera(examples):
  ex = examples[0]
  static = ex._replace(extrinsics=np.broadcast_to(ex.extrinsics[:1], ex.extrinsics.shape))
  spec = tb.TinySpec(kind="cam2v", vocab_size=64, camera_rope=True)
  index, weights, valid = tb.camera_warp(spec, static)
  assert valid[0].max() == 0 and valid[1:].min() == 1  # the whole room stays in view
  x0 = np.random.default_rng(1).standard_normal(ex.video.shape).astype(np.float32)
  warped = _warp(x0, (index, weights, valid))
  # the room's points are found by float32 ray-plane intersection: pixel centres to ~1e-5 px
  np.testing.assert_allclose(warped[1:], np.broadcast_to(x0[0], x0[1:].shape), atol=1e-4)
  assert tb.camera_warp(spec.__class__(**{**spec.__dict__, "output_pin": False}), ex) is None
  assert tb.camera_warp(tb.TinySpec(kind="i2v", vocab_size=64), ex) is None


def test_camera_warp_carries_the_first_frame_along_the_path_of_the_room():
  """The ground truth's frame 0, warped, is its later frames on the static background (the
  bilinear floor of metrics.consistency_3d: ~0.02), and far from them along the reversed path."""
  from composed_vi.world import metrics as wm

  spec = tb.TinySpec(kind="cam2v", vocab_size=64, camera_rope=True)
  config = scene.SceneConfig()
  errs = []
  for s in range(6):
    sc = scene.sample_scene(jax.random.key(10_000 + s), config)
    ex, rev = (dataset.to_numpy(dataset.example_from_scene(c, config))
               for c in (sc, scene.reverse_camera(sc)))
    if np.allclose(ex.extrinsics, rev.extrinsics):
      continue  # static camera
    background = wm.static_background(ex)
    own, other = (_warp(ex.video, tb.camera_warp(spec, e)) for e in (ex, rev))
    valid = tb.camera_warp(spec, ex)[2][..., 0] > 0
    # frame 0's background only: an object's first-frame pixels are not the room
    seen0 = wm.static_background(ex)[0]
    index = tb.camera_warp(spec, ex)[0][..., 0]
    where = background & valid & seen0.reshape(-1)[index]
    where[0] = False
    err_own = np.abs(own - ex.video)[where].mean()
    err_other = np.abs(other - ex.video)[where].mean()
    # measured (seeds 10000-10005): own 0.004-0.044 (the dolly's resampling the largest),
    # reversed 0.045-0.12, at least twice own in every scene
    assert err_own < 0.05 and err_other > 1.5 * err_own, (s, err_own, err_other)
    errs.append((err_own, err_other))
  own, other = np.mean(errs, 0)
  assert len(errs) >= 3 and own < 0.03 and other > 3 * own, errs


def test_warped_expert_keeps_the_network_where_frame_0_did_not_see(examples):
  ex = examples[2]
  spec = tb.TinySpec(kind="cam2v", vocab_size=64, camera_rope=True, dim=24, num_heads=2,
                     num_layers=1, ffn_dim=32)
  params = tb.init_params(spec, seed=3)
  warped = tb.expert(spec, params, ex)
  free = tb.expert(spec.__class__(**{**spec.__dict__, "output_pin": False}), params, ex)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2,) + ex.video.shape), jnp.float32)
  t = 0.4
  x0_w = np.asarray(x - t * warped.velocity(x, t))
  x0_f = np.asarray(x - t * free.velocity(x, t))
  want = np.stack([_warp(a, tb.camera_warp(spec, ex)) for a in x0_f])
  np.testing.assert_allclose(x0_w, want, atol=3e-5)
  np.testing.assert_allclose(x0_w[:, 0], x0_f[:, 0], atol=3e-5)


def test_warp_is_validated_by_field():
  config, kw, shape = _tiny_expert_inputs()
  good = (np.zeros((2, 4, 4, 4), np.int32), np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 1)))
  wan_expert.make_expert(config, shape, warp=good, field="b", **kw)
  with pytest.raises(ConfigError, match=r"b\.warp.*indices into the 16 pixels"):
    wan_expert.make_expert(config, shape, warp=(good[0] + 16,) + good[1:], field="b", **kw)
  with pytest.raises(ConfigError, match=r"b\.warp.*valid of shape"):
    wan_expert.make_expert(config, shape, warp=good[:2] + (np.zeros((2, 4, 4)),), field="b",
                           **kw)


def test_backbone_study_measures_with_and_without_the_pin():
  from composed_vi.lab import backbone_study

  table = backbone_study.run({"sim2v": "assets/backbones/sim2v", "t2v": "assets/backbones/t2v"},
                             num_scenes=1, num_particles=1, num_levels=4,
                             output_pin=(True, False))
  assert set(table) == {"sim2v", "sim2v (no pin)", "t2v", "ground truth"}
  assert table["ground truth"]["object_l1"] == 0.0
  # the pinned objects are the rendering's own pixels; the network alone is far off in 4 steps
  assert table["sim2v"]["object_l1"] < 0.5 * table["sim2v (no pin)"]["object_l1"], table
