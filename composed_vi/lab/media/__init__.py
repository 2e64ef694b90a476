"""Media in and out: videos to PNG / GIF / MP4, contact sheets, camera-path plots, one HTML page and
its headless-Chromium screenshot.

Videos are ``(T, H, W, C)`` arrays (numpy or JAX) with ``C`` in {1, 3}: floats in ``value_range``
(``(-1, 1)`` for model samples, ``(0, 1)`` for renders) or ``uint8`` (taken as is). Every file is
written atomically through :mod:`composed_vi.io` (a temporary file in the same folder, then
``os.replace``, with the umask's permissions), so a reader such as the HTML page never sees half
a file.

* :mod:`.video`: ``to_uint8``, ``auto_upscale``, ``write_png``, ``write_gif``, ``write_mp4``;
* :mod:`.figures`: ``contact_sheet``, ``camera_centres``, ``plot_camera_path``;
* :mod:`.html`: ``render_html``, ``write_html``;
* :mod:`.browser`: ``find_chromium``, ``screenshot_html`` and Chromium's flags;
* :mod:`.read`: images and videos in (``read_image``, ``read_video``, ``to_model_frames``) and
  the Wan frame-count and size checks.

Needs Pillow, matplotlib, imageio and imageio-ffmpeg (whose wheel bundles an ffmpeg binary);
``screenshot_html`` needs a Chromium executable. The third-party imports happen inside the
functions that use them, so importing this package is cheap.
"""

from composed_vi.lab.media.browser import (
  CHROMIUM_FLAGS,
  DEFAULT_CHROMIUM,
  find_chromium,
  screenshot_html,
)
from composed_vi.lab.media.figures import camera_centres, contact_sheet, plot_camera_path
from composed_vi.lab.media.html import render_html, write_html
from composed_vi.lab.media.video import (
  MIN_SIDE,
  auto_upscale,
  to_uint8,
  write_gif,
  write_mp4,
  write_png,
)

__all__ = [
    "CHROMIUM_FLAGS", "DEFAULT_CHROMIUM", "MIN_SIDE", "auto_upscale", "camera_centres",
    "contact_sheet", "find_chromium", "plot_camera_path", "render_html", "screenshot_html",
    "to_uint8", "write_gif", "write_html", "write_mp4", "write_png",
]
