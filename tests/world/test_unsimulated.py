"""An object left out of the simulation control: in the video, the first frame and the caption
only (scene.Objects.simulated); the masks, metrics and demo target that treat it as
unspecified."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from composed_vi.errors import ConfigError
from composed_vi.world import backbones as tb
from composed_vi.world import dataset, demo, masks, scene
from composed_vi.world import metrics as wm

CFG = scene.SceneConfig(unsimulated_probability=1.0)
NONE = scene.SceneConfig(unsimulated_probability=0.0)
# Seeds whose scene has an eligible rolling object (found by sampling; checked below).
KEYS = jax.random.split(jax.random.key(3), 12)


@pytest.fixture(scope="module")
def pair():
  render = jax.jit(jax.vmap(lambda k: dataset.render_example(k, CFG)))
  plain = jax.jit(jax.vmap(lambda k: dataset.render_example(k, NONE)))
  return dataset.to_numpy(render(KEYS)), dataset.to_numpy(plain(KEYS))


def _cases(batch):
  uns = batch.object_valid & ~batch.object_simulated
  return np.flatnonzero(uns.any(1))


def test_the_flag_changes_only_the_simulation_control(pair):
  ex, plain = pair
  cases = _cases(ex)
  assert cases.size >= 2, "the fixture's keys should hold scenes with an unsimulated object"
  # At probability 0 every object is simulated; at 1 exactly one eligible rolling one is not.
  assert plain.object_simulated.all()
  uns = ex.object_valid & ~ex.object_simulated
  assert (uns.sum(1) <= 1).all()
  assert (ex.motion_kinds[uns] == scene.MOTION_KINDS.index("roll")).all()
  for f in ("video", "first_frame", "masks", "tracks", "caption_tokens", "plucker", "context"):
    np.testing.assert_array_equal(getattr(ex, f), getattr(plain, f), err_msg=f)
  others = np.setdiff1d(np.arange(len(KEYS)), cases)
  np.testing.assert_array_equal(ex.sim_rgba[others], plain.sim_rgba[others])
  assert np.abs(ex.sim_rgba[cases] - plain.sim_rgba[cases]).max() > 0.5


def test_the_simulation_render_is_the_scene_without_the_object(pair):
  """Exact answer: the simulation control equals the render of the scene whose unsimulated
  slot is removed (no occlusion by it, no shadow of it)."""
  ex, _ = pair
  i = int(_cases(ex)[0])
  s = scene.sample_scene(KEYS[i], CFG)
  removed = s._replace(objects=s.objects._replace(
      valid=s.objects.valid & s.objects.simulated,
      simulated=jnp.ones_like(s.objects.simulated)))
  alone = dataset.to_numpy(dataset.example_from_scene(removed, CFG))
  # Batched (vmap) against one scene: float32 rounding only (one grey level is 2/255).
  np.testing.assert_allclose(ex.sim_rgba[i], alone.sim_rgba, rtol=0, atol=1e-6)
  np.testing.assert_allclose(ex.sim_depth[i], alone.sim_depth, rtol=0, atol=1e-6)


def test_probability_is_validated():
  with pytest.raises(ConfigError, match="unsimulated_probability.*\\[0, 1\\].*1.5"):
    scene.SceneConfig(unsimulated_probability=1.5)


def _one(batch, i):
  return dataset.Example(*(None if v is None else v[i] for v in batch))


def test_masks_and_band(pair):
  ex, plain = pair
  i = int(_cases(ex)[0])
  one = _one(ex, i)
  o = int(np.flatnonzero(one.object_valid & ~one.object_simulated)[0])
  np.testing.assert_array_equal(masks.unsimulated_region(one)[..., 0], one.masks[..., o])
  others = [k for k in np.flatnonzero(one.object_valid) if k != o]
  np.testing.assert_array_equal(masks.simulated_region(one)[..., 0],
                                one.masks[..., others].max(-1))
  band = masks.unsimulated_band(one, margin=1)[..., 0]
  rows = np.flatnonzero(one.masks[0, :, :, o].any(1))
  expect = np.zeros_like(band)
  expect[1:, max(rows.min() - 1, 0):rows.max() + 2] = 1.0
  np.testing.assert_array_equal(band, expect)
  # Every object simulated: the simulated region is the object region, no band.
  flat = _one(plain, i)
  np.testing.assert_array_equal(masks.simulated_region(flat), flat.object_region)
  assert masks.unsimulated_band(flat).sum() == 0


def test_metrics_count_the_simulated_objects_only(pair):
  ex, plain = pair
  i = int(_cases(ex)[0])
  one, flat = _one(ex, i), _one(plain, i)
  o = int(np.flatnonzero(one.object_valid & ~one.object_simulated)[0])
  # A sample where the unsimulated object's pixels are wrong after frame 0 (painted white):
  # the simulated objects' errors do not see it, the all-object metrics do.
  video = one.video.copy()
  paint = one.masks[1:, :, :, o] > 0.5
  video[1:][paint] = 1.0
  assert wm.object_l1(video, one) == 0.0
  assert wm.object_l1(video, flat) > 0.0
  assert wm.track_error_px(video, one) == pytest.approx(wm.track_error_px(one.video, one))
  # Diversity on the band: identical particles 0, particles that differ only there > 0.
  assert np.isnan(wm.unsimulated_diversity(np.stack([flat.video] * 2), flat))
  assert wm.unsimulated_diversity(np.stack([one.video] * 2), one) == 0.0
  assert wm.unsimulated_diversity(np.stack([one.video, video]), one) > 0.0


def test_demo_target_leaves_the_band_unpinned(pair, monkeypatch):
  ex, _ = pair
  i = int(_cases(ex)[0])
  one = _one(ex, i)
  band = masks.unsimulated_band(one) * (1 - masks.dilate(masks.simulated_region(one), 1,
                                                         axes=(1, 2)))
  comp = demo.Composition(matched_queries="")  # (the fake compose returns no target to wrap)
  captured = {}

  def fake_compose(exps, weights, repulsion_mask, normalize, pinned_mask):
    captured.update(repulsion=np.asarray(repulsion_mask), pinned=np.asarray(pinned_mask))
    return None

  monkeypatch.setattr(demo, "compose", fake_compose)
  specs = {k: tb.TinySpec(kind=k, dim=12, num_heads=1, num_layers=1, ffn_dim=8)
           for k in demo.BACKBONES}
  demo.build_target(one, {k: (s, tb.init_params(s)) for k, s in specs.items()}, comp)
  on = band > 0.5
  assert on.any()
  assert (captured["pinned"][on] == 0).all()
  assert (captured["repulsion"][on] == 1).all()
  assert (captured["pinned"][0] == 1).all()


def test_band_sim_weight_gives_the_simulation_backbone_the_band(pair, monkeypatch):
  ex, _ = pair
  one = _one(ex, int(_cases(ex)[0]))
  region = masks.dilate(masks.simulated_region(one), 1, axes=(1, 2))
  band = masks.unsimulated_band(one) * (1 - region)
  captured = []
  monkeypatch.setattr(demo, "compose", lambda exps, weights, **kw: captured.append(
      [np.broadcast_to(np.asarray(w, np.float32), one.video.shape[:3] + (1,)) for w in weights]))
  specs = {k: tb.TinySpec(kind=k, dim=12, num_heads=1, num_layers=1, ffn_dim=8)
           for k in demo.BACKBONES}
  backbones = {k: (s, tb.init_params(s)) for k, s in specs.items()}
  for w in (0.0, 0.5):
    demo.build_target(one, backbones, demo.Composition(matched_queries="", band_sim_weight=w))
  sim = demo.BACKBONES.index("sim2v")
  before, after = captured[0], captured[1]
  on = band > 0.5
  assert on.any()
  # On the band (outside the vacated region, whose weight is 1) the simulation backbone now
  # weighs 0.5; everywhere else every weight is unchanged.
  np.testing.assert_array_equal(after[sim][on], np.maximum(before[sim][on], 0.5))
  assert (after[sim][on] >= 0.5).all() and (before[sim][on] < 1).any()
  np.testing.assert_array_equal(after[sim][~on], before[sim][~on])
  for k in range(len(before)):
    if k != sim:
      np.testing.assert_array_equal(after[k], before[k])
  with pytest.raises(ConfigError, match="band_sim_weight"):
    demo.Composition.from_config({"composition": {"band_sim_weight": -1.0}})


# ----------------------------------------------------------------------------- presence, motion


def _first_unsimulated(ex):
  """``(i, example, slot, video without the object)`` of the first case with an unsimulated
  object."""
  i = int(_cases(ex)[0])
  one = _one(ex, i)
  o = int(np.flatnonzero(one.object_valid & ~one.object_simulated)[0])
  absent = dataset.video_without_unsimulated(dataset.sample_scene(KEYS[i], CFG), CFG)
  return i, one, o, np.asarray(absent)


def test_video_without_unsimulated_removes_that_object_only(pair):
  ex, plain = pair
  i, one, o, absent = _first_unsimulated(ex)
  # Its pixels change (the room behind it shows), most of the video does not.
  on = one.masks[..., o] > 0.5
  assert np.mean(np.abs(absent - one.video).max(-1)[on] > 0.05) > 0.9
  # Away from it (3 pixels), the video is unchanged (to rounding: the renders differ in the
  # order of the objects' terms).
  far = ~masks.dilate(on, 3, axes=(1, 2))
  assert np.mean(np.abs(absent - one.video).max(-1)[far] < 1e-5) > 0.99
  # Every object simulated: the video itself (to rounding: another compilation).
  flat_scene = dataset.sample_scene(KEYS[i], NONE)
  np.testing.assert_allclose(
      np.asarray(dataset.video_without_unsimulated(flat_scene, NONE)), _one(plain, i).video,
      rtol=0, atol=1e-4)


def _paste(one, base, o, shifts):
  """``base`` with the unsimulated object's frame-0 pixels pasted, in frame ``f >= 1``, at
  the column shift ``shifts[f - 1]`` (its own rows)."""
  ys, xs = np.nonzero(one.masks[0, :, :, o] > 0.5)
  video = base.copy()
  for f, dx in enumerate(shifts, start=1):
    video[f, ys, xs + dx] = one.first_frame[ys, xs]
  return video


def test_unsimulated_matches_find_a_carried_object_exactly(pair):
  _, one, o, absent = _first_unsimulated(pair[0])
  ys, xs = np.nonzero(one.masks[0, :, :, o] > 0.5)
  t, w = one.video.shape[0], one.video.shape[2]
  room = w - 1 - xs.max() if w - 1 - xs.max() >= xs.min() else -xs.min()  # the wider side
  assert abs(room) >= 6
  step = int(np.sign(room))
  # Per frame the first column shift along that side where the object, and a copy 3 columns
  # further, stay inside the image and off the simulated objects.
  sim = masks.simulated_region(one)[..., 0] > 0.5
  shifts = []
  for f in range(1, t):
    free = [d for d in range(1, abs(room) - 2)
            if not sim[f, ys, xs + step * d].any() and not sim[f, ys, xs + step * (d + 3)].any()]
    assert free, f
    shifts.append(step * free[0])
  carried = _paste(one, absent, o, shifts)
  errors, centres = wm.unsimulated_matches(carried, one)
  assert errors.shape == (t - 1, 1)
  np.testing.assert_array_equal(errors[:, 0], 0.0)
  np.testing.assert_allclose(centres[:, 0, 0], xs.mean() + np.asarray(shifts) + 0.5, atol=1e-5)
  np.testing.assert_allclose(centres[:, 0, 1], ys.mean() + 0.5, atol=1e-5)
  # Presence: 1 for the truth and for the carried object, 0 for the room without it.
  assert wm.unsimulated_presence(one.video, one, absent) == 1.0
  assert wm.unsimulated_presence(carried, one, absent) == 1.0
  assert wm.unsimulated_presence(absent, one, absent) == 0.0
  assert wm.unsimulated_object_l1(carried, one) == 0.0
  assert wm.unsimulated_object_l1(absent, one) > 0.1
  # Motion spread: two particles carrying it 3 columns apart score 3 px; a particle where
  # it is gone pairs with nothing once the absent video says so.
  other = _paste(one, absent, o, [s + 3 * step for s in shifts])
  assert wm.unsimulated_motion_spread(np.stack([carried, other]), one) == pytest.approx(3.0)
  assert wm.unsimulated_motion_spread(np.stack([carried, other]), one, absent) == (
      pytest.approx(3.0))
  assert np.isnan(wm.unsimulated_motion_spread(np.stack([carried, absent]), one, absent))
  assert np.isfinite(wm.unsimulated_motion_spread(np.stack([carried, absent]), one))
  # all_metrics reports them (presence only given the absent video).
  m = wm.all_metrics(np.stack([carried, other]), one, absent_video=absent)
  assert m["unsimulated_presence"] == 1.0
  assert m["unsimulated_object_l1"] == 0.0
  assert m["unsimulated_motion_spread"] == pytest.approx(3.0)
  assert np.isnan(wm.all_metrics(np.stack([carried, other]), one)["unsimulated_presence"])


def test_unsimulated_metrics_are_nan_when_every_object_is_simulated(pair):
  _, plain = pair
  flat = _one(plain, int(_cases(pair[0])[0]))
  videos = np.stack([flat.video] * 2)
  m = wm.all_metrics(videos, flat, absent_video=flat.video)
  for k in ("unsimulated_presence", "unsimulated_object_l1", "unsimulated_motion_spread",
            "unsimulated_object_l1_floor"):
    assert np.isnan(m[k]), k
  assert wm.unsimulated_matches(flat.video, flat)[0].shape == (flat.video.shape[0] - 1, 0)


def test_track_error_can_leave_out_a_ghost_painted_in_the_band(pair):
  """A copy of a simulated object painted in the band (outside the simulated region) pulls the
  colour-matching estimate; excluding those pixels gives exactly the clean video's answer."""
  ex, _ = pair
  one = _one(ex, int(_cases(ex)[0]))
  outside = wm.outside_simulated_band(one)
  assert outside.shape == one.video.shape[:3] and outside[1:].any()
  sim = np.flatnonzero(one.object_valid & one.object_simulated)
  video = one.video.copy()
  for f in range(1, one.video.shape[0]):
    for o in sim:
      m = one.masks[f, :, :, o] > 0.5
      if m.any():  # the object's own colour on as many band pixels as its area
        where = np.argwhere(outside[f])[:int(m.sum())]
        video[f, where[:, 0], where[:, 1]] = one.video[f][m].mean(axis=0)
  clean = wm.track_error_px(one.video, one)
  assert wm.track_error_px(video, one) > clean + 0.5
  assert wm.track_error_px(video, one, exclude=outside) == wm.track_error_px(
      one.video, one, exclude=outside)
  # Excluding nothing is the plain estimator.
  assert wm.track_error_px(video, one, exclude=np.zeros_like(outside)) == wm.track_error_px(
      video, one)
