"""``composed_vi.pytree``: frozen dataclasses that are pytrees, static fields in the treedef."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from composed_vi import pytree


@pytree.dataclass
class Scaled:
  x: jax.Array
  scale: float = pytree.field(pytree_node=False, default=2.0)

  def apply(self):
    return self.x * self.scale


@pytree.dataclass
class Checked:
  """A custom ``__init__`` that converts and validates: never run when unflattening."""

  values: jax.Array

  def __init__(self, values):
    values = np.asarray(values, np.float32)  # would fail on a tracer
    if values.ndim != 1:
      raise ValueError("values: expected a 1-D array")
    object.__setattr__(self, "values", jnp.asarray(values / values.sum()))


def test_children_and_static_fields():
  s = Scaled(jnp.arange(3.0), 3.0)
  leaves, treedef = jax.tree.flatten(s)
  assert len(leaves) == 1 and np.array_equal(leaves[0], np.arange(3.0))
  again = jax.tree.unflatten(treedef, leaves)
  assert isinstance(again, Scaled) and again.scale == 3.0
  # The static field is part of the structure: another value is another treedef.
  assert jax.tree.structure(Scaled(jnp.arange(3.0), 4.0)) != treedef
  keys = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(s)[0]]
  assert keys == [".x"]


def test_frozen_and_replace():
  s = Scaled(jnp.ones(2))
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.x = jnp.zeros(2)
  t = s.replace(scale=5.0)
  assert t.scale == 5.0 and s.scale == 2.0 and t.x is s.x


def test_unflatten_does_not_call_init_and_jit_sees_static_fields():
  c = Checked([1.0, 3.0])
  np.testing.assert_allclose(c.values, [0.25, 0.75])
  doubled = jax.jit(lambda c: jax.tree.map(lambda v: 2 * v, c))(c)
  assert isinstance(doubled, Checked)
  np.testing.assert_allclose(doubled.values, [0.5, 1.5])  # not renormalised by __init__

  @jax.jit
  @chex.assert_max_traces(n=2)
  def apply(s):
    return s.apply()

  np.testing.assert_allclose(apply(Scaled(jnp.ones(2), 2.0)), [2.0, 2.0])
  apply(Scaled(jnp.zeros(2), 2.0))  # same static field: no new trace
  np.testing.assert_allclose(apply(Scaled(jnp.ones(2), 3.0)), [3.0, 3.0])  # retraced once
