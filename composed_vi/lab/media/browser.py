"""Headless Chromium: finding the executable and screenshotting a local HTML page to a PNG."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.parse

from composed_vi import io
from composed_vi.errors import check_positive_float, check_positive_int

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
    with io.atomic_path(png_path, suffix=".png") as tmp:
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
