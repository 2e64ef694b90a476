"""Long videos (issue 6, deliverable 5): segments chained with the previous segment's last frame
and the 3D context, on a camera that pans right and then back left to its start pose.

Layout. A long video has ``S = 2 P`` segments of ``T`` frames (``T`` = the backbones' length,
``P`` = ``segments_per_direction``); consecutive segments share one frame (segment ``k`` covers
the global frames ``k (T - 1) .. k (T - 1) + T - 1``), so the video has ``L = S (T - 1) + 1``
frames. The camera stays at the start centre of a sampled world scene and yaws: right by
``pan`` per segment for the first ``P`` segments, then left by ``pan`` per segment, back to the
start pose at frame ``L - 1`` (the yaw is piecewise linear in the frame index, linear inside a
segment as in :func:`composed_vi.world.scene.camera_path`), so every segment is exactly a world
``pan_right`` or ``pan_left`` of ``T`` frames. The objects' simulation runs continuously over the
``L`` frames. The scene is ``sample_scene(key, config)`` of the default world (its camera's start
pose; its drawn camera kind and amount are ignored): the world's sampling is untouched.

Controls of segment ``k`` (:func:`segment_example`):

* first frame: segment 0 the true first frame; later segments the previous segment's LAST
  GENERATED frame, per particle (:func:`chain`: particle ``i`` continues chain ``i``);
* Pluecker rays (``plucker_frame``): ``"segment"`` (default) expresses the segment's cameras in
  a world frame moved so that its first camera sits at the scene's start pose,
  ``E'_t = E_t E_first^-1 E_0``: the camera backbone was trained on world-frame rays of paths
  that start from poses drawn by ``sample_camera`` (``plucker`` of the dataset is
  ``plucker_rays(K, extrinsics)`` in world coordinates, not relative to a frame), and a path
  starting at a 25-degree yaw would be outside that range. ``"world"`` keeps the true rays;
* simulation render (the objects alone) and the caption ("... camera pans right/left");
* 3D context: the ORIGINAL first frame (true, with its ground-truth depth) lifted with
  ``E_0`` and re-rendered along the segment's true cameras with its visibility
  (:func:`composed_vi.world.controls.lift_and_splat`), so when the camera returns the context
  pins the background seen at the start.

Variants (:data:`VARIANTS`): ``context`` (ours: last frame + 3D context of the original first
frame), ``last_frame_only`` (no context: the context expert's weight is 0) and
``context_from_last`` (the context lifted from each particle's previous last frame with the
ground-truth depth of that frame).

The particles of one Ctrl-VI population are the ``N`` chains: they share the camera,
simulation and context controls but not the first frame, so the image backbone sees a
per-particle condition (:class:`PerParticle`). Ctrl-VI's default ``local`` drive uses each
particle's own score, so a chain is driven by its own first frame; the kernel couples the
chains only through the repulsion. Samples are clipped to [-1, 1] (the image range) before they
are chained and measured.

Metric (:func:`video_metrics`): L1 (RGB units of [-1, 1]) against the ground-truth video on the
static background that the original first frame saw (its background lifted along the path,
``background_visibility``, and :func:`composed_vi.world.metrics.static_background`), per segment
(frames ``1..T-1`` of each segment, as :func:`composed_vi.world.metrics.camera_background_error`)
and on the last ``return_frames`` frames of the last segment (the camera back near the start
pose; ``final_frame_error``: the last frame alone, at the start pose).

:func:`run` is the experiment of ``experiments/long_video.py`` (config ``configs/long_video.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from composed_vi import io
from composed_vi.errors import (
  check_choice,
  check_positive_float,
  check_positive_int,
  fail,
)
from composed_vi.experts import Expert
from composed_vi.lab import media
from composed_vi.lab.stats import bootstrap_interval
from composed_vi.world import backbones as tb
from composed_vi.world import demo as world_demo

VARIANTS = ("context", "last_frame_only", "context_from_last")
PLUCKER_FRAMES = ("segment", "world")
#: Metrics of :func:`video_metrics` summarised over scenes (lower is better).
SUMMARY_METRICS = ("return_error", "final_frame_error", "mean_segment_error")


# ----------------------------------------------------------------------------- the long path


@dataclasses.dataclass(frozen=True)
class LongPath:
  """The long camera path.

  Attributes:
    segments_per_direction: ``P``: segments panning right, then as many panning back left.
    pan_degrees: yaw per segment (the world samples pans of 15 to 25 degrees per ``T`` frames).
    plucker_frame: ``"segment"`` or ``"world"`` (module docstring).
  """

  segments_per_direction: int = 1
  pan_degrees: float = 25.0
  plucker_frame: str = "segment"

  def validate(self, field: str = "long") -> "LongPath":
    check_positive_int(f"{field}.segments_per_direction", self.segments_per_direction)
    pan = check_positive_float(f"{field}.pan_degrees", self.pan_degrees)
    if pan > 90:
      fail(f"{field}.pan_degrees", "a yaw in (0, 90] degrees", pan)
    check_choice(f"{field}.plucker_frame", self.plucker_frame, PLUCKER_FRAMES)
    return self

  @property
  def num_segments(self) -> int:
    return 2 * self.segments_per_direction

  def num_frames(self, segment_frames: int) -> int:
    """``L = S (T - 1) + 1``."""
    return self.num_segments * (segment_frames - 1) + 1


def segment_start(k: int, segment_frames: int) -> int:
  """Global index of segment ``k``'s first frame (segments share their boundary frames)."""
  return k * (segment_frames - 1)


def yaw_path(path: LongPath, segment_frames: int) -> np.ndarray:
  """``(L,)`` yaw of every frame (radians, positive turns left as in ``camera_path``): 0 at the
  start, ``-P pan`` at the turning frame, exactly 0 again at the last frame."""
  if segment_frames < 2:
    fail("world.num_frames", "at least 2 frames per segment", segment_frames)
  pan = np.deg2rad(path.pan_degrees)
  p = path.segments_per_direction
  knots = np.arange(path.num_segments + 1)
  heights = -pan * np.minimum(knots, 2 * p - knots)
  frames = np.arange(path.num_frames(segment_frames)) / (segment_frames - 1)
  return np.interp(frames, knots, heights).astype(np.float32)


def long_extrinsics(camera, yaw) -> jax.Array:
  """World-to-camera ``(L, 3, 4)``: the camera at ``camera.position`` looking along its start
  direction (``target - position``) turned by ``yaw`` ``(L,)`` about the vertical."""
  from composed_vi.world import scene as scene_lib

  forward0 = camera.target - camera.position
  rotations = scene_lib.look_rotation(scene_lib._rotate_y(jnp.asarray(yaw), forward0))
  t = -jnp.einsum("tij,j->ti", rotations, camera.position)
  return jnp.concatenate([rotations, t[..., None]], -1)


def render_path(scene, extrinsics, config):
  """:func:`composed_vi.world.render.render` along given extrinsics ``(L, 3, 4)``
  (``config.num_frames == L``; the simulation runs over the ``L`` frames)."""
  from composed_vi.world import render as render_lib

  return render_lib.render(scene, config, extrinsics)


@functools.partial(jax.jit, static_argnames=("config", "path", "segment_frames"))
def _long_render(key, config, path: LongPath, segment_frames: int):
  from composed_vi.world import scene as scene_lib

  scene = scene_lib.sample_scene(key, config)
  extr = long_extrinsics(scene.camera, yaw_path(path, segment_frames))
  return scene, render_path(scene, extr, config)


def long_ground_truth(key, config, path: LongPath) -> dict:
  """The ground truth of a long video: numpy arrays over ``L`` frames.

  ``config``: the world's :class:`composed_vi.world.scene.SceneConfig` of one segment
  (``num_frames = T``). Keys: ``video`` ``(L, H, W, 3)`` in [-1, 1] (and ``rgb`` in [0, 1]),
  ``depth``, ``object_ids``, ``masks``, ``object_region``, ``sim_rgba`` (RGB in [-1, 1] and
  alpha), ``extrinsics`` ``(L, 3, 4)``, ``intrinsics``, ``positions``, ``yaw``, the object codes
  ``shapes``, ``colours``, ``motion_kinds``, ``object_valid``, and ``segment_frames`` (``T``).
  """
  path = path.validate()
  t = config.num_frames
  long_config = dataclasses.replace(config, num_frames=path.num_frames(t))
  scene, r = _long_render(key, long_config, path, t)
  objects = scene.objects
  out = dict(rgb=r.rgb, video=2.0 * r.rgb - 1.0, depth=r.depth, object_ids=r.object_ids,
             masks=r.masks, object_region=jnp.max(r.masks, -1, keepdims=True),
             sim_rgba=jnp.concatenate([2.0 * r.sim_rgba[..., :3] - 1.0, r.sim_rgba[..., 3:]],
                                      -1),
             extrinsics=r.extrinsics, intrinsics=r.intrinsics, positions=r.positions,
             tracks=r.tracks, track_visible=r.track_visible,
             yaw=yaw_path(path, t), shapes=objects.shape, colours=objects.colour,
             motion_kinds=objects.motion, object_valid=objects.valid)
  out = {k: np.asarray(v) for k, v in out.items()}
  out["segment_frames"] = t
  out["splat_supersample"] = config.splat_supersample
  return out


# ----------------------------------------------------------------------------- segments


def rebase(extrinsics, anchor) -> jax.Array:
  """``E_t E_first^-1 anchor``: the path ``extrinsics`` ``(T, 3, 4)`` in a world frame moved so
  that its first camera is ``anchor`` ``(3, 4)`` (relative motion kept)."""
  def full(e):
    bottom = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 0.0, 1.0], e.dtype), e.shape[:-2] + (1, 4))
    return jnp.concatenate([e, bottom], -2)

  move = jnp.linalg.inv(full(extrinsics[0])) @ full(anchor)
  return (full(extrinsics) @ move)[..., :3, :]


@functools.partial(jax.jit, static_argnames=("plucker_frame", "supersample"))
def _segment_controls(first_rgb, first_depth, first_background, intrinsics, first_extrinsic,
                      extrinsics, camera_kind, objects, plucker_frame, supersample):
  from composed_vi.world import controls

  height, width = first_depth.shape
  path = jnp.concatenate([first_extrinsic[None], extrinsics])
  ctx, vis = controls.lift_and_splat(first_rgb, first_depth, intrinsics, path, supersample)
  bctx, bvis = controls.lift_and_splat(first_rgb, first_depth, intrinsics, path, supersample,
                                       keep=first_background)
  rays = extrinsics if plucker_frame == "world" else rebase(extrinsics, first_extrinsic)
  shapes, colours, motions, valid = objects
  return dict(
      plucker=controls.plucker_rays(intrinsics, rays, height, width),
      caption_tokens=controls.caption_tokens(camera_kind, shapes, colours, motions, valid),
      context=(2.0 * ctx[1:] - 1.0) * vis[1:], visibility=vis[1:],
      background_context=(2.0 * bctx[1:] - 1.0) * bvis[1:], background_visibility=bvis[1:])


def segment_direction(k: int, path: LongPath) -> str:
  """``"pan_right"`` for the first ``P`` segments, then ``"pan_left"``."""
  return "pan_right" if k < path.segments_per_direction else "pan_left"


def segment_example(truth: dict, k: int, path: LongPath) -> dict:
  """Segment ``k``'s example (the keys of :mod:`composed_vi.world.dataset` that the composition
  and the metrics use), numpy arrays of ``T`` frames.

  ``first_frame`` is the TRUE frame at the segment's start (what segment 0 is given; later
  segments are given generated frames by :func:`chain`). ``context``/``visibility`` and
  ``background_context``/``background_visibility`` lift the ORIGINAL first frame (all of it /
  its background only) with its true depth and ``E_0`` along the segment's true cameras.
  """
  from composed_vi.world.scene import CAMERA_KINDS

  t = int(truth["segment_frames"])
  a = segment_start(k, t)
  frames = slice(a, a + t)
  if not 0 <= k < path.num_segments or a + t > truth["video"].shape[0]:
    fail("segment", f"an index in [0, {path.num_segments})", k)
  objects = tuple(jnp.asarray(truth[n]) for n in ("shapes", "colours", "motion_kinds",
                                                  "object_valid"))
  controls = _segment_controls(
      jnp.asarray(truth["rgb"][0]), jnp.asarray(truth["depth"][0]),
      jnp.asarray(truth["object_ids"][0] < 0), jnp.asarray(truth["intrinsics"]),
      jnp.asarray(truth["extrinsics"][0]), jnp.asarray(truth["extrinsics"][frames]),
      jnp.int32(CAMERA_KINDS.index(segment_direction(k, path))), objects,
      path.plucker_frame, int(truth["splat_supersample"]))
  out = {name: np.asarray(v) for name, v in controls.items()}
  for name in ("video", "depth", "object_ids", "masks", "object_region", "sim_rgba",
               "extrinsics", "positions", "tracks", "track_visible"):
    out[name] = truth[name][frames]
  out["first_frame"] = truth["video"][a]
  out["intrinsics"] = truth["intrinsics"]
  for name in ("shapes", "colours", "motion_kinds", "object_valid"):
    out[name] = truth[name]
  out["segment"] = k
  out["start"] = a
  out["splat_supersample"] = int(truth["splat_supersample"])
  return out


@functools.partial(jax.jit, static_argnames=("supersample",))
def contexts_from_frames(frames, depth, intrinsics, extrinsics, supersample: int = 2):
  """Each of ``frames`` ``(N, H, W, 3)`` (in [-1, 1], seen by ``extrinsics[0]``) lifted with
  the true ``depth`` ``(H, W)`` and splatted along ``extrinsics`` ``(T, 3, 4)``: contexts
  ``(N, T, H, W, 3)`` (0 where unseen) and the shared visibility ``(T, H, W, 1)``."""
  from composed_vi.world import controls

  ctx, vis = jax.vmap(lambda f: controls.lift_and_splat(f, depth, intrinsics, extrinsics,
                                                        supersample))(frames)
  return ctx, vis[0]


# ----------------------------------------------------------------------------- composition


@struct.dataclass
class PerParticle(Expert):
  """An expert whose field ``field`` differs per particle: particle ``i`` is evaluated with
  ``expert.replace(field=values[i])`` (e.g. the image backbone's first-frame condition when the
  ``N`` particles are ``N`` chains). ``x`` must hold exactly ``N`` particles, in order."""

  expert: Any
  values: jax.Array
  field: str = struct.field(pytree_node=False, default="condition")

  @property
  def shape(self):
    return self.expert.shape

  @property
  def support(self):
    return self.expert.support

  def velocity_and_score(self, x, t):
    n = self.values.shape[0]
    if x.shape[0] != n:
      raise ValueError(f"PerParticle: expected {n} particles (one per value), got {x.shape[0]}")

    def one(xi, vi):
      v, s = self.expert.replace(**{self.field: vi}).velocity_and_score(xi[None], t)
      return v[0], s[0]

    return jax.vmap(one)(x, self.values)

  def velocity(self, x, t):
    return self.velocity_and_score(x, t)[0]


def segment_target(example: dict, first_frames, variant: str, backbones: dict,
                   composition: world_demo.Composition, fns=None):
  """The composed target of one segment for ``N`` chains.

  ``first_frames`` ``(N, H, W, 3)``: chain ``i``'s first frame (the image backbone's condition);
  ``variant`` in :data:`VARIANTS` (``context_from_last`` lifts each first frame with the true
  depth of the segment's first frame).
  """
  check_choice("variant", variant, VARIANTS)
  first_frames = np.asarray(first_frames, np.float32)
  n = first_frames.shape[0]
  example = dict(example)
  contexts = None
  if variant == "context_from_last":
    ctx, vis = contexts_from_frames(jnp.asarray(first_frames), jnp.asarray(example["depth"][0]),
                                    jnp.asarray(example["intrinsics"]),
                                    jnp.asarray(example["extrinsics"]),
                                    int(example.get("splat_supersample", 2)))
    contexts = np.asarray(ctx) * np.asarray(vis)[None]
    example["context"], example["visibility"] = contexts[0], np.asarray(vis)
    # The composition's context expert reads the background keys (the whole generated frame is
    # lifted here: a generated frame has no object segmentation).
    example["background_context"], example["background_visibility"] = contexts[0], np.asarray(vis)
  if composition.context_weight <= 0:
    fail("context_weight", "a weight > 0 (the context expert is part of every variant's target)",
         composition.context_weight)
  target = world_demo.build_target(example, backbones, composition, fns=fns, context=True)
  experts, weights = list(target.experts), list(target.weights)
  if variant == "last_frame_only":
    # The context expert stays with weight 0: it adds exactly 0 to the composed velocity and
    # score and nothing to the total weight (the target is the one without it), and every
    # variant keeps one pytree structure, so the jitted sampler compiles once.
    weights[-1] = jnp.zeros_like(weights[-1])
    if composition.normalize_weights:  # the others sum to 1 again where the context had a say
      total = sum(weights)
      weights = [w / total for w in weights]
  i2v = world_demo.BACKBONES.index("i2v")
  spec = backbones["i2v"][0]
  video = np.zeros((n,) + tuple(example["video"].shape), np.float32)
  conditions = tb.condition(spec, {"video": video, "first_frame": first_frames})
  experts[i2v] = PerParticle(experts[i2v], jnp.asarray(conditions), "condition")
  # The context's frame 0 is the first frame (world_demo.build_target): here each chain's own
  # first frame, never the segment's true one.
  means = np.array(contexts if contexts is not None else np.broadcast_to(
      np.asarray(experts[-1].means[0]), (n,) + tuple(example["video"].shape)), np.float32)
  means[:, 0] = first_frames
  experts[-1] = PerParticle(experts[-1], jnp.asarray(means)[:, None], "means")
  return target.replace(experts=tuple(experts), weights=tuple(weights))


def chain(key, segments: list, variant: str, num_particles: int, backbones: dict,
          composition: world_demo.Composition, sample_fn: Callable, fns=None):
  """Samples the segments one after the other, ``N = num_particles`` chains.

  Segment ``k`` gets ``jax.random.fold_in(key, k)``; ``sample_fn(key, target)`` returns the
  ``(N, T, H, W, 3)`` samples. Chain ``i``'s next first frame is its particle ``i``'s last
  frame (clipped to [-1, 1]). Returns ``(videos (N, L, H, W, 3), first_frames)`` with
  ``first_frames[k]`` ``(N, H, W, 3)`` the first frames given to segment ``k``; the long video
  keeps each segment's frames ``1..T-1`` after the shared frame.
  """
  first = np.broadcast_to(np.asarray(segments[0]["first_frame"], np.float32),
                          (num_particles,) + segments[0]["first_frame"].shape).copy()
  pieces, firsts = [], []
  for k, example in enumerate(segments):
    firsts.append(first)
    target = segment_target(example, first, variant, backbones, composition, fns)
    x = np.clip(np.asarray(sample_fn(jax.random.fold_in(key, k), target), np.float32), -1, 1)
    if x.shape != (num_particles,) + tuple(example["video"].shape):
      raise ValueError(f"sample_fn: expected {(num_particles,) + example['video'].shape}, "
                       f"got {x.shape}")
    pieces.append(x if k == 0 else x[:, 1:])
    first = x[:, -1].copy()
  return np.concatenate(pieces, 1), firsts


def ctrl_vi_sampler(num_particles: int, method: str = "ctrl_vi", **options) -> Callable:
  """``sample_fn(key, target)`` of :func:`chain` running :func:`composed_vi.sampling.sample`."""
  from composed_vi import sampling

  def sample_fn(key, target):
    x, _ = sampling.sample(key, target, num_particles, method, **options)
    return np.asarray(x)

  return sample_fn


# ----------------------------------------------------------------------------- metrics


def background_mask(example: dict, margin: int = 1) -> np.ndarray:
  """``(T, H, W)`` bool: static background (no object within ``margin`` pixels, not the sky)
  that the original first frame saw (``background_visibility``)."""
  from composed_vi.world import metrics as wm

  return (np.asarray(example["background_visibility"])[..., 0] > 0.5) & wm.static_background(
      example, margin)


def _masked_l1(a, b, mask) -> float:
  mask = np.asarray(mask, bool)
  if not mask.any():
    return float("nan")
  return float(np.mean(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[mask]))


def video_metrics(video, segments: list, return_frames: int = 3, margin: int = 1) -> dict:
  """Background errors of one long video ``(L, H, W, 3)`` against the ground truth.

  Returns ``segment_errors`` (segment ``k``: frames ``1..T-1``, NaN without a qualifying
  pixel), ``mean_segment_error``, ``return_error`` (the last ``return_frames`` frames) and
  ``final_frame_error`` (the last frame, at the start pose). The ground truth scores 0.
  """
  video = np.asarray(video, np.float32)
  errors = []
  for example in segments:
    a, t = int(example["start"]), example["video"].shape[0]
    mask = background_mask(example, margin)
    errors.append(_masked_l1(video[a + 1:a + t], example["video"][1:], mask[1:]))
  last = segments[-1]
  mask = background_mask(last, margin)
  r = min(int(return_frames), last["video"].shape[0] - 1)
  ends = video[video.shape[0] - r:]
  finite = [e for e in errors if np.isfinite(e)]
  return dict(
      segment_errors=errors,
      mean_segment_error=float(np.mean(finite)) if finite else float("nan"),
      return_error=_masked_l1(ends, last["video"][-r:], mask[-r:]),
      final_frame_error=_masked_l1(video[-1], last["video"][-1], mask[-1]))


def context_floor(segments: list, return_frames: int = 3, margin: int = 1) -> float:
  """:func:`video_metrics`'s ``return_error`` of the 3D context itself (the background of the
  original first frame splatted to the return frames): the splatting error and the moved
  shadows, a floor no variant beats by copying the context."""
  last = segments[-1]
  mask = background_mask(last, margin)
  r = min(int(return_frames), last["video"].shape[0] - 1)
  return _masked_l1(last["background_context"][-r:], last["video"][-r:], mask[-r:])


def _mean_over_particles(per_particle: list) -> dict:
  out = {}
  for name in SUMMARY_METRICS:
    vals = np.asarray([m[name] for m in per_particle], np.float64)
    out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
  seg = np.asarray([m["segment_errors"] for m in per_particle], np.float64)
  out["segment_errors"] = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan")
                           for c in seg.T]
  out["per_particle"] = per_particle
  return out


def summarise(scenes: list, variants, num_resamples: int = 2000, seed: int = 0) -> dict:
  """Means over scenes with 95% bootstrap intervals, per variant and metric (and per segment),
  plus the paired difference of every variant to ``context`` (variant minus context)."""
  out = {}
  for variant in variants:
    entry = {}
    for name in SUMMARY_METRICS:
      mean, low, high = bootstrap_interval([s["variants"][variant][name] for s in scenes],
                                           num_resamples, seed)
      entry[name] = dict(mean=mean, low=low, high=high)
    num_segments = len(scenes[0]["variants"][variant]["segment_errors"])
    entry["segment_errors"] = []
    for k in range(num_segments):
      mean, low, high = bootstrap_interval(
          [s["variants"][variant]["segment_errors"][k] for s in scenes], num_resamples, seed)
      entry["segment_errors"].append(dict(mean=mean, low=low, high=high))
    if variant != "context" and "context" in variants:
      entry["minus_context"] = {}
      for name in SUMMARY_METRICS:
        diff = [s["variants"][variant][name] - s["variants"]["context"][name] for s in scenes]
        mean, low, high = bootstrap_interval(diff, num_resamples, seed)
        entry["minus_context"][name] = dict(mean=mean, low=low, high=high)
    out[variant] = entry
  mean, low, high = bootstrap_interval([s["context_floor"] for s in scenes], num_resamples, seed)
  out["context_floor"] = dict(mean=mean, low=low, high=high)
  return out


# ----------------------------------------------------------------------------- the experiment


@dataclasses.dataclass(frozen=True)
class Settings:
  """The validated config of :func:`run`."""

  seed: int
  scene_seeds: tuple
  num_particles: int
  method: str
  options: dict
  world: Any  # SceneConfig of one segment
  path: LongPath
  return_frames: int
  variants: tuple
  composition: world_demo.Composition
  backbone_folders: dict
  bootstrap_resamples: int


def validate(config) -> Settings:
  """Checks every field of ``configs/long_video.py`` (a ConfigError names the field) and the
  backbone folders, before any compute."""
  from composed_vi import sampling
  from composed_vi.world import scene as scene_lib

  seed = check_positive_int("seed", config.seed, 0)
  seeds = config.scene_seeds
  if (not isinstance(seeds, (tuple, list)) or not seeds
      or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
      or len(set(seeds)) != len(seeds)):
    fail("scene_seeds", "a non-empty tuple of distinct integers >= 0", seeds)
  n = check_positive_int("num_particles", config.num_particles)
  options = {k: v for k, v in config.sampler.to_dict().items() if v is not None}
  options["num_levels"] = check_positive_int("num_levels", config.num_levels, 2)
  sampling.build_options(config.method, **options)
  w = config.world
  for name in ("num_frames", "height", "width"):
    check_positive_int(f"world.{name}", w[name], 2 if name == "num_frames" else 1)
  world = scene_lib.SceneConfig(num_frames=w.num_frames, height=w.height, width=w.width)
  path = LongPath(config.long.segments_per_direction, config.long.pan_degrees,
                  config.long.plucker_frame).validate()
  return_frames = check_positive_int("long.return_frames", config.long.return_frames)
  if return_frames > w.num_frames - 1:
    fail("long.return_frames", f"at most world.num_frames - 1 = {w.num_frames - 1}",
         return_frames)
  variants = tuple(config.variants)
  if not variants or len(set(variants)) != len(variants):
    fail("variants", f"a non-empty tuple of distinct names from {VARIANTS}", config.variants)
  for i, v in enumerate(variants):
    check_choice(f"variants[{i}]", v, VARIANTS)
  composition = world_demo.Composition.from_config(config).validate()
  if composition.context_weight <= 0:
    fail("context_weight", "a weight > 0 (last_frame_only is the variant without context)",
         composition.context_weight)
  folders = {k: config.backbones[k] for k in world_demo.BACKBONES}
  for name in world_demo.BACKBONES:
    if not os.path.isfile(os.path.join(folders[name], "config.json")):
      fail(f"backbones.{name}", "a trained tiny backbone folder (assets/backbones/<kind>; "
           "retrain with experiments/train.py)", folders[name])
  resamples = check_positive_int("bootstrap_resamples", config.bootstrap_resamples, 100)
  return Settings(seed, tuple(int(s) for s in seeds), n, config.method, options, world, path,
                  return_frames, variants, composition, folders, resamples)


def run(config, workdir: str, log: Callable = print) -> dict:
  """The long-video experiment: per scene, the ground truth and every variant's chains,
  measured; writes ``long_video.json``, ``long_video.md`` and the first scene's GIFs (ground
  truth and particle 0 of each variant, alone and side by side) to ``workdir``."""
  import time

  from composed_vi.world import controls

  settings = validate(config)
  backbones = world_demo.load_backbones(settings.backbone_folders)
  fns = {k: tb.model_fn(spec) for k, (spec, _) in backbones.items()}
  sample_fn = ctrl_vi_sampler(settings.num_particles, settings.method, **settings.options)
  path = settings.path
  scenes, first_videos = [], None
  start = time.time()
  for si, scene_seed in enumerate(settings.scene_seeds):
    truth = long_ground_truth(jax.random.key(scene_seed), settings.world, path)
    segments = [segment_example(truth, k, path) for k in range(path.num_segments)]
    record = dict(scene_seed=scene_seed,
                  captions=[controls.detokenize(s["caption_tokens"]) for s in segments],
                  context_floor=context_floor(segments, settings.return_frames),
                  ground_truth=video_metrics(truth["video"], segments, settings.return_frames),
                  variants={})
    # The same key for every variant (common random numbers: paired comparisons).
    key = jax.random.fold_in(jax.random.key(settings.seed), si)
    videos = {}
    for variant in settings.variants:
      chains, _ = chain(key, segments, variant, settings.num_particles, backbones,
                        settings.composition, sample_fn, fns)
      per = [video_metrics(v, segments, settings.return_frames) for v in chains]
      record["variants"][variant] = _mean_over_particles(per)
      videos[variant] = chains
      log(f"scene {scene_seed} {variant}: return_error "
          f"{record['variants'][variant]['return_error']:.4f} "
          f"({time.time() - start:.0f} s)")
    scenes.append(record)
    if si == 0:
      first_videos = (truth, videos)
  summary = summarise(scenes, settings.variants, settings.bootstrap_resamples, settings.seed)
  result = dict(
      settings=dict(seed=settings.seed, scene_seeds=list(settings.scene_seeds),
                    num_particles=settings.num_particles, method=settings.method,
                    options=settings.options,
                    world=dict(num_frames=settings.world.num_frames,
                               height=settings.world.height, width=settings.world.width),
                    long=dict(dataclasses.asdict(path), return_frames=settings.return_frames,
                              num_segments=path.num_segments,
                              num_frames=path.num_frames(settings.world.num_frames)),
                    variants=list(settings.variants),
                    composition=dataclasses.asdict(settings.composition),
                    backbones=settings.backbone_folders,
                    bootstrap_resamples=settings.bootstrap_resamples),
      summary=summary, scenes=scenes)
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "long_video.json"), result)
  io.write_text(os.path.join(workdir, "long_video.md"), markdown(result))
  write_media(workdir, *first_videos)
  return result


def write_media(workdir: str, truth: dict, videos: dict) -> None:
  """GIFs of the first scene: ``ground_truth.gif``, ``<variant>.gif`` (particle 0) and
  ``comparison.gif`` (ground truth, then each variant, side by side), and
  ``contact_sheet.png``."""
  fps = 8
  media.write_gif(os.path.join(workdir, "ground_truth.gif"), truth["video"], fps=fps)
  for variant, chains in videos.items():
    media.write_gif(os.path.join(workdir, f"{variant}.gif"), chains[0], fps=fps)
  gt = truth["video"]
  gap = np.ones(gt.shape[:2] + (2, 3), np.float32)
  tiles = [gt]
  for chains in videos.values():
    tiles += [gap, chains[0]]
  media.write_gif(os.path.join(workdir, "comparison.gif"), np.concatenate(tiles, 2), fps=fps)
  rows = [("ground truth", gt)] + [(f"{v} (particle 0)", c[0]) for v, c in videos.items()]
  media.contact_sheet(os.path.join(workdir, "contact_sheet.png"), rows, upscale=2)


def _fmt(entry: dict) -> str:
  return f"{entry['mean']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"


def markdown(result: dict) -> str:
  """A small table: per variant the return / final-frame / mean segment errors (95% bootstrap
  intervals over scenes), the per-segment means and the paired difference to ``context``."""
  s = result["settings"]
  summary = result["summary"]
  lines = [
      "# Long videos: background error when the camera returns",
      "",
      f"{len(s['scene_seeds'])} scenes, {s['num_particles']} chains each, {s['method']} with "
      f"{s['options']}; {s['long']['num_segments']} segments of {s['world']['num_frames']} "
      f"frames ({s['long']['num_frames']} in all), {s['long']['pan_degrees']} degrees right per "
      f"segment then back left; Pluecker rays: {s['long']['plucker_frame']} frame.",
      "L1 (RGB in [-1, 1]) against the ground truth on the static background the original "
      f"first frame saw; return = the last {s['long']['return_frames']} frames. Mean over "
      "scenes [95% bootstrap interval]; lower is better.",
      "",
      "| variant | return error | final frame | mean segment | per segment |",
      "|---|---|---|---|---|",
  ]
  for variant in s["variants"]:
    e = summary[variant]
    per = ", ".join(f"{x['mean']:.4f}" for x in e["segment_errors"])
    lines.append(f"| {variant} | {_fmt(e['return_error'])} | {_fmt(e['final_frame_error'])} | "
                 f"{_fmt(e['mean_segment_error'])} | {per} |")
  lines.append(f"| 3D context itself (floor) | {_fmt(summary['context_floor'])} | | | |")
  diffs = [v for v in s["variants"] if "minus_context" in summary[v]]
  if diffs:
    lines += ["", "Paired difference to `context` (variant minus context; > 0: context better):",
              "", "| variant | return error | final frame | mean segment |", "|---|---|---|---|"]
    for variant in diffs:
      d = summary[variant]["minus_context"]
      lines.append(f"| {variant} | {_fmt(d['return_error'])} | {_fmt(d['final_frame_error'])} "
                   f"| {_fmt(d['mean_segment_error'])} |")
  return "\n".join(lines) + "\n"
