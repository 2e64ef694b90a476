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


class SamplerCheckpoints:
  """Checkpoints of a sampler run under ``directory`` (steps are level indices)."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "diagnostics"))

  def latest_level(self) -> int | None:
    return self._manager.latest_step()

  def save(self, level: int, state, diagnostics: list[dict]) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(_encode(state)),
                              diagnostics=ocp.args.JsonSave({"levels": diagnostics}))
    self._manager.save(level, args=args, force=True)
    self._manager.wait_until_finished()

  def restore(self, like, level: int | None = None):
    """Restores ``(state, diagnostics)`` with the structure, dtypes and shardings of ``like``."""
    level = self.latest_level() if level is None else level
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _encode(like))
    out = self._manager.restore(level, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), diagnostics=ocp.args.JsonRestore()))
    return _decode(like, out["state"]), list(out["diagnostics"]["levels"])

  def close(self) -> None:
    self._manager.close()
