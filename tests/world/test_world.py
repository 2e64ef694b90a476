"""The built-in world: intersections, physics, cameras, renders and controls (known answers)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from composed_vi import world
from composed_vi.errors import ConfigError
from composed_vi.world import controls, physics, render, scene
from composed_vi.world.scene import CAMERA_KINDS, WALL_Z, Objects

# Without shadows the static background of a static camera is exactly constant.
CFG = world.SceneConfig(shadows=False)


def make_objects(restitution=0.7):
  """A red bouncing ball, a blue box sliding left and a green ball at rest, all in view."""
  return Objects(
      valid=jnp.array([True, True, True]),
      shape=jnp.array([0, 1, 0], jnp.int32),
      colour=jnp.array([0, 2, 1], jnp.int32),
      motion=jnp.array([0, 1, 2], jnp.int32),
      half_size=jnp.array([[0.3] * 3, [0.25] * 3, [0.25] * 3]),
      position=jnp.array([[-0.6, 1.2, 1.2], [0.7, 0.25, 2.0], [0.1, 0.25, 0.5]]),
      velocity=jnp.array([[0.3, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
      restitution=jnp.full((3,), restitution),
      friction=jnp.full((3,), 0.1),
      simulated=jnp.ones((3,), bool),
  )


def make_scene(kind, amount=0.0, objects=None):
  base = world.sample_scene(jax.random.key(7), CFG)
  camera = scene.Camera(jnp.int32(CAMERA_KINDS.index(kind)), jnp.array([0.0, 1.0, -1.5]),
                        jnp.array([0.0, 0.45, 1.5]), jnp.float32(amount))
  return base._replace(camera=camera, objects=make_objects() if objects is None else objects)


@pytest.fixture(scope="module")
def examples():
  """Examples of one scene under several camera paths (one compilation)."""
  kinds = {"static": 0.0, "pan_left": 0.35, "dolly_in": 0.8, "orbit": 0.5}
  return {k: jax.device_get(world.example_from_scene(make_scene(k, a), CFG))
          for k, a in kinds.items()}


# ----------------------------------------------------------------------------- intersections


def test_intersect_plane():
  o = jnp.array([0.0, 1.0, 0.0])
  up = jnp.array([0.0, 1.0, 0.0])
  assert render.intersect_plane(o, jnp.array([0.0, -1.0, 0.0]), up, 0.0) == pytest.approx(1.0)
  # Depth-scaled directions: twice as long, half the parameter.
  assert render.intersect_plane(o, jnp.array([0.0, -2.0, 0.0]), up, 0.0) == pytest.approx(0.5)
  assert render.intersect_plane(o, jnp.array([3.0, -1.0, 4.0]), up, 0.0) == pytest.approx(1.0)
  assert np.isinf(render.intersect_plane(o, jnp.array([1.0, 0.0, 0.0]), up, 0.0))  # parallel
  assert np.isinf(render.intersect_plane(o, jnp.array([0.0, 1.0, 0.0]), up, 0.0))  # behind
  wall = render.intersect_plane(jnp.zeros(3), jnp.array([0.0, 0.0, 0.5]), jnp.array([0, 0, 1.0]),
                                WALL_Z)
  assert wall == pytest.approx(2 * WALL_Z)


def test_intersect_sphere():
  o = jnp.array([0.0, 0.0, -5.0])
  d = jnp.array([0.0, 0.0, 1.0])
  c = jnp.zeros(3)
  assert render.intersect_sphere(o, d, c, 1.0) == pytest.approx(4.0)
  # Off-axis at x = 0.6: the chord's half-length is 0.8.
  off = jnp.array([0.6, 0.0, -5.0])
  assert render.intersect_sphere(off, d, c, 1.0) == pytest.approx(4.2, abs=1e-5)
  assert render.intersect_sphere(o, 2 * d, c, 1.0) == pytest.approx(2.0)
  assert np.isinf(render.intersect_sphere(jnp.array([1.5, 0.0, -5.0]), d, c, 1.0))
  assert np.isinf(render.intersect_sphere(o, -d, c, 1.0))
  assert render.intersect_sphere(c, d, c, 1.0) == pytest.approx(1.0)  # inside: the exit
  # Batched: several rays against several spheres.
  lam = render.intersect_sphere(o[None, None], d[None, None],
                                jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])[None], 1.0)
  np.testing.assert_allclose(lam, [[4.0, 6.0]], rtol=1e-6)


def test_intersect_box():
  lo, hi = -jnp.ones(3), jnp.ones(3)
  lam, n = render.intersect_box(jnp.array([0.0, 0.0, -5.0]), jnp.array([0.0, 0.0, 1.0]), lo, hi)
  assert lam == pytest.approx(4.0)
  np.testing.assert_array_equal(n, [0, 0, -1])
  lam, n = render.intersect_box(jnp.array([-3.0, 0.5, 0.2]), jnp.array([2.0, 0.0, 0.0]), lo, hi)
  assert lam == pytest.approx(1.0)
  np.testing.assert_array_equal(n, [-1, 0, 0])
  # Oblique onto the top face: from (0.5, 3, 0) along (0.1, -1, 0) hits y = 1 at lam = 2.
  lam, n = render.intersect_box(jnp.array([0.5, 3.0, 0.0]), jnp.array([0.1, -1.0, 0.0]), lo, hi)
  assert lam == pytest.approx(2.0)
  np.testing.assert_array_equal(n, [0, 1, 0])
  lam, _ = render.intersect_box(jnp.array([0.0, 2.0, -5.0]), jnp.array([0.0, 0.0, 1.0]), lo, hi)
  assert np.isinf(lam)
  lam, _ = render.intersect_box(jnp.array([2.0, 0.5, 0.0]), jnp.array([1.0, 0.0, 0.0]), lo, hi)
  assert np.isinf(lam)  # behind the origin
  lam, n = render.intersect_box(jnp.zeros(3), jnp.array([0.0, 1.0, 0.0]), lo, hi)
  assert lam == pytest.approx(1.0)  # inside: the exit face
  np.testing.assert_array_equal(n, [0, 1, 0])


# ----------------------------------------------------------------------------- physics


def test_bounce_stays_above_floor_and_loses_height():
  config = world.SceneConfig(num_frames=150, fps=50.0, substeps=4)
  objects = make_objects(restitution=0.7)
  y = np.asarray(jax.jit(physics.simulate, static_argnums=1)(objects, config))[:, 0, 1]
  radius = 0.3
  assert np.all(y >= radius - 1e-5)
  peaks = [y[i] for i in range(1, len(y) - 1) if y[i] > y[i - 1] and y[i] >= y[i + 1]]
  heights = np.array(peaks) - radius
  assert len(heights) >= 3
  assert np.all(np.diff(heights) < 0)
  # Each bounce keeps restitution^2 of the height; the first drop starts at rest at 1.2.
  np.testing.assert_allclose(heights[0] / (1.2 - radius), 0.49, rtol=0.02)
  np.testing.assert_allclose(heights[1:3] / heights[:2], 0.49, rtol=0.03)
  # It settles on the floor after ~2 s.
  np.testing.assert_array_equal(y[-20:], np.float32(radius))


def test_roll_stops_at_the_friction_distance_and_rest_does_not_move():
  config = world.SceneConfig(num_frames=60, fps=40.0, substeps=8)
  p = np.asarray(jax.jit(physics.simulate, static_argnums=1)(make_objects(), config))
  box, rest = p[:, 1], p[:, 2]
  np.testing.assert_array_equal(box[:, 1], np.float32(0.25))  # stays on the floor
  assert np.all(np.diff(box[:, 0]) <= 0)  # never reverses
  travelled = box[0, 0] - box[-1, 0]
  np.testing.assert_allclose(travelled, 1.0 / (2 * 0.1 * 9.81), rtol=0.02)  # v^2 / (2 mu g)
  np.testing.assert_array_equal(rest, np.broadcast_to(rest[0], rest.shape))


# ----------------------------------------------------------------------------- cameras


def test_camera_paths():
  cam = make_scene("static").camera
  target = np.asarray(cam.target)

  camera_path = jax.jit(scene.camera_path, static_argnums=1)

  def path(kind, amount):
    centres, rotations = camera_path(cam._replace(kind=jnp.int32(CAMERA_KINDS.index(kind)),
                                                  amount=jnp.float32(amount)), CFG)
    return np.asarray(centres), np.asarray(rotations)

  c, r = path("static", 0.0)
  np.testing.assert_allclose(c, np.broadcast_to(c[0], c.shape))
  np.testing.assert_allclose(np.einsum("tij,tkj->tik", r, r), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-6)
  left0 = -r[0, 0]  # minus the camera's x axis (right) in the world
  c, r = path("pan_left", 0.3)
  np.testing.assert_allclose(c, np.broadcast_to(c[0], c.shape), atol=1e-6)
  assert r[-1, 2] @ left0 > 0.25  # turned left ...
  flat = r[:, 2, [0, 2]] / np.linalg.norm(r[:, 2, [0, 2]], axis=-1, keepdims=True)
  np.testing.assert_allclose(np.arccos(np.clip(flat[-1] @ flat[0], -1, 1)), 0.3, atol=1e-4)
  c, r = path("pan_right", 0.3)
  assert r[-1, 2] @ left0 < -0.25  # ... and right
  c, r = path("dolly_in", 0.8)
  np.testing.assert_allclose(c[-1] - c[0], 0.8 * r[0, 2], atol=1e-5)  # along the optical axis
  c, _ = path("dolly_out", 0.8)
  np.testing.assert_allclose(c[-1] - c[0], -0.8 * r[0, 2], atol=1e-5)
  c, r = path("orbit", 0.5)
  dist = np.linalg.norm(c - target, axis=-1)
  np.testing.assert_allclose(dist, dist[0], rtol=1e-5)  # on a circle around the target ...
  np.testing.assert_allclose(c[:, 1], c[0, 1], atol=1e-6)
  towards = (target - c) / dist[:, None]
  np.testing.assert_allclose(np.einsum("ti,ti->t", r[:, 2], towards), 1.0, atol=1e-5)  # ... at it


def test_pan_plucker_rays_match_extrinsics(examples):
  ex = examples["pan_left"]
  K, extr = ex.intrinsics, ex.extrinsics
  v, u = np.meshgrid(np.arange(CFG.height) + 0.5, np.arange(CFG.width) + 0.5, indexing="ij")
  pix = np.stack([u, v, np.ones_like(u)], -1)
  for t in range(CFG.num_frames):
    R, tr = extr[t, :, :3], extr[t, :, 3]
    centre = -R.T @ tr
    d = pix @ np.linalg.inv(K).T @ R
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    np.testing.assert_allclose(ex.plucker[t, ..., 3:], d, atol=1e-5)
    np.testing.assert_allclose(ex.plucker[t, ..., :3], np.cross(centre, d), atol=1e-5)
  # The directions turn with the pan while the moments stay those of one centre.
  assert np.abs(ex.plucker[-1, ..., 3:] - ex.plucker[0, ..., 3:]).max() > 0.2


# ----------------------------------------------------------------------------- renders


def test_depth_unprojects_onto_the_floor_and_wall(examples):
  ex = examples["orbit"]
  K = ex.intrinsics
  v, u = np.meshgrid(np.arange(CFG.height) + 0.5, np.arange(CFG.width) + 0.5, indexing="ij")
  pix = np.stack([u, v, np.ones_like(u)], -1)
  for t in (0, CFG.num_frames - 1):
    R, tr = ex.extrinsics[t, :, :3], ex.extrinsics[t, :, 3]
    points = (ex.depth[t, ..., None] * (pix @ np.linalg.inv(K).T) - tr) @ R
    background = ex.object_ids[t] < 0
    on_plane = np.minimum(np.abs(points[..., 1]), np.abs(points[..., 2] - WALL_Z))
    assert np.all(on_plane[background] < 1e-4)
    assert np.all(ex.depth[t] > 0)


def test_static_camera_background_is_constant(examples):
  ex = examples["static"]
  region = ex.object_region[..., 0].max(0) > 0
  region = np.pad(region, 1)
  near = np.zeros_like(region)
  for di in (-1, 0, 1):  # dilate by a pixel: anti-aliasing mixes the neighbours
    for dj in (-1, 0, 1):
      near |= np.roll(np.roll(region, di, 0), dj, 1)
  near = near[1:-1, 1:-1]
  assert 0.02 < near.mean() < 0.5
  video = ex.video
  still = video[:, ~near]
  np.testing.assert_array_equal(still, np.broadcast_to(still[0], still.shape))
  # The objects do move.
  assert np.abs(video[-1][near] - video[0][near]).max() > 0.3


def test_tracks_are_projected_centres_inside_their_masks(examples):
  checked = 0
  for ex in examples.values():
    K, extr, pos = ex.intrinsics, ex.extrinsics, ex.positions
    cam = np.einsum("tij,toj->toi", extr[:, :, :3], pos) + extr[:, None, :, 3]
    uv = (cam @ K.T)[..., :2] / cam[..., 2:]
    np.testing.assert_allclose(ex.tracks, uv, atol=1e-3)
    assert ex.track_visible[0].all()
    for t, k in zip(*np.nonzero(ex.track_visible)):
      u, v = ex.tracks[t, k]
      assert ex.masks[t, int(v), int(u), k] == 1
      assert ex.object_ids[t, int(v), int(u)] == k
      checked += 1
  assert checked > 100
  # Masks are one-hot, agree with the ids and with the objects-alone render.
  for ex in examples.values():
    assert ex.masks.sum(-1).max() == 1
    np.testing.assert_array_equal(ex.object_region[..., 0] > 0, ex.object_ids >= 0)
    np.testing.assert_array_equal(ex.sim_depth > 0, ex.object_ids >= 0)
    alpha = ex.sim_rgba[..., 3]
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert np.all(alpha[ex.object_ids >= 0] > 0)
    np.testing.assert_allclose(ex.sim_rgba[..., :3][alpha == 0], -1.0)
    inside = alpha == 1
    np.testing.assert_allclose(ex.sim_rgba[..., :3][inside], ex.video[inside], atol=1e-6)
    np.testing.assert_allclose(ex.sim_depth[ex.object_ids >= 0],
                               ex.depth[ex.object_ids >= 0])


def test_occluded_track_is_not_visible():
  objects = make_objects()
  # The green ball sits right in front of the blue box, on the camera's line of sight.
  cam_pos = np.array([0.0, 1.0, -1.5])
  box = np.array([0.7, 0.25, 2.0])
  front = cam_pos + 0.55 * (box - cam_pos)
  objects = objects._replace(position=objects.position.at[2].set(jnp.asarray(front)),
                             half_size=objects.half_size.at[2].set(0.4))

  @jax.jit
  def visibility(camera, objects):
    extr = scene.extrinsics(camera, CFG)[:1]
    return render.object_tracks(scene.intrinsics(CFG), extr, objects.position[None], objects,
                                CFG)[1]

  visible = visibility(make_scene("static").camera, objects)
  np.testing.assert_array_equal(visible[0], [True, False, True])


# ----------------------------------------------------------------------------- 3D cache


def test_context_at_frame_zero_and_static_camera(examples):
  for ex in examples.values():
    assert ex.visibility[0].mean() > 0.99
    seen = ex.visibility[0, ..., 0] > 0
    np.testing.assert_array_equal(ex.context[0][seen], ex.first_frame[seen])
  ex = examples["static"]
  assert ex.visibility.min() == 1
  np.testing.assert_array_equal(ex.context, np.broadcast_to(ex.first_frame,
                                                               ex.context.shape))


def test_context_follows_the_camera(examples):
  ex = examples["pan_left"]
  fraction = ex.visibility.mean((1, 2, 3))
  assert fraction[-1] < 0.8
  assert np.all(np.diff(fraction) <= 1e-6)
  # A 3D-consistent cache: where it sees the static background it matches the rendered video.
  for kind in ("pan_left", "dolly_in", "orbit"):
    ex = examples[kind]
    t = CFG.num_frames - 1
    ok = ((ex.background_visibility[t, ..., 0] > 0) & (ex.object_region[t, ..., 0] == 0))
    assert ok.mean() > 0.3
    err = np.abs(ex.background_context[t][ok] - ex.video[t][ok]).mean()
    shifted = np.abs(ex.video[0][ok] - ex.video[t][ok]).mean()
    assert err < 0.08 and err < 0.5 * shifted, (kind, err, shifted)
  # The background-only cache has holes where the objects were in frame 0.
  ex = examples["static"]
  np.testing.assert_array_equal(ex.background_visibility[0, ..., 0],
                                ex.object_region[0, ..., 0] == 0)


# ----------------------------------------------------------------------------- captions


def test_captions_match_codes(examples):
  ex = examples["pan_left"]
  text = world.caption(ex)
  assert text == ("a red ball bounces and a blue box slides and a green ball rests, "
                  "camera pans left")
  np.testing.assert_array_equal(ex.caption_tokens, world.tokenize(text))
  assert world.detokenize(ex.caption_tokens) == text
  codes = ex._replace(object_valid=np.array([True, False, False]), camera_kind=np.int32(5))
  assert world.caption(codes) == "a red ball bounces, camera orbits"
  tokens = controls.caption_tokens(jnp.int32(5), ex.shapes, ex.colours, ex.motion_kinds,
                                   jnp.array([True, False, False]))
  np.testing.assert_array_equal(tokens, world.tokenize("a red ball bounces, camera orbits"))
  with pytest.raises(ConfigError, match="caption"):
    world.tokenize("a red dragon flies")


def test_batch_is_deterministic_and_matches_single_examples():
  key = jax.random.key(3)
  b = jax.device_get(world.batch(key, 6, CFG))
  again = jax.device_get(world.batch(key, 6, CFG))
  for name in b._fields:
    np.testing.assert_array_equal(getattr(b, name), getattr(again, name))
  assert b.video.shape == (6, 12, 32, 32, 3)
  assert b.plucker.shape == (6, 12, 32, 32, 6)
  assert b.caption_tokens.shape == (6, world.CAPTION_LENGTH)
  assert np.abs(b.video[0] - b.video[1]).max() > 0.1  # different keys differ
  one = jax.device_get(world.example_from_scene(
      world.sample_scene(jax.random.split(key, 6)[4], CFG), CFG))
  for name in ("video", "tracks", "context", "caption_tokens", "camera_kind"):
    np.testing.assert_allclose(getattr(b, name)[4], getattr(one, name), atol=1e-5)
  for i in range(6):
    codes = jax.tree.map(lambda a, i=i: a[i], b)
    np.testing.assert_array_equal(b.caption_tokens[i], world.tokenize(world.caption(codes)))
    assert b.video[i].min() >= -1 and b.video[i].max() <= 1
    assert b.object_valid[i, 0]


def test_config_restricts_choices_and_is_validated():
  config = dataclasses.replace(CFG, camera_kinds=("orbit",), motion_kinds=("rest",),
                               shapes=("box",), min_objects=3)
  s = world.sample_scene(jax.random.key(0), config)
  assert int(s.camera.kind) == CAMERA_KINDS.index("orbit")
  assert np.all(np.asarray(s.objects.motion) == 2) and np.all(np.asarray(s.objects.shape) == 1)
  assert np.all(np.asarray(s.objects.valid))
  assert len(set(np.asarray(s.objects.colour).tolist())) == 3
  for bad in ({"max_objects": 4}, {"camera_kinds": ("zoom",)}, {"height": 0},
              {"min_objects": 2, "max_objects": 1}, {"fps": -1.0}):
    with pytest.raises(ConfigError):
      world.SceneConfig(**bad)
