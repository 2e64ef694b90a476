"""Atomic file output: write to a temporary file in the same folder, then ``os.replace``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
  """Yields a file whose content appears at ``path`` only once it is complete."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  # mkstemp creates 0600 files: give outputs the usual umask-based permissions.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_npz(path: str, **arrays) -> None:
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  with atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


def write_figure(path: str, fig, **kwargs) -> None:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", **kwargs)
  with atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


def _jsonable(x):
  if isinstance(x, (np.generic,)):
    return x.item()
  if hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")
