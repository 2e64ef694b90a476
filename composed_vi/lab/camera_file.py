"""Camera paths from files: per-frame intrinsics and world-to-camera poses.

Two formats, told apart by the file's extension:

* ``.txt``: RealEstate10K's (the format CameraCtrl and the camera-control Wan models read). An
  optional first line (the source video's URL) is skipped; every other non-empty line is 19
  numbers ``timestamp fx fy cx cy k1 k2 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3``: the focal
  lengths and principal point as fractions of the image width (``fx``, ``cx``) and height
  (``fy``, ``cy``), two unused distortion values, and the 3 x 4 world-to-camera matrix row by
  row (OpenCV axes: x right, y down, z forward).
* ``.json``: ``{"convention": "world_to_camera" | "camera_to_world", "frames": [...]}`` where
  each frame has ``"matrix"`` (4 x 4 or 3 x 4, row-major, OpenCV axes) and either
  ``"intrinsics"`` (3 x 3 in pixels of the given ``width`` x ``height``) or ``"fov_degrees"``
  (the horizontal field of view, principal point at the image centre, square pixels); a
  top-level ``"intrinsics"`` or ``"fov_degrees"`` applies to every frame without its own.

Either way :func:`read` returns pixel intrinsics for the video's own size and world-to-camera
extrinsics, validated before anything else runs: the pose count against the frames, rotations
orthonormal with determinant +1, focal lengths positive, every number finite.
"""

from __future__ import annotations

import json
import math
import os
from typing import NamedTuple

import numpy as np

from composed_vi import io
from composed_vi.errors import fail

#: Tolerance on ``R R^T = I`` and ``det R = 1`` (files store 6 to 9 digits).
_ORTHONORMAL_TOL = 1e-3
_CONVENTIONS = ("world_to_camera", "camera_to_world")


class CameraPath(NamedTuple):
  """A camera path in pixels of a ``height`` x ``width`` video.

  intrinsics: ``(T, 3, 3)`` float32; extrinsics: ``(T, 3, 4)`` float32 world-to-camera (OpenCV
  axes); height, width: the image size the intrinsics are in.
  """

  intrinsics: np.ndarray
  extrinsics: np.ndarray
  height: int
  width: int

  def relative_to_first(self) -> CameraPath:
    """The same path with frame 0 at the origin (poses ``E_t E_0^{-1}``), as camera-control
    models take it."""
    first = _homogeneous(self.extrinsics[0])
    inv = np.linalg.inv(first.astype(np.float64))
    rel = np.stack([(_homogeneous(e).astype(np.float64) @ inv)[:3] for e in self.extrinsics])
    return self._replace(extrinsics=rel.astype(np.float32))


def read(path: str, *, height: int, width: int, num_frames: int | None = None,
         field: str = "camera") -> CameraPath:
  """The camera path in ``path`` for a ``height`` x ``width`` video of ``num_frames`` frames.

  ``field`` names the config field in errors. Raises ``ValueError`` (field, expected, actual)
  on an unreadable file, a wrong pose count or an invalid pose.
  """
  if not os.path.isfile(path):
    fail(field, "an existing camera file (.txt RealEstate10K or .json)", path)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".txt":
    intr, extr = _read_realestate(path, height, width, field)
  elif ext == ".json":
    intr, extr = _read_json(path, height, width, field)
  else:
    fail(field, "a .txt (RealEstate10K) or .json camera file", path)
  if num_frames is not None and extr.shape[0] != num_frames:
    fail(field, f"{num_frames} poses (one per video frame)",
         f"{extr.shape[0]} in {path}")
  _check_poses(intr, extr, field, path)
  return CameraPath(intr.astype(np.float32), extr.astype(np.float32), int(height), int(width))


def write_json(path: str, camera: CameraPath) -> None:
  """Writes ``camera`` in the ``.json`` format (world-to-camera, pixel intrinsics)."""
  frames = [dict(matrix=_homogeneous(e).tolist(), intrinsics=k.tolist())
            for k, e in zip(camera.intrinsics.astype(np.float64),
                            camera.extrinsics.astype(np.float64))]
  io.write_json(path, dict(convention="world_to_camera", width=camera.width,
                           height=camera.height, frames=frames))


def fov_intrinsics(fov_degrees: float, height: int, width: int) -> np.ndarray:
  """``(3, 3)`` pixel intrinsics of a horizontal field of view, centred, square pixels."""
  f = 0.5 * width / math.tan(math.radians(fov_degrees) / 2)
  return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


def _homogeneous(e: np.ndarray) -> np.ndarray:
  return np.concatenate([np.asarray(e)[:3, :4], np.array([[0, 0, 0, 1]], e.dtype)], 0)


def _read_realestate(path, height, width, field):
  rows = []
  with open(path) as f:
    lines = [ln.strip() for ln in f if ln.strip()]
  for i, line in enumerate(lines):
    parts = line.split()
    if i == 0 and len(parts) == 1:  # the source video's URL
      continue
    try:
      values = [float(p) for p in parts]
    except ValueError:
      fail(field, "19 numbers per line (RealEstate10K)", f"line {i + 1} of {path}: {line[:60]!r}")
    if len(values) != 19:
      fail(field, "19 numbers per line (RealEstate10K)",
           f"{len(values)} on line {i + 1} of {path}")
    rows.append(values)
  if not rows:
    fail(field, "at least one pose", f"none in {path}")
  a = np.asarray(rows, np.float64)
  intr = np.zeros((len(rows), 3, 3))
  intr[:, 0, 0], intr[:, 1, 1] = a[:, 1] * width, a[:, 2] * height
  intr[:, 0, 2], intr[:, 1, 2], intr[:, 2, 2] = a[:, 3] * width, a[:, 4] * height, 1.0
  return intr, a[:, 7:19].reshape(-1, 3, 4)


def _read_json(path, height, width, field):
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    fail(field, "a readable JSON camera file", f"{path}: {e}")
  if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
    fail(field, 'a JSON object with a non-empty "frames" list', path)
  convention = data.get("convention")
  if convention not in _CONVENTIONS:
    fail(f"{field}.convention", f"one of {_CONVENTIONS}", convention)
  scale = np.ones(3)
  if "width" in data or "height" in data:  # intrinsics given for another size: rescaled
    fw, fh = data.get("width", width), data.get("height", height)
    scale = np.array([width / fw, height / fh, 1.0])
  intr, extr = [], []
  for i, frame in enumerate(data["frames"]):
    m = np.asarray(frame.get("matrix"), np.float64) if "matrix" in frame else None
    if m is None or m.shape not in ((4, 4), (3, 4)):
      fail(f"{field}.frames[{i}].matrix", "a 4 x 4 or 3 x 4 matrix",
           None if m is None else m.shape)
    if convention == "camera_to_world":
      m = np.linalg.inv(_homogeneous(m))
    extr.append(m[:3, :4])
    if "intrinsics" in frame or "fov_degrees" in frame:
      intr.append(_json_intrinsics(frame, scale, height, width, f"{field}.frames[{i}]"))
    elif "intrinsics" in data or "fov_degrees" in data:
      intr.append(_json_intrinsics(data, scale, height, width, field))
    else:
      fail(f"{field}.frames[{i}]", '"intrinsics" or "fov_degrees" (here or at the top level)',
           sorted(frame))
  return np.stack(intr), np.stack(extr)


def _json_intrinsics(d, scale, height, width, field):
  if "intrinsics" in d:
    k = np.asarray(d["intrinsics"], np.float64)
    if k.shape != (3, 3):
      fail(f"{field}.intrinsics", "a 3 x 3 matrix in pixels", k.shape)
    return k * scale[:, None]
  fov = d["fov_degrees"]
  if not isinstance(fov, (int, float)) or not 0 < fov < 180:
    fail(f"{field}.fov_degrees", "a number in (0, 180)", fov)
  return fov_intrinsics(float(fov), height, width)


def _check_poses(intr, extr, field, path):
  if not (np.all(np.isfinite(intr)) and np.all(np.isfinite(extr))):
    fail(field, "finite numbers", f"NaN or inf in {path}")
  for t, (k, e) in enumerate(zip(intr, extr)):
    if k[0, 0] <= 0 or k[1, 1] <= 0:
      fail(f"{field} pose {t}", "positive focal lengths", (k[0, 0], k[1, 1]))
    r = e[:, :3]
    err = np.abs(r @ r.T - np.eye(3)).max()
    if err > _ORTHONORMAL_TOL or abs(np.linalg.det(r) - 1) > _ORTHONORMAL_TOL:
      fail(f"{field} pose {t}", "a rotation (orthonormal, determinant +1)",
           f"|R R^T - I| = {err:.2g}, det {np.linalg.det(r):.4g} in {path}")
