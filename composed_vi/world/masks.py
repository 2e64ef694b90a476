"""Masks on the world's video grid: the one dilation every module uses."""

from __future__ import annotations

import numpy as np


def dilate(mask: np.ndarray, radius: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
  """Max-filter of ``mask`` over a ``(2 radius + 1)^2`` square window on two ``axes``.

  The window stops at the image border (no wrap-around: a pixel on one edge never marks the
  opposite edge). Works on float masks (the maximum) and boolean masks (the union); the dtype
  and shape are kept. ``axes`` are the (height, width) axes: ``(-2, -1)`` for ``(..., H, W)``,
  ``(1, 2)`` for ``(T, H, W, 1)``.
  """
  mask = np.asarray(mask)
  radius = int(radius)
  if radius < 0:
    raise ValueError(f"radius: expected an integer >= 0, got {radius}")
  if radius == 0:
    return mask.copy()
  ay, ax = (a % mask.ndim for a in axes)
  pad = [(0, 0)] * mask.ndim
  pad[ay] = pad[ax] = (radius, radius)
  low = False if mask.dtype == bool else np.min(mask)  # padding never wins the maximum
  padded = np.pad(mask, pad, constant_values=low)
  out = mask.copy()
  h, w = mask.shape[ay], mask.shape[ax]
  for dy in range(2 * radius + 1):
    for dx in range(2 * radius + 1):
      window = [slice(None)] * mask.ndim
      window[ay] = slice(dy, dy + h)
      window[ax] = slice(dx, dx + w)
      out = np.maximum(out, padded[tuple(window)])
  return out


def _slot_masks(example, simulated: bool) -> np.ndarray:
  """``(T, H, W, 1)`` float union of the valid slots whose ``object_simulated`` is
  ``simulated`` (an example without the field counts every slot as simulated)."""
  masks = np.asarray(example.masks, np.float32)
  valid = np.asarray(example.object_valid, bool)
  flags = getattr(example, "object_simulated", None)
  flags = np.ones_like(valid) if flags is None else np.asarray(flags, bool)
  keep = valid & (flags if simulated else ~flags)
  if not keep.any():
    return np.zeros(masks.shape[:-1] + (1,), np.float32)
  return np.max(masks[..., keep], axis=-1, keepdims=True)


def simulated_region(example) -> np.ndarray:
  """``(T, H, W, 1)`` {0, 1}: pixels of the objects in the simulation control (the whole
  object region when every object is simulated)."""
  return _slot_masks(example, True)


def unsimulated_region(example) -> np.ndarray:
  """``(T, H, W, 1)`` {0, 1}: ground-truth pixels of the objects that are NOT in the
  simulation control (for metrics only: no control gives them after frame 0)."""
  return _slot_masks(example, False)


def unsimulated_band(example, margin: int = 2) -> np.ndarray:
  """``(T, H, W, 1)`` {0, 1}: where an unsimulated object may go, the coarse mask a user
  gives with a caption like "a ball rolls": in frames ``1..T-1``, every row within ``margin``
  of the rows the unsimulated objects cover in frame 0 (a rolling object stays on its floor
  band), all columns. Zero when every object is simulated, and in frame 0 (the first frame
  gives the object exactly)."""
  frame0 = unsimulated_region(example)[0, :, :, 0] > 0.5
  band = np.zeros(np.asarray(example.masks).shape[:-1] + (1,), np.float32)
  rows = np.flatnonzero(frame0.any(axis=1))
  if rows.size == 0:
    return band
  lo = max(int(rows.min()) - int(margin), 0)
  hi = min(int(rows.max()) + int(margin) + 1, band.shape[1])
  band[1:, lo:hi] = 1.0
  return band
