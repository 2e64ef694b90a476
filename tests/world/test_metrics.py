"""World metrics on cases with known answers: the ground truth, constant offsets, shifts, a frozen
camera, a synthetic occluder, identical and offset particles, uniform noise."""

import jax
import numpy as np
import pytest

from composed_vi.world import metrics as wm


def _example(kind: str) -> dict:
  """``render_example(jax.random.key(2), SceneConfig(camera_kinds=(kind,)))`` (3 objects, two
  moving), rendered through ``example_from_scene`` so that both cameras share one compilation."""
  from composed_vi.world import dataset, scene

  sampled = scene.sample_scene(jax.random.key(2), scene.SceneConfig(camera_kinds=(kind,)))
  ex = dataset.example_from_scene(sampled, dataset.DEFAULT_CONFIG)
  return dataset.to_numpy(ex)


@pytest.fixture(scope="module")
def static():
  return _example("static")


@pytest.fixture(scope="module")
def pan():
  return _example("pan_left")


def _noise(example, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, example.video.shape).astype(np.float32)


def _frozen(example):
  """The first frame repeated: a video that ignores the camera and the simulation."""
  video = example.video
  return np.repeat(video[:1], video.shape[0], 0)


def test_camera_background_error_known_answers(pan, static):
  gt = pan.video
  assert wm.camera_background_error(gt, pan) == 0.0
  assert wm.camera_background_error(gt + 0.1, pan) == pytest.approx(0.1, abs=1e-6)
  # Only the first frame's static background counts: objects and unseen pixels do not.
  mask = ((pan.background_visibility[..., 0] > 0.5)
          & wm.static_background(pan))[..., None]
  garbage = np.where(mask, gt, _noise(pan))
  assert wm.camera_background_error(garbage, pan) == 0.0
  # Ignoring a panning camera moves the background; with a static camera only the objects'
  # moving shadows differ.
  assert wm.camera_background_error(_frozen(pan), pan) > 0.1
  assert wm.camera_background_error(_frozen(static), static) < 0.02
  assert wm.camera_background_error(_noise(pan), pan) > 0.5


def test_consistency_3d_ground_truth_vs_noise(pan, static):
  floor = wm.consistency_3d(pan.video, pan)
  assert floor < 0.06
  # A constant offset is consistent; independent noise frames and a frozen camera are not.
  assert wm.consistency_3d(pan.video + 0.1, pan) == pytest.approx(floor, abs=1e-5)
  assert wm.consistency_3d(_noise(pan), pan) > 0.5
  assert wm.consistency_3d(_frozen(pan), pan) > floor + 0.1
  assert wm.consistency_3d(_frozen(pan), pan, reference="previous") > 0.02
  # Static camera: the reprojection is the identity, so a still video scores exactly 0 and the
  # ground truth only shows the objects' moving shadows.
  assert wm.consistency_3d(_frozen(static), static) == pytest.approx(0.0, abs=1e-6)
  assert wm.consistency_3d(static.video, static) < 0.01
  with pytest.raises(ValueError, match="reference"):
    wm.consistency_3d(pan.video, pan, reference="last")


def test_consistency_3d_excludes_occluded_and_objects(static):
  video = _frozen(static)
  # Objects move: garbage on every object pixel (and its 1-pixel margin) changes nothing.
  objects = ~wm.static_background(static) & (static.depth > 0)
  messy = np.where(objects[..., None], _noise(static), video)
  assert wm.consistency_3d(messy, static) == pytest.approx(0.0, abs=1e-6)
  # A synthetic static occluder in frame 0 (ground-truth depth halved in a block): the
  # background of frames t >= 1 behind it is not co-visible, so garbage there is not counted;
  # without the depth test it would be.
  depth = static.depth.copy()
  depth[0, 4:12, 4:12] *= 0.5
  occluded = static._replace(depth=depth)
  block = video.copy()
  block[0, 4:12, 4:12] = 1.0
  assert wm.consistency_3d(block, occluded) == pytest.approx(0.0, abs=1e-6)
  assert wm.consistency_3d(block, occluded, depth_tolerance=np.inf) > 0.01
  _, _, valid = wm.reproject(occluded, 5, 0)
  assert not valid[4:12, 4:12].any() and valid.sum() > 500


def test_diversity_known_answers(pan):
  gt = pan.video
  assert wm.diversity(np.stack([gt, gt, gt]), pan) == 0.0
  assert wm.diversity_everywhere(np.stack([gt, gt])) == 0.0
  # Offsets 0, 0.1, 0.3: pairwise distances 0.1, 0.3, 0.2.
  offsets = np.stack([gt, gt + 0.1, gt + 0.3])
  assert wm.diversity(offsets, pan) == pytest.approx(0.2, abs=1e-5)
  assert wm.diversity_everywhere(offsets) == pytest.approx(0.2, abs=1e-5)
  # Particles differing only where a control specifies the pixels are not diverse there.
  region = wm.unspecified_region(pan)
  assert 0 < region.mean() < 1
  specified = np.stack([gt, np.where(region > 0, gt, _noise(pan))])
  assert wm.diversity(specified, pan) == 0.0
  assert wm.diversity_everywhere(specified) > 0.1
  assert wm.diversity(offsets, region=np.ones(gt.shape[:3])) == pytest.approx(0.2, abs=1e-5)
  assert np.isnan(wm.diversity(gt[None], pan))


def test_high_frequency_energy_known_answers(pan):
  shape = pan.video.shape
  ones = np.ones(shape[:3])
  flat = np.full(shape, 0.3, np.float32)
  assert wm.high_frequency_energy(flat, region=ones) == 0.0
  # A linear ramp equals its neighbours' mean: no detail.
  ramp = np.broadcast_to(np.linspace(-1, 1, shape[2])[None, :, None, None], shape)
  assert wm.high_frequency_energy(ramp, region=ones) == pytest.approx(0.0, abs=1e-6)
  # A checkerboard of +-a: every interior pixel is 2a from its neighbours' mean.
  yy, xx = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
  board = np.where((yy + xx) % 2 == 0, 0.2, -0.2)[None, :, :, None]
  board = np.broadcast_to(board, shape).astype(np.float32)
  assert wm.high_frequency_energy(board, region=ones) == pytest.approx(0.4, abs=1e-6)
  # Several particles average; the region selects the pixels.
  both = np.stack([board, flat])
  assert wm.high_frequency_energy(both, region=ones) == pytest.approx(0.2, abs=1e-6)
  region = wm.unspecified_region(pan)
  mixed = np.where(region > 0, flat, board)  # texture only where a control speaks
  assert wm.high_frequency_energy(mixed, pan) < wm.high_frequency_energy(board, pan)
  assert np.isnan(wm.high_frequency_energy(board, region=np.zeros(shape[:3])))


def test_validity(pan):
  gt = pan.video
  assert wm.validity(gt, pan) == dict(first_frame=True, track=True, background=True,
                                      valid_all=True)
  assert wm.validity(gt + 0.05, pan)["valid_all"]
  noise = wm.validity(_noise(pan), pan)
  assert not any(noise.values()), noise
  offset = wm.validity(gt + 0.3, pan)
  assert not offset["first_frame"] and not offset["background"] and not offset["valid_all"]
  # A frozen video keeps the first frame but breaks the camera and the simulation.
  frozen = wm.validity(_frozen(pan), pan)
  assert frozen == dict(first_frame=True, track=False, background=False, valid_all=False)
  shifted = wm.validity(np.roll(gt, 4, axis=2), pan)
  assert not shifted["track"]
  assert wm.validity(np.roll(gt, 4, axis=2), pan, {"track_excess_px": 100.0})["track"]


def test_all_metrics(pan):
  gt = pan.video
  out = wm.all_metrics(np.stack([gt, gt]), pan)
  assert out["first_frame_l1"] == 0.0 and out["camera_background_error"] == 0.0
  assert out["consistency_3d"] == pytest.approx(out["consistency_3d_floor"])
  assert out["track_error_px"] == pytest.approx(out["track_error_floor_px"])
  assert out["valid_all"] == 1.0 and out["diversity"] == 0.0 and out["num_particles"] == 2
  mixed = wm.all_metrics(np.stack([gt, _noise(pan)]), pan)
  assert mixed["valid_all"] == 0.5 and mixed["valid_first_frame"] == 0.5
  assert mixed["diversity"] > 0.3 and mixed["consistency_3d"] > 0.25
  assert all(isinstance(v, float) for v in mixed.values())


def _reversed(example_kind: str) -> tuple[dict, dict]:
  """The ``_example`` scene and the same scene with its camera path reversed."""
  from composed_vi.world import dataset, scene

  sampled = scene.sample_scene(jax.random.key(2), scene.SceneConfig(camera_kinds=(example_kind,)))
  out = [dataset.example_from_scene(s, dataset.DEFAULT_CONFIG)
         for s in (sampled, scene.reverse_camera(sampled))]
  return tuple(dataset.to_numpy(ex) for ex in out)


@pytest.mark.parametrize("kind", ["pan_left", "dolly_in", "orbit"])
def test_camera_following_known_answers(kind):
  own, rev = _reversed(kind)
  # The reversed path starts at the same pose and goes the other way.
  np.testing.assert_allclose(own.extrinsics[0], rev.extrinsics[0], atol=1e-6)
  assert not np.allclose(own.extrinsics[-1], rev.extrinsics[-1], atol=1e-3)
  # The ground truth moves like its own path, its reversed rendering like the reversed one.
  gt = wm.camera_following(own.video, own, rev)
  assert gt > 0.03
  assert wm.camera_following(rev.video, own, rev) < -0.03
  # Symmetry: swapping the roles negates the score exactly.
  assert wm.camera_following(own.video, rev, own) == pytest.approx(-gt, abs=1e-6)
  # A frozen video does not move at all: far below the ground truth's score.
  assert abs(wm.camera_following(_frozen(own), own, rev)) < gt / 2


def test_camera_following_static_camera_is_nan(static):
  from composed_vi.world import scene

  sampled = scene.sample_scene(jax.random.key(2), scene.SceneConfig(camera_kinds=("static",)))
  assert bool(scene.reverse_camera(sampled).camera.kind == 0)
  assert np.isnan(wm.camera_following(static.video, static, static))
