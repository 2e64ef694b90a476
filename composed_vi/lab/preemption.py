"""Stopping at a level boundary when the scheduler asks: SIGTERM, SIGINT or a preemption notice.

Schedulers send SIGTERM (SLURM, Kubernetes, Borg) or a maintenance notice (Cloud TPU) minutes
before the kill. :class:`Watcher` turns the first SIGTERM or SIGINT into a request: the loop
finishes its current level, writes a checkpoint and raises :class:`PreemptedError`, which the
launcher reports in one line with exit code :data:`EXIT_PREEMPTED`; rerunning the same command
resumes from that checkpoint, bit-identically. A second signal is not caught (the default
action: the process ends at once), so a user can still interrupt a checkpoint write.

In a multi-process run JAX's preemption service owns SIGTERM (``jax.distributed`` registers it,
and on Cloud TPU it also receives the maintenance notice); every process asks it through
orbax's ``reached_preemption`` at each level, which agrees on one level for all processes.
A SIGINT on any one process is shared through a one-integer all-gather per level.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging

#: ``EX_TEMPFAIL`` of sysexits.h: the run stopped early on request and is resumable.
EXIT_PREEMPTED = 75


class PreemptedError(Exception):
  """The run stopped at a level boundary after a checkpoint: rerun to resume."""

  def __init__(self, step: int, total: int, workdir: str, what: str = "level"):
    self.step, self.total, self.workdir = step, total, workdir
    super().__init__(f"preempted: stopped after {what} {step} of {total} with a checkpoint in "
                     f"{workdir}; rerun the same command to resume")


class Watcher:
  """Catches the first SIGTERM / SIGINT while in its ``with`` block (main thread only; elsewhere
  it watches nothing but orbax's preemption notice)."""

  def __init__(self, manager=None):
    self._manager = manager  # an orbax CheckpointManager, for its preemption sync point
    self._received: int | None = None
    self._previous: dict = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      signums = [signal.SIGINT]
      if jax.process_count() == 1:  # else JAX's preemption service handles SIGTERM
        signums.append(signal.SIGTERM)
      for signum in signums:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
    return False

  def _handle(self, signum, frame):
    del frame
    self._received = signum
    # The next signal of this kind acts as if nothing caught it.
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
    logging.warning("received %s: stopping after the current level with a checkpoint (send it "
                    "again to stop at once)", signal.Signals(signum).name)

  def should_stop(self, step: int) -> bool:
    """Whether to stop after ``step``; the same answer on every process."""
    local = self._received is not None
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils

    stop = bool(np.any(multihost_utils.process_allgather(np.int32(local))))
    if self._manager is not None and self._manager.reached_preemption(step):
      stop = True
    return stop
