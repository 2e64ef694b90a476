"""Wall-clock timing shared by the benchmarks (figures come from one run, never from tests).

``fn`` is called with no arguments and must block until its work is done (for JAX, end it with
``jax.block_until_ready``): the timer itself knows nothing of devices.
"""

from __future__ import annotations

import math
import time

import numpy as np


def time_calls(fn, repeats: int, warmup: int = 0, budget_s: float = math.inf) -> list[float]:
  """Wall times in seconds of up to ``repeats`` calls of ``fn``, after ``warmup`` untimed calls.

  Stops early once the timed calls have used ``budget_s`` seconds in all; at least one call is
  always timed (``repeats`` below 1 counts as 1).
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
    if sum(times) >= budget_s:
      break
  return times


def median_seconds(fn, repeats: int, warmup: int = 0, budget_s: float = math.inf) -> float:
  """Median of :func:`time_calls` (same arguments)."""
  return float(np.median(time_calls(fn, repeats, warmup, budget_s)))
