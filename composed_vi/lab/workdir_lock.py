"""One run per workdir: an exclusive lock held for the run's life.

A second launch on the workdir of a live run is refused with the holder's process id, host and
start time. The lock is a POSIX record lock (``fcntl.lockf``) on ``<workdir>/LOCK``: the kernel
(or the NFS lock manager) releases it when the holding process exits, however it exits, so a
crashed run leaves no stale lock behind; the file itself only names the last holder. POSIX locks
work on local file systems and on NFSv4 (and NFSv3 with lockd); on a file system without
locking the launch is refused (``ENOLCK``) rather than run unprotected.

In a multi-process run, process 0 takes the lock and tells the others whether it did
(:func:`hold`), so every process of a refused launch exits together and every process of an
accepted one runs under the one lock.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket

import jax
import numpy as np

from composed_vi import distributed
from composed_vi.errors import ConfigError

LOCK_NAME = "LOCK"


class WorkdirBusyError(ConfigError):
  """Another live process holds the workdir (a user error: exit code 2)."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      info = json.load(f)
    return (f"process {info.get('pid')} on host {info.get('host')!r} "
            f"(started {info.get('started')})")
  except (OSError, ValueError):
    return "another process (its LOCK file names no holder)"


def acquire(workdir: str):
  """Takes the lock of ``workdir`` (which must exist); returns the open file that holds it.

  Raises :class:`WorkdirBusyError` naming the holder when a live process holds it.
  """
  path = os.path.join(workdir, LOCK_NAME)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EACCES, errno.EAGAIN):
        raise WorkdirBusyError(f"workdir: {workdir} is in use by {_holder(path)}; wait for it to "
                          "finish, stop it, or choose another --workdir") from None
      raise ConfigError(f"workdir: cannot lock {path} ({os.strerror(e.errno)}); the file "
                        "system must support POSIX locks") from None
    # A holder that released the lock may have removed the file between our open and our lock:
    # then we hold a lock on an orphan; take the lock of the file now at ``path`` instead.
    try:
      same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  info = dict(pid=os.getpid(), host=socket.gethostname(),
              started=datetime.datetime.now().isoformat(timespec="seconds"),
              processes=jax.process_count())
  data = (json.dumps(info) + "\n").encode()
  try:  # naming the holder is a courtesy: a full disk does not stop the lock from holding
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
  except OSError:
    pass
  return fd


def release(fd: int, workdir: str) -> None:
  """Removes the LOCK file (while still holding it) and releases the lock."""
  path = os.path.join(workdir, LOCK_NAME)
  with contextlib.suppress(OSError):
    if os.path.samestat(os.fstat(fd), os.stat(path)):
      os.unlink(path)
  os.close(fd)  # closing the descriptor releases the POSIX lock


@contextlib.contextmanager
def hold(workdir: str):
  """Holds the workdir's lock for the ``with`` block (process 0 of a multi-process run takes
  it; the others learn whether it did and raise the same error)."""
  fd, error = None, None
  if distributed.is_primary():
    try:
      fd = acquire(workdir)
    except ConfigError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not int(ok) and error is None:
      error = WorkdirBusyError(f"workdir: {workdir}: process 0 could not take the run's lock "
                          "(see its error)")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if fd is not None:
      release(fd, workdir)
