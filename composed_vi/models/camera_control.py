"""The Control-Camera input of VideoX-Fun's Wan-Fun camera models, built in numpy.

VideoX-Fun (aigc-apps/VideoX-Fun, Apache-2.0) conditions its ``*-Control-Camera`` transformers on
Plücker rays through a control adapter (:mod:`composed_vi.models.wan.fun_control`). Its input
is built in three steps, which this module reproduces from their mathematics (CameraCtrl's
``get_relative_pose`` and ``ray_condition`` as ``videox_fun/data/utils.py`` carries them, and the
packing of ``videox_fun/pipeline/pipeline_wan2_2_fun_control.py``):

1. :func:`relative_poses`: camera-to-world poses relative to frame 0, ``P_0 = I`` and
   ``P_i = W_0 W_i^{-1}`` for world-to-camera ``W_i`` (OpenCV axes). Translations are *not*
   rescaled (VideoX-Fun's LingBot-World path normalises them; the Control-Camera path does not).
2. :func:`plucker_rays`: per pixel ``(u, v)`` (centres at ``k + 0.5``) the unit direction
   ``d = R normalise(((u - cx) / fx, (v - cy) / fy, 1))`` and the camera centre ``o = t`` of the
   relative pose ``[R | t]``; the six channels are ``[o x d, d]`` (moment first).
3. :func:`pack_latent_frames`: frame 0 repeated 4 times, then groups of 4 video frames joined on
   channels (channel ``4 c + k`` is channel ``c`` of the group's ``k``-th frame): ``1 + 4 n``
   frames become ``1 + n`` latent frames of 24 channels, at *pixel* resolution (the adapter
   downsamples them itself).

:func:`control_camera` chains the three. Intrinsics are in pixels of the ``height`` x ``width``
video (``(T, 3, 3)`` matrices or ``(T, 4)`` rows ``[fx, fy, cx, cy]``); a RealEstate10K-style
pose file's normalised intrinsics go through :func:`cameractrl_intrinsics` first, which applies
the aspect-ratio correction VideoX-Fun's ``process_pose_file`` applies. Extrinsics are
world-to-camera ``(T, 3, 4)`` or ``(T, 4, 4)`` (``composed_vi.lab.camera_file.CameraPath``'s
fields, passed as plain arrays).
"""

from __future__ import annotations

import numpy as np

from composed_vi.errors import fail

PLUCKER_CHANNELS = 6
TEMPORAL = 4  # Wan's VAE: 4 video frames per latent frame (the first alone)


def _homogeneous(field: str, matrices) -> np.ndarray:
  m = np.asarray(matrices, np.float64)
  if m.ndim != 3 or m.shape[1:] not in ((3, 4), (4, 4)) or m.shape[0] < 1:
    fail(field, "(T, 3, 4) or (T, 4, 4) matrices with T >= 1", np.shape(matrices))
  if not np.all(np.isfinite(m)):
    fail(field, "finite values", "NaN/inf entries")
  out = np.broadcast_to(np.eye(4), (m.shape[0], 4, 4)).copy()
  out[:, :3] = m[:, :3]
  return out


def relative_poses(extrinsics) -> np.ndarray:
  """Camera-to-world poses relative to frame 0 ``(T, 4, 4)`` float64 from world-to-camera
  ``extrinsics`` ``(T, 3, 4)`` / ``(T, 4, 4)``: ``P_0 = I``, ``P_i = W_0 W_i^{-1}`` (maps camera
  ``i``'s coordinates into camera 0's)."""
  w2c = _homogeneous("extrinsics", extrinsics)
  poses = w2c[0] @ np.linalg.inv(w2c)
  poses[0] = np.eye(4)
  return poses


def pixel_intrinsics(intrinsics, num_frames: int | None = None) -> np.ndarray:
  """``(T, 4)`` float64 ``[fx, fy, cx, cy]`` in pixels from ``(T, 3, 3)`` matrices or ``(T, 4)``
  rows (a single ``(3, 3)`` / ``(4,)`` is repeated for ``num_frames``)."""
  k = np.asarray(intrinsics, np.float64)
  if k.shape in ((3, 3), (4,)) and num_frames is not None:
    k = np.broadcast_to(k, (num_frames, *k.shape))
  if k.ndim == 3 and k.shape[1:] == (3, 3):
    k = np.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]], axis=-1)
  if k.ndim != 2 or k.shape[1] != 4:
    fail("intrinsics", "(T, 3, 3) matrices or (T, 4) rows [fx, fy, cx, cy] in pixels",
         np.shape(intrinsics))
  if num_frames is not None and k.shape[0] != num_frames:
    fail("intrinsics", f"{num_frames} frames (one per pose)", k.shape[0])
  if not np.all(np.isfinite(k)) or np.any(k[:, :2] <= 0):
    fail("intrinsics", "finite values with positive focal lengths", k[:, :2].tolist())
  return k


def cameractrl_intrinsics(normalized, width: int, height: int, *, pose_width: int = 1280,
                          pose_height: int = 720) -> np.ndarray:
  """Pixel ``[fx, fy, cx, cy]`` ``(T, 4)`` for a ``width`` x ``height`` video from a pose file's
  intrinsics ``(T, 4)`` given as fractions of the width / height of its own
  ``pose_width`` x ``pose_height`` frames (RealEstate10K: 1280 x 720), as VideoX-Fun's
  ``process_pose_file`` converts them: the focal length along the axis the video crops is
  rescaled so the field of view of the other axis is kept (CameraCtrl's convention)."""
  k = np.array(normalized, np.float64)
  if k.ndim != 2 or k.shape[1] != 4:
    fail("normalized", "(T, 4) rows [fx, fy, cx, cy] as fractions of the image size",
         np.shape(normalized))
  sample_ratio, pose_ratio = width / height, pose_width / pose_height
  if pose_ratio > sample_ratio:
    k[:, 0] = height * pose_ratio * k[:, 0] / width
  else:
    k[:, 1] = width / pose_ratio * k[:, 1] / height
  return k * np.array([width, height, width, height], np.float64)


def plucker_rays(intrinsics, poses, height: int, width: int) -> np.ndarray:
  """Plücker rays ``(T, height, width, 6)`` float32: ``[o x d, d]`` per pixel.

  Args:
    intrinsics: ``(T, 3, 3)`` or ``(T, 4)`` in pixels (see :func:`pixel_intrinsics`).
    poses: ``(T, 4, 4)`` or ``(T, 3, 4)`` camera-to-world ``[R | t]`` (e.g. from
      :func:`relative_poses`): ``o = t``, ``d = R normalise(((u - cx)/fx, (v - cy)/fy, 1))`` at
      pixel centres ``u = x + 0.5``, ``v = y + 0.5``.
  """
  c2w = _homogeneous("poses", poses)
  k = pixel_intrinsics(intrinsics, c2w.shape[0])
  fx, fy, cx, cy = (k[:, i, None, None] for i in range(4))
  v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  dirs = np.stack(np.broadcast_arrays((u - cx) / fx, (v - cy) / fy, np.ones_like(u)[None]), -1)
  dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
  d = np.einsum("tij,thwj->thwi", c2w[:, :3, :3], dirs)
  o = np.broadcast_to(c2w[:, None, None, :3, 3], d.shape)
  return np.concatenate([np.cross(o, d), d], axis=-1).astype(np.float32)


def pack_latent_frames(frames, temporal: int = TEMPORAL) -> np.ndarray:
  """Per-frame channels ``(T, H, W, C)`` -> ``(1 + (T - 1) / r, H, W, r C)`` (``r = temporal``):
  frame 0 repeated ``r`` times, then groups of ``r`` frames; channel ``r c + k`` of latent frame
  ``j`` is channel ``c`` of its ``k``-th frame. ``T`` must be ``1 + r n``."""
  x = np.asarray(frames)
  if x.ndim != 4:
    fail("frames", "(T, H, W, C)", x.shape)
  t = x.shape[0]
  if (t - 1) % temporal:
    fail("frames", f"1 + {temporal} n frames (Wan's VAE takes the first frame alone)", t)
  x = np.concatenate([np.repeat(x[:1], temporal, axis=0), x[1:]], axis=0)
  x = x.reshape(-1, temporal, *x.shape[1:])  # (T', r, H, W, C)
  x = x.transpose(0, 2, 3, 4, 1)  # (T', H, W, C, r)
  return x.reshape(*x.shape[:3], -1)


def control_camera(intrinsics, extrinsics, height: int, width: int, *,
                   temporal: int = TEMPORAL) -> np.ndarray:
  """The Control-Camera input of one video ``(1 + (T - 1) / r, height, width, 6 r)`` float32
  (24 channels for Wan), for the model's ``control_camera`` argument (add a batch axis).

  Args:
    intrinsics: ``(T, 3, 3)`` / ``(T, 4)`` pixel intrinsics of the ``height`` x ``width`` video.
    extrinsics: ``(T, 3, 4)`` / ``(T, 4, 4)`` world-to-camera (OpenCV), ``T = 1 + r n``.
  """
  if isinstance(height, bool) or not isinstance(height, int) or height < 1:
    fail("height", "a positive int", height)
  if isinstance(width, bool) or not isinstance(width, int) or width < 1:
    fail("width", "a positive int", width)
  rays = plucker_rays(intrinsics, relative_poses(extrinsics), height, width)
  return pack_latent_frames(rays, temporal)


__all__ = ("PLUCKER_CHANNELS", "relative_poses", "pixel_intrinsics", "cameractrl_intrinsics",
           "plucker_rays", "pack_latent_frames", "control_camera")
