"""A ray caster for the procedural world: RGB, depth, object masks, 2D tracks, simulation render.

Rays are parametrised by camera depth: a ray through pixel coordinates ``(u, v)`` is
``C + lam * R^T K^{-1} [u, v, 1]``, so the hit parameter ``lam`` is the ``z`` depth of the hit in
the camera frame (what ``depth`` holds; 0 where a ray hits nothing). Intersections are analytic
(planes, spheres, axis-aligned boxes); shading is Lambert with one directional light plus ambient
and optional hard shadows cast by the objects.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi.world import physics
from composed_vi.world import scene as scene_lib
from composed_vi.world.scene import FLOOR_Y, PALETTE, WALL_Z, Background, Scene, SceneConfig

#: Rays start this far (in ``lam`` units) in front of their origin.
EPS = 1e-4
SKY = np.array([0.7, 0.8, 0.95], np.float32)


# ----------------------------------------------------------------------------- intersections


def _dot(a, b):
  return jnp.sum(a * b, -1)


def intersect_plane(origin, direction, normal, offset):
  """Ray parameter of the hit with the plane ``normal . x = offset``; ``inf`` on a miss.

  Args broadcast: ``origin``, ``direction``, ``normal``: ``(..., 3)``; ``offset``: ``(...)``.
  Hits at ``lam <= EPS`` (behind or at the origin) and rays parallel to the plane miss.
  """
  denom = _dot(normal, direction)
  safe = jnp.where(jnp.abs(denom) < 1e-12, 1.0, denom)
  lam = (offset - _dot(normal, origin)) / safe
  return jnp.where((jnp.abs(denom) >= 1e-12) & (lam > EPS), lam, jnp.inf)


def intersect_sphere(origin, direction, centre, radius):
  """Ray parameter of the first hit with a sphere; ``inf`` on a miss.

  ``origin``, ``direction``, ``centre``: ``(..., 3)`` (``direction`` need not be unit);
  ``radius``: ``(...)``. A ray starting inside the sphere returns its exit.
  """
  oc = origin - centre
  a = _dot(direction, direction)
  half_b = _dot(oc, direction)
  c = _dot(oc, oc) - radius * radius
  disc = half_b * half_b - a * c
  root = jnp.sqrt(jnp.maximum(disc, 0.0))
  near = (-half_b - root) / a
  far = (-half_b + root) / a
  lam = jnp.where(near > EPS, near, far)
  return jnp.where((disc >= 0) & (lam > EPS), lam, jnp.inf)


def intersect_box(origin, direction, lower, upper):
  """First hit with the axis-aligned box ``[lower, upper]`` (slab method).

  Args broadcast: ``(..., 3)`` each. Returns ``(lam, normal)``: ``(...)`` with ``inf`` on a
  miss, and the outward unit normal ``(..., 3)`` of the face hit (the exit face for a ray
  starting inside).
  """
  inv = 1.0 / jnp.where(jnp.abs(direction) < 1e-12, 1e-12, direction)
  t0 = (lower - origin) * inv
  t1 = (upper - origin) * inv
  t_enter = jnp.minimum(t0, t1)
  t_exit = jnp.maximum(t0, t1)
  near = jnp.max(t_enter, -1)
  far = jnp.min(t_exit, -1)
  inside = near <= EPS
  lam = jnp.where(inside, far, near)
  hit = (far >= near) & (lam > EPS)
  axis = jnp.where(inside[..., None], t_exit == far[..., None], t_enter == near[..., None])
  axis = axis & (jnp.cumsum(axis, -1) == 1)  # one face on edges and corners
  sign = jnp.where(inside[..., None], jnp.sign(direction), -jnp.sign(direction))
  normal = jnp.where(axis, sign, 0.0)
  return jnp.where(hit, lam, jnp.inf), normal


def intersect_objects(origin, direction, centres, half_size, shape, valid):
  """Hits of rays with every object slot.

  ``origin``, ``direction``: ``(..., 3)``; ``centres``, ``half_size``: ``(O, 3)``; ``shape``,
  ``valid``: ``(O,)``. Returns ``lam`` ``(..., O)`` (``inf`` on a miss or an invalid slot) and
  the outward normals ``(..., O, 3)``.
  """
  o = origin[..., None, :]
  d = direction[..., None, :]
  lam_sphere = intersect_sphere(o, d, centres, half_size[:, 0])
  lam_box, normal_box = intersect_box(o, d, centres - half_size, centres + half_size)
  is_sphere = shape == 0
  lam = jnp.where(valid, jnp.where(is_sphere, lam_sphere, lam_box), jnp.inf)
  point = o + jnp.where(jnp.isfinite(lam), lam, 0.0)[..., None] * d
  normal_sphere = (point - centres) / half_size[:, :1]
  normal = jnp.where(is_sphere[:, None], normal_sphere, normal_box)
  return lam, normal


# ----------------------------------------------------------------------------- textures


def _value_noise(lattice, a, b):
  """Smooth bilinear value noise of a tiling ``(G, G)`` lattice at lattice coordinates.

  The lattice is read with one-hot interpolation weights and a matrix product rather than a
  gather, which vectorises well (and under ``vmap``) on a CPU.
  """
  g = lattice.shape[0]

  def weights(x):
    i = jnp.floor(x)
    f = x - i
    f = f * f * (3 - 2 * f)
    i = jnp.mod(i, g)
    nodes = jnp.arange(g, dtype=x.dtype)
    return ((nodes == i[..., None]) * (1 - f)[..., None]
            + (nodes == jnp.mod(i + 1, g)[..., None]) * f[..., None])

  return jnp.sum((weights(a) @ lattice) * weights(b), -1)


def texture(background: Background, surface: int, a, b):
  """Albedo ``(..., 3)`` of surface 0 (floor, coordinates ``x, z``) or 1 (wall, ``x, y``)."""
  scale = background.scale[surface]
  angle = background.angle[surface]
  u, v = a / scale, b / scale
  checker = jnp.mod(jnp.floor(u) + jnp.floor(v), 2.0)
  stripes = jnp.mod(jnp.floor(jnp.cos(angle) * u + jnp.sin(angle) * v), 2.0)
  noise = _value_noise(background.noise[surface], 2.0 * u, 2.0 * v)
  kind = background.texture[surface]
  mix = jnp.where(kind == 0, checker, jnp.where(kind == 1, stripes, noise))
  colours = background.colours[surface]
  return colours[0] * (1 - mix[..., None]) + colours[1] * mix[..., None]


# ----------------------------------------------------------------------------- rays


def pixel_offsets(samples: int) -> np.ndarray:
  """``(samples^2, 2)`` sub-pixel offsets of a regular grid inside the unit pixel."""
  grid = (np.arange(samples, dtype=np.float32) + 0.5) / samples
  du, dv = np.meshgrid(grid, grid, indexing="xy")
  return np.stack([du.ravel(), dv.ravel()], -1)


def pixel_coordinates(height: int, width: int, offsets) -> jax.Array:
  """``(H, W, S, 2)`` image coordinates ``(u, v)`` of the sub-samples ``offsets`` ``(S, 2)``."""
  v, u = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                     indexing="ij")
  base = np.stack([u, v], -1)[:, :, None, :]
  return jnp.asarray(base + np.asarray(offsets, np.float32)[None, None])


def camera_rays(intrinsics, extrinsic, uv):
  """Rays through image points: centre ``(3,)`` and directions ``(..., 3)`` (depth-scaled).

  ``intrinsics``: ``(3, 3)``; ``extrinsic``: ``(3, 4)`` world-to-camera; ``uv``: ``(..., 2)``.
  ``centre + lam * direction`` is the world point at camera depth ``lam``.
  """
  rotation, translation = extrinsic[:, :3], extrinsic[:, 3]
  centre = -rotation.T @ translation
  homogeneous = jnp.concatenate([uv, jnp.ones_like(uv[..., :1])], -1)
  cam = homogeneous @ jnp.linalg.inv(intrinsics).T
  return centre, cam @ rotation


def project(intrinsics, extrinsics, points):
  """Projects world points ``(..., 3)`` with ``K`` ``(3, 3)`` and extrinsics ``(..., 3, 4)``.

  Returns image coordinates ``(..., 2)`` (``(u, v)``, pixel units) and camera depth ``(...)``.
  """
  cam = jnp.sum(extrinsics[..., :3] * points[..., None, :], -1) + extrinsics[..., 3]
  z = cam[..., 2]
  img = cam @ intrinsics.T
  uv = img[..., :2] / jnp.where(jnp.abs(z) < 1e-9, 1e-9, z)[..., None]
  return uv, z


# ----------------------------------------------------------------------------- rendering


class Render(NamedTuple):
  """Everything rendered from one scene.

  Attributes:
    rgb: ``(T, H, W, 3)`` in [0, 1] (anti-aliased).
    depth: ``(T, H, W)`` camera ``z`` depth of the pixel-centre hit (0: no hit).
    object_ids: ``(T, H, W)`` int32 slot of the object seen at the pixel centre, -1 for none.
    masks: ``(T, H, W, O)`` float32 one-hot of ``object_ids``.
    tracks: ``(T, O, 2)`` projected object centres ``(u, v)`` in pixel coordinates.
    track_visible: ``(T, O)`` bool: valid, in front of the camera, inside the image and the
      first surface along the ray to the centre belongs to the object.
    sim_rgba: ``(T, H, W, 4)`` the simulated objects alone over a transparent background: RGB
      premultiplied by alpha (black where empty), alpha = covered fraction of the pixel.
    sim_depth: ``(T, H, W)`` depth of the objects alone (0 where empty).
    intrinsics: ``(3, 3)``.
    extrinsics: ``(T, 3, 4)`` world-to-camera.
    positions: ``(T, O, 3)`` simulated object centres.
  """

  rgb: jax.Array
  depth: jax.Array
  object_ids: jax.Array
  masks: jax.Array
  tracks: jax.Array
  track_visible: jax.Array
  sim_rgba: jax.Array
  sim_depth: jax.Array
  intrinsics: jax.Array
  extrinsics: jax.Array
  positions: jax.Array


def _occluded(points, light, centres, objects, shadows: bool):
  """1 where the ray from ``points`` ``(..., 3)`` towards the light hits an object."""
  if not shadows:
    return jnp.zeros(points.shape[:-1], jnp.float32)
  lam, _ = intersect_objects(points, jnp.broadcast_to(light, points.shape), centres,
                             objects.half_size, objects.shape, objects.valid)
  return jnp.any(jnp.isfinite(lam), -1).astype(jnp.float32)


def _lambert(albedo, normal, point, background: Background, centres, objects, shadows):
  light = background.light
  direct = jnp.maximum(_dot(normal, light), 0.0)
  lit = direct * (1.0 - _occluded(point + 1e-3 * normal, light, centres, objects, shadows))
  ambient = background.ambient
  return albedo * (ambient + (1.0 - ambient) * lit)[..., None]


def trace(centre, directions, centres, objects, background: Background, shadows: bool = True):
  """Casts rays ``centre + lam * directions`` (``(..., 3)``) into the scene at one instant.

  Args:
    centre: ``(3,)`` ray origin (the camera centre).
    directions: ``(..., 3)`` depth-scaled directions (:func:`camera_rays`).
    centres: ``(O, 3)`` object centres at this instant.
    objects, background: the scene's :class:`Objects` and :class:`Background`.
    shadows: hard shadows cast by the objects.

  Returns:
    A dict of ``(...)``-shaped fields: ``rgb`` ``(..., 3)`` and ``depth`` of the full scene,
    ``object_id`` (-1 for the background), ``object_rgb`` ``(..., 3)``, ``object_hit`` (bool)
    and ``object_depth`` of the simulated objects alone (``objects.simulated``).
  """
  lam_obj, normals = intersect_objects(centre, directions, centres, objects.half_size,
                                       objects.shape, objects.valid)
  slot = jnp.argmin(lam_obj, -1)
  lam_o = jnp.min(lam_obj, -1)
  # One-hot selection instead of gathers: cheaper on a CPU and under vmap.
  onehot = (slot[..., None] == jnp.arange(lam_obj.shape[-1])).astype(jnp.float32)
  normal_o = jnp.sum(onehot[..., None] * normals, -2)
  albedo_o = onehot @ jnp.asarray(PALETTE)[objects.colour]

  up = jnp.asarray([0.0, 1.0, 0.0])
  back = jnp.asarray([0.0, 0.0, 1.0])
  lam_floor = intersect_plane(centre, directions, up, FLOOR_Y)
  lam_wall = intersect_plane(centre, directions, back, WALL_Z)
  on_floor = lam_floor < lam_wall
  lam_b = jnp.minimum(lam_floor, lam_wall)
  hit_b = jnp.isfinite(lam_b)
  point_b = centre + jnp.where(hit_b, lam_b, 0.0)[..., None] * directions
  albedo_b = jnp.where(on_floor[..., None],
                       texture(background, 0, point_b[..., 0], point_b[..., 2]),
                       texture(background, 1, point_b[..., 0], point_b[..., 1]))
  normal_b = jnp.where(on_floor[..., None], up, -back)

  # Objects stay above the floor and in front of the wall, as does the camera, so an object hit
  # is always in front of the background: the objects-alone render shades the same point.
  front = lam_o < lam_b
  lam = jnp.where(front, lam_o, jnp.where(hit_b, lam_b, 0.0))
  point = centre + lam[..., None] * directions
  normal = jnp.where(front[..., None], normal_o, normal_b)
  albedo = jnp.where(front[..., None], albedo_o, albedo_b)
  rgb = jnp.clip(_lambert(albedo, normal, point, background, centres, objects, shadows), 0.0, 1.0)
  rgb = jnp.where((front | hit_b)[..., None], rgb, jnp.asarray(SKY))
  # The simulation control renders the simulated objects alone, as a simulator that does not
  # know the unsimulated ones would (no occlusion by them, no shadows of theirs): with every
  # object simulated this is exactly the full render's object pixels.
  lam_sim = jnp.where(objects.simulated, lam_obj, jnp.inf)
  sim_objects = objects._replace(valid=objects.valid & objects.simulated)
  slot_s = jnp.argmin(lam_sim, -1)
  lam_s = jnp.min(lam_sim, -1)
  hit_s = jnp.isfinite(lam_s)
  onehot_s = (slot_s[..., None] == jnp.arange(lam_obj.shape[-1])).astype(jnp.float32)
  point_s = centre + jnp.where(hit_s, lam_s, 0.0)[..., None] * directions
  rgb_s = jnp.clip(_lambert(onehot_s @ jnp.asarray(PALETTE)[objects.colour],
                            jnp.sum(onehot_s[..., None] * normals, -2), point_s, background,
                            centres, sim_objects, shadows), 0.0, 1.0)
  return {
      "rgb": rgb,
      "depth": lam,
      "object_id": jnp.where(front, slot, -1).astype(jnp.int32),
      "object_rgb": jnp.where(hit_s[..., None], rgb_s, 0.0),
      "object_hit": hit_s,
      "object_depth": jnp.where(hit_s, lam_s, 0.0),
  }


def object_tracks(intrinsics, extrinsics, positions, objects, config: SceneConfig):
  """Projected object centres ``(T, O, 2)`` and their visibility ``(T, O)`` (see Render)."""
  uv, z = project(intrinsics, extrinsics[:, None], positions)
  inside = ((uv[..., 0] >= 0) & (uv[..., 0] < config.width) & (uv[..., 1] >= 0)
            & (uv[..., 1] < config.height) & (z > EPS))

  def first_hit(extrinsic, centres, depth):
    camera = -extrinsic[:, :3].T @ extrinsic[:, 3]
    directions = (centres - camera) / jnp.where(depth > EPS, depth, 1.0)[:, None]
    lam, _ = intersect_objects(camera, directions, centres, objects.half_size, objects.shape,
                               objects.valid)
    return jnp.argmin(lam, -1) == jnp.arange(centres.shape[0])

  unoccluded = jax.vmap(first_hit)(extrinsics, positions, z)
  return uv, inside & unoccluded & objects.valid


def render(scene: Scene, config: SceneConfig, extrinsics=None) -> Render:
  """Renders a scene along its camera path (jit with ``config`` static), or along given
  ``extrinsics`` ``(config.num_frames, 3, 4)`` (e.g. a long path made of several segments);
  the simulation runs over ``config.num_frames`` frames either way."""
  K = scene_lib.intrinsics(config)
  extr = scene_lib.extrinsics(scene.camera, config) if extrinsics is None else extrinsics
  positions = physics.simulate(scene.objects, config)
  # One cast per frame: the anti-aliasing sub-samples, then the pixel centre (last).
  offsets = pixel_offsets(1)
  if config.antialias > 1:
    offsets = np.concatenate([pixel_offsets(config.antialias), offsets])
  uv = pixel_coordinates(config.height, config.width, offsets)
  num_samples = max(offsets.shape[0] - 1, 1)

  def frame(extrinsic, centres):
    cam, dirs = camera_rays(K, extrinsic, uv)
    hits = trace(cam, dirs, centres, scene.objects, scene.background, config.shadows)
    samples = jax.tree.map(lambda x: x[:, :, :num_samples], hits)
    alpha = jnp.mean(samples["object_hit"].astype(jnp.float32), -1)
    sim_rgb = jnp.mean(samples["object_rgb"], -2)
    return (jnp.mean(samples["rgb"], -2), hits["depth"][:, :, -1], hits["object_id"][:, :, -1],
            jnp.concatenate([sim_rgb, alpha[..., None]], -1), hits["object_depth"][:, :, -1])

  rgb, depth, ids, sim_rgba, sim_depth = jax.vmap(frame)(extr, positions)
  masks = (ids[..., None] == jnp.arange(config.max_objects)).astype(jnp.float32)
  tracks, visible = object_tracks(K, extr, positions, scene.objects, config)
  return Render(rgb, depth, ids, masks, tracks, visible, sim_rgba, sim_depth, K, extr, positions)
