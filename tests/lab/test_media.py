"""Media output: uint8 conversion, GIF / MP4 round trips, contact sheet, camera plot, HTML page
and its headless Chromium screenshot (Chromium is required: CI installs Debian's package)."""

import os

import imageio.v2 as imageio
import imageio_ffmpeg
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from composed_vi.errors import ConfigError
from composed_vi.io import file_mode
from composed_vi.lab import media

# subprocess (ffmpeg, Chromium) forks and execs at once, which JAX's fork warning does not know.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


def _ramp_video(t=6, h=32, w=32):
  """Frames of distinct solid colours in [-1, 1] (Pillow merges identical GIF frames)."""
  levels = np.linspace(-1, 1, t, dtype=np.float32)
  video = np.zeros((t, h, w, 3), np.float32)
  video[..., 0] = levels[:, None, None]
  video[..., 1] = -levels[:, None, None]
  video[..., 2] = 0.5
  return video


def _no_temp_files(folder):
  leftovers = [f for f in os.listdir(folder) if f.startswith(".") or f.endswith(".tmp")]
  assert not leftovers, leftovers


def test_to_uint8_value_ranges():
  x = np.array([-1.0, 0.0, 1.0, -3.0, 2.0, np.nan], np.float32).reshape(1, 1, 6, 1)
  out = media.to_uint8(x, (-1, 1), upscale=1)
  assert out.dtype == np.uint8 and out.shape == (1, 1, 6, 3)
  np.testing.assert_array_equal(out[0, 0, :, 0], [0, 128, 255, 0, 255, 0])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])  # grey repeated to RGB
  y = media.to_uint8(jnp.full((2, 4, 4, 3), 0.5), value_range=(0, 1), upscale=1)
  assert np.all(y == 128)
  z = media.to_uint8(jnp.ones((1, 2, 2, 3), jnp.bfloat16), upscale=1)
  assert z.dtype == np.uint8 and np.all(z == 255)
  u = np.arange(2 * 3 * 5 * 3, dtype=np.uint8).reshape(2, 3, 5, 3)
  np.testing.assert_array_equal(media.to_uint8(u, upscale=1), u)  # uint8 is kept as is
  np.testing.assert_array_equal(media.to_uint8(np.ones((1, 2, 2, 1), bool), upscale=1), 255)


def test_to_uint8_upscale():
  v = np.random.default_rng(0).uniform(-1, 1, (3, 32, 24, 3)).astype(np.float32)
  big = media.to_uint8(v)  # default: longer side >= 256
  assert big.shape == (3, 256, 192, 3)
  np.testing.assert_array_equal(big[:, ::8, ::8], media.to_uint8(v, upscale=1))
  assert media.to_uint8(v, upscale=3).shape == (3, 96, 72, 3)
  assert media.to_uint8(np.zeros((300, 200, 3)), upscale=None).shape == (1, 300, 200, 3)


@pytest.mark.parametrize("bad, kwargs", [
    (np.zeros((2, 4, 4, 2)), {}),
    (np.zeros((4, 4)), {}),
    (np.zeros((1, 4, 4, 3)), {"value_range": (1, 1)}),
    (np.zeros((1, 4, 4, 3)), {"upscale": 0}),
    (np.zeros((1, 4, 4, 3), complex), {}),
])
def test_to_uint8_rejects_bad_input(bad, kwargs):
  with pytest.raises(ConfigError):
    media.to_uint8(bad, **kwargs)


def test_gif_round_trip(tmp_path):
  path = str(tmp_path / "p0.gif")
  video = _ramp_video()
  assert media.write_gif(path, video, fps=8) == path
  with Image.open(path) as im:
    assert im.n_frames == 6
    assert im.size == (256, 256)
    assert im.info["loop"] == 0
    assert im.info["duration"] == 120  # GIF delays are in 10 ms units
    expected = media.to_uint8(video, upscale=1)
    for t in range(im.n_frames):
      im.seek(t)
      pixel = np.asarray(im.convert("RGB"))[100, 100]
      np.testing.assert_allclose(pixel, expected[t, 0, 0], atol=8)
  _no_temp_files(tmp_path)


def test_mp4_round_trip(tmp_path):
  path = str(tmp_path / "p0.mp4")
  colour = np.array([0.8, 0.2, 0.4], np.float32)
  video = np.broadcast_to(colour, (5, 33, 31, 3))  # odd sizes are padded to even
  media.write_mp4(path, video, fps=8, value_range=(0, 1), upscale=1)
  frames = imageio.mimread(path, format="FFMPEG")
  assert len(frames) == 5
  assert frames[0].shape == (34, 32, 3)
  mean = np.mean(np.stack(frames).reshape(-1, 3), axis=0)
  np.testing.assert_allclose(mean, colour * 255, atol=4)  # yuv420p + x264 tolerance
  meta = next(imageio_ffmpeg.read_frames(path))
  assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
  assert meta["fps"] == pytest.approx(8)
  _no_temp_files(tmp_path)


def test_mp4_default_upscale_and_ramp(tmp_path):
  path = str(tmp_path / "ramp.mp4")
  video = _ramp_video(t=4)
  media.write_mp4(path, video)
  frames = np.stack(imageio.mimread(path, format="FFMPEG"))
  assert frames.shape == (4, 256, 256, 3)
  expected = media.to_uint8(video, upscale=1)[:, 0, 0].astype(float)
  np.testing.assert_allclose(frames[:, 128, 128].astype(float), expected, atol=6)


def test_contact_sheet_layout(tmp_path):
  red = np.broadcast_to(np.array([255, 0, 0], np.uint8), (4, 16, 16, 3))
  blue = np.broadcast_to(np.array([0, 0, 255], np.uint8), (4, 16, 16, 3))
  rows = [("sample <0>", red), ("simulation", blue)]
  kw = dict(upscale=2, gap=4)
  full = media.contact_sheet(str(tmp_path / "sheet.png"), rows, **kw)
  three = media.contact_sheet(str(tmp_path / "sheet3.png"), rows, frames=[0, 1, -1], **kw)
  one_row = media.contact_sheet(str(tmp_path / "sheet1.png"), rows[:1], frames=2, **kw)
  with Image.open(tmp_path / "sheet.png") as im:
    assert im.size == (full.shape[1], full.shape[0])
  assert full.shape[1] - three.shape[1] == 32 + 4  # one column = cell + gap
  assert three.shape[1] - one_row.shape[1] == 32 + 4  # frames=2 -> two columns
  assert full.shape[0] - one_row.shape[0] == 32 + 4  # one row = cell + gap
  # The bottom-right cell is the last blue frame, the one above it red.
  np.testing.assert_array_equal(full[-4 - 16, -4 - 16], [0, 0, 255])
  np.testing.assert_array_equal(full[-4 - 32 - 4 - 16, -4 - 16], [255, 0, 0])
  with pytest.raises(ConfigError):
    media.contact_sheet(str(tmp_path / "bad.png"), rows, frames=[7])
  _no_temp_files(tmp_path)


def test_camera_centres_and_plot(tmp_path):
  angles = np.linspace(0, np.pi / 2, 6)
  ext = []
  for a in angles:  # orbit at radius 3 around the origin, looking at it
    centre = np.array([3 * np.sin(a), 0.5, -3 * np.cos(a)])
    fwd = -centre / np.linalg.norm(centre)
    right = np.cross([0.0, 1.0, 0.0], fwd)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])  # rows: camera axes in world coordinates
    ext.append(np.concatenate([rot, -rot @ centre[:, None]], axis=1))
  ext = np.stack(ext)
  centres, forward = media.camera_centres(ext)
  np.testing.assert_allclose(centres[-1], [3, 0.5, 0], atol=1e-12)
  np.testing.assert_allclose(np.cross(forward, -centres), 0, atol=1e-12)
  tracks = np.stack([np.linspace(-1, 1, 6), np.abs(np.sin(angles * 4)), np.zeros(6)], -1)
  path = str(tmp_path / "camera.png")
  media.plot_camera_path(path, ext, tracks[:, None], object_labels=["red ball"],
                         object_colors=[(1, 0, 0)], title="orbit")
  with Image.open(path) as im:
    assert im.format == "PNG" and im.size[0] > 500
  with pytest.raises(ConfigError):
    media.plot_camera_path(path, ext[:, :2])
  _no_temp_files(tmp_path)


def _page(tmp_path, colour=(255, 0, 0)):
  image = np.broadcast_to(np.array(colour, np.uint8), (64, 64, 3))
  media.write_png(str(tmp_path / "sheet.png"), image, upscale=4)
  green = np.broadcast_to(np.array([0, 200, 0], np.uint8), (4, 32, 32, 3))
  media.write_mp4(str(tmp_path / "p0.mp4"), green)
  media.write_gif(str(tmp_path / "p0.gif"), green)
  sections = [
      {"heading": "Inputs <b>& caption</b>", "text": "a red ball bounces, <script>x</script>",
       "table": {"mmd": 0.25, "a<b": "c&d"}},
      {"heading": "Samples", "items": [
          {"label": "particle 0 \"quoted\"", "video": "p0.mp4", "gif": "p0.gif"},
          {"label": "contact sheet", "image": "sheet.png"},
          {"label": "gif only", "gif": "p0.gif"},
          {"label": "download", "file": "sheet.png"}]},
  ]
  path = str(tmp_path / "index.html")
  media.write_html(path, "Demo <1> & 'more'", sections)
  return path


def test_html_escaping_and_links(tmp_path):
  import html.parser

  path = _page(tmp_path)
  text = open(path, encoding="utf-8").read()
  assert "<script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
  assert "<title>Demo &lt;1&gt; &amp; &#x27;more&#x27;</title>" in text
  assert "Inputs &lt;b&gt;&amp; caption&lt;/b&gt;" in text and "c&amp;d" in text
  assert "particle 0 &quot;quoted&quot;" in text
  assert "<video controls autoplay loop muted" in text

  class Links(html.parser.HTMLParser):
    def __init__(self):
      super().__init__()
      self.links = []

    def handle_starttag(self, tag, attrs):
      self.links += [v for k, v in attrs if k in ("src", "href", "poster")]

  for name in ("index.html", "p0.mp4", "p0.gif", "sheet.png"):  # not mkstemp's 0o600
    assert os.stat(tmp_path / name).st_mode & 0o777 == file_mode()
  parser = Links()
  parser.feed(text)
  assert set(parser.links) == {"p0.mp4", "p0.gif", "sheet.png"}
  for link in parser.links:
    assert os.path.isfile(tmp_path / link), link
  _no_temp_files(tmp_path)

  bad = [{"items": [{"label": "x", "image": "missing.png"}]}]
  with pytest.raises(ConfigError, match="missing.png"):
    media.write_html(str(tmp_path / "bad.html"), "t", bad)
  with pytest.raises(ConfigError):
    media.write_html(str(tmp_path / "bad.html"), "t", [{"items": [{"image": "/etc/passwd"}]}])
  with pytest.raises(ConfigError):
    media.write_html(str(tmp_path / "bad.html"), "t", [{"heading": "h", "colour": "red"}])
  assert not os.path.exists(tmp_path / "bad.html")


def test_chromium_screenshot(tmp_path):
  page = _page(tmp_path, colour=(230, 20, 30))
  shot = str(tmp_path / "shots" / "page.png")
  assert media.screenshot_html(page, shot, width=900, height=1400) == shot
  with Image.open(shot) as im:
    assert im.format == "PNG" and im.size == (900, 1400)
    pixels = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
  red = np.all(np.abs(pixels - [230, 20, 30]) <= 6, axis=-1)
  assert red.sum() >= 200 * 200  # the 256 x 256 PNG is on the page
  green = np.all(np.abs(pixels - [0, 200, 0]) <= 12, axis=-1)
  assert green.sum() >= 100 * 100  # the video (or its GIF poster) is shown
  _no_temp_files(tmp_path / "shots")


def test_screenshot_errors(tmp_path):
  page = tmp_path / "p.html"
  page.write_text("<p>hi</p>")
  with pytest.raises(FileNotFoundError, match="apt-get install"):
    media.screenshot_html(str(page), str(tmp_path / "s.png"), chromium="/nonexistent/chromium-x")
  with pytest.raises(FileNotFoundError, match="html_path"):
    media.screenshot_html(str(tmp_path / "none.html"), str(tmp_path / "s.png"))
  assert not os.path.exists(tmp_path / "s.png")
  assert media.find_chromium("chromium").endswith("chromium")
