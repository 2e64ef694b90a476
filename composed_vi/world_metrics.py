"""Control errors of generated world videos against the world's exact ground truth.

Videos are ``(T, H, W, 3)`` in [-1, 1]; ``example`` is a :mod:`composed_vi.world.dataset` dict.
"""

from __future__ import annotations

import numpy as np


def first_frame_l1(video, example) -> float:
  """Mean absolute error of frame 0 against the given first frame."""
  return float(np.mean(np.abs(np.asarray(video)[0] - example["first_frame"])))


def object_positions(video, example) -> np.ndarray:
  """Estimated 2-D centre ``(T, O, 2)`` of each valid object in ``video`` (NaN when absent).

  The object's pixels are those closest in colour to what the ground truth shows of it (its
  mean colour over the ground-truth mask), as many as its ground-truth area in that frame.
  """
  video = np.asarray(video, np.float32)
  t, h, w, _ = video.shape
  masks = example["masks"]
  gt = example["video"]
  vv, uu = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  out = np.full((t, masks.shape[-1], 2), np.nan, np.float32)
  for o in np.flatnonzero(example["object_valid"]):
    for f in range(t):
      m = masks[f, :, :, o] > 0.5
      area = int(m.sum())
      if area == 0:
        continue
      colour = gt[f][m].mean(axis=0)
      dist = np.sum(np.square(video[f] - colour), axis=-1).ravel()
      idx = np.argsort(dist, kind="stable")[:area]
      out[f, o] = (uu.ravel()[idx].mean(), vv.ravel()[idx].mean())
  return out


def track_error_px(video, example) -> float:
  """Mean distance in pixels between the estimated object centres and the simulation's 2-D
  tracks, over frames where the object is visible. The estimator's own floor is
  ``track_error_px(example["video"], example)`` (the ground-truth video)."""
  est = object_positions(video, example)
  vis = example["track_visible"].astype(bool) & example["object_valid"].astype(bool)[None, :]
  ok = vis & np.all(np.isfinite(est), -1)
  if not ok.any():
    return float("nan")
  return float(np.mean(np.linalg.norm(est[ok] - example["tracks"][ok], axis=-1)))


def background_l1(video, example) -> float:
  """Mean absolute error against the ground truth on the background (no object) pixels."""
  bg = 1.0 - example["object_region"]
  return float(np.sum(np.abs(np.asarray(video) - example["video"]) * bg)
               / max(float(np.sum(bg)) * 3, 1.0))


def object_l1(video, example) -> float:
  """Mean absolute error against the ground truth on the object pixels."""
  region = example["object_region"]
  return float(np.sum(np.abs(np.asarray(video) - example["video"]) * region)
               / max(float(np.sum(region)) * 3, 1.0))
