"""Atomic file output: every file is written under a temporary name in its own folder, then
renamed with ``os.replace``, so a reader never sees half a file under the final name.

:func:`atomic_path` yields the temporary path (for tools that write a file themselves, e.g.
ffmpeg or Chromium); :func:`atomic_open` yields an open file and ``fsync``s it before the
rename. Either way the file gets the usual permissions, ``0o666`` less the umask
(:func:`file_mode`), rather than ``mkstemp``'s ``0o600``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile

import numpy as np

_FALLBACK_MODE = 0o644  # where the umask cannot be read without changing it


def file_mode() -> int:
  """``0o666`` less the process umask, read from ``/proc/self/status`` (``os.umask`` can only be
  read by setting it, which races with other threads creating files); ``0o644`` where that file
  does not say."""
  with contextlib.suppress(OSError, ValueError):
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return 0o666 & ~int(line.split()[1], 8)
  return _FALLBACK_MODE


def _temporary_next_to(path: str, suffix: str) -> str:
  """Creates an empty temporary file in ``path``'s folder (made if missing) and returns its path:
  ``.<name>.<random>.tmp<suffix>``."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp" + suffix)
  os.close(fd)
  return tmp


def _publish(tmp: str, path: str) -> None:
  """Gives ``tmp`` the usual permissions and renames it to ``path`` (atomic on one filesystem)."""
  os.chmod(tmp, file_mode())
  os.replace(tmp, path)


class StorageError(OSError):
  """The file system refused a write (full, over quota, read-only, no permission): one line
  naming the path, raised after the temporary file is removed, so nothing half-written remains
  under the final name."""

  def __str__(self):
    return f"cannot write {self.filename}: {self.strerror} (errno {self.errno})"


#: errnos of a file system that cannot take a write.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.EFBIG)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
  """Yields a temporary path next to ``path`` that ends in ``suffix`` (for tools that infer the
  format from the name, e.g. ``".mp4"``).

  The file exists (empty) when yielded; the caller may write it or remove and recreate it. On
  success it gets mode :func:`file_mode` and is renamed to ``path``; on an exception it is
  removed and ``path`` is left as it was.
  """
  try:
    tmp = _temporary_next_to(path, suffix)
  except OSError as e:
    _raise_storage_error(e, path)
    raise
  try:
    yield tmp
    _publish(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    _raise_storage_error(e, path)
    raise


def _raise_storage_error(e: BaseException, path: str) -> None:
  """Raises :class:`StorageError` naming ``path`` when ``e`` is a refused write; else returns."""
  if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS and not isinstance(e, StorageError):
    raise StorageError(e.errno, os.strerror(e.errno), path) from None


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
  """Yields a file opened with ``mode`` whose content appears at ``path`` only once it is
  complete (flushed and ``fsync``ed; see :func:`atomic_path`)."""
  with atomic_path(path) as tmp:
    with open(tmp, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_bytes(path: str, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def write_npz(path: str, **arrays) -> None:
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  write_bytes(path, buf.getvalue())


def write_figure(path: str, fig, **kwargs) -> None:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", **kwargs)
  write_bytes(path, buf.getvalue())


def _jsonable(x):
  if isinstance(x, (np.generic,)):
    return x.item()
  if hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")
