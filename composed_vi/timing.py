"""Wall-clock timing shared by the benchmarks (figures come from one run, never from tests)."""

import time

import numpy as np


def median_seconds(fn, repeats: int, warmup: int = 0) -> float:
  """Median wall time of ``repeats`` calls of ``fn`` (which must block until done), after
  ``warmup`` untimed calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))
