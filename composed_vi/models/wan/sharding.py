"""Parameter sharding rules for the Wan port on the engine's ``("data", "model")`` mesh.

* **Tensor parallelism** on ``model``: a linear kernel ``(in, out)`` is split on its output
  features for the projections that open a block (q, k, v, the FFN's first layer, embeddings)
  and on its input features for those that close it (attention output, the FFN's second
  layer), Megatron style, so each pair needs one reduction.
* **FSDP** on ``data``: the other axis of every matrix is split over ``data`` (gathered by jit
  when used), so parameters take ``1 / (data * model)`` of their size per device.
* Only kernels are split: vectors (biases, norms), modulation tables and anything that does
  not divide stay replicated.

``param_sharding(params, mesh)`` gives a pytree of ``NamedSharding`` for an ``nnx.State`` or a
``{path: shape}`` dict; ``memory_per_device`` is the estimate of the README's table.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Projections whose *input* features are split on the tensor axis (they close a block).
_CLOSING = ("to_out", "proj_out", "fc2", "linear_2")


def _closes(path: tuple) -> bool:
  names = [str(p) for p in path]
  return any(n in _CLOSING or n.startswith("to_out") for n in names[-3:])


def param_spec(path: tuple, shape: tuple[int, ...], mesh, fsdp: str = "data",
               tensor: str = "model") -> P:
  """The ``PartitionSpec`` of one parameter (see the module docstring)."""
  sizes = dict(mesh.shape)
  spec: list[Any] = [None] * len(shape)
  if len(shape) < 2 or str(path[-1]) != "kernel":
    return P(*spec)
  out_axis, in_axis = len(shape) - 1, len(shape) - 2  # kernels are (..., in, out)
  t_axis, f_axis = (in_axis, out_axis) if _closes(path) else (out_axis, in_axis)
  if sizes.get(tensor, 1) > 1 and shape[t_axis] % sizes[tensor] == 0:
    spec[t_axis] = tensor
  if sizes.get(fsdp, 1) > 1 and shape[f_axis] % sizes[fsdp] == 0:
    spec[f_axis] = fsdp
  return P(*spec)


def param_sharding(params, mesh, **kwargs):
  """``NamedSharding`` for every parameter of ``params`` (an ``nnx.State`` or ``{path: shape}``)."""
  if isinstance(params, dict) and all(isinstance(v, tuple) for v in params.values()):
    return {path: NamedSharding(mesh, param_spec(path, shape, mesh, **kwargs))
            for path, shape in params.items()}
  flat = nnx.to_flat_state(params)
  return nnx.from_flat_state([
      (path, NamedSharding(mesh, param_spec(tuple(path), tuple(v.get_value().shape), mesh,
                                            **kwargs)))
      for path, v in flat])


def memory_per_device(shapes: dict, bytes_per_param: int, data: int, model: int) -> float:
  """Parameter bytes per device under these rules (an upper bound: replicated vectors count
  fully)."""
  class _Mesh:
    shape = {"data": data, "model": model}

  total = 0
  for path, shape in shapes.items():
    spec = param_spec(path, shape, _Mesh)
    split = math.prod({"data": data, "model": model}[a] for a in spec if a is not None)
    total += math.prod(shape) * bytes_per_param / split
  return total


def place(params, mesh, **kwargs):
  """``jax.device_put`` of an ``nnx.State`` with :func:`param_sharding`."""
  return jax.device_put(params, param_sharding(params, mesh, **kwargs))
