"""One HTML page of videos, images, tables and text, linking files in its own folder.

Every link is relative to the page's folder (and, by default, checked to exist there), so the
folder can be moved or served as a whole; all text is HTML-escaped.
"""

from __future__ import annotations

import html
import os
import urllib.parse

from composed_vi import io
from composed_vi.errors import fail

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
  return path
