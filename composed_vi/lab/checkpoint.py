"""Sampler and training checkpoints with orbax: a state pytree plus JSON records (diagnostics,
losses), each with a fingerprint of the state that is checked on restore.

A sampler state is a NamedTuple of arrays (particles, level index, PRNG key, method-specific
fields). Typed PRNG keys are stored as their raw ``key_data`` and re-wrapped on restore. Orbax
writes each checkpoint to a temporary folder and renames it when complete, so a run killed
mid-save resumes from the previous complete checkpoint.

A checkpoint damaged after it was written (a truncated or overwritten data file, a missing file,
unreadable metadata: what a partial copy or a failing disk leaves) fails to restore or to match
its fingerprint; :meth:`Checkpoints.restore_intact` then falls back to the newest intact one,
with one warning naming the skipped step, and moves the damaged ones to
``<workdir>/damaged_checkpoints/`` (kept for inspection, out of the way of the steps the resumed
run writes again). When no checkpoint is intact the run stops with a one-line error naming the
folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from composed_vi import distributed, io
from composed_vi.errors import ConfigError

_KEY_SUFFIX = "__key_data"
_FINGERPRINT = "fingerprint"
DAMAGED = "damaged_checkpoints"


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


_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _leaf_fingerprint(x) -> jax.Array:
  """Two uint32 sums of the leaf's bits: plain, and weighted by position (so a swap or an
  overwrite of any bytes changes them); wrapping arithmetic, exact and order-free."""
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  elif x.dtype.itemsize == 8:
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  else:
    bits = jax.lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
  bits = bits.reshape(-1)
  weights = jnp.arange(bits.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) + 1
  return jnp.stack([jnp.sum(bits, dtype=jnp.uint32),
                    jnp.sum(bits * weights, dtype=jnp.uint32)])


@jax.jit
def _fingerprints(tree):
  return [_leaf_fingerprint(x) for x in jax.tree.leaves(tree)]


def fingerprint(tree) -> list[int]:
  """The state's fingerprint: two 32-bit sums per leaf, in leaf order (one pass on device)."""
  out = _fingerprints(tree)
  return [int(v) for leaf in out for v in np.asarray(distributed.to_host(leaf)).tolist()]


class DamagedCheckpointError(ValueError):
  pass


_STORAGE_TEXT = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                 "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES}


def _storage_errno(e: BaseException) -> int | None:
  """The storage errno behind an exception (orbax and TensorStore wrap the OSError in text)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in io.STORAGE_ERRNOS:
      return e.errno
    for text, code in _STORAGE_TEXT.items():
      if text in str(e):
        return code
    e = e.__cause__ or e.__context__
  return None


class Checkpoints:
  """Synchronous orbax checkpoints of a pytree plus a list of JSON records (diagnostics, losses)
  under ``directory``; the last ``max_to_keep`` steps are kept."""

  def __init__(self, directory: str, records: str = "records", max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._records = records  # the JSON item's name (and its key)
    self._max_to_keep = max_to_keep
    self._manager = self._open()

  def _open(self):
    options = ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(self.directory, options=options,
                                 item_names=("state", self._records))

  @property
  def manager(self) -> ocp.CheckpointManager:
    return self._manager

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, tree, records: list[dict]) -> None:
    """Saves ``tree`` and ``records`` as ``step``; a full or read-only disk raises an
    ``OSError`` naming the folder (orbax leaves only its temporary folder, never ``step``)."""
    payload = {self._records: records, _FINGERPRINT: fingerprint(tree)}
    args = ocp.args.Composite(**{"state": ocp.args.StandardSave(tree),
                                 self._records: ocp.args.JsonSave(payload)})
    try:
      self._manager.save(step, args=args, force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - re-raised unless the disk refused the write
      code = _storage_errno(e)
      if code is None:
        raise
      raise io.StorageError(code, os.strerror(code), self.directory) from None

  def restore(self, like, step: int | None = None):
    """``(tree, records)`` with the structure, dtypes and shardings of the pytree ``like``;
    :class:`DamagedCheckpointError` when the restored state does not match its fingerprint."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    out = self._manager.restore(step, args=ocp.args.Composite(**{
        "state": ocp.args.StandardRestore(abstract), self._records: ocp.args.JsonRestore()}))
    payload = out[self._records]
    expected = payload.get(_FINGERPRINT)
    if expected is not None and fingerprint(out["state"]) != list(expected):
      raise DamagedCheckpointError("its data do not match the fingerprint saved with them")
    return out["state"], list(payload[self._records])

  def _step_folders(self) -> dict[int, str]:
    """Every step folder on disk, listed by orbax or not (one whose metadata is gone)."""
    folders = {}
    with contextlib.suppress(FileNotFoundError):
      for name in os.listdir(self.directory):
        if name.isdigit() and os.path.isdir(os.path.join(self.directory, name)):
          folders[int(name)] = os.path.join(self.directory, name)
    return folders

  def restore_intact(self, like, what: str = "step"):
    """``(step, tree, records)`` of the newest intact checkpoint, or ``None`` when there is no
    checkpoint. Damaged ones newer than it are skipped with one warning each and moved aside;
    ``ConfigError`` (one line) when checkpoints exist but none is intact."""
    folders = self._step_folders()
    listed = set(self._manager.all_steps())
    if folders:
      quiet_closed_loop_callbacks()
    damaged: dict[int, str] = {}
    found = None
    for step in sorted(set(folders) | listed, reverse=True):
      if step not in listed:
        damaged[step] = "no checkpoint metadata"
      else:
        try:
          tree, records = self.restore(like, step)
          found = (step, tree, records)
          break
        except Exception as e:  # noqa: BLE001 - any failure to read it means damaged
          damaged[step] = _one_line(e)
      logging.warning("checkpoint at %s %d in %s is damaged (%s); skipped", what, step,
                      self.directory, damaged[step])
    if not damaged:
      return found
    if found is None:
      raise ConfigError(f"checkpoints: no intact checkpoint in {self.directory} (damaged: "
                        f"{', '.join(f'{what} {s}' for s in sorted(damaged))}); move the "
                        "folder away to start the run over")
    self._move_aside(sorted(damaged), folders)
    return found

  def _move_aside(self, steps, folders) -> None:
    """Moves damaged step folders to ``<parent>/damaged_checkpoints/`` (process 0), so that the
    resumed run can write those steps again; then reopens the manager."""
    self._manager.close()
    if distributed.is_primary():
      target_dir = os.path.join(os.path.dirname(self.directory), DAMAGED)
      os.makedirs(target_dir, exist_ok=True)
      for step in steps:
        if step in folders:
          dest = os.path.join(target_dir, str(step))
          k = 1
          while os.path.exists(dest):
            dest = os.path.join(target_dir, f"{step}.{k}")
            k += 1
          shutil.move(folders[step], dest)
    distributed.barrier("composed_vi.checkpoints.moved")
    self._manager = self._open()

  def close(self) -> None:
    self._manager.close()


def _is_closed_loop_callback(exc_type, exc, tb) -> bool:
  """A TensorStore read that completes after orbax gave up on a damaged checkpoint calls back
  into orbax's closed asyncio loop; harmless, but Python prints its traceback."""
  if not (exc_type is RuntimeError and "Event loop is closed" in str(exc)):
    return False
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and "asyncio" in tb.tb_frame.f_code.co_filename


def quiet_closed_loop_callbacks() -> None:
  """Drops those late callbacks' tracebacks (and only those), process-wide, once. The same
  happens when a checkpoint write fails (full disk); the launcher calls this at start."""
  if getattr(sys.excepthook, "_composed_vi", False):
    return
  previous_hook, previous_thread_hook = sys.excepthook, threading.excepthook
  previous_unraisable = sys.unraisablehook

  def hook(exc_type, exc, tb):
    if not _is_closed_loop_callback(exc_type, exc, tb):
      previous_hook(exc_type, exc, tb)

  def thread_hook(args):
    if not _is_closed_loop_callback(args.exc_type, args.exc_value, args.exc_traceback):
      previous_thread_hook(args)

  def unraisable_hook(args):  # TensorStore reports its callbacks' errors here
    if not _is_closed_loop_callback(args.exc_type, args.exc_value, args.exc_traceback):
      previous_unraisable(args)

  hook._composed_vi = True
  sys.excepthook, threading.excepthook = hook, thread_hook
  sys.unraisablehook = unraisable_hook


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  text = text[:200] + "..." if len(text) > 200 else text
  return f"{type(e).__name__}: {text}"


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

  def restore_intact(self, like, what: str = "level"):
    """``(level, state, diagnostics)`` of the newest intact checkpoint, or ``None``."""
    return super().restore_intact(like, what)
