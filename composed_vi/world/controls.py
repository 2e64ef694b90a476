"""Controls rendered from a scene: first frame, camera path, simulation render, caption, context.

The context is METHOD.md's ``c`` (section 5): the first frame lifted to 3D with its depth and
re-rendered along the camera path by forward splatting with a z-buffer (a "3D cache"), with a
visibility mask ``V`` that is 1 where some first-frame point lands and is not occluded.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi.errors import fail
from composed_vi.world.render import (
    EPS,
    Render,
    camera_rays,
    intersect_plane,
    pixel_coordinates,
    pixel_offsets,
    project,
)
from composed_vi.world.scene import (
    CAMERA_KINDS,
    COLOUR_NAMES,
    FLOOR_Y,
    WALL_Z,
    Scene,
    SceneConfig,
)

# ----------------------------------------------------------------------------- captions

#: Caption words of each ``SHAPE_NAMES`` entry.
SHAPE_WORDS = ("ball", "box")
#: Verb of each ``MOTION_KINDS`` entry, per shape (a box slides where a ball rolls).
MOTION_VERBS = (("bounces", "bounces"), ("rolls", "slides"), ("rests", "rests"))
#: Camera phrase of each ``CAMERA_KINDS`` entry.
CAMERA_PHRASES = ("camera is static", "camera pans left", "camera pans right",
                  "camera dollies in", "camera dollies out", "camera orbits")
#: The fixed vocabulary; id 0 pads.
VOCAB = ("<pad>", "a", "and", ",", "camera", "is", "static", "pans", "left", "right", "dollies",
         "in", "out", "orbits", *COLOUR_NAMES, *SHAPE_WORDS, "bounces", "rolls", "slides",
         "rests")
PAD = 0
#: Tokens per caption: the longest (3 objects) has 18.
CAPTION_LENGTH = 20
_IDS = {word: i for i, word in enumerate(VOCAB)}


def caption(codes) -> str:
  """The caption of a scene's codes, e.g. ``"a red ball bounces, camera pans left"``.

  Args:
    codes: an example (:class:`composed_vi.world.dataset.Example`), or anything with its
      fields ``camera_kind`` ``()``, and ``shapes``, ``colours``, ``motion_kinds``,
      ``object_valid`` ``(O,)``.
  """
  valid = np.asarray(codes.object_valid).astype(bool)
  shapes = np.asarray(codes.shapes)
  colours = np.asarray(codes.colours)
  motions = np.asarray(codes.motion_kinds)
  parts = [f"a {COLOUR_NAMES[int(c)]} {SHAPE_WORDS[int(s)]} {MOTION_VERBS[int(m)][int(s)]}"
           for ok, s, c, m in zip(valid, shapes, colours, motions) if ok]
  return " and ".join(parts) + ", " + CAMERA_PHRASES[int(np.asarray(codes.camera_kind))]


def tokenize(text: str, length: int = CAPTION_LENGTH) -> np.ndarray:
  """Token ids ``(length,)`` int32 of a caption (words and commas), padded with ``PAD``."""
  words = re.findall(r"[a-z]+|,", text.lower())
  unknown = [w for w in words if w not in _IDS]
  if unknown:
    fail("caption", f"words from the vocabulary {VOCAB}", f"unknown words {unknown}")
  if len(words) > length:
    fail("caption", f"at most {length} tokens", f"{len(words)} tokens in {text!r}")
  ids = np.full((length,), PAD, np.int32)
  ids[:len(words)] = [_IDS[w] for w in words]
  return ids


def detokenize(ids) -> str:
  """The caption text of token ids (padding dropped)."""
  words = [VOCAB[int(i)] for i in np.asarray(ids) if int(i) != PAD]
  return " ".join(words).replace(" ,", ",")


def caption_tokens(camera_kind, shapes, colours, motion_kinds, valid,
                   length: int = CAPTION_LENGTH) -> jax.Array:
  """``tokenize(caption(codes))`` computed in JAX (jit/vmap-able): ``(length,)`` int32."""
  ids = lambda words: jnp.asarray([_IDS[w] for w in words], jnp.int32)
  colour_ids = ids(COLOUR_NAMES)[colours]
  shape_ids = ids(SHAPE_WORDS)[shapes]
  verb_ids = jnp.asarray([[_IDS[v] for v in row] for row in MOTION_VERBS],
                         jnp.int32)[motion_kinds, shapes]
  camera_table = np.full((len(CAMERA_KINDS), 3), PAD, np.int32)
  for k, phrase in enumerate(CAMERA_PHRASES):
    words = phrase.split()
    camera_table[k, :len(words)] = [_IDS[w] for w in words]
  num = valid.shape[0]
  tokens, keep = [], []
  for k in range(num):
    if k > 0:
      tokens.append(jnp.full((1,), _IDS["and"], jnp.int32))
      keep.append(valid[k][None])
    tokens.append(jnp.stack([jnp.int32(_IDS["a"]), colour_ids[k], shape_ids[k], verb_ids[k]]))
    keep.append(jnp.broadcast_to(valid[k], (4,)))
  tokens.append(jnp.full((1,), _IDS[","], jnp.int32))
  keep.append(jnp.ones((1,), bool))
  camera = jnp.asarray(camera_table)[camera_kind]
  tokens.append(camera)
  keep.append(camera != PAD)
  tokens, keep = jnp.concatenate(tokens), jnp.concatenate(keep)
  if tokens.shape[0] > length:
    raise ValueError(f"length: expected >= {tokens.shape[0]} for {num} objects, got {length}")
  # A stable sort moves the kept tokens to the front in order.
  order = jnp.argsort(~keep, stable=True)
  packed = jnp.where(keep[order], tokens[order], PAD)
  return jnp.pad(packed, (0, length - tokens.shape[0]))


# ----------------------------------------------------------------------------- camera


def plucker_rays(intrinsics, extrinsics, height: int, width: int) -> jax.Array:
  """Pluecker coordinates of the pixel-centre rays, ``(T, H, W, 6)`` = (moment, direction).

  ``direction`` is the unit world direction ``d`` of the ray through the pixel centre, the
  moment ``C x d`` with ``C`` the camera centre; ``extrinsics``: ``(T, 3, 4)`` world-to-camera.
  """
  uv = pixel_coordinates(height, width, pixel_offsets(1))[:, :, 0]

  def one(extrinsic):
    centre, directions = camera_rays(intrinsics, extrinsic, uv)
    d = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    return jnp.concatenate([jnp.cross(jnp.broadcast_to(centre, d.shape), d), d], -1)

  return jax.vmap(one)(extrinsics)


def first_frame_coordinates(intrinsics, extrinsics, height: int, width: int,
                            with_valid: bool = False):
  """Where each pixel's point of the EMPTY room was seen in the first frame, ``(T, H, W, 2)``.

  The room (floor ``y = FLOOR_Y``, back wall ``z = WALL_Z``) is the same in every scene, so
  this depends on the camera path alone: the ray through each pixel centre of frame ``t``
  meets the floor or the wall, and the point is projected with ``extrinsics[0]``. Returned as
  ``(v, u)`` (row, column; pixel centres at ``k + 0.5``), so frame 0 and a static camera give
  the pixel grid itself; a ray that meets neither plane, or a point behind the first camera,
  keeps its own pixel's coordinates. ``intrinsics``: ``(3, 3)``; ``extrinsics``: ``(T, 3, 4)``.
  ``with_valid``: also ``(T, H, W)`` bool, True where the ray met the room in front of the
  first camera and the point lands inside the first frame (the room is convex seen from
  inside: nothing of it hides another part of it).
  """
  uv = pixel_coordinates(height, width, pixel_offsets(1))[:, :, 0]

  def one(extrinsic):
    centre, directions = camera_rays(intrinsics, extrinsic, uv)
    lam_floor = intersect_plane(centre, directions, jnp.asarray([0.0, 1.0, 0.0]), FLOOR_Y)
    lam_wall = intersect_plane(centre, directions, jnp.asarray([0.0, 0.0, 1.0]), WALL_Z)
    lam = jnp.minimum(lam_floor, lam_wall)
    hit = jnp.isfinite(lam)
    points = centre + jnp.where(hit, lam, 0.0)[..., None] * directions
    seen, z = project(intrinsics, extrinsics[0], points)
    ok = hit & (z > EPS)
    inside = ((seen[..., 0] >= 0) & (seen[..., 0] <= width) & (seen[..., 1] >= 0)
              & (seen[..., 1] <= height))
    return jnp.where(ok[..., None], seen, uv)[..., ::-1], ok & inside

  coords, valid = jax.vmap(one)(extrinsics)
  return (coords, valid) if with_valid else coords


# ----------------------------------------------------------------------------- 3D cache


def lift_and_splat(image, depth, intrinsics, extrinsics, supersample: int = 2, keep=None):
  """Lifts a frame with its depth to 3D and re-renders it along a camera path (a 3D cache).

  Each pixel becomes ``supersample^2`` points (at sub-pixel positions, with the pixel's colour
  and centre depth, unprojected with ``K`` and ``extrinsics[0]``), so that moderate zooms leave
  no holes. Every frame splats them with a z-buffer: the nearest point wins each pixel.

  Args:
    image: ``(H, W, C)`` the frame seen by ``extrinsics[0]``.
    depth: ``(H, W)`` its camera depth (0: no point).
    intrinsics: ``(3, 3)``; extrinsics: ``(T, 3, 4)`` world-to-camera.
    supersample: points per pixel side.
    keep: optional ``(H, W)`` bool: lift only these pixels (e.g. the static background).

  Returns:
    ``(context, visibility)``: ``(T, H, W, C)`` (0 where nothing lands) and ``(T, H, W, 1)``
    float32 in {0, 1}.
  """
  height, width, channels = image.shape
  uv = pixel_coordinates(height, width, pixel_offsets(supersample))
  centre, directions = camera_rays(intrinsics, extrinsics[0], uv)
  points = (centre + depth[:, :, None, None] * directions).reshape(-1, 3)
  valid = depth > 0 if keep is None else (depth > 0) & keep
  samples = uv.shape[2]
  valid = jnp.repeat(valid.reshape(-1), samples)
  colours = jnp.repeat(image.reshape(-1, channels), samples, axis=0)
  num, pixels = points.shape[0], height * width

  def splat(extrinsic):
    target, z = project(intrinsics, extrinsic, points)
    col = jnp.floor(target[:, 0])
    row = jnp.floor(target[:, 1])
    ok = valid & (z > EPS) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    index = jnp.where(ok, row.astype(jnp.int32) * width + col.astype(jnp.int32), pixels)
    nearest = jax.ops.segment_min(jnp.where(ok, z, jnp.inf), index, pixels + 1)
    wins = ok & (z <= nearest[index])
    # Ties (the sub-pixel points of one pixel) go to the lowest point index: deterministic.
    source = jax.ops.segment_min(jnp.where(wins, jnp.arange(num), num), index, pixels + 1)
    source = source[:pixels]
    seen = source < num
    rendered = jnp.where(seen[:, None], colours[jnp.minimum(source, num - 1)], 0.0)
    return (rendered.reshape(height, width, channels),
            seen.reshape(height, width, 1).astype(jnp.float32))

  return jax.vmap(splat)(extrinsics)


# ----------------------------------------------------------------------------- all controls


class Controls(NamedTuple):
  """The controls of one scene (RGB in [0, 1] here; the dataset maps videos to [-1, 1]).

  Attributes:
    first_frame: ``(H, W, 3)``.
    plucker: ``(T, H, W, 6)`` camera rays (moment, direction).
    extrinsics: ``(T, 3, 4)``; intrinsics: ``(3, 3)``.
    sim_rgba: ``(T, H, W, 4)`` the objects alone (premultiplied RGB + alpha); sim_depth
      ``(T, H, W)``.
    caption_tokens: ``(CAPTION_LENGTH,)`` int32.
    context, visibility: the 3D cache of the whole first frame, ``(T, H, W, 3)`` and
      ``(T, H, W, 1)``.
    background_context, background_visibility: the same lifting only the first frame's
      background pixels (no static copy of the moving objects).
  """

  first_frame: jax.Array
  plucker: jax.Array
  extrinsics: jax.Array
  intrinsics: jax.Array
  sim_rgba: jax.Array
  sim_depth: jax.Array
  caption_tokens: jax.Array
  context: jax.Array
  visibility: jax.Array
  background_context: jax.Array
  background_visibility: jax.Array


def render_controls(scene: Scene, rendered: Render, config: SceneConfig) -> Controls:
  """Every control of a rendered scene (jit with ``config`` static)."""
  K, extr = rendered.intrinsics, rendered.extrinsics
  first = rendered.rgb[0]
  objects = scene.objects
  tokens = caption_tokens(scene.camera.kind, objects.shape, objects.colour, objects.motion,
                          objects.valid)
  context, visibility = lift_and_splat(first, rendered.depth[0], K, extr,
                                       config.splat_supersample)
  bg_context, bg_visibility = lift_and_splat(first, rendered.depth[0], K, extr,
                                             config.splat_supersample,
                                             keep=rendered.object_ids[0] < 0)
  return Controls(first, plucker_rays(K, extr, config.height, config.width), extr, K,
                  rendered.sim_rgba, rendered.sim_depth, tokens, context, visibility, bg_context,
                  bg_visibility)


__all__ = ["CAMERA_PHRASES", "CAPTION_LENGTH", "Controls", "MOTION_VERBS", "PAD",
           "SHAPE_WORDS", "VOCAB", "caption", "caption_tokens", "detokenize", "lift_and_splat",
           "plucker_rays", "render_controls", "tokenize"]
