"""Camera files (composed_vi.lab.camera_file): RealEstate10K text and JSON, validated."""

import json
import math

import numpy as np
import pytest

from composed_vi.errors import ConfigError
from composed_vi.lab import camera_file


def _rotation(yaw, pitch):
  cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  return rx @ ry


def _path(num=5):
  """World-to-camera poses of a camera that turns and moves, and pixel intrinsics."""
  extr = []
  for t in range(num):
    r = _rotation(0.1 * t, -0.05 * t)
    centre = np.array([0.3 * t, -0.1 * t, 0.2 * t])
    extr.append(np.concatenate([r, (-r @ centre)[:, None]], 1))
  return np.stack(extr)


def _write_realestate(path, extr, fx, fy, cx, cy, url=True):
  lines = ["https://www.youtube.com/watch?v=xyz"] if url else []
  for t, e in enumerate(extr):
    nums = [1000 * t, fx, fy, cx, cy, 0.0, 0.0, *e.reshape(-1)]
    lines.append(" ".join(f"{v:.9g}" for v in nums))
  path.write_text("\n".join(lines) + "\n")


def test_realestate10k_text(tmp_path):
  extr = _path()
  f = tmp_path / "cam.txt"
  _write_realestate(f, extr, 0.5, 0.9, 0.5, 0.45)
  cam = camera_file.read(str(f), height=480, width=832, num_frames=5)
  assert cam.intrinsics.shape == (5, 3, 3) and cam.extrinsics.shape == (5, 3, 4)
  # Normalised intrinsics scale by the width (fx, cx) and the height (fy, cy).
  np.testing.assert_allclose(cam.intrinsics[0], [[416, 0, 416], [0, 432, 216], [0, 0, 1]],
                             rtol=1e-6)
  np.testing.assert_allclose(cam.extrinsics, extr, atol=1e-6)
  # Without the URL line the file reads the same.
  _write_realestate(f, extr, 0.5, 0.9, 0.5, 0.45, url=False)
  again = camera_file.read(str(f), height=480, width=832)
  np.testing.assert_array_equal(again.extrinsics, cam.extrinsics)


def test_json_conventions_agree_and_round_trip(tmp_path):
  extr = _path()
  c2w = [np.linalg.inv(np.concatenate([e, [[0, 0, 0, 1]]])).tolist() for e in extr]
  k = [[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]
  (tmp_path / "c2w.json").write_text(json.dumps(dict(
      convention="camera_to_world", intrinsics=k, frames=[dict(matrix=m) for m in c2w])))
  (tmp_path / "w2c.json").write_text(json.dumps(dict(
      convention="world_to_camera", frames=[dict(matrix=e.tolist(), intrinsics=k)
                                            for e in extr])))
  a = camera_file.read(str(tmp_path / "c2w.json"), height=48, width=64, num_frames=5)
  b = camera_file.read(str(tmp_path / "w2c.json"), height=48, width=64, num_frames=5)
  np.testing.assert_allclose(a.extrinsics, extr, atol=1e-6)
  np.testing.assert_allclose(a.extrinsics, b.extrinsics, atol=1e-6)
  np.testing.assert_array_equal(a.intrinsics, b.intrinsics)
  camera_file.write_json(str(tmp_path / "out.json"), b)
  c = camera_file.read(str(tmp_path / "out.json"), height=48, width=64)
  np.testing.assert_array_equal(c.extrinsics, b.extrinsics)
  np.testing.assert_array_equal(c.intrinsics, b.intrinsics)
  # Intrinsics stated for another image size are rescaled to the video's.
  half = camera_file.read(str(tmp_path / "out.json"), height=24, width=32)
  np.testing.assert_allclose(half.intrinsics[0], np.asarray(k) * [[0.5], [0.5], [1]])


def test_field_of_view_and_relative_poses(tmp_path):
  extr = _path()
  (tmp_path / "fov.json").write_text(json.dumps(dict(
      convention="world_to_camera", fov_degrees=90,
      frames=[dict(matrix=e.tolist()) for e in extr])))
  cam = camera_file.read(str(tmp_path / "fov.json"), height=40, width=60)
  np.testing.assert_allclose(cam.intrinsics[2], [[30, 0, 30], [0, 30, 20], [0, 0, 1]],
                             atol=1e-5)
  rel = cam.relative_to_first()
  np.testing.assert_allclose(rel.extrinsics[0], np.eye(3, 4), atol=1e-6)
  # A world point keeps its camera coordinates when the world is moved to frame 0's camera.
  point = np.array([0.3, -0.2, 4.0, 1.0])
  first = np.concatenate([extr[0], [[0, 0, 0, 1]]])
  moved = first @ point
  for t in range(5):
    np.testing.assert_allclose(rel.extrinsics[t] @ moved, extr[t] @ point, atol=1e-5)


@pytest.mark.parametrize("content,name,match", [
    ("1 2 3\n", "bad.txt", "19 numbers"),
    ("0 0.5 0.5 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 x\n", "bad.txt", "19 numbers"),
    ("0 0.5 0.5 0.5 0.5 0 0 2 0 0 0 0 1 0 0 0 0 1 0\n", "bad.txt", "rotation"),
    ("0 -0.5 0.5 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n", "bad.txt", "focal"),
    ("0 nan 0.5 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n", "bad.txt", "finite"),
    ('{"convention": "c2w", "frames": [{"matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0]]}]}',
     "bad.json", "convention"),
    ('{"convention": "world_to_camera", "frames": [{"matrix": [[1,0,0,0],[0,1,0,0],'
     '[0,0,1,0]]}]}', "bad.json", "intrinsics"),
    ('{"convention": "world_to_camera", "frames": [{"matrix": [[1,0],[0,1]], '
     '"fov_degrees": 60}]}', "bad.json", "matrix"),
    ('{"convention": "world_to_camera", "fov_degrees": 200, "frames": [{"matrix": '
     '[[1,0,0,0],[0,1,0,0],[0,0,1,0]]}]}', "bad.json", "fov_degrees"),
    ("{not json", "bad.json", "readable JSON"),
    ("", "cam.yaml", ".txt"),
])
def test_bad_files_are_refused_by_field(tmp_path, content, name, match):
  f = tmp_path / name
  f.write_text(content)
  with pytest.raises(ConfigError, match=match) as info:
    camera_file.read(str(f), height=32, width=32, field="camera")
  assert str(info.value).startswith("camera")


def test_pose_count_and_missing_file(tmp_path):
  f = tmp_path / "cam.txt"
  _write_realestate(f, _path(4), 0.5, 0.5, 0.5, 0.5)
  with pytest.raises(ConfigError, match=r"camera: expected 5 poses .* got '4 in"):
    camera_file.read(str(f), height=32, width=32, num_frames=5)
  with pytest.raises(ConfigError, match="existing camera file"):
    camera_file.read(str(tmp_path / "none.txt"), height=32, width=32)
