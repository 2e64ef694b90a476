"""The long camera path, its ground truth, and the controls of each segment.

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
  GENERATED frame, per particle (:func:`composed_vi.world.long_video.compose.chain`: particle
  ``i`` continues chain ``i``);
* Pluecker rays (``plucker_frame``): ``"segment"`` (default) expresses the segment's cameras in
  a world frame moved so that its first camera sits at the scene's start pose,
  ``E'_t = E_t E_first^-1 E_0`` (:func:`rebase`): the camera backbone was trained on
  world-frame rays of paths that start from poses drawn by ``sample_camera`` (``plucker`` of
  the dataset is ``plucker_rays(K, extrinsics)`` in world coordinates, not relative to a
  frame), and a path starting at a 25-degree yaw would be outside that range. ``"world"`` keeps
  the true rays;
* simulation render (the objects alone) and the caption ("... camera pans right/left");
* 3D context: the ORIGINAL first frame (true, with its ground-truth depth) lifted with
  ``E_0`` and re-rendered along the segment's true cameras with its visibility
  (:func:`composed_vi.world.controls.lift_and_splat`), so when the camera returns the context
  pins the background seen at the start.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi.errors import check_choice, check_positive_float, check_positive_int, fail
from composed_vi.world import controls, dataset
from composed_vi.world import render as render_lib
from composed_vi.world import scene as scene_lib

PLUCKER_FRAMES = ("segment", "world")


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
  forward0 = camera.target - camera.position
  rotations = scene_lib.look_rotation(scene_lib._rotate_y(jnp.asarray(yaw), forward0))
  t = -jnp.einsum("tij,j->ti", rotations, camera.position)
  return jnp.concatenate([rotations, t[..., None]], -1)


def render_path(scene, extrinsics, config):
  """:func:`composed_vi.world.render.render` along given extrinsics ``(L, 3, 4)``
  (``config.num_frames == L``; the simulation runs over the ``L`` frames)."""
  return render_lib.render(scene, config, extrinsics)


@functools.partial(jax.jit, static_argnames=("config", "path", "segment_frames"))
def _long_render(key, config, path: LongPath, segment_frames: int):
  scene = scene_lib.sample_scene(key, config)
  extr = long_extrinsics(scene.camera, yaw_path(path, segment_frames))
  return scene, render_path(scene, extr, config)


class LongTruth(NamedTuple):
  """The ground truth of a long video of ``L`` frames (numpy arrays; fields as in
  :class:`composed_vi.world.dataset.Example` over ``L`` frames).

  Attributes:
    rgb: ``(L, H, W, 3)`` in [0, 1]; ``video`` the same in [-1, 1].
    depth, object_ids, masks, object_region, sim_rgba (RGB in [-1, 1] and alpha), extrinsics
      ``(L, 3, 4)``, intrinsics ``(3, 3)``, positions, tracks, track_visible: as in an example.
    yaw: ``(L,)`` the camera's yaw per frame.
    shapes, colours, motion_kinds, object_valid, object_simulated: the object codes ``(O,)``.
    segment_frames: ``T``, the frames of one segment.
    splat_supersample: the world's splatting supersampling (for the 3D contexts).
  """

  rgb: np.ndarray
  video: np.ndarray
  depth: np.ndarray
  object_ids: np.ndarray
  masks: np.ndarray
  object_region: np.ndarray
  sim_rgba: np.ndarray
  extrinsics: np.ndarray
  intrinsics: np.ndarray
  positions: np.ndarray
  tracks: np.ndarray
  track_visible: np.ndarray
  yaw: np.ndarray
  shapes: np.ndarray
  colours: np.ndarray
  motion_kinds: np.ndarray
  object_valid: np.ndarray
  object_simulated: np.ndarray
  segment_frames: int
  splat_supersample: int


#: One segment's example: every field of :class:`composed_vi.world.dataset.Example` (``T``
#: frames; ``sim_depth`` is None) and ``segment`` (its index ``k``), ``start`` (its first
#: global frame) and ``splat_supersample``.
Segment = NamedTuple("Segment", [(f, np.ndarray) for f in dataset.Example._fields]
                     + [("segment", int), ("start", int), ("splat_supersample", int)])


def long_ground_truth(key, config, path: LongPath) -> LongTruth:
  """The :class:`LongTruth` of a long video on ``path``; ``config``: the world's
  :class:`composed_vi.world.scene.SceneConfig` of one segment (``num_frames = T``)."""
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
             motion_kinds=objects.motion, object_valid=objects.valid,
             object_simulated=objects.simulated)
  return LongTruth(**{k: np.asarray(v) for k, v in out.items()}, segment_frames=t,
                   splat_supersample=config.splat_supersample)


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
  """The jitted controls of one segment (see :func:`segment_example`, which calls it).

  ``first_*``: the original first frame (RGB in [0, 1], depth, background mask) and its camera
  ``first_extrinsic`` ``(3, 4)``; ``extrinsics`` ``(T, 3, 4)``: the segment's cameras;
  ``objects``: ``(shapes, colours, motion_kinds, object_valid)``. Returns ``plucker``,
  ``caption_tokens``, ``context``/``visibility`` and ``background_context``/
  ``background_visibility`` (contexts in [-1, 1], 0 where unseen).
  """
  height, width = first_depth.shape
  cameras = jnp.concatenate([first_extrinsic[None], extrinsics])
  ctx, vis = controls.lift_and_splat(first_rgb, first_depth, intrinsics, cameras, supersample)
  bctx, bvis = controls.lift_and_splat(first_rgb, first_depth, intrinsics, cameras, supersample,
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


def segment_example(truth: LongTruth, k: int, path: LongPath) -> Segment:
  """Segment ``k``'s :data:`Segment`: the fields of an example over its ``T`` frames.

  ``first_frame`` is the TRUE frame at the segment's start (what segment 0 is given; later
  segments are given generated frames by :func:`composed_vi.world.long_video.compose.chain`).
  ``context``/``visibility`` and ``background_context``/``background_visibility`` lift the
  ORIGINAL first frame (all of it / its background only) with its true depth and ``E_0`` along
  the segment's true cameras.
  """
  t = int(truth.segment_frames)
  a = segment_start(k, t)
  frames = slice(a, a + t)
  if not 0 <= k < path.num_segments or a + t > truth.video.shape[0]:
    fail("segment", f"an index in [0, {path.num_segments})", k)
  objects = tuple(jnp.asarray(getattr(truth, n)) for n in ("shapes", "colours", "motion_kinds",
                                                           "object_valid"))
  values = _segment_controls(
      jnp.asarray(truth.rgb[0]), jnp.asarray(truth.depth[0]),
      jnp.asarray(truth.object_ids[0] < 0), jnp.asarray(truth.intrinsics),
      jnp.asarray(truth.extrinsics[0]), jnp.asarray(truth.extrinsics[frames]),
      jnp.int32(scene_lib.CAMERA_KINDS.index(segment_direction(k, path))), objects,
      path.plucker_frame, int(truth.splat_supersample))
  out = {name: np.asarray(v) for name, v in values.items()}
  for name in ("video", "depth", "object_ids", "masks", "object_region", "sim_rgba",
               "extrinsics", "positions", "tracks", "track_visible"):
    out[name] = getattr(truth, name)[frames]
  for name in ("intrinsics", "shapes", "colours", "motion_kinds", "object_valid",
               "object_simulated"):
    out[name] = getattr(truth, name)
  return Segment(**out, first_frame=truth.video[a], sim_depth=None,
                 camera_kind=np.int32(scene_lib.CAMERA_KINDS.index(segment_direction(k, path))),
                 segment=k, start=a, splat_supersample=int(truth.splat_supersample))


@functools.partial(jax.jit, static_argnames=("supersample",))
def contexts_from_frames(frames, depth, intrinsics, extrinsics, supersample: int = 2):
  """Each of ``frames`` ``(N, H, W, 3)`` (in [-1, 1], seen by ``extrinsics[0]``) lifted with
  the true ``depth`` ``(H, W)`` and splatted along ``extrinsics`` ``(T, 3, 4)``: contexts
  ``(N, T, H, W, 3)`` (0 where unseen) and the shared visibility ``(T, H, W, 1)``."""
  ctx, vis = jax.vmap(lambda f: controls.lift_and_splat(f, depth, intrinsics, extrinsics,
                                                        supersample))(frames)
  return ctx, vis[0]
