"""Examples of the built-in world: a video with its exact ground truth and every control.

``render_example(key, config)`` returns an :class:`Example` (a NamedTuple of arrays; shapes in
its docstring); ``batch(key, n, config)`` stacks ``n`` of them (every field leads with ``n``);
:func:`composed_vi.world.controls.caption` turns an example's codes into its text. Examples
are never mutated: derive another with ``example._replace(field=...)``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi.errors import check_positive_int
from composed_vi.world.controls import Controls, caption, render_controls
from composed_vi.world.render import Render, render
from composed_vi.world.scene import Scene, SceneConfig, sample_scene

#: The default world: 12 frames of 32 x 32.
DEFAULT_CONFIG = SceneConfig()

__all__ = ["DEFAULT_CONFIG", "Example", "batch", "caption", "example_from_scene", "render_example",
           "sample_scene", "to_numpy", "video_without_unsimulated"]


class Example(NamedTuple):
  """One world example (``T`` frames, ``H x W`` pixels, ``O = config.max_objects`` object slots,
  ``L = CAPTION_LENGTH`` tokens). Float32 unless stated; a batch adds a leading axis ``n``.

  Attributes:
    video: ``(T, H, W, 3)`` RGB in [-1, 1].
    depth: ``(T, H, W)`` camera z depth of the pixel centre (0: no hit).
    masks: ``(T, H, W, O)`` {0, 1}: object slot seen at the pixel centre.
    object_ids: ``(T, H, W)`` int32 slot seen at the pixel centre, -1 for background.
    object_region: ``(T, H, W, 1)`` union of ``masks``.
    tracks: ``(T, O, 2)`` projected object centres (u, v) in pixels.
    track_visible: ``(T, O)`` bool: centre in view and not occluded.
    positions: ``(T, O, 3)`` simulated object centres (world).
    intrinsics: ``(3, 3)`` pinhole K.
    extrinsics: ``(T, 3, 4)`` world-to-camera [R | t].
    first_frame: ``(H, W, 3)`` frame 0 in [-1, 1].
    plucker: ``(T, H, W, 6)`` camera rays (moment, direction).
    sim_rgba: ``(T, H, W, 4)`` objects alone: premultiplied RGB in [-1, 1], alpha in [0, 1].
    sim_depth: ``(T, H, W)`` depth of the objects alone (0: empty).
    caption_tokens: ``(L,)`` int32 ids into ``VOCAB``.
    context: ``(T, H, W, 3)`` 3D cache of the first frame in [-1, 1] (0 where unseen).
    visibility: ``(T, H, W, 1)`` {0, 1}: where ``context`` holds a point.
    background_context: ``(T, H, W, 3)`` 3D cache of the first frame's background only.
    background_visibility: ``(T, H, W, 1)`` its visibility.
    camera_kind: ``()`` int32 code into ``CAMERA_KINDS``.
    motion_kinds: ``(O,)`` int32 codes into ``MOTION_KINDS``.
    shapes: ``(O,)`` int32 codes into ``SHAPE_NAMES``.
    colours: ``(O,)`` int32 codes into ``COLOUR_NAMES``.
    object_valid: ``(O,)`` bool: which slots hold an object.
    object_simulated: ``(O,)`` bool: which slots are in the simulation control ``sim_rgba``
      (an unsimulated object is in the video, the first frame and the caption only).
  """

  video: jax.Array
  depth: jax.Array
  masks: jax.Array
  object_ids: jax.Array
  object_region: jax.Array
  tracks: jax.Array
  track_visible: jax.Array
  positions: jax.Array
  intrinsics: jax.Array
  extrinsics: jax.Array
  first_frame: jax.Array
  plucker: jax.Array
  sim_rgba: jax.Array
  sim_depth: jax.Array
  caption_tokens: jax.Array
  context: jax.Array
  visibility: jax.Array
  background_context: jax.Array
  background_visibility: jax.Array
  camera_kind: jax.Array
  motion_kinds: jax.Array
  shapes: jax.Array
  colours: jax.Array
  object_valid: jax.Array
  object_simulated: jax.Array


def to_numpy(example: Example) -> Example:
  """The example (or batch) with every field a numpy array on the host (``None`` kept)."""
  return Example(*(None if v is None else np.asarray(v) for v in example))


def _signed(x):
  return 2.0 * x - 1.0


def _example(scene: Scene, rendered: Render, controls: Controls) -> Example:
  alpha = controls.sim_rgba[..., 3:]
  objects = scene.objects
  return Example(**{
      "video": _signed(rendered.rgb),
      "depth": rendered.depth,
      "masks": rendered.masks,
      "object_ids": rendered.object_ids,
      "object_region": jnp.max(rendered.masks, -1, keepdims=True),
      "tracks": rendered.tracks,
      "track_visible": rendered.track_visible,
      "positions": rendered.positions,
      "intrinsics": rendered.intrinsics,
      "extrinsics": rendered.extrinsics,
      "first_frame": _signed(controls.first_frame),
      "plucker": controls.plucker,
      "sim_rgba": jnp.concatenate([_signed(controls.sim_rgba[..., :3]), alpha], -1),
      "sim_depth": controls.sim_depth,
      "caption_tokens": controls.caption_tokens,
      "context": _signed(controls.context) * controls.visibility,
      "visibility": controls.visibility,
      "background_context": _signed(controls.background_context) * controls.background_visibility,
      "background_visibility": controls.background_visibility,
      "camera_kind": scene.camera.kind,
      "motion_kinds": objects.motion,
      "shapes": objects.shape,
      "colours": objects.colour,
      "object_valid": objects.valid,
      "object_simulated": objects.simulated,
  })


@functools.partial(jax.jit, static_argnames=("config",))
def example_from_scene(scene: Scene, config: SceneConfig) -> Example:
  """Renders a given scene and its controls into an :class:`Example`.

  The scene is traced, so edited scenes (another camera kind, other objects) reuse one
  compilation per ``config``.
  """
  rendered = render(scene, config)
  return _example(scene, rendered, render_controls(scene, rendered, config))


@functools.partial(jax.jit, static_argnames=("config",))
def video_without_unsimulated(scene: Scene, config: SceneConfig) -> jax.Array:
  """``(T, H, W, 3)`` in [-1, 1]: the scene's video with its unsimulated objects taken out
  (``Objects.simulated`` False: not rendered, no shadow), the same camera and background. The
  reference of a video where the unsimulated object faded away
  (:func:`composed_vi.world.metrics.unsimulated_presence`); the video itself when every object
  is simulated."""
  objects = scene.objects._replace(valid=scene.objects.valid & scene.objects.simulated)
  return _signed(render(scene._replace(objects=objects), config).rgb)


@functools.partial(jax.jit, static_argnames=("config",))
def render_example(key, config: SceneConfig = DEFAULT_CONFIG) -> Example:
  """One example from a PRNG key (deterministic): ``sample_scene`` then render everything."""
  return example_from_scene(sample_scene(key, config), config)


@functools.partial(jax.jit, static_argnames=("n", "config"))
def _batch(key, n, config):
  scenes = jax.vmap(lambda k: sample_scene(k, config))(jax.random.split(key, n))
  # The ray caster runs one example at a time: vmapped, its per-ray intermediates for the whole
  # batch leave the CPU caches and it took 1.6x the CPU time; sampling and controls vmap well.
  rendered = jax.lax.map(lambda s: render(s, config), scenes)
  return jax.vmap(lambda s, r: _example(s, r, render_controls(s, r, config)))(scenes, rendered)


def batch(key, n: int, config: SceneConfig = DEFAULT_CONFIG) -> Example:
  """``n`` examples from keys split from ``key``; every array leads with ``n``.

  Example ``i`` equals ``render_example(jax.random.split(key, n)[i], config)``.
  """
  return _batch(key, check_positive_int("n", n), config)
