"""Device meshes, particle shardings and JAX's multi-process runtime.

A mesh is described by a string such as ``"data:8"`` or ``"data:2,model:4"`` (``-1`` fills the
remaining devices): particles are split over ``data``, the latent (token) axis over ``model``.
Every mesh has both axes (a missing one has size 1), so code never branches on the layout.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from composed_vi.errors import ConfigError, fail

AXES = ("data", "model")


def parse_mesh(spec: str, num_devices: int, field: str = "mesh") -> dict[str, int]:
  """``"data:2,model:-1"`` -> ``{"data": 2, "model": 4}`` for 8 devices.

  The product of the sizes must divide ``num_devices`` (a mesh may use fewer devices than
  there are, in one process); ``-1`` (at most once) takes every remaining device.
  """
  if not isinstance(spec, str) or not spec.strip():
    fail(field, "a string such as 'data:8' or 'data:2,model:4'", spec)
  sizes: dict[str, int] = {}
  for part in spec.split(","):
    name, sep, size = part.strip().partition(":")
    if not sep or name not in AXES:
      fail(field, f"comma-separated 'axis:size' entries with axis in {list(AXES)}", spec)
    if name in sizes:
      fail(field, "each axis at most once", spec)
    try:
      value = int(size)
    except ValueError:
      fail(field, "integer axis sizes (or -1 to fill)", spec)
    if value == 0 or value < -1:
      fail(field, "axis sizes >= 1 (or -1 to fill)", spec)
    sizes[name] = value
  fills = [n for n, v in sizes.items() if v == -1]
  if len(fills) > 1:
    fail(field, "at most one axis of size -1", spec)
  fixed = math.prod(v for v in sizes.values() if v != -1)
  if num_devices % fixed:
    fail(field, f"axis sizes whose product divides the {num_devices} available devices "
         f"(this mesh's product is {fixed})", spec)
  if fills:
    sizes[fills[0]] = num_devices // fixed
  return {name: sizes.get(name, 1) for name in AXES}


def make_mesh(spec: str, num_particles: int | None = None,
              devices=None) -> jax.sharding.Mesh:
  """Builds the ``("data", "model")`` mesh of ``spec`` on ``devices`` (all devices by default).

  Refuses (naming the fields) a mesh that does not divide the devices, or a ``data`` axis that
  does not divide ``num_particles``. In several processes the mesh must span every device.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = parse_mesh(spec, len(devices))
  used = math.prod(sizes.values())
  if used != len(devices) and jax.process_count() > 1:
    fail("mesh", f"a mesh over all {len(devices)} devices of the {jax.process_count()} "
         "processes", f"{spec!r} ({used} devices)")
  if num_particles is not None and num_particles % sizes["data"]:
    fail("num_particles", f"a multiple of the mesh's data axis ({sizes['data']}, mesh "
         f"{spec!r})", num_particles)
  shape = tuple(sizes[a] for a in AXES)
  # Auto axes: jit partitions the experts' computations; the SVGD kernel's collectives are
  # explicit under shard_map.
  auto = (jax.sharding.AxisType.Auto,) * len(AXES)
  return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices[:used])


def particle_spec(mesh, shape) -> P:
  """``P('data', 'model' on the first event axis it divides)`` for particles ``(N, *shape)``."""
  model = mesh.shape["model"]
  event = [None] * len(shape)
  if model > 1:
    for i, size in enumerate(shape):
      if size % model == 0:
        event[i] = "model"
        break
  return P("data", *event)


def particle_sharding(mesh, shape) -> NamedSharding:
  return NamedSharding(mesh, particle_spec(mesh, shape))


def constrain_particles(x, mesh):
  """``with_sharding_constraint`` to the particle layout (identity without a mesh)."""
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, particle_sharding(mesh, x.shape[1:]))


def replicate(tree, mesh):
  """Places a pytree of host arrays on every device of ``mesh`` (works across processes).

  Arrays already placed on ``mesh`` (such as sharded backbone parameters) are kept as they are.
  """
  sharding = NamedSharding(mesh, P())

  def put(leaf):
    if not isinstance(leaf, (np.ndarray, jax.Array, np.generic, float, int)):
      return leaf
    if (isinstance(leaf, jax.Array) and isinstance(leaf.sharding, NamedSharding)
        and leaf.sharding.mesh == mesh):
      return leaf  # already placed on this mesh (e.g. sharded backbone parameters)
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      data = np.asarray(jax.random.key_data(leaf))
      arr = jax.make_array_from_callback(data.shape, sharding, lambda idx: data[idx])
      return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(leaf))
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree.map(put, tree)


def to_host(x) -> np.ndarray:
  """The full value of a (possibly multi-process) global array as numpy, on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def local_value(x) -> np.ndarray:
  """The value of a replicated array (a diagnostic scalar) from this process's first shard."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_shards[0].data)
  return np.asarray(x)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, cpu_collectives: str = "gloo") -> bool:
  """Starts JAX's distributed runtime when several processes are requested.

  Arguments fall back to ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID``; on a TPU pod or under SLURM / Open MPI, ``auto=True`` (all unset but
  ``JAX_DISTRIBUTED=auto``) lets JAX detect them. Returns whether the runtime was started.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and env.get("JAX_NUM_PROCESSES"):
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and env.get("JAX_PROCESS_ID"):
    process_id = int(env["JAX_PROCESS_ID"])
  auto = env.get("JAX_DISTRIBUTED", "").lower() == "auto"
  if coordinator_address is None and num_processes is None and not auto:
    return False
  if not auto:
    if coordinator_address is None or num_processes is None or process_id is None:
      raise ConfigError(
          "distributed: expected coordinator_address, num_processes and process_id together "
          f"(flags or JAX_* variables), got {coordinator_address!r}, {num_processes!r}, "
          f"{process_id!r}")
    if not 0 <= process_id < num_processes:
      fail("process_id", f"an integer in [0, {num_processes})", process_id)
  if cpu_collectives:
    # CPU devices of different processes exchange data through gloo (accelerators use their
    # own collectives); set before the backends start, so no device query comes first.
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  return True


def is_primary() -> bool:
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches ``name`` (nothing to wait for with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
