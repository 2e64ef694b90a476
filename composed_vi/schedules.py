"""Noise-level schedules and the repulsion schedule."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from composed_vi.errors import check_choice, check_positive_int, check_schedule, fail

REPULSION_SCHEDULES = ("constant", "linear", "sqrt")


def shift_levels(t, shift: float):
  """The time shift of Wan / SD3 schedulers: ``t' = s t / (1 + (s - 1) t)``."""
  return shift * t / (1.0 + (shift - 1.0) * t)


def flow_levels(num_levels: int, t_max: float = 1.0, t_min: float = 0.02,
                shift: float = 1.0) -> np.ndarray:
  """``num_levels`` decreasing noise levels from ``t_max`` to ``t_min`` (linear, then shifted)."""
  check_positive_int("num_levels", num_levels)
  if not 0 < t_min <= t_max <= 1:
    fail("t_min, t_max", "0 < t_min <= t_max <= 1", (t_min, t_max))
  if not shift > 0:
    fail("shift", "a number > 0", shift)
  if num_levels == 1:
    t = np.asarray([t_min], np.float64)
  else:
    t = np.linspace(t_max, t_min, num_levels)
  t = shift_levels(t, shift)
  return check_schedule("levels", t).astype(np.float32)


def repulsion_weight(schedule: str, gamma, t):
  """``gamma`` times the schedule's factor at level ``t``."""
  check_choice("repulsion_schedule", schedule, REPULSION_SCHEDULES)
  if schedule == "constant":
    return gamma * jnp.ones_like(t)
  if schedule == "linear":
    return gamma * t
  return gamma * jnp.sqrt(t)
