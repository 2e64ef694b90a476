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
