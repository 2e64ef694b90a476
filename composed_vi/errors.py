"""Input validation helpers: every message names the field, the expected and the actual value."""

from __future__ import annotations

import numbers

import numpy as np


class ConfigError(ValueError):
  """A user error in arguments or configuration (reported without a traceback by launchers)."""


def fail(field: str, expected: str, actual) -> None:
  raise ConfigError(f"{field}: expected {expected}, got {actual!r}")


def check_positive_int(field: str, value, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    fail(field, f"an integer >= {minimum}", value)
  return int(value)


def check_positive_float(field: str, value, allow_zero: bool = False) -> float:
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
  if not ok or value < 0 or (value == 0 and not allow_zero):
    fail(field, "a finite number >= 0" if allow_zero else "a finite number > 0", value)
  return float(value)


def check_choice(field: str, value, choices) -> str:
  if value not in choices:
    fail(field, f"one of {sorted(choices)}", value)
  return value


def check_finite(field: str, array) -> None:
  """Refuses NaN / inf in concrete arrays (no-op for tracers)."""
  try:
    arr = np.asarray(array)
  except Exception:  # a tracer: checked by the caller outside jit
    return
  if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    fail(field, "finite values", f"{bad} NaN/inf entries in an array of shape {arr.shape}")


def check_schedule(field: str, values) -> np.ndarray:
  """A noise-level schedule: 1-D, every value in (0, 1], strictly decreasing."""
  arr = np.asarray(values, dtype=np.float64)
  if arr.ndim != 1 or arr.size < 1:
    fail(field, "a non-empty 1-D sequence of noise levels", values)
  if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1):
    fail(field, "every level in (0, 1]", arr.tolist())
  if np.any(np.diff(arr) >= 0):
    fail(field, "strictly decreasing levels", arr.tolist())
  return arr
