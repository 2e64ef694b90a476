"""The world's physics: objects simulated under gravity with floor bounces, friction and the
back wall (:func:`simulate`), one substep at a time (:func:`substep`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from composed_vi.world.scene import FLOOR_Y, WALL_Z, Objects, SceneConfig

#: Rebound speed (m/s) under which a bouncing object settles on the floor.
SETTLE_SPEED = 0.3


def _substep(position, velocity, objects: Objects, dt, gravity):
  """One physics step of every object: ballistic flight, floor bounces, friction, back wall.

  The floor contact is solved by its time of impact inside the step, so a bounce keeps exactly
  ``restitution`` of the impact speed (peak heights shrink by ``restitution^2``) and an object
  never sinks below the floor.
  """
  half = objects.half_size
  hh = half[:, 1] + FLOOR_Y
  y, vy = position[:, 1], velocity[:, 1]
  supported = (y <= hh + 1e-5) & (jnp.abs(vy) <= 1e-6)
  y_free = y + vy * dt - 0.5 * gravity * dt * dt
  vy_free = vy - gravity * dt
  hits = y_free < hh
  disc = jnp.maximum(vy * vy + 2.0 * gravity * jnp.maximum(y - hh, 0.0), 0.0)
  impact = jnp.clip((vy + jnp.sqrt(disc)) / gravity, 0.0, dt)
  rebound = -objects.restitution * (vy - gravity * impact)
  left = dt - impact
  settles = rebound < SETTLE_SPEED
  y_bounce = jnp.where(settles, hh, jnp.maximum(hh + rebound * left - 0.5 * gravity * left ** 2,
                                                hh))
  vy_bounce = jnp.where(settles, 0.0, rebound - gravity * left)
  y_new = jnp.where(supported, hh, jnp.where(hits, y_bounce, y_free))
  vy_new = jnp.where(supported, 0.0, jnp.where(hits, vy_bounce, vy_free))
  # Friction decelerates the horizontal motion of objects resting on the floor, never reverses it.
  horizontal = velocity[:, jnp.array([0, 2])]
  speed = jnp.linalg.norm(horizontal, axis=-1)
  slowed = jnp.maximum(speed - objects.friction * gravity * dt, 0.0)
  factor = jnp.where(supported, slowed / jnp.maximum(speed, 1e-12), 1.0)
  vx, vz = horizontal[:, 0] * factor, horizontal[:, 1] * factor
  x = position[:, 0] + vx * dt
  z = position[:, 2] + vz * dt
  # The back wall reflects with the same restitution.
  limit = WALL_Z - half[:, 2]
  through = z > limit
  z = jnp.where(through, 2.0 * limit - z, z)
  vz = jnp.where(through, -objects.restitution * jnp.abs(vz), vz)
  return jnp.stack([x, y_new, z], -1), jnp.stack([vx, vy_new, vz], -1)


def simulate(objects: Objects, config: SceneConfig) -> jax.Array:
  """Object centres at every frame, ``(T, O, 3)``; frame 0 is the initial state.

  ``config.substeps`` steps of ``1 / (fps * substeps)`` seconds per frame.
  """
  dt = 1.0 / (config.fps * config.substeps)

  def frame(state, _):
    def step(_, s):
      return _substep(s[0], s[1], objects, dt, config.gravity)

    return jax.lax.fori_loop(0, config.substeps, step, state), state[0]

  state = (objects.position.astype(jnp.float32), objects.velocity.astype(jnp.float32))
  _, positions = jax.lax.scan(frame, state, None, length=config.num_frames)
  return positions
