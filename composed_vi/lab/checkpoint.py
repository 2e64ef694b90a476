"""Sampler checkpoints with orbax: the state pytree plus the diagnostics recorded so far.

A sampler state is a NamedTuple of arrays (particles, level index, PRNG key, method-specific
fields). Typed PRNG keys are stored as their raw ``key_data`` and re-wrapped on restore. Orbax
writes each checkpoint to a temporary folder and renames it when complete, so a run killed
mid-save resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

_KEY_SUFFIX = "__key_data"


def _encode(state) -> dict:
  out = {}
  for name, value in state._asdict().items():
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype,
                                                              jax.dtypes.prng_key):
      out[name + _KEY_SUFFIX] = jax.random.key_data(value)
    else:
      out[name] = value
  return out


def _decode(like, tree: dict):
  fields = {}
  for name, value in like._asdict().items():
    if name + _KEY_SUFFIX in tree:
      fields[name] = jax.random.wrap_key_data(tree[name + _KEY_SUFFIX],
                                              impl=jax.random.key_impl(value))
    else:
      fields[name] = tree[name]
  return type(like)(**fields)


class Checkpoints:
  """Synchronous orbax checkpoints of a pytree plus a list of JSON records (diagnostics, losses)
  under ``directory``; the last ``max_to_keep`` steps are kept."""

  def __init__(self, directory: str, records: str = "records", max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._records = records  # the JSON item's name (and its key)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", records))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, tree, records: list[dict]) -> None:
    args = ocp.args.Composite(**{"state": ocp.args.StandardSave(tree),
                                 self._records: ocp.args.JsonSave({self._records: records})})
    self._manager.save(step, args=args, force=True)
    self._manager.wait_until_finished()

  def restore(self, like, step: int | None = None):
    """``(tree, records)`` with the structure, dtypes and shardings of the pytree ``like``."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    out = self._manager.restore(step, args=ocp.args.Composite(**{
        "state": ocp.args.StandardRestore(abstract), self._records: ocp.args.JsonRestore()}))
    return out["state"], list(out[self._records][self._records])

  def close(self) -> None:
    self._manager.close()


class SamplerCheckpoints(Checkpoints):
  """Checkpoints of a sampler state (steps are level indices) and its diagnostics so far."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    super().__init__(directory, records="diagnostics", max_to_keep=max_to_keep)

  def latest_level(self) -> int | None:
    return self.latest_step()

  def save(self, level: int, state, diagnostics: list[dict]) -> None:
    super().save(level, _encode(state), diagnostics)

  def restore(self, like, level: int | None = None):
    """Restores ``(state, diagnostics)`` with the structure, dtypes and shardings of ``like``."""
    tree, diagnostics = super().restore(_encode(like), level)
    return _decode(like, tree), diagnostics
