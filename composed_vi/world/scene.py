"""Procedural 4D scenes: a spec sampled from a PRNG key and its camera path (the objects'
motion is :mod:`composed_vi.world.physics`).

World frame: ``y`` up, the floor is the plane ``y = 0``, the back wall the plane ``z = WALL_Z``
facing the camera, which looks roughly along ``+z``. Cameras follow the OpenCV convention
(camera ``x`` right, ``y`` down, ``z`` forward); extrinsics map world to camera,
``X_cam = R X_world + t``, and pixel ``(i, j)`` (row, column) covers ``u in [j, j + 1)``,
``v in [i, i + 1)`` with its centre at ``(j + 0.5, i + 0.5)``.

Every array has a static shape: a scene holds ``config.max_objects`` object slots with a
``valid`` flag, and every discrete choice is an ``int32`` code into a name tuple
(``CAMERA_KINDS``, ``MOTION_KINDS``, ``SHAPE_NAMES``, ``COLOUR_NAMES``, ``TEXTURE_NAMES``), so
sampling, simulation and rendering jit and vmap.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi.errors import check_positive_float, check_positive_int, fail

CAMERA_KINDS = ("static", "pan_left", "pan_right", "dolly_in", "dolly_out", "orbit")
MOTION_KINDS = ("bounce", "roll", "rest")
SHAPE_NAMES = ("sphere", "box")
TEXTURE_NAMES = ("checker", "stripes", "noise")
COLOUR_NAMES = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")
#: RGB albedo of each entry of ``COLOUR_NAMES``, ``(len(COLOUR_NAMES), 3)`` in [0, 1].
PALETTE = np.array([
    [0.90, 0.12, 0.10],
    [0.15, 0.75, 0.20],
    [0.12, 0.30, 0.95],
    [0.95, 0.85, 0.10],
    [0.60, 0.20, 0.80],
    [1.00, 0.50, 0.05],
    [0.10, 0.85, 0.90],
    [0.97, 0.97, 0.97],
], np.float32)

FLOOR_Y = 0.0
WALL_Z = 3.5
#: Side of the value-noise lattice of the ``noise`` texture (it tiles with this period).
NOISE_GRID = 8

# Sampling ranges (metres, radians, seconds); chosen so that objects fill a visible part of a
# 32 x 32 frame at the default 50 degree field of view.
_OBJECT_SLOTS_X = (-0.8, 0.0, 0.8)
_SPHERE_RADIUS = (0.2, 0.35)
_BOX_HALF = (0.15, 0.3)
_DROP_HEIGHT = (0.4, 1.0)
_ROLL_SPEED = (0.6, 1.4)
_RESTITUTION = (0.55, 0.8)
_FRICTION = (0.05, 0.2)
_PAN_ANGLE = (np.deg2rad(15.0), np.deg2rad(25.0))
_ORBIT_ANGLE = (np.deg2rad(20.0), np.deg2rad(35.0))
_DOLLY_DISTANCE = (0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """Static sizes and choices of the world (hashable: pass it as a static jit argument).

  Attributes:
    num_frames: ``T``, frames per video.
    height, width: frame size in pixels.
    fps: frames per second of the simulation clock.
    fov_degrees: horizontal field of view of the pinhole camera.
    max_objects: object slots ``O`` (1 to 3); ``min_objects`` to ``max_objects`` are valid.
    camera_kinds, motion_kinds, shapes: the names that sampling may draw (subsets of
      ``CAMERA_KINDS``, ``MOTION_KINDS``, ``SHAPE_NAMES``); codes index the full tuples.
    substeps: physics steps per frame.
    gravity: m/s^2.
    antialias: ``s``: RGB averages ``s x s`` rays per pixel (depth, masks: the centre ray).
    shadows: cast hard shadows of the objects.
    splat_supersample: points per pixel side when the first frame is lifted to the 3D cache.
    unsimulated_probability: chance that a scene with two or more valid objects leaves one of
      its rolling objects out of the simulation control (:attr:`Objects.simulated`). Drawn
      from its own key, so every other field of a scene is the same at any value.
  """

  num_frames: int = 12
  height: int = 32
  width: int = 32
  fps: float = 8.0
  fov_degrees: float = 50.0
  max_objects: int = 3
  min_objects: int = 1
  camera_kinds: tuple[str, ...] = CAMERA_KINDS
  motion_kinds: tuple[str, ...] = MOTION_KINDS
  shapes: tuple[str, ...] = SHAPE_NAMES
  substeps: int = 8
  gravity: float = 9.81
  antialias: int = 2
  shadows: bool = True
  splat_supersample: int = 2
  unsimulated_probability: float = 0.5

  def __post_init__(self):
    for name in ("num_frames", "height", "width", "substeps", "antialias", "splat_supersample"):
      check_positive_int(f"SceneConfig.{name}", getattr(self, name))
    check_positive_float("SceneConfig.fps", self.fps)
    check_positive_float("SceneConfig.gravity", self.gravity)
    fov = self.fov_degrees
    if not isinstance(fov, (int, float)) or isinstance(fov, bool) or not 1 <= fov <= 150:
      fail("SceneConfig.fov_degrees", "a number in [1, 150]", fov)
    if (isinstance(self.max_objects, bool) or not isinstance(self.max_objects, int)
        or not 1 <= self.max_objects <= 3):
      fail("SceneConfig.max_objects", "an integer in [1, 3]", self.max_objects)
    if (isinstance(self.min_objects, bool) or not isinstance(self.min_objects, int)
        or not 1 <= self.min_objects <= self.max_objects):
      fail("SceneConfig.min_objects", f"an integer in [1, max_objects={self.max_objects}]",
           self.min_objects)
    for name, allowed in (("camera_kinds", CAMERA_KINDS), ("motion_kinds", MOTION_KINDS),
                          ("shapes", SHAPE_NAMES)):
      value = getattr(self, name)
      if (not isinstance(value, tuple) or not value or len(set(value)) != len(value)
          or any(v not in allowed for v in value)):
        fail(f"SceneConfig.{name}", f"a non-empty tuple of distinct names from {allowed}", value)
    if not isinstance(self.shadows, bool):
      fail("SceneConfig.shadows", "a bool", self.shadows)
    p = self.unsimulated_probability
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
      fail("SceneConfig.unsimulated_probability", "a number in [0, 1]", p)


class Camera(NamedTuple):
  """Camera path parameters.

  Attributes:
    kind: ``()`` int32 code into ``CAMERA_KINDS``.
    position: ``(3,)`` camera centre at frame 0.
    target: ``(3,)`` look-at point at frame 0 (and the orbit centre).
    amount: ``()`` pan angle or orbit angle (radians, orbit signed) or dolly distance (m).
  """

  kind: jax.Array
  position: jax.Array
  target: jax.Array
  amount: jax.Array


class Objects(NamedTuple):
  """Object slots and their initial physical state; every field leads with ``O``.

  Attributes:
    valid: ``(O,)`` bool; invalid slots are never rendered nor captioned.
    shape: ``(O,)`` int32 code into ``SHAPE_NAMES``.
    colour: ``(O,)`` int32 code into ``COLOUR_NAMES``.
    motion: ``(O,)`` int32 code into ``MOTION_KINDS`` (how the initial state was drawn).
    half_size: ``(O, 3)`` box half extents; a sphere has its radius in all three.
    position: ``(O, 3)`` centre at frame 0.
    velocity: ``(O, 3)`` velocity at frame 0.
    restitution: ``(O,)`` fraction of the normal speed kept at a bounce.
    friction: ``(O,)`` sliding/rolling friction coefficient on the floor.
    simulated: ``(O,)`` bool: the slot is in the simulation control (``sim_rgba``). An
      unsimulated object is in the video and the first frame (and the caption) only: its
      motion is unspecified beyond the caption's verb.
  """

  valid: jax.Array
  shape: jax.Array
  colour: jax.Array
  motion: jax.Array
  half_size: jax.Array
  position: jax.Array
  velocity: jax.Array
  restitution: jax.Array
  friction: jax.Array
  simulated: jax.Array


class Background(NamedTuple):
  """Floor (index 0) and wall (index 1) textures and the light.

  Attributes:
    texture: ``(2,)`` int32 code into ``TEXTURE_NAMES``.
    colours: ``(2, 2, 3)`` the two colours of each texture.
    scale: ``(2,)`` texture period in metres.
    angle: ``(2,)`` stripe direction in the surface plane (radians).
    noise: ``(2, NOISE_GRID, NOISE_GRID)`` value-noise lattices in [0, 1].
    light: ``(3,)`` unit vector towards the directional light.
    ambient: ``()`` ambient fraction of the shading.
  """

  texture: jax.Array
  colours: jax.Array
  scale: jax.Array
  angle: jax.Array
  noise: jax.Array
  light: jax.Array
  ambient: jax.Array


class Scene(NamedTuple):
  """A sampled scene: camera path, objects (initial state) and background (a pytree)."""

  camera: Camera
  objects: Objects
  background: Background


class _Stream:
  """Uniform numbers drawn by one PRNG call and handed out in order.

  One call instead of one per field keeps the compiled sampler small (each threefry call adds
  to the XLA program, and compile time dominates on a CPU).
  """

  def __init__(self, key, size: int):
    self._u = jax.random.uniform(key, (size,), jnp.float32)
    self._next = 0

  def uniform(self, bounds=(0.0, 1.0), shape=()):
    count = int(np.prod(shape, dtype=np.int64))
    if self._next + count > self._u.shape[0]:
      raise RuntimeError(f"_Stream: {self._u.shape[0]} numbers are not enough")
    u = self._u[self._next:self._next + count].reshape(shape)
    self._next += count
    return bounds[0] + (bounds[1] - bounds[0]) * u

  def randint(self, low, high, shape=()):
    draw = jnp.floor(self.uniform((low, high), shape)).astype(jnp.int32)
    return jnp.clip(draw, low, jnp.asarray(high) - 1)

  def permutation(self, n: int):
    return jnp.argsort(self.uniform((0.0, 1.0), (n,))).astype(jnp.int32)

  def sign(self, shape=()):
    return jnp.where(self.uniform((0.0, 1.0), shape) < 0.5, 1.0, -1.0)

  def choice(self, names, allowed, shape=()):
    codes = jnp.asarray([names.index(n) for n in allowed], jnp.int32)
    return codes[self.randint(0, len(allowed), shape)]


def sample_camera(key, config: SceneConfig) -> Camera:
  """Draws a camera path (kind among ``config.camera_kinds``, start pose, amount)."""
  draw = _Stream(key, 16)
  kind = draw.choice(CAMERA_KINDS, config.camera_kinds)
  low, high = np.array([-0.3, 0.8, -1.8]), np.array([0.3, 1.3, -1.3])
  position = draw.uniform((low, high), (3,))
  low, high = np.array([-0.2, 0.3, 1.2]), np.array([0.2, 0.6, 1.8])
  target = draw.uniform((low, high), (3,))
  pan = draw.uniform(_PAN_ANGLE)
  dolly = draw.uniform(_DOLLY_DISTANCE)
  orbit = draw.sign() * draw.uniform(_ORBIT_ANGLE)
  amounts = jnp.stack([jnp.float32(0.0), pan, pan, dolly, dolly, orbit])
  return Camera(kind, position.astype(jnp.float32), target.astype(jnp.float32), amounts[kind])


def sample_objects(key, config: SceneConfig) -> Objects:
  """Draws ``config.max_objects`` object slots and their initial state by motion kind.

  ``bounce``: dropped from above the floor with a small horizontal velocity; ``roll``: on the
  floor, moving roughly across the view; ``rest``: on the floor, still. Colours are distinct.
  """
  num = config.max_objects
  draw = _Stream(key, 64)
  count = draw.randint(config.min_objects, config.max_objects + 1)
  valid = jnp.arange(num) < count
  shape = draw.choice(SHAPE_NAMES, config.shapes, (num,))
  colour = draw.permutation(len(COLOUR_NAMES))[:num]
  motion = draw.choice(MOTION_KINDS, config.motion_kinds, (num,))
  radius = draw.uniform(_SPHERE_RADIUS, (num, 1))
  half_box = draw.uniform(_BOX_HALF, (num, 3))
  half_size = jnp.where((shape == 0)[:, None], jnp.broadcast_to(radius, (num, 3)), half_box)
  # Distinct lateral slots keep objects from starting inside each other.
  slots = jnp.asarray(_OBJECT_SLOTS_X, jnp.float32)[draw.permutation(len(_OBJECT_SLOTS_X))]
  x = slots[:num] + draw.uniform((-0.15, 0.15), (num,))
  z = draw.uniform((0.4, 2.2), (num,))
  drop = draw.uniform(_DROP_HEIGHT, (num,))
  y = half_size[:, 1] + FLOOR_Y + jnp.where(motion == 0, drop, 0.0)
  position = jnp.stack([x, y, z], -1)
  # Rolling objects head roughly across the view, towards the middle.
  angle = draw.uniform((-0.6, 0.6), (num,))
  side = jnp.where(jnp.abs(x) > 0.3, -jnp.sign(x), draw.sign((num,)))
  roll_speed = draw.uniform(_ROLL_SPEED, (num,))
  speed = jnp.where(motion == 0, 0.4 * roll_speed, jnp.where(motion == 1, roll_speed, 0.0))
  vy = jnp.where(motion == 0, draw.uniform((-0.5, 1.0), (num,)), 0.0)
  velocity = jnp.stack([side * jnp.cos(angle) * speed, vy, jnp.sin(angle) * speed], -1)
  restitution = draw.uniform(_RESTITUTION, (num,))
  friction = draw.uniform(_FRICTION, (num,))
  return Objects(valid, shape, colour, motion, half_size, position, velocity, restitution,
                 friction, jnp.ones((num,), bool))


def choose_unsimulated(key, objects: Objects, probability: float) -> Objects:
  """With ``probability``, one rolling object of a scene with >= 2 valid objects (drawn
  uniformly among its rolling ones) leaves the simulation: ``simulated`` is False there."""
  k_flip, k_pick = jax.random.split(key)
  rolling = objects.valid & (objects.motion == MOTION_KINDS.index("roll"))
  eligible = rolling & (jnp.sum(objects.valid) >= 2)
  score = jnp.where(eligible, jax.random.uniform(k_pick, eligible.shape), -1.0)
  pick = jnp.argmax(score)
  leave = (jax.random.uniform(k_flip) < probability) & jnp.any(eligible)
  simulated = ~(leave & (jnp.arange(eligible.shape[0]) == pick))
  return objects._replace(simulated=simulated)


def sample_background(key) -> Background:
  """Draws floor and wall textures (muted random colours) and the light."""
  draw = _Stream(key, 32 + 2 * NOISE_GRID * NOISE_GRID)
  texture = draw.randint(0, len(TEXTURE_NAMES), (2,))
  base = draw.uniform((0.25, 0.95), (2, 3))
  base = 0.55 + 0.6 * (base - 0.55)  # desaturate so the objects' palette colours stand out
  contrast = draw.uniform((0.45, 0.75), (2, 1))
  colours = jnp.stack([base, base * contrast], 1)
  scale = draw.uniform((0.3, 0.7), (2,))
  angle = draw.uniform((0.0, np.pi), (2,))
  noise = draw.uniform((0.0, 1.0), (2, NOISE_GRID, NOISE_GRID))
  light = jnp.stack([draw.uniform((-0.8, 0.8)), jnp.float32(1.0), draw.uniform((-1.0, -0.3))])
  ambient = draw.uniform((0.3, 0.45))
  return Background(texture, colours, scale, angle, noise, light / jnp.linalg.norm(light),
                    ambient)


def sample_scene(key, config: SceneConfig) -> Scene:
  """A scene from a PRNG key: deterministic, jit- and vmap-able (``config`` static)."""
  k_cam, k_obj, k_bg = jax.random.split(key, 3)
  objects = choose_unsimulated(jax.random.fold_in(key, 7), sample_objects(k_obj, config),
                               config.unsimulated_probability)
  return Scene(sample_camera(k_cam, config), objects, sample_background(k_bg))


# ----------------------------------------------------------------------------- camera


def intrinsics(config: SceneConfig) -> jax.Array:
  """Pinhole ``K`` ``(3, 3)``: square pixels, principal point at the image centre."""
  focal = 0.5 * config.width / np.tan(0.5 * np.deg2rad(config.fov_degrees))
  return jnp.asarray([[focal, 0.0, 0.5 * config.width],
                      [0.0, focal, 0.5 * config.height],
                      [0.0, 0.0, 1.0]], jnp.float32)


def _rotate_y(angle, vector):
  """Rotates ``vector`` ``(..., 3)`` by ``angle`` ``(...)`` about the world ``y`` axis.

  Positive angles turn ``+z`` towards ``+x``.
  """
  c, s = jnp.cos(angle), jnp.sin(angle)
  x, y, z = vector[..., 0], vector[..., 1], vector[..., 2]
  return jnp.stack(jnp.broadcast_arrays(c * x + s * z, y, c * z - s * x), -1)


def look_rotation(forward) -> jax.Array:
  """World-to-camera rotation ``(..., 3, 3)`` whose optical axis is ``forward`` (y-up world)."""
  f = forward / jnp.linalg.norm(forward, axis=-1, keepdims=True)
  right = jnp.cross(f, jnp.asarray([0.0, 1.0, 0.0], f.dtype))
  right = right / jnp.linalg.norm(right, axis=-1, keepdims=True)
  down = jnp.cross(f, right)
  return jnp.stack([right, down, f], -2)


def reverse_camera(scene: Scene) -> Scene:
  """The scene with its camera path reversed from the same start pose (pan right instead of
  left, dolly out instead of in, orbit the other way; a static camera stays static)."""
  camera = scene.camera
  kind = jnp.asarray(camera.kind)
  swapped = jnp.asarray([0, 2, 1, 4, 3, 5], jnp.int32)[kind]
  amount = jnp.where(kind == 5, -camera.amount, camera.amount)
  return scene._replace(camera=camera._replace(kind=swapped, amount=amount))


def camera_path(camera: Camera, config: SceneConfig):
  """Per-frame camera centres ``(T, 3)`` and world-to-camera rotations ``(T, 3, 3)``.

  The path is linear in ``s = frame / (T - 1)``: pans yaw the view about the camera centre
  (left turns towards the camera's left), dollies move along the initial optical axis, orbits
  turn the camera about the vertical through ``target`` while looking at it.
  """
  s = jnp.linspace(0.0, 1.0, config.num_frames) if config.num_frames > 1 else jnp.zeros(1)
  kind, amount = camera.kind, camera.amount
  # With y up and the camera looking along +z, a positive yaw (+z towards +x) turns it left.
  yaw = jnp.where(kind == 1, amount, jnp.where(kind == 2, -amount, 0.0)) * s
  orbit = jnp.where(kind == 5, amount, 0.0) * s
  dolly = jnp.where(kind == 3, amount, jnp.where(kind == 4, -amount, 0.0)) * s
  forward0 = camera.target - camera.position
  axis = forward0 / jnp.linalg.norm(forward0)
  centres = (camera.target + _rotate_y(orbit, camera.position - camera.target)
             + dolly[:, None] * axis)
  forward = _rotate_y(orbit + yaw, forward0)
  return centres, look_rotation(forward)


def extrinsics(camera: Camera, config: SceneConfig) -> jax.Array:
  """World-to-camera ``[R | t]`` per frame, ``(T, 3, 4)``, with ``t = -R C``."""
  centres, rotations = camera_path(camera, config)
  t = -jnp.einsum("tij,tj->ti", rotations, centres)
  return jnp.concatenate([rotations, t[..., None]], -1)
