"""Images and videos from files, resized as the Wan pipelines resize them, with their checks.

* :func:`read_image`: PNG / JPEG / WebP / ... through Pillow, ``uint8 (H, W, C)``.
* :func:`read_video`: MP4 / WebM / MOV / MKV / AVI through imageio's ffmpeg (the binary bundled
  by imageio-ffmpeg), GIF through Pillow, a folder of PNG frames (sorted by name: the one way
  to give an RGBA simulation losslessly), or a ``.npy`` array ``(T, H, W, C)`` (``uint8``, or
  floats in [0, 1]); ``uint8 (T, H, W, C)``, ``C`` 3 or 4 (``alpha=True``).
* :func:`to_model_frames`: each frame resized with Pillow's Lanczos filter to the model's size
  and mapped to [-1, 1], as diffusers' ``VideoProcessor.preprocess`` does for PIL frames (the
  Wan pipelines' default), alpha resized the same way and kept in [0, 1].
* :func:`check_frame_count`, :func:`check_size`: the Wan VAE's ``1 + 4 k`` frames and sizes
  divisible by the VAE's and the patch's factors, named by field.

Every error is a ``ConfigError`` naming the field, the expected and the actual value.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from composed_vi.errors import fail

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")


def read_image(path: str, *, field: str = "image", alpha: bool = False) -> np.ndarray:
  """``uint8 (H, W, 3)`` (``(H, W, 4)`` with ``alpha``) of an image file."""
  from PIL import Image, UnidentifiedImageError
  if not os.path.isfile(path):
    fail(field, "an existing image file", path)
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGBA" if alpha else "RGB"))
  except (UnidentifiedImageError, OSError) as e:
    fail(field, "an image Pillow can read (PNG, JPEG, WebP, ...)", f"{path}: {e}")


def read_video(path: str, *, field: str = "video", alpha: bool = False) -> np.ndarray:
  """``uint8 (T, H, W, 3)`` (``(T, H, W, 4)`` with ``alpha``: 255 where the file has none)."""
  if os.path.isdir(path):
    files = sorted(glob.glob(os.path.join(path, "*.png")))
    if not files:
      fail(field, "a folder of PNG frames", f"{path} (no .png inside)")
    frames = [read_image(f, field=field, alpha=alpha) for f in files]
    if len({f.shape for f in frames}) != 1:
      fail(field, "PNG frames of one size", f"{path}: sizes {sorted({f.shape for f in frames})}")
    return np.stack(frames)
  if not os.path.isfile(path):
    fail(field, "an existing video file or folder of PNG frames", path)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npy":
    return _from_array(np.load(path), field, path, alpha)
  if ext == ".gif":
    return _read_gif(path, field, alpha)
  if ext not in VIDEO_EXTENSIONS:
    fail(field, f"a video ({', '.join(VIDEO_EXTENSIONS)}, .gif), a .npy array or a folder of "
         "PNG frames", path)
  import imageio.v2 as imageio
  try:
    reader = imageio.get_reader(path, "ffmpeg", pixelformat="rgba" if alpha else "rgb24")
    with reader:
      frames = [np.asarray(f) for f in reader]
  except Exception as e:  # imageio raises OSError, RuntimeError or its own types
    fail(field, "a video ffmpeg can decode", f"{path}: {type(e).__name__}: {e}")
  if not frames:
    fail(field, "at least one frame", f"none in {path}")
  return np.stack(frames).astype(np.uint8)


def _read_gif(path, field, alpha):
  from PIL import Image, ImageSequence, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      return np.stack([np.asarray(f.convert("RGBA" if alpha else "RGB"))
                       for f in ImageSequence.Iterator(im)])
  except (UnidentifiedImageError, OSError) as e:
    fail(field, "a GIF Pillow can read", f"{path}: {e}")


def _from_array(a, field, path, alpha):
  if a.ndim != 4 or a.shape[-1] not in (3, 4):
    fail(field, "an array (T, H, W, 3 or 4)", f"shape {a.shape} in {path}")
  if a.dtype != np.uint8:
    a = np.asarray(a, np.float64)
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
      fail(field, "uint8, or floats in [0, 1]", f"{a.dtype} in [{a.min():.3g}, {a.max():.3g}]")
    a = np.round(a * 255).astype(np.uint8)
  if alpha and a.shape[-1] == 3:
    a = np.concatenate([a, np.full(a.shape[:-1] + (1,), 255, np.uint8)], -1)
  return a if alpha else a[..., :3]


def to_model_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """``uint8 (T, H, W, C)`` or ``(H, W, C)`` -> float32 ``(T, height, width, C)``: RGB in
  [-1, 1], alpha (a fourth channel) in [0, 1]; each frame resized by Pillow's Lanczos filter."""
  from PIL import Image
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  out = []
  for f in frames:
    size = (width, height)
    rgb = np.asarray(Image.fromarray(f[..., :3]).resize(size, Image.Resampling.LANCZOS))
    chans = [rgb.astype(np.float32) / 255.0 * 2.0 - 1.0]
    if f.shape[-1] == 4:
      a = np.asarray(Image.fromarray(f[..., 3]).resize(size, Image.Resampling.LANCZOS))
      chans.append(a.astype(np.float32)[..., None] / 255.0)
    out.append(np.concatenate(chans, -1))
  return np.stack(out)


def check_frame_count(num_frames: int, *, field: str = "num_frames", temporal: int = 4) -> int:
  """``num_frames`` if it is ``1 + temporal k`` (the Wan VAE's causal time compression)."""
  if num_frames < 1 or (num_frames - 1) % temporal:
    below = 1 + temporal * ((max(num_frames, 1) - 1) // temporal)
    fail(field, f"1 + {temporal} k frames (e.g. {below} or {below + temporal})", num_frames)
  return num_frames


def check_size(height: int, width: int, *, multiple: int = 16, field: str = "size") -> None:
  """Refuses a size not divisible by ``multiple`` (the VAE's 8 times the patch's 2 for Wan)."""
  if height % multiple or width % multiple or height < multiple or width < multiple:
    fail(field, f"height and width positive multiples of {multiple} (the VAE's spatial factor "
         "times the transformer's patch)", (height, width))
