"""Atomic output (composed_vi.io): a file appears under its final name complete or not at all,
with the umask's permissions rather than mkstemp's 0o600."""

import os

import pytest

from composed_vi import io


def _entries(folder):
  return sorted(os.listdir(folder))


def test_atomic_path_renames_on_success(tmp_path):
  final = tmp_path / "sub" / "clip.mp4"  # the folder is created
  with io.atomic_path(str(final), suffix=".mp4") as tmp:
    assert os.path.dirname(tmp) == str(final.parent)
    assert tmp.endswith(".mp4") and os.path.basename(tmp).startswith(".clip.mp4.")
    assert not final.exists()
    with open(tmp, "wb") as f:
      f.write(b"frames")
  assert final.read_bytes() == b"frames"
  assert _entries(final.parent) == ["clip.mp4"]


def test_atomic_path_tool_may_recreate_the_file(tmp_path):
  final = tmp_path / "shot.png"
  with io.atomic_path(str(final), suffix=".png") as tmp:
    os.remove(tmp)
    with open(tmp, "wb") as f:
      f.write(b"png")
  assert final.read_bytes() == b"png"


def test_atomic_path_failure_leaves_nothing(tmp_path):
  final = tmp_path / "clip.mp4"
  with pytest.raises(RuntimeError, match="encoder"):
    with io.atomic_path(str(final), suffix=".mp4") as tmp:
      with open(tmp, "wb") as f:
        f.write(b"half a file")
      raise RuntimeError("encoder failed")
  assert not os.path.exists(tmp)
  assert _entries(tmp_path) == []


def test_atomic_open_failure_keeps_the_old_file(tmp_path):
  final = tmp_path / "results.json"
  io.write_text(str(final), "old\n")
  with pytest.raises(KeyboardInterrupt):
    with io.atomic_open(str(final)) as f:
      f.write("new, incomplete")
      raise KeyboardInterrupt
  assert final.read_text() == "old\n"
  assert _entries(tmp_path) == ["results.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_mode_honours_umask(tmp_path, umask):
  old = os.umask(umask)
  try:
    assert io.file_mode() == 0o666 & ~umask
    with io.atomic_path(str(tmp_path / "a.bin")) as tmp:
      with open(tmp, "wb") as f:
        f.write(b"x")
    with io.atomic_open(str(tmp_path / "b.txt")) as f:
      f.write("x")
  finally:
    os.umask(old)
  for name in ("a.bin", "b.txt"):
    assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name
