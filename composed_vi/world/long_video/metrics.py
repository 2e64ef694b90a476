"""The background error of a long video when the camera returns to its start pose.

Metric (:func:`video_metrics`): L1 (RGB units of [-1, 1]) against the ground-truth video on the
static background that the original first frame saw (its background lifted along the path,
``background_visibility``, and :func:`composed_vi.world.metrics.static_background`), per segment
(frames ``1..T-1`` of each segment, as :func:`composed_vi.world.metrics.camera_background_error`)
and on the last ``return_frames`` frames of the last segment (the camera back near the start
pose; ``final_frame_error``: the last frame alone, at the start pose). :func:`context_floor` is
the same return error of the 3D context itself.
"""

from __future__ import annotations

import numpy as np

from composed_vi.world import metrics as wm


def background_mask(example, margin: int = 1) -> np.ndarray:
  """``(T, H, W)`` bool: static background (no object within ``margin`` pixels, not the sky)
  that the original first frame saw (``background_visibility``)."""
  return (np.asarray(example.background_visibility)[..., 0] > 0.5) & wm.static_background(
      example, margin)


def video_metrics(video, segments: list, return_frames: int = 3, margin: int = 1) -> dict:
  """Background errors of one long video ``(L, H, W, 3)`` against the ground truth.

  Returns ``segment_errors`` (segment ``k``: frames ``1..T-1``, NaN without a qualifying
  pixel), ``mean_segment_error``, ``return_error`` (the last ``return_frames`` frames) and
  ``final_frame_error`` (the last frame, at the start pose). The ground truth scores 0.
  """
  video = np.asarray(video, np.float32)
  errors = []
  for example in segments:
    a, t = int(example.start), example.video.shape[0]
    mask = background_mask(example, margin)
    errors.append(wm.masked_l1(video[a + 1:a + t], example.video[1:], mask[1:]))
  last = segments[-1]
  mask = background_mask(last, margin)
  r = min(int(return_frames), last.video.shape[0] - 1)
  ends = video[video.shape[0] - r:]
  finite = [e for e in errors if np.isfinite(e)]
  return dict(
      segment_errors=errors,
      mean_segment_error=float(np.mean(finite)) if finite else float("nan"),
      return_error=wm.masked_l1(ends, last.video[-r:], mask[-r:]),
      final_frame_error=wm.masked_l1(video[-1], last.video[-1], mask[-1]))


def context_floor(segments: list, return_frames: int = 3, margin: int = 1) -> float:
  """:func:`video_metrics`'s ``return_error`` of the 3D context itself (the background of the
  original first frame splatted to the return frames): the splatting error and the moved
  shadows, a floor no variant beats by copying the context."""
  last = segments[-1]
  mask = background_mask(last, margin)
  r = min(int(return_frames), last.video.shape[0] - 1)
  return wm.masked_l1(last.background_context[-r:], last.video[-r:], mask[-r:])
