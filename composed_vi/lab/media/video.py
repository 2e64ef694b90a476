"""Videos and frames to files: ``uint8`` conversion with integer upscaling, PNG, GIF and MP4.

Input videos are ``(T, H, W, C)`` (see :func:`to_uint8` for the value ranges); every file is
written atomically (:mod:`composed_vi.io`).
"""

from __future__ import annotations

import io as _io
import math

import numpy as np

from composed_vi import io
from composed_vi.errors import check_positive_float, check_positive_int, fail

MIN_SIDE = 256  # default upscaling target: 32x32 samples are unreadable at their own size


def auto_upscale(height: int, width: int, min_side: int = MIN_SIDE) -> int:
  """The smallest integer factor that brings the longer side to at least ``min_side`` pixels."""
  return max(1, math.ceil(min_side / max(height, width, 1)))


def to_uint8(video, value_range=(-1, 1), upscale: int | None = None,
             field: str = "video") -> np.ndarray:
  """Converts a video to ``uint8`` RGB, ``(T, H, W, 3)`` -> ``(T, H * s, W * s, 3)``.

  Args:
    video: ``(T, H, W, C)`` (or one ``(H, W, C)`` frame, returned with ``T = 1``), ``C`` in
      {1, 3} (grey is repeated to RGB). Floats (bfloat16 included) and integers other than uint8
      are mapped linearly from ``value_range`` to [0, 255] and clipped (NaN becomes 0); ``uint8``
      is kept as is; booleans (masks) become 0 / 255.
    value_range: ``(low, high)`` of float input, e.g. ``(-1, 1)`` or ``(0, 1)``.
    upscale: nearest-neighbour integer factor ``s``; ``None`` picks the smallest factor giving a
      longer side of at least 256 px, ``1`` keeps the size.
    field: the argument name used in error messages.
  """
  arr = np.asarray(video)
  if arr.dtype.kind == "V" and "float" in arr.dtype.name:  # bfloat16 / float8 (ml_dtypes)
    arr = arr.astype(np.float32)
  if arr.ndim == 3 and arr.shape[-1] in (1, 3):
    arr = arr[None]
  if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or min(arr.shape[:3]) < 1:
    fail(field, "a video of shape (T, H, W, 3) or (T, H, W, 1) with T, H, W >= 1", arr.shape)
  if arr.dtype == np.uint8:
    out = arr
  elif arr.dtype == np.bool_:
    out = arr.astype(np.uint8) * 255
  elif arr.dtype.kind in "iuf":
    try:
      low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
      fail("value_range", "a pair (low, high) of numbers", value_range)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
      fail("value_range", "finite (low, high) with high > low", value_range)
    scaled = (arr.astype(np.float32) - low) * (255.0 / (high - low))
    out = np.nan_to_num(np.clip(np.rint(scaled), 0, 255), nan=0.0).astype(np.uint8)
  else:
    fail(f"{field}.dtype", "uint8, bool, integer or floating point", arr.dtype)
  if out.shape[-1] == 1:
    out = np.repeat(out, 3, axis=-1)
  factor = auto_upscale(*out.shape[1:3]) if upscale is None else check_positive_int(
      "upscale", upscale)
  if factor > 1:
    out = np.repeat(np.repeat(out, factor, axis=1), factor, axis=2)
  return np.ascontiguousarray(out)


def write_png(path: str, image, value_range=(-1, 1), upscale: int | None = 1) -> str:
  """Writes one frame ``(H, W, C)`` (see ``to_uint8``; no upscaling by default) as a PNG.
  Returns ``path``."""
  from PIL import Image

  frame = to_uint8(image, value_range, upscale, field="image")
  if frame.shape[0] != 1:
    fail("image", "one frame of shape (H, W, C)", np.shape(image))
  buf = _io.BytesIO()
  Image.fromarray(frame[0]).save(buf, format="PNG")
  io.write_bytes(path, buf.getvalue())
  return path


def write_gif(path: str, video, fps: float = 8, value_range=(-1, 1), upscale: int | None = None,
              loop: int = 0) -> str:
  """Writes a looping GIF (Pillow) with one palette shared by all frames (no colour flicker).

  Args:
    path: output file.
    video: ``(T, H, W, C)``, see ``to_uint8``.
    fps: frames per second (GIF stores delays in 10 ms units: 8 fps gives 120 ms frames).
    value_range, upscale: see ``to_uint8``.
    loop: number of repeats, 0 = forever.

  Pillow merges identical consecutive frames into one longer frame, so a reader may count fewer
  frames than ``T`` for a video that stands still; the total duration is kept.
  Returns ``path``.
  """
  from PIL import Image

  fps = check_positive_float("fps", fps)
  frames = to_uint8(video, value_range, upscale)
  # One adaptive palette from (a subsample of) all frames: per-frame palettes flicker.
  stride = max(1, math.ceil(math.sqrt(frames.size / 3 / 2**20)))
  sub = frames[:, ::stride, ::stride]
  mosaic = sub.reshape(-1, sub.shape[2], 3)
  palette = Image.fromarray(mosaic).quantize(256, method=Image.Quantize.MEDIANCUT)
  images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
  buf = _io.BytesIO()
  images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                 duration=max(20, 10 * round(100 / fps)), loop=check_positive_int("loop", loop, 0),
                 optimize=False)
  io.write_bytes(path, buf.getvalue())
  return path


def write_mp4(path: str, video, fps: float = 8, value_range=(-1, 1), upscale: int | None = None,
              crf: int = 18) -> str:
  """Writes an H.264 / yuv420p MP4 that browsers play (imageio + imageio-ffmpeg's ffmpeg).

  Args:
    path: output file (``.mp4``).
    video: ``(T, H, W, C)``, see ``to_uint8``; odd heights / widths are padded by repeating the
      last row / column, since yuv420p needs even sizes.
    fps: frames per second.
    value_range, upscale: see ``to_uint8``.
    crf: x264 constant rate factor, 0 (lossless) to 51; 18 is visually lossless.
  Returns ``path``.
  """
  import imageio.v2 as imageio

  fps = check_positive_float("fps", fps)
  crf = check_positive_int("crf", crf, 0)
  if crf > 51:
    fail("crf", "an integer in [0, 51]", crf)
  frames = to_uint8(video, value_range, upscale)
  _, h, w, _ = frames.shape
  frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
  with io.atomic_path(path, suffix=".mp4") as tmp:
    writer = imageio.get_writer(
        tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
        quality=None, macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-movflags", "+faststart"])
    try:
      for frame in frames:
        writer.append_data(frame)
    finally:
      writer.close()
  return path
