"""Long videos (composed_vi.world.long_video, composed_vi.lab.long_video): the long ground-truth
path, the per-segment controls, chaining, the background-error metric, and the smoke config end
to end."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from composed_vi import experts as cvi_experts
from composed_vi.lab import long_video as lv
from composed_vi.world import backbones as tb
from composed_vi.world import controls
from composed_vi.world import demo as world_demo
from composed_vi.world import scene as sl
from composed_vi.world.long_video import compose as lvc
from composed_vi.world.long_video import metrics as lvm
from composed_vi.world.long_video import path as lvp
from configs import long_video as long_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = sl.SceneConfig()
PATH = lvp.LongPath()
SEED = 101


@pytest.fixture(scope="module")
def truth():
  return lvp.long_ground_truth(jax.random.key(SEED), CONFIG, PATH)


@pytest.fixture(scope="module")
def segments(truth):
  return [lvp.segment_example(truth, k, PATH) for k in range(PATH.num_segments)]


@pytest.fixture(scope="module")
def camera():
  return jax.jit(sl.sample_scene, static_argnums=1)(jax.random.key(SEED), CONFIG).camera


_extrinsics = jax.jit(sl.extrinsics, static_argnums=1)
_lift = jax.jit(controls.lift_and_splat)


def test_path_layout_and_return_to_start(truth, camera):
  t = CONFIG.num_frames
  assert truth.video.shape == (2 * (t - 1) + 1, 32, 32, 3)
  extr = truth.extrinsics
  np.testing.assert_allclose(extr[-1], extr[0], atol=1e-5)
  assert np.abs(extr[t - 1] - extr[0]).max() > 0.1
  np.testing.assert_allclose(truth.yaw[[0, t - 1, -1]], [0.0, -np.deg2rad(25.0), 0.0],
                             atol=1e-6)
  # Segment 0 is the world's own pan_right from the scene's start pose, segment 1 its pan_left
  # from the turned pose.
  cam = camera
  pan = np.float32(np.deg2rad(25.0))
  right = _extrinsics(cam._replace(kind=jnp.int32(2), amount=pan), CONFIG)
  np.testing.assert_allclose(extr[:t], right, atol=1e-5)
  turned = cam.position + sl._rotate_y(-pan, cam.target - cam.position)
  left = _extrinsics(cam._replace(kind=jnp.int32(1), amount=pan, target=turned), CONFIG)
  np.testing.assert_allclose(extr[t - 1:], left, atol=1e-5)
  # Two segments each way: back at the start too.
  far = lvp.LongPath(segments_per_direction=2, pan_degrees=20.0)
  yaw = lvp.yaw_path(far, t)
  assert yaw.shape == (4 * (t - 1) + 1,) and yaw[-1] == 0.0
  np.testing.assert_allclose(yaw[2 * (t - 1)], -np.deg2rad(40.0), atol=1e-6)


def test_ground_truth_background_returns():
  # Without shadows (objects move theirs), the static background seen at the start is the same
  # when the camera is back at the start pose.
  config = dataclasses.replace(CONFIG, shadows=False, height=16, width=16)
  gt = lvp.long_ground_truth(jax.random.key(SEED), config, PATH)
  last = lvp.segment_example(gt, PATH.num_segments - 1, PATH)
  mask = lvm.background_mask(last)[-1]
  from composed_vi.world import metrics as wm

  first = wm.static_background(gt._replace(depth=gt.depth[:1],
                                           object_region=gt.object_region[:1]))[0]
  mask &= first
  assert mask.sum() > 50
  np.testing.assert_allclose(gt.video[-1][mask], gt.video[0][mask], atol=1e-5)


def test_metric_known_answers(truth, segments):
  m = lvm.video_metrics(truth.video, segments)
  assert m["segment_errors"] == [0.0, 0.0]
  assert m["return_error"] == m["final_frame_error"] == m["mean_segment_error"] == 0.0
  rng = np.random.default_rng(0)
  noise = rng.uniform(-1, 1, truth.video.shape).astype(np.float32)
  m = lvm.video_metrics(noise, segments)
  assert min(m["segment_errors"]) > 0.3 and m["return_error"] > 0.3
  # Only the last frames wrong: segment 0 stays 0, the return error sees it.
  video = truth.video.copy()
  video[-3:] = noise[-3:]
  m = lvm.video_metrics(video, segments, return_frames=3)
  assert m["segment_errors"][0] == 0.0 and m["return_error"] > 0.3
  assert m["segment_errors"][1] < m["return_error"]
  assert 0.0 < lvm.context_floor(segments) < 0.1


def test_segment_controls(truth, segments, camera):
  t = CONFIG.num_frames
  K = truth.intrinsics
  for k, seg in enumerate(segments):
    a = lvp.segment_start(k, t)
    np.testing.assert_array_equal(seg.video, truth.video[a:a + t])
    np.testing.assert_array_equal(seg.first_frame, truth.video[a])
    # The context: the ORIGINAL first frame lifted with its depth and E_0, along the segment.
    path = np.concatenate([truth.extrinsics[:1], truth.extrinsics[a:a + t]])
    ctx, vis = _lift(truth.rgb[0], truth.depth[0], K, path)
    np.testing.assert_allclose(seg.visibility, vis[1:])
    np.testing.assert_allclose(seg.context, (2 * np.asarray(ctx[1:]) - 1) * vis[1:],
                               atol=1e-6)
    assert controls.detokenize(seg.caption_tokens).endswith(
        "camera pans right" if k == 0 else "camera pans left")
  # When the camera returns, the context sees (nearly) all of the first frame again.
  assert segments[-1].visibility[-1].mean() > 0.95
  # Pluecker rays re-anchored at the start pose: segment 1 is the world's pan_left from there.
  left = _extrinsics(camera._replace(kind=jnp.int32(1), amount=np.float32(np.deg2rad(25.0))),
                     CONFIG)
  np.testing.assert_allclose(segments[1].plucker, controls.plucker_rays(K, left, 32, 32),
                             atol=1e-5)
  world = lvp.segment_example(truth, 1, dataclasses.replace(PATH, plucker_frame="world"))
  np.testing.assert_allclose(world.plucker,
                             controls.plucker_rays(K, truth.extrinsics[t - 1:], 32, 32),
                             atol=1e-6)


@pytest.fixture(scope="module")
def backbones():
  return world_demo.load_backbones(long_config.get_config().backbones)


def test_per_particle_expert_matches_single_conditions(segments, backbones):
  spec, params = backbones["i2v"]
  seg = segments[0]
  rng = np.random.default_rng(1)
  firsts = rng.uniform(-1, 1, (2,) + seg.first_frame.shape).astype(np.float32)
  inner = tb.expert(spec, params, seg)
  assert inner.pin_value is not None  # the pinned first frame must follow each chain too
  expert = lvc.per_chain_image_expert(inner, spec, firsts, seg.video.shape)
  x = jnp.asarray(rng.standard_normal((2,) + seg.video.shape), jnp.float32)
  velocity = jax.jit(lambda e, x: e.velocity(x, 0.5))
  v = velocity(expert, x)
  for i in range(2):
    alone = velocity(tb.expert(spec, params, seg._replace(first_frame=firsts[i])), x[i:i + 1])
    np.testing.assert_allclose(v[i], alone[0], atol=1e-4)
  with pytest.raises(ValueError, match="particles"):
    expert.velocity(x[:1], 0.5)


@pytest.mark.parametrize("variant", lvc.VARIANTS)
def test_chain_passes_last_frame(truth, segments, backbones, variant):
  n, t = 2, CONFIG.num_frames
  seen, made = [], []

  def fake_sample(key, target):
    i2v = target.experts[world_demo.BACKBONES.index("i2v")]
    if composition.matched_kinds:  # re-noised outside the per-chain expert, from the final
      assert isinstance(i2v, cvi_experts.NoiseMatched)  # weights (last_frame_only: no context)
      total = np.asarray(target.total_weight)  # (nothing added where W < 1)
      np.testing.assert_allclose(np.asarray(i2v.extra),
                                 np.sqrt(np.clip(1 - 1 / total, 0, 1)), rtol=1e-6)
      i2v = i2v.expert
    condition, pin_value = i2v.values  # both carry each chain's first frame
    np.testing.assert_array_equal(pin_value[:, 0], condition[:, 0, :, :, :3])
    seen.append((np.asarray(condition[:, 0, :, :, :3]), target))
    x = np.asarray(jax.random.uniform(key, (n,) + segments[0].video.shape, minval=-1.2,
                                      maxval=1.2))
    made.append(np.clip(x, -1, 1))
    return x

  composition = world_demo.Composition()
  assert composition.matched_kinds == ("i2v",)  # the default
  videos, firsts = lvc.chain(jax.random.key(0), segments, variant, n, backbones, composition,
                             fake_sample)
  assert videos.shape == (n,) + truth.video.shape
  np.testing.assert_array_equal(firsts[0], np.broadcast_to(truth.video[0], firsts[0].shape))
  np.testing.assert_array_equal(firsts[1], made[0][:, -1])
  for k in range(2):
    np.testing.assert_array_equal(seen[k][0], firsts[k])
  np.testing.assert_array_equal(videos[:, :t], made[0])
  np.testing.assert_array_equal(videos[:, t:], made[1][:, 1:])
  targets = [s[1] for s in seen]
  # last_frame_only: the context expert has weight 0 (no say anywhere).
  assert len(targets[1].experts) == 4
  assert (np.max(np.asarray(targets[1].weights[-1])) == 0) == (variant == "last_frame_only")
  assert not composition.normalize_weights  # the default: the raw-weight product
  ctx_values = np.asarray(targets[1].experts[-1].values[:, 0])  # (N, T, H, W, 3)
  # Frame 0 of the context is each chain's own first frame, never the segment's true frame.
  np.testing.assert_array_equal(ctx_values[:, 0], firsts[1])
  if variant == "context_from_last":
    # Segment 1's context: each chain's last frame lifted with the true depth of that frame.
    seg = segments[1]
    ctx, vis = _lift(firsts[1][1], seg.depth[0], seg.intrinsics, seg.extrinsics)
    np.testing.assert_allclose(ctx_values[1, 1:], (np.asarray(ctx) * vis)[1:], atol=1e-6)
  elif variant == "context":
    # The static background of the ORIGINAL first frame, re-rendered along segment 1.
    for i in range(n):
      np.testing.assert_allclose(ctx_values[i, 1:], segments[1].background_context[1:])
  # With normalised weights every variant's weights sum to 1 at every pixel, so each starts
  # from N(0, I): last_frame_only gives the context's share back to the backbones.
  seen.clear()
  lvc.chain(jax.random.key(0), segments, variant, n, backbones,
            dataclasses.replace(composition, normalize_weights=True), fake_sample)
  np.testing.assert_allclose(np.asarray(seen[1][1].total_weight), 1.0, rtol=1e-5)


def test_smoke_config_end_to_end(tmp_path):
  config = long_config.get_config("smoke")
  lines = []
  result = lv.run(config, str(tmp_path), log=lines.append)
  for name in ("long_video.json", "long_video.md", "ground_truth.gif", "context.gif",
               "last_frame_only.gif", "comparison.gif", "contact_sheet.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  data = json.loads((tmp_path / "long_video.json").read_text())
  assert data["settings"]["scene_seeds"] == [101]
  scene = data["scenes"][0]
  assert scene["ground_truth"]["return_error"] == 0.0
  for variant in ("context", "last_frame_only"):
    v = scene["variants"][variant]
    assert len(v["segment_errors"]) == 2 and np.isfinite(v["return_error"])
    assert len(v["per_particle"]) == 2
  assert "minus_context" in data["summary"]["last_frame_only"]
  assert "| context |" in (tmp_path / "long_video.md").read_text()
  assert result["summary"]["context"]["return_error"]["mean"] == pytest.approx(
      scene["variants"]["context"]["return_error"])
  assert len(lines) == 2


def test_config_errors_before_compute(tmp_path):
  from composed_vi.errors import ConfigError

  config = long_config.get_config("smoke")
  config.variants = ("context", "oracle")
  with pytest.raises(ConfigError, match=r"variants\[1\]"):
    lv.validate(config)
  config = long_config.get_config("smoke")
  config.long.pan_degrees = 120.0
  with pytest.raises(ConfigError, match="long.pan_degrees"):
    lv.validate(config)
  config = long_config.get_config("smoke")
  config.backbones.cam2v = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match="backbones.cam2v"):
    lv.validate(config)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.long_video", "--config=configs/long_video.py:smoke",
       "--config.num_particles=0", f"--workdir={tmp_path / 'run'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2, proc.stderr
  errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
  assert errors == ["error: num_particles: expected an integer >= 1, got 0"], proc.stderr
  assert not (tmp_path / "run").exists()
