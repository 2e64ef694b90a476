"""Frozen dataclasses that are JAX pytrees (the core's experts and composed targets).

``@pytree.dataclass`` makes a frozen dataclass whose fields are pytree children, except those
declared ``pytree.field(pytree_node=False)``, which are static (hashable metadata: part of the
jit cache key). Unflattening rebuilds an instance without calling ``__init__``, so a class may
validate and convert its inputs in a custom ``__init__`` (tracers then pass through untouched).
``replace(**changes)`` returns a copy with fields replaced. The same contract as
``flax.struct.dataclass``, without importing Flax (and with it absl) into the core.
"""

from __future__ import annotations

import dataclasses

import jax

_STATIC = "pytree_node"


def field(pytree_node: bool = True, **kwargs):
  """A dataclass field; ``pytree_node=False`` makes it static metadata."""
  metadata = dict(kwargs.pop("metadata", None) or {})
  metadata[_STATIC] = pytree_node
  return dataclasses.field(metadata=metadata, **kwargs)


def dataclass(cls):
  """Decorates ``cls`` as a frozen dataclass registered as a pytree (see the module doc)."""
  cls = dataclasses.dataclass(frozen=True)(cls)
  fields = dataclasses.fields(cls)
  data = tuple(f.name for f in fields if f.metadata.get(_STATIC, True))
  meta = tuple(f.name for f in fields if not f.metadata.get(_STATIC, True))

  def flatten_with_keys(x):
    children = tuple((jax.tree_util.GetAttrKey(n), getattr(x, n)) for n in data)
    return children, tuple(getattr(x, n) for n in meta)

  def flatten(x):
    return tuple(getattr(x, n) for n in data), tuple(getattr(x, n) for n in meta)

  def unflatten(aux, children):
    obj = object.__new__(cls)
    for n, v in zip(meta, aux):
      object.__setattr__(obj, n, v)
    for n, v in zip(data, children):
      object.__setattr__(obj, n, v)
    return obj

  jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
  cls.replace = lambda self, **changes: dataclasses.replace(self, **changes)
  return cls
