"""Media output: videos to GIF / MP4, contact sheets, camera-path plots, one HTML page.

Videos are ``(T, H, W, C)`` arrays (numpy or JAX) with ``C`` in {1, 3}: floats in ``value_range``
(``(-1, 1)`` for model samples, ``(0, 1)`` for renders) or ``uint8`` (taken as is). Every file is
written atomically (a temporary file in the same folder, then ``os.replace``), so a reader such as
the HTML page never sees half a file. Needs Pillow, matplotlib, imageio and imageio-ffmpeg (whose
wheel bundles an ffmpeg binary); ``screenshot_html`` needs a Chromium executable.
"""

from __future__ import annotations

import contextlib
import html
import io as _io
import math
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.parse

import numpy as np

from composed_vi import io
from composed_vi.errors import check_positive_float, check_positive_int, fail

MIN_SIDE = 256  # default upscaling target: 32x32 samples are unreadable at their own size


# --------------------------------------------------------------------------- conversion


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


def _file_mode() -> int:
  """``0o666`` less the umask: temporary files are created ``0o600``, which would keep a page's
  media unreadable to a web server or another user (read from /proc: ``os.umask`` is racy)."""
  with contextlib.suppress(OSError, ValueError):
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return 0o666 & ~int(line.split()[1], 8)
  return 0o644


def _publish(path: str) -> str:
  os.chmod(path, _file_mode())
  return path


@contextlib.contextmanager
def _atomic_path(path: str, suffix: str = ""):
  """Yields a temporary path next to ``path`` (ending in ``suffix``, for tools that infer the
  format from it); renames it to ``path`` on success and removes it on failure."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp" + suffix)
  os.close(fd)
  try:
    yield tmp
    _publish(tmp)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_png(path: str, image, value_range=(-1, 1), upscale: int | None = 1) -> str:
  """Writes one frame ``(H, W, C)`` (see ``to_uint8``; no upscaling by default) as a PNG."""
  frame = to_uint8(image, value_range, upscale, field="image")
  if frame.shape[0] != 1:
    fail("image", "one frame of shape (H, W, C)", np.shape(image))
  _write_png(path, frame[0])
  return path


def _write_png(path: str, image: np.ndarray) -> None:
  from PIL import Image

  buf = _io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  with io.atomic_open(path, "wb") as f:
    f.write(buf.getvalue())
  _publish(path)


# --------------------------------------------------------------------------- videos


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
  with io.atomic_open(path, "wb") as f:
    f.write(buf.getvalue())
  return _publish(path)


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
  with _atomic_path(path, suffix=".mp4") as tmp:
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


# --------------------------------------------------------------------------- figures


def _font(size: int):
  from PIL import ImageFont

  try:
    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
  except (TypeError, OSError, ImportError):
    return ImageFont.load_default()


def contact_sheet(path: str, rows, frames=None, value_range=(-1, 1), upscale: int | None = None,
                  gap: int = 4, font_size: int = 14) -> np.ndarray:
  """Writes a PNG grid: one row per labelled video (label on the left), one column per frame.

  Args:
    path: output PNG.
    rows: ``[(label, video), ...]``; videos ``(T, H, W, C)`` (see ``to_uint8``) may differ in
      size and length: cells are as large as the largest frame, missing frames stay blank.
    frames: ``None`` (every frame), an int ``n`` (``n`` frames evenly spaced over the longest
      video) or a sequence of frame indices (negative ones count from the end of each video).
    value_range: see ``to_uint8`` (``uint8`` videos are taken as is).
    upscale: integer factor for every row; ``None``: the longer side of the largest frame
      reaches 128 px.
    gap: pixels between cells and around the grid.
    font_size: label size in pixels.
  Returns the sheet as a ``(height, width, 3)`` uint8 array. The layout is ``width = gap +
  label_width + columns * (cell_w + gap)`` and ``height = header + rows * (cell_h + gap)``.
  """
  from PIL import Image, ImageDraw

  if isinstance(rows, (str, bytes)) or not rows:
    fail("rows", "a non-empty list of (label, video) pairs", rows)
  labels, videos = [], []
  for i, row in enumerate(rows):
    if not isinstance(row, (tuple, list)) or len(row) != 2:
      fail(f"rows[{i}]", "a (label, video) pair", type(row).__name__)
    labels.append(str(row[0]))
    videos.append(np.asarray(row[1]))
  gap = check_positive_int("gap", gap, 0)
  if upscale is None:
    sides = [max(v.shape[-3:-1]) for v in videos if v.ndim >= 3]
    upscale = auto_upscale(max(sides, default=1), max(sides, default=1), min_side=128)
  videos = [to_uint8(v, value_range, upscale, field=f"rows[{i}][1]") for i, v in enumerate(videos)]
  length = max(v.shape[0] for v in videos)
  if frames is None:
    columns = list(range(length))
  elif isinstance(frames, (int, np.integer)) and not isinstance(frames, bool):
    n = check_positive_int("frames", frames)
    columns = sorted({int(round(x)) for x in np.linspace(0, length - 1, min(n, length))})
  else:
    try:
      columns = [int(c) for c in frames]
    except (TypeError, ValueError):
      fail("frames", "None, an int or a sequence of frame indices", frames)
    if not columns or any(not -length <= c < length for c in columns):
      fail("frames", f"a non-empty sequence of indices in [{-length}, {length})", frames)
  cell_h = max(v.shape[1] for v in videos)
  cell_w = max(v.shape[2] for v in videos)
  font = _font(check_positive_int("font_size", font_size))
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  text_w = lambda s: int(math.ceil(probe.textbbox((0, 0), s, font=font)[2]))
  label_w = max(text_w(s) for s in labels) + 2 * gap
  header = font_size + 2 * gap
  width = gap + label_w + len(columns) * (cell_w + gap)
  height = header + len(videos) * (cell_h + gap)
  sheet = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for j, c in enumerate(columns):
    x = gap + label_w + j * (cell_w + gap)
    draw.text((x + cell_w // 2, header - gap), f"t={c}", fill=(0, 0, 0), font=font, anchor="ms")
  for i, (label, video) in enumerate(zip(labels, videos)):
    y = header + i * (cell_h + gap)
    draw.text((gap, y + cell_h // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
    for j, c in enumerate(columns):
      if -video.shape[0] <= c < video.shape[0]:
        sheet.paste(Image.fromarray(video[c]), (gap + label_w + j * (cell_w + gap), y))
  out = np.asarray(sheet)
  _write_png(path, out)
  return out


def camera_centres(extrinsics) -> tuple[np.ndarray, np.ndarray]:
  """Camera centres and viewing directions in world coordinates.

  ``extrinsics``: ``(T, 3, 4)`` world-to-camera ``[R | t]`` (``x_cam = R x_world + t``) with the
  camera looking along its +z axis (OpenCV convention). Returns ``(centres, forward)``, both
  ``(T, 3)``: ``c = -R^T t`` and ``f = R^T e_z``.
  """
  ext = np.asarray(extrinsics, dtype=np.float64)
  if ext.ndim == 2 and ext.shape in ((3, 4), (4, 4)):
    ext = ext[None]
  if ext.ndim != 3 or ext.shape[1:] not in ((3, 4), (4, 4)) or ext.shape[0] < 1:
    fail("extrinsics", "an array of shape (T, 3, 4) (or (T, 4, 4))", ext.shape)
  rot, trans = ext[:, :3, :3], ext[:, :3, 3]
  centres = -np.einsum("tji,tj->ti", rot, trans)
  forward = rot[:, 2, :]  # R^T e_z is the third row of R
  return centres, forward


def plot_camera_path(path: str, extrinsics, object_tracks_3d=None, object_labels=None,
                     object_colors=None, title: str | None = None) -> str:
  """Writes a PNG with a top-down (x-z) and a side (z-y) view of a camera path.

  Args:
    path: output PNG.
    extrinsics: ``(T, 3, 4)`` world-to-camera matrices, see ``camera_centres``. Centres are
      coloured by frame; arrows show the viewing directions.
    object_tracks_3d: optional ``(T, K, 3)`` (or ``(T, 3)``) world positions of K objects.
    object_labels: optional K names for the legend.
    object_colors: optional K colours (matplotlib colours, e.g. RGB triples in [0, 1]).
    title: optional figure title.
  Returns ``path``.
  """
  from matplotlib.figure import Figure

  centres, forward = camera_centres(extrinsics)
  num_frames = centres.shape[0]
  tracks = None
  if object_tracks_3d is not None:
    tracks = np.asarray(object_tracks_3d, dtype=np.float64)
    if tracks.ndim == 2:
      tracks = tracks[:, None]
    if tracks.ndim != 3 or tracks.shape[-1] != 3:
      fail("object_tracks_3d", "an array of shape (T, K, 3) or (T, 3)", tracks.shape)
    k = tracks.shape[1]
    for name, value in (("object_labels", object_labels), ("object_colors", object_colors)):
      if value is not None and len(value) != k:
        fail(name, f"{k} entries (one per object)", value)
  points = centres if tracks is None else np.concatenate([centres, tracks.reshape(-1, 3)])
  extent = float(np.max(np.ptp(points, axis=0))) if points.shape[0] > 1 else 0.0
  arrow = 0.15 * extent if extent > 0 else 0.5

  fig = Figure(figsize=(10, 4.6))
  axes = fig.subplots(1, 2)
  views = (("top-down view", 0, 2, "x", "z"), ("side view", 2, 1, "z", "y"))
  for ax, (name, a, b, la, lb) in zip(axes, views):
    ax.plot(centres[:, a], centres[:, b], "-", color="0.6", lw=1, zorder=1)
    sc = ax.scatter(centres[:, a], centres[:, b], c=np.arange(num_frames), cmap="viridis",
                    s=28, zorder=3, vmin=0, vmax=max(num_frames - 1, 1), label="camera centre")
    ax.quiver(centres[:, a], centres[:, b], forward[:, a] * arrow, forward[:, b] * arrow,
              angles="xy", scale_units="xy", scale=1, color="tab:blue", width=0.004, zorder=2)
    ax.annotate("start", centres[0, [a, b]], textcoords="offset points", xytext=(6, 6),
                fontsize=8)
    if tracks is not None:
      for j in range(tracks.shape[1]):
        label = object_labels[j] if object_labels is not None else f"object {j}"
        color = object_colors[j] if object_colors is not None else None
        ax.plot(tracks[:, j, a], tracks[:, j, b], "-o", ms=3, lw=1.5, color=color, label=label,
                zorder=2)
    ax.set_xlabel(la)
    ax.set_ylabel(lb)
    ax.set_title(name)
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.15)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc="best")
  fig.colorbar(sc, ax=axes, label="frame", shrink=0.8)
  if title:
    fig.suptitle(title)
  io.write_figure(path, fig, dpi=100)
  return _publish(path)


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: sans-serif; margin: 24px; background: #fff; color: #111; }
h1 { font-size: 24px; } h2 { font-size: 18px; margin-top: 28px; }
pre { background: #f4f4f4; padding: 8px 12px; white-space: pre-wrap; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
.items { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 13px; margin-top: 4px; }
img, video { max-width: 100%; display: block; }
video, img.video { image-rendering: pixelated; }
"""

_SECTION_KEYS = {"heading", "text", "table", "items"}
_ITEM_KEYS = {"label", "video", "gif", "image", "file"}


def _esc(x) -> str:
  return html.escape(str(x), quote=True)


def _src(name: str, folder: str, field: str, check_files: bool) -> str:
  """A relative link to a file next to the page, URL-quoted then HTML-escaped."""
  if not isinstance(name, str) or not name or os.path.isabs(name) or "://" in name:
    fail(field, "a non-empty file name relative to the page's folder", name)
  if check_files and not os.path.isfile(os.path.join(folder, name)):
    fail(field, f"an existing file in {folder!r}", name)
  return _esc(urllib.parse.quote(name.replace(os.sep, "/")))


def _render_item(item, folder: str, field: str, check_files: bool) -> str:
  if not isinstance(item, dict) or not set(item) <= _ITEM_KEYS:
    fail(field, f"a dict with keys from {sorted(_ITEM_KEYS)}", item)
  label = _esc(item.get("label", ""))
  gif = item.get("gif")
  if item.get("video") is not None:
    video = _src(item["video"], folder, f"{field}.video", check_files)
    if gif is not None:
      gif = _src(gif, folder, f"{field}.gif", check_files)
      # The GIF is the poster (visible before the first frame decodes, e.g. in a screenshot)
      # and the fallback: if the MP4 cannot be played, the <source> error swaps in the <img>.
      body = (f'<video controls autoplay loop muted playsinline poster="{gif}">'
              f'<source src="{video}" type="video/mp4" onerror="var v = this.parentNode; '
              f'v.replaceWith(v.querySelector(\'img\'))">'
              f'<img class="video" src="{gif}" alt="{label}"></video>')
    else:
      body = (f'<video controls autoplay loop muted playsinline>'
              f'<source src="{video}" type="video/mp4"></video>')
  elif gif is not None:
    gif = _src(gif, folder, f"{field}.gif", check_files)
    body = f'<img class="video" src="{gif}" alt="{label}">'
  elif item.get("image") is not None:
    body = f'<img src="{_src(item["image"], folder, f"{field}.image", check_files)}" alt="{label}">'
  elif item.get("file") is not None:
    href = _src(item["file"], folder, f"{field}.file", check_files)
    body = f'<a href="{href}">{_esc(item["file"])}</a>'
  else:
    fail(field, "one of the keys 'video', 'gif', 'image' or 'file'", item)
  return f"<figure>{body}<figcaption>{label}</figcaption></figure>"


def render_html(title: str, sections, folder: str = ".", check_files: bool = True) -> str:
  """The page of ``write_html`` as a string (links are checked against ``folder``)."""
  parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>{_esc(title)}</h1>"]
  if isinstance(sections, (dict, str)):
    fail("sections", "a list of section dicts", type(sections).__name__)
  for i, sec in enumerate(sections):
    field = f"sections[{i}]"
    if not isinstance(sec, dict) or not set(sec) <= _SECTION_KEYS:
      fail(field, f"a dict with keys from {sorted(_SECTION_KEYS)}", sec)
    parts.append("<section>")
    if sec.get("heading"):
      parts.append(f"<h2>{_esc(sec['heading'])}</h2>")
    if sec.get("text"):
      parts.append(f"<pre>{_esc(sec['text'])}</pre>")
    if sec.get("table"):
      table = sec["table"]
      rows = table.items() if isinstance(table, dict) else table
      parts.append("<table>")
      for row in rows:
        cells = "".join(f"<td>{_esc(c)}</td>" for c in row)
        parts.append(f"<tr>{cells}</tr>")
      parts.append("</table>")
    items = sec.get("items") or []
    if items:
      parts.append('<div class="items">')
      parts.extend(_render_item(item, folder, f"{field}.items[{j}]", check_files)
                   for j, item in enumerate(items))
      parts.append("</div>")
    parts.append("</section>")
  parts += ["</body>", "</html>", ""]
  return "\n".join(parts)


def write_html(path: str, title: str, sections, check_files: bool = True) -> str:
  """Writes one HTML page showing videos, images and text, linking files in its own folder.

  Args:
    path: output ``.html``; every linked file must be relative to its folder (and, with
      ``check_files``, exist there), so the folder can be moved or served as a whole.
    title: page title.
    sections: ``[{"heading": str, "text": str | None, "table": {key: value} | [(cell, ...)],
      "items": [item, ...]}, ...]`` (every key optional). An item is ``{"label": str, "video":
      "p0.mp4", "gif": "p0.gif"}`` (a looping muted MP4 with the GIF as poster and fallback),
      ``{"label", "gif"}``, ``{"label", "image": "sheet.png"}`` or ``{"label", "file":
      "samples.npz"}`` (a download link). All text is HTML-escaped.
  Returns ``path``.
  """
  folder = os.path.dirname(os.path.abspath(path))
  io.write_text(path, render_html(title, sections, folder, check_files))
  return _publish(path)


# --------------------------------------------------------------------------- screenshots

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--mute-audio", "--disable-dev-shm-usage")


DEFAULT_CHROMIUM = "/usr/bin/chromium"


def find_chromium(chromium: str = DEFAULT_CHROMIUM) -> str:
  """The Chromium executable: ``chromium`` if it is a path (which must exist, except that the
  missing default falls back to ``chromium`` / ``chromium-browser`` on PATH), else looked up on
  PATH by name."""
  names = [chromium]
  if os.sep in chromium:
    if os.path.isfile(chromium) and os.access(chromium, os.X_OK):
      return chromium
    names = ["chromium", "chromium-browser"] if chromium == DEFAULT_CHROMIUM else []
  for name in names:
    found = shutil.which(name)
    if found:
      return found
  raise FileNotFoundError(
      f"chromium: no Chromium executable {chromium!r}; install it (Debian: apt-get install -y "
      "--no-install-recommends chromium) or pass chromium=<path or name on PATH>")


def screenshot_html(html_path: str, png_path: str, width: int = 1280, height: int = 2000,
                    chromium: str = DEFAULT_CHROMIUM, timeout: float = 120,
                    virtual_time_budget_ms: int | None = 3000) -> str:
  """Renders a local HTML file with headless Chromium into a ``width`` x ``height`` PNG.

  A fresh temporary profile is used (and removed), with networking, updates and sync off.
  ``virtual_time_budget_ms`` lets the page load its images and videos before the capture
  (``None`` leaves the flag out). Raises ``FileNotFoundError`` if the page or Chromium is
  missing, ``TimeoutError`` after ``timeout`` seconds (the whole Chromium process group is
  killed) and ``RuntimeError`` if Chromium fails or writes no image. Returns ``png_path``.
  """
  width = check_positive_int("width", width)
  height = check_positive_int("height", height)
  timeout = check_positive_float("timeout", timeout)
  budget = virtual_time_budget_ms
  if budget is not None:
    budget = check_positive_int("virtual_time_budget_ms", budget, 0)
  if not os.path.isfile(html_path):
    raise FileNotFoundError(f"html_path: no such file {html_path!r}")
  exe = find_chromium(chromium)
  url = "file://" + urllib.parse.quote(os.path.abspath(html_path))
  with tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True) as prof:
    with _atomic_path(png_path, suffix=".png") as tmp:
      os.remove(tmp)  # so that an empty leftover cannot pass for a screenshot
      cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={prof}", f"--screenshot={tmp}",
             f"--window-size={width},{height}"]
      if budget is not None:
        cmd.append(f"--virtual-time-budget={budget}")
      cmd.append(url)
      # A new session makes Chromium's helper processes one group that a timeout can end.
      proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
      try:
        log, _ = proc.communicate(timeout=timeout)
      except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
          os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(
            f"chromium: no screenshot of {html_path!r} after {timeout:g} s") from None
      tail = log.decode(errors="replace")[-2000:]
      if proc.returncode != 0 or not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
        raise RuntimeError(f"chromium exited with status {proc.returncode} and wrote no "
                           f"screenshot of {html_path!r}; its output ends with:\n{tail}")
  return png_path


__all__ = [
    "CHROMIUM_FLAGS", "auto_upscale", "camera_centres", "contact_sheet", "find_chromium",
    "plot_camera_path", "render_html", "screenshot_html", "to_uint8", "write_gif", "write_html",
    "write_mp4", "write_png",
]
