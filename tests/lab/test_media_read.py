"""Reading images and videos (composed_vi.lab.media.read), resized as the Wan pipelines do."""

import numpy as np
import pytest
from PIL import Image

from composed_vi.errors import ConfigError
from composed_vi.lab import media
from composed_vi.lab.media import read


def _frames(t=5, h=24, w=40, c=3, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (1, h // 4, w // 4, c), dtype=np.uint8)
  video = np.repeat(np.repeat(base, 4, 1), 4, 2).repeat(t, 0).astype(np.int32)
  video = video + 10 * np.arange(t)[:, None, None, None]  # a frame-dependent shift
  return np.clip(video, 0, 255).astype(np.uint8)


def test_png_folder_gif_npy_and_mp4_read_back(tmp_path):
  video = _frames(c=4)
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, f in enumerate(video):
    Image.fromarray(f, "RGBA").save(folder / f"{i:03d}.png")
  np.testing.assert_array_equal(read.read_video(str(folder), alpha=True), video)
  np.testing.assert_array_equal(read.read_video(str(folder)), video[..., :3])
  np.save(tmp_path / "v.npy", video)
  np.testing.assert_array_equal(read.read_video(str(tmp_path / "v.npy"), alpha=True), video)
  np.save(tmp_path / "f.npy", video[..., :3] / 255.0)
  back = read.read_video(str(tmp_path / "f.npy"), alpha=True)
  np.testing.assert_array_equal(back[..., :3], video[..., :3])
  assert np.all(back[..., 3] == 255)  # no alpha in the file: opaque
  rgb = video[..., :3]
  media.write_gif(str(tmp_path / "v.gif"), rgb, upscale=1)
  gif = read.read_video(str(tmp_path / "v.gif"))
  assert gif.shape == rgb.shape and np.abs(gif.astype(int) - rgb).mean() < 8  # palette
  media.write_mp4(str(tmp_path / "v.mp4"), rgb, upscale=1)
  mp4 = read.read_video(str(tmp_path / "v.mp4"))
  assert mp4.shape[0] == 5 and mp4.shape[-1] == 3
  assert np.abs(mp4[:, :24, :40].astype(int) - rgb).mean() < 12  # lossy, yuv420


def test_resize_equals_diffusers_video_processor():
  """The Wan pipelines' VideoProcessor on PIL frames (Lanczos, then 2 x - 1), exactly."""
  import torch
  from diffusers.video_processor import VideoProcessor
  video = _frames(t=3, h=37, w=53)
  ours = read.to_model_frames(video, 32, 48)
  ref = VideoProcessor(vae_scale_factor=8).preprocess_video(
      [Image.fromarray(f) for f in video], height=32, width=48)
  with torch.no_grad():
    ref = ref[0].permute(1, 2, 3, 0).numpy()  # (C, T, H, W) -> (T, H, W, C)
  assert ours.shape == ref.shape == (3, 32, 48, 3)
  np.testing.assert_allclose(ours, ref, atol=1e-6)
  rgba = read.to_model_frames(_frames(t=2, c=4), 16, 16)
  assert rgba.shape == (2, 16, 16, 4) and rgba[..., 3].min() >= 0 and rgba[..., 3].max() <= 1


def test_bad_inputs_are_refused_by_field(tmp_path):
  (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
  (tmp_path / "junk.png").write_bytes(b"not a png")
  (tmp_path / "v.txt").write_text("x")
  np.save(tmp_path / "bad.npy", np.zeros((4, 4, 3)))
  np.save(tmp_path / "range.npy", np.full((1, 4, 4, 3), 2.0))
  (tmp_path / "empty").mkdir()
  cases = [(read.read_video, "junk.mp4", "ffmpeg can decode"),
           (read.read_image, "junk.png", "Pillow can read"),
           (read.read_image, "none.png", "existing image"),
           (read.read_video, "none.mp4", "existing video"),
           (read.read_video, "v.txt", "a video"),
           (read.read_video, "bad.npy", r"\(T, H, W, 3 or 4\)"),
           (read.read_video, "range.npy", r"floats in \[0, 1\]"),
           (read.read_video, "empty", "PNG frames")]
  for fn, name, match in cases:
    with pytest.raises(ConfigError, match=match) as info:
      fn(str(tmp_path / name), field="simulation")
    assert str(info.value).startswith("simulation: expected")


def test_frame_count_and_size_checks():
  for n in (1, 5, 81):
    assert read.check_frame_count(n) == n
  with pytest.raises(ConfigError, match=r"num_frames: expected 1 \+ 4 k frames \(e.g. 77 or 81\), "
                     r"got 80"):
    read.check_frame_count(80)
  read.check_size(480, 832)
  with pytest.raises(ConfigError, match=r"size: expected .* multiples of 16 .* got \(480, 830\)"):
    read.check_size(480, 830)
