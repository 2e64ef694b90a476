"""Tiny backbones (save/load, training with resume), world metrics with known answers, and the
demo end to end through the launcher, its page screenshotted in headless Chromium."""

import json
import os

import jax
import launcher_util as lu
import numpy as np
import pytest

from composed_vi.errors import ConfigError
from composed_vi.lab import media, training
from composed_vi.world import backbones as tb
from composed_vi.world import metrics as world_metrics
from composed_vi.world.masks import dilate
from configs import train_tiny


@pytest.fixture(scope="module")
def example():
  from composed_vi.world import dataset, scene

  ex = dataset.render_example(jax.random.key(3), scene.SceneConfig())
  return dataset.to_numpy(ex)


def test_metrics_known_answers(example):
  video = example.video
  assert world_metrics.first_frame_l1(video, example) == 0.0
  assert world_metrics.background_l1(video, example) == 0.0
  floor = world_metrics.track_error_px(video, example)
  shifted = np.roll(video, 4, axis=2)  # everything 4 pixels to the right
  err = world_metrics.track_error_px(shifted, example)
  assert floor < 1.5 and 2.5 < err - floor < 5.5, (floor, err)
  assert world_metrics.first_frame_l1(-video, example) > 0.1


@pytest.mark.parametrize("kind", tb.KINDS)
def test_backbone_save_load_and_expert(tmp_path, example, kind):
  spec = tb.TinySpec(kind=kind, vocab_size=64)
  params = tb.init_params(spec, seed=1)
  tb.save(str(tmp_path), spec, params)
  spec2, params2 = tb.load(str(tmp_path))
  assert spec2 == spec
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  e = tb.expert(spec2, params2, example)
  v = e.velocity(jax.numpy.asarray(example.video[None]), 0.5)
  assert v.shape == (1,) + example.video.shape and np.all(np.isfinite(v))
  with pytest.raises(ConfigError, match="backbone"):
    tb.load(str(tmp_path / "missing"))


def test_training_smoke_resumes(tmp_path):
  config = train_tiny.get_config("sim2v,smoke")
  config.export_dir = str(tmp_path / "export")
  first = training.train(config, str(tmp_path / "run"))
  assert first["kind"] == "sim2v" and np.isfinite(first["final_loss"])
  losses = [json.loads(x) for x in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
  assert [r["step"] for r in losses] == [1, 2, 3, 4]
  assert (tmp_path / "run" / "loss.png").exists()
  spec, _ = tb.load(str(tmp_path / "export"))
  assert spec.kind == "sim2v"
  again = training.train(config, str(tmp_path / "run"))  # resumes at the last checkpoint
  assert again["final_loss"] == first["final_loss"]
  assert again["data_sha256"] == first["data_sha256"]
  # Retraining from the config in a fresh workdir reproduces the export bit for bit.
  _, params = tb.load(str(tmp_path / "export"))
  config.export_dir = str(tmp_path / "export2")
  training.train(config, str(tmp_path / "run2"))
  _, params2 = tb.load(str(tmp_path / "export2"))
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A checkpoint exported mid-way: the newest (step 4) is the final export, step 2 differs.
  summary = training.export_checkpoint(str(tmp_path / "run"), str(tmp_path / "mid"))
  assert summary["step"] == 4
  _, mid = tb.load(str(tmp_path / "mid"))
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mid)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  training.export_checkpoint(str(tmp_path / "run"), str(tmp_path / "mid2"), step=2)
  _, mid2 = tb.load(str(tmp_path / "mid2"))
  assert any(np.any(np.asarray(a) != np.asarray(b))
             for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mid2)))


def _untrained_backbone_flags(tmp_path) -> list[str]:
  """Untrained i2v, cam2v and sim2v backbones saved under ``tmp_path``, as the demo's flags."""
  folders = []
  for kind in ("i2v", "cam2v", "sim2v"):
    spec = tb.TinySpec(kind=kind, vocab_size=64)
    tb.save(str(tmp_path / kind), spec, tb.init_params(spec))
    folders.append(f"--config.backbones.{kind}={tmp_path / kind}")
  return folders


def test_demo_end_to_end_and_page_renders(tmp_path):
  """The demo through the launcher with untrained backbones: every output, and the page."""
  folders = _untrained_backbone_flags(tmp_path)
  run = tmp_path / "demo"
  out = lu.launch(run, *folders, config="configs/world_demo.py:smoke")
  assert out.returncode == 0, out.stderr[-3000:]
  for name in ("samples.npz", "index.html", "contact_sheet.png", "particle_0.mp4",
               "particle_1.gif", "input_camera_path.png", "input_simulation.gif",
               "diagnostics.jsonl", "summary.json"):
    assert (run / name).exists(), name
  summary = json.loads((run / "summary.json").read_text())
  assert {"first_frame_l1", "track_error_px", "diversity_unspecified_l1"} <= set(summary)
  shot = tmp_path / "page.png"
  media.screenshot_html(str(run / "index.html"), str(shot), width=1000, height=1400)
  from PIL import Image

  with Image.open(shot) as im:
    assert im.size == (1000, 1400)
    pixels = np.asarray(im.convert("RGB"))
  assert pixels.std() > 10  # the page shows images, not a blank screen
  missing = lu.launch(tmp_path / "demo2", "--config.backbones.i2v=/nonexistent",
                      config="configs/world_demo.py:smoke")
  assert missing.returncode == 2 and "backbones.i2v" in missing.stderr
  assert not os.path.exists(tmp_path / "demo2")


def test_demo_is_the_same_on_one_and_two_devices(tmp_path):
  """The world's composed target, with the image backbone queried re-noised (its noise drawn
  for the whole particle batch from a fixed key), gives the same samples when the particles
  are sharded over two devices (mesh ``data:-1``) as on one."""
  folders = _untrained_backbone_flags(tmp_path)
  runs = {}
  for devices in (1, 2):
    runs[devices] = tmp_path / f"demo_{devices}"
    out = lu.launch(runs[devices], *folders, "--config.num_particles=2",
                    "--config.composition.matched_queries=i2v", devices=devices,
                    config="configs/world_demo.py:smoke")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"on {devices} device(s)" in out.stderr
  one, two = lu.samples(runs[1]), lu.samples(runs[2])
  assert np.all(np.isfinite(one)) and np.abs(one[0] - one[1]).max() > 0.05  # two particles
  assert lu.relative_error(two, one) < 1e-5


def test_training_smoke_x0_precond(tmp_path, example):
  """The preconditioned parameterisation trains and its expert gives finite velocities."""
  config = train_tiny.get_config("i2v,smoke")
  config.model.prediction = "x0_precond"
  config.export_dir = str(tmp_path / "export")
  summary = training.train(config, str(tmp_path / "run"))
  assert np.isfinite(summary["final_loss"])
  spec, params = tb.load(str(tmp_path / "export"))
  assert spec.prediction == "x0_precond" and spec.sigma_data == config.model.sigma_data
  e = tb.expert(spec, params, example)
  assert e.prediction == "x0_precond"
  for t in (0.0, 0.5, 1.0):
    v = e.velocity(jax.numpy.asarray(example.video[None]), t)
    assert np.all(np.isfinite(v))


def test_training_config_errors_name_the_field(tmp_path):
  config = train_tiny.get_config("i2v,smoke")
  config.model.prediction = "eps"
  with pytest.raises(ConfigError, match="model.prediction"):
    training.train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_build_target_context_is_the_static_background_and_the_first_frame(example):
  from composed_vi.world import demo as world_demo

  backbones = {k: (tb.TinySpec(kind=k, vocab_size=64), None) for k in world_demo.BACKBONES}
  backbones = {k: (s, tb.init_params(s, seed=0)) for k, (s, _) in backbones.items()}
  composition = world_demo.Composition(context_weight=2.0, object_dilation=1)
  target = world_demo.build_target(example, backbones, composition)
  ctx = target.experts[-1]
  support = np.broadcast_to(np.asarray(ctx.support), example.video.shape)
  region = dilate(example.object_region, 1, axes=(1, 2))
  np.testing.assert_array_equal(np.asarray(ctx.means[0][0]), example.first_frame)
  assert np.all(support[0] == 1.0)  # the first frame is specified exactly, all of it
  later = np.broadcast_to(example.background_visibility * (1 - region),
                          example.video.shape)[1:]
  np.testing.assert_array_equal(support[1:], later)
  assert np.all(support[1:][np.broadcast_to(region, example.video.shape)[1:] > 0] == 0)
  np.testing.assert_array_equal(np.asarray(ctx.means[0][1:]), example.background_context[1:])
  no_ctx = world_demo.build_target(example, backbones, composition, context=False)
  assert len(no_ctx.experts) == len(target.experts) - 1
  # The repulsion mask: what no control specifies (not frame 0, not the object region, not
  # the background the first frame saw).
  free = np.broadcast_to(np.asarray(target.repulsion_mask), example.video.shape)
  assert np.all(free[0] == 0)
  np.testing.assert_array_equal(
      free[1:], np.broadcast_to((1 - example.background_visibility) * (1 - region),
                                example.video.shape)[1:])
  assert free.max() <= 1.0 and free.mean() < 0.5
  # The pinned mask: what the controls give exactly, the context's support, with or without
  # the context expert; it, the object region and the repulsion mask cover every pixel once.
  for t in (target, no_ctx):
    pinned = np.broadcast_to(np.asarray(t.pinned_mask), example.video.shape)
    np.testing.assert_array_equal(pinned, support)
  obj = np.broadcast_to(region, example.video.shape).copy()
  obj[0] = 0.0
  np.testing.assert_array_equal(pinned + free + obj, np.ones_like(pinned))


def test_image_object_weight_gives_later_object_regions_to_the_simulation(example):
  from composed_vi.world import demo as world_demo

  backbones = _random_backbones()
  default = world_demo.build_target(example, backbones,
                                    world_demo.Composition(image_object_weight=1.0))
  assert np.ndim(default.weights[0]) == 0 and float(default.weights[0]) == 1.0  # unchanged
  composition = world_demo.Composition(image_object_weight=0.25)
  target = world_demo.build_target(example, backbones, composition)
  shape = example.video.shape
  image = np.broadcast_to(np.asarray(target.weights[0]), shape)
  region = np.broadcast_to(dilate(example.object_region, 1, axes=(1, 2)), shape) > 0
  assert np.all(image[0] == 1.0)  # the first frame stays the image backbone's control
  assert region[1:].any() and np.all(image[1:][region[1:]] == 0.25)
  assert np.all(image[1:][~region[1:]] == 1.0)
  # The other experts' weights are those of the default composition.
  for a, b in zip(target.weights[1:], default.weights[1:]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ConfigError, match="image_object_weight"):
    world_demo.Composition(image_object_weight=-1.0).validate()


def _first_scene(predicate):
  """The first of the scenes of seeds 0..39 (numpy arrays) for which ``predicate`` holds."""
  from composed_vi.world import dataset, scene

  return next(e for e in (dataset.to_numpy(dataset.render_example(jax.random.key(s),
                                                                  scene.SceneConfig()))
                          for s in range(40)) if predicate(e))


def _random_backbones():
  from composed_vi.world import demo as world_demo

  specs = {k: tb.TinySpec(kind=k, vocab_size=64) for k in world_demo.BACKBONES}
  return {k: (s, tb.init_params(s, seed=0)) for k, s in specs.items()}


def test_camera_band_weight_scales_the_camera_backbone_on_the_unsimulated_band():
  from composed_vi.world import demo as world_demo
  from composed_vi.world.masks import simulated_region, unsimulated_band

  ex = _first_scene(lambda e: unsimulated_band(e).any())
  backbones = _random_backbones()
  default = world_demo.build_target(
      ex, backbones, world_demo.Composition(camera_weight=2.0, camera_band_weight=1.0))
  target = world_demo.build_target(
      ex, backbones, world_demo.Composition(camera_weight=2.0, camera_band_weight=0.25))
  region = dilate(simulated_region(ex), 1, axes=(1, 2)) > 0
  band = (unsimulated_band(ex) > 0) & ~region
  camera, camera0 = (np.asarray(t.weights[1]) for t in (target, default))
  # (both also kept off where the warp carries a first-frame object)
  assert band.any() and np.any(camera0[band] == 2.0)
  np.testing.assert_allclose(camera[band], 0.25 * camera0[band], rtol=1e-6)
  np.testing.assert_array_equal(camera[~band], camera0[~band])
  for k in (0, 2, 3):  # image, simulation, context: unchanged
    np.testing.assert_array_equal(np.asarray(target.weights[k]), np.asarray(default.weights[k]))
  with pytest.raises(ConfigError, match="camera_band_weight"):
    world_demo.Composition(camera_band_weight=-1.0).validate()


def test_band_context_weight_gives_the_context_the_room_seen_in_the_band():
  from composed_vi.world import demo as world_demo
  from composed_vi.world.masks import simulated_region, unsimulated_band

  ex = _first_scene(lambda e: unsimulated_band(e).any())
  backbones = _random_backbones()
  default = world_demo.build_target(ex, backbones, world_demo.Composition())
  target = world_demo.build_target(ex, backbones,
                                   world_demo.Composition(band_context_weight=1.5))
  shape = ex.video.shape
  region = dilate(simulated_region(ex), 1, axes=(1, 2)) > 0
  seen_band = np.broadcast_to((unsimulated_band(ex) > 0) & ~region
                              & (ex.background_visibility > 0), shape).copy()
  seen_band[0] = False
  assert seen_band.any()
  ctx, ctx0 = target.experts[3], default.experts[3]
  support = np.broadcast_to(np.asarray(ctx.support), shape)
  support0 = np.broadcast_to(np.asarray(ctx0.support), shape)
  assert np.all(support0[seen_band] == 0)  # by default the context has no say in the band
  np.testing.assert_array_equal(support[seen_band], np.broadcast_to(
      ex.background_visibility, shape)[seen_band])
  np.testing.assert_array_equal(support[~seen_band], support0[~seen_band])
  weight = np.broadcast_to(np.asarray(target.weights[3]), shape)
  weight0 = np.broadcast_to(np.asarray(default.weights[3]), shape)
  assert np.all(weight[seen_band] == 1.5 * support[seen_band])
  np.testing.assert_array_equal(weight[~seen_band], weight0[~seen_band])
  # The band is never pinned, and the other experts are those of the default composition.
  np.testing.assert_array_equal(np.asarray(target.pinned_mask), np.asarray(default.pinned_mask))
  for k in (0, 1, 2):
    np.testing.assert_array_equal(np.asarray(target.weights[k]), np.asarray(default.weights[k]))
  with pytest.raises(ConfigError, match="band_context_weight"):
    world_demo.Composition(band_context_weight=-1.0).validate()


def test_vacated_weights_give_the_simulation_where_its_objects_are_not_now():
  from composed_vi.world import demo as world_demo
  from composed_vi.world.masks import simulated_region

  def moves(e):
    sim = simulated_region(e)[..., 0] > 0
    return bool(np.any(sim[0] & ~sim[-1]))

  example = _first_scene(moves)
  backbones = _random_backbones()
  default = world_demo.build_target(example, backbones,
                                    world_demo.Composition(vacated_sim_weight=0.0))
  target = world_demo.build_target(example, backbones, world_demo.Composition(
      vacated_sim_weight=0.5, vacated_image_weight=0.25))
  shape = example.video.shape
  region = np.broadcast_to(dilate(simulated_region(example), 1, axes=(1, 2)), shape) > 0
  swept = np.broadcast_to(region.any(axis=0, keepdims=True), shape)
  vacated = swept & ~region
  vacated[0] = False
  assert vacated.any()
  image, image0 = (np.broadcast_to(np.asarray(t.weights[0]), shape) for t in (target, default))
  sim, sim0 = (np.broadcast_to(np.asarray(t.weights[2]), shape) for t in (target, default))
  np.testing.assert_allclose(image[vacated], 0.25 * image0[vacated], rtol=1e-6)
  np.testing.assert_array_equal(image[~vacated], image0[~vacated])
  assert np.all(sim[vacated] == 0.5) and np.all(sim0[vacated] == 0.0)
  np.testing.assert_array_equal(sim[~vacated], sim0[~vacated])
  # No longer free for the repulsion there (the simulation says no object is there).
  free = np.broadcast_to(np.asarray(target.repulsion_mask), shape)
  free0 = np.broadcast_to(np.asarray(default.repulsion_mask), shape)
  assert np.all(free[vacated] == 0) and np.any(free0[vacated] > 0)
  np.testing.assert_array_equal(free[~vacated], free0[~vacated])
  for name in ("vacated_sim_weight", "vacated_image_weight"):
    with pytest.raises(ConfigError, match=name):
      world_demo.Composition(**{name: -1.0}).validate()


def test_camera_backbone_is_kept_off_where_it_would_carry_a_first_frame_object(example):
  from composed_vi.world import demo as world_demo

  static = example._replace(extrinsics=np.broadcast_to(example.extrinsics[:1],
                                                       example.extrinsics.shape))
  spec = tb.TinySpec(kind="cam2v", vocab_size=64, camera_rope=True)
  carried = world_demo.carried_first_frame_objects(static, tb.camera_warp(spec, static), 1)
  objects0 = dilate(static.object_region[:1], 1, axes=(1, 2))[0]
  assert carried[0].max() == 0  # frame 0 is the network's own
  # a static camera carries every pixel to itself: the first frame's objects, dilated
  np.testing.assert_allclose(carried[1:], np.broadcast_to(objects0, carried[1:].shape),
                             atol=1e-4)
  assert world_demo.carried_first_frame_objects(static, tb.camera_warp(
      tb.TinySpec(kind="cam2v", vocab_size=64, output_pin=False), static), 1) is None
  backbones = {k: tb.TinySpec(kind=k, vocab_size=64, camera_rope=k == "cam2v")
               for k in world_demo.BACKBONES}
  backbones = {k: (s, tb.init_params(s, seed=0)) for k, s in backbones.items()}
  target = world_demo.build_target(static, backbones, world_demo.Composition())
  camera = np.broadcast_to(np.asarray(target.weights[1]), static.video.shape[:-1] + (1,))
  on = carried[1:] > 0.999
  assert on.any() and np.all(camera[1:][on] == 0)


@pytest.mark.parametrize("kind", ["i2v", "sim2v", "cam2v"])
def test_shipped_backbones_come_from_train_tiny(kind):
  """The shipped checkpoint's recorded training config is configs/train_tiny.py's for its kind
  (all but where it was exported), so that config retrains it."""
  import os

  from composed_vi.lab import runner

  root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "assets",
                      "backbones", kind)
  with open(os.path.join(root, "config.json")) as f:
    shipped = json.load(f)["train"]
  expected = runner.config_dict(train_tiny.get_config(kind))
  for d in (shipped, expected):
    d.pop("export_dir")
  assert shipped == expected


def test_first_frame_weights_leave_frame_0_to_the_image_backbone():
  from composed_vi.world import demo as world_demo

  ex = _first_scene(lambda e: True)
  backbones = _random_backbones()
  default = world_demo.build_target(ex, backbones, world_demo.Composition())
  scaled = world_demo.build_target(ex, backbones, world_demo.Composition(
      first_frame_others_weight=0.25, first_frame_context_weight=0.5))
  shape = ex.video.shape[:-1] + (1,)
  for k, scale in ((1, 0.25), (2, 0.25), (3, 0.5)):  # camera, simulation, context
    w, w0 = (np.broadcast_to(np.asarray(t.weights[k]), shape) for t in (scaled, default))
    assert np.any(w0[0] > 0)
    np.testing.assert_allclose(w[0], scale * w0[0], rtol=1e-6)
    np.testing.assert_array_equal(w[1:], w0[1:])  # unchanged after frame 0
  np.testing.assert_array_equal(np.asarray(scaled.weights[0]), np.asarray(default.weights[0]))
  # At 0, frame 0 of the composed velocity is the image backbone's alone (whose composite is
  # the first frame): other camera and simulation weights do not change it.
  off = world_demo.Composition(first_frame_others_weight=0.0, first_frame_context_weight=0.0)
  other = dict(backbones)
  for kind in ("cam2v", "sim2v"):
    spec, _ = backbones[kind]
    other[kind] = (spec, tb.init_params(spec, seed=1))
  x = jax.random.normal(jax.random.key(3), (1,) + tuple(default.shape))
  t = 0.5
  target = world_demo.build_target(ex, backbones, off)
  v = np.asarray(target.velocity(x, t))[0]
  v_other = np.asarray(world_demo.build_target(ex, other, off).velocity(x, t))[0]
  v_image = np.asarray(target.experts[0].velocity_and_score(x, t)[0])[0]
  v_default = np.asarray(default.velocity(x, t))[0]
  v_default_other = np.asarray(world_demo.build_target(ex, other, world_demo.Composition())
                               .velocity(x, t))[0]
  np.testing.assert_allclose(v[0], v_image[0], rtol=0, atol=1e-5)
  np.testing.assert_allclose(v[0], v_other[0], rtol=0, atol=1e-6)
  assert np.abs(v[1:] - v_other[1:]).max() > 1e-3  # the backbones do act after frame 0
  assert np.abs(v_default[0] - v_default_other[0]).max() > 1e-3  # and on frame 0 by default
  assert np.abs(v_default[0] - v_image[0]).max() > 1e-3
  for name in ("first_frame_others_weight", "first_frame_context_weight"):
    with pytest.raises(ConfigError, match=name):
      world_demo.Composition(**{name: -1.0}).validate()


def test_matched_queries_renoise_the_named_backbones_to_the_products_noise():
  from composed_vi import experts
  from composed_vi.world import demo as world_demo
  from composed_vi.world.masks import unsimulated_band

  example = _first_scene(lambda e: unsimulated_band(e).any())
  backbones = _random_backbones()
  default = world_demo.build_target(example, backbones,
                                    world_demo.Composition(matched_queries=""))
  assert not any(isinstance(e, experts.NoiseMatched) for e in default.experts)
  target = world_demo.build_target(example, backbones,
                                   world_demo.Composition(matched_queries="i2v, sim2v"))
  kinds = dict(zip(world_demo.BACKBONES, target.experts))
  assert isinstance(kinds["i2v"], experts.NoiseMatched)
  assert isinstance(kinds["sim2v"], experts.NoiseMatched)
  assert not isinstance(kinds["cam2v"], experts.NoiseMatched)
  assert type(kinds["i2v"].expert) is type(default.experts[0])
  total = np.asarray(default.total_weight)
  np.testing.assert_allclose(np.asarray(kinds["i2v"].extra), np.sqrt(1 - 1 / total),
                             rtol=1e-6)
  assert np.asarray(kinds["i2v"].extra).max() > 0.9  # the context-pinned background
  # The weights are the default's; the band (the image backbone's alone) is not re-noised.
  for a, b in zip(target.weights, default.weights):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  band = np.broadcast_to(unsimulated_band(example), total.shape) * (total == 1)
  assert band.any() and np.all(np.asarray(kinds["i2v"].extra)[band > 0] == 0)
  for bad in ("t2v", True):
    with pytest.raises(ConfigError, match="matched_queries"):
      world_demo.Composition(matched_queries=bad).validate()
