"""Figures: a contact sheet of labelled videos (PNG) and top-down / side plots of a camera path.

Extrinsics are world-to-camera ``[R | t]`` with the camera looking along its +z axis (OpenCV
convention); files are written atomically (:mod:`composed_vi.io`).
"""

from __future__ import annotations

import math

import numpy as np

from composed_vi import io
from composed_vi.errors import check_positive_int, fail
from composed_vi.lab.media.video import auto_upscale, to_uint8, write_png


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
  write_png(path, out)
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
  return path
