"""The real-input Wan pipeline (configs/wan_ctrl_vi.py) end to end on tiny random checkpoints in
the diffusers layout: a prompt, a PNG, a camera file, a depth map and an RGBA simulation in,
one MP4 per particle out; bad inputs refused by field before any weight is read."""

import os
import sys

import launcher_util as lu
import numpy as np
import pytest
from PIL import Image

from composed_vi.lab import media
from composed_vi.lab.media import read

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import wan_checkpoints  # noqa: E402

H, W, T = 32, 48, 5
CONFIG = "configs/wan_ctrl_vi.py:smoke"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
  root = tmp_path_factory.mktemp("wan")
  wan_checkpoints.make_root(str(root / "i2v"), "i2v", seed=0)
  wan_checkpoints.make_root(str(root / "vace"), "vace", seed=1)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
  Image.fromarray(image).save(root / "first.png")
  np.save(root / "depth.npy", np.full((H, W), 4.0, np.float32))
  lines = ["https://example.com/video"]
  for t in range(T):  # the camera moves right 0.1 per frame
    pose = [1, 0, 0, -0.1 * t, 0, 1, 0, 0, 0, 0, 1, 0]
    lines.append(" ".join(str(v) for v in [t, 0.6, 0.9, 0.5, 0.5, 0, 0, *pose]))
  (root / "camera.txt").write_text("\n".join(lines) + "\n")
  sim = root / "sim"
  sim.mkdir()
  for t in range(T):  # a red square moving right
    frame = np.zeros((H, W, 4), np.uint8)
    frame[10:18, 4 + 4 * t:12 + 4 * t] = (220, 30, 30, 255)
    Image.fromarray(frame, "RGBA").save(sim / f"{t:03d}.png")
  # The same simulation as an RGB MP4 on black (no alpha: the background is keyed out).
  frames = read.read_video(str(sim), alpha=True)
  media.write_mp4(str(root / "sim.mp4"), frames[..., :3], fps=16, upscale=1)
  args = ["--config.prompt=a red ball rolls on the floor",
          f"--config.image={root}/first.png", f"--config.depth={root}/depth.npy",
          f"--config.camera={root}/camera.txt", f"--config.simulation={root}/sim.mp4",
          f"--config.height={H}", f"--config.width={W}", f"--config.num_frames={T}",
          "--config.object_dilation=2",
          f"--config.backbones.i2v.root={root}/i2v", "--config.backbones.i2v.guidance_scale=3.0",
          f"--config.backbones.vace.root={root}/vace",
          "--config.backbones.vace.guidance_scale=1.0"]
  return root, args


def test_end_to_end_writes_one_mp4_per_particle(case):
  root, args = case
  run = root / "run"
  out = lu.launch(run, *args, config=CONFIG)
  assert out.returncode == 0, out.stderr[-3000:]
  x = lu.samples(run)
  assert x.shape == (2, 2, H // 8, W // 8, wan_checkpoints.Z_DIM) and np.all(np.isfinite(x))
  for i in range(2):
    video = read.read_video(str(run / f"particle_{i}.mp4"))
    assert video.shape == (T, H, W, 3)  # 1 + 4 (F' - 1) frames at the model's size
  for name in ("index.html", "contact_sheet.png", "input_first_frame.png",
               "input_simulation.mp4", "input_camera_path.png", "videos.npz"):
    assert (run / name).exists(), name
  with np.load(run / "videos.npz") as f:
    videos = f["videos"]
  assert videos.shape == (2, T, H, W, 3) and np.all(np.abs(videos) <= 1)


@pytest.mark.parametrize("override,field", [
    ("--config.backbones.vace.root={root}/missing", "backbones.vace.root"),
    ("--config.image={root}/camera.txt", "image"),
    ("--config.num_frames=6", "num_frames"),
    ("--config.width=40", "height, width"),
    ("--config.simulation={root}/first.png", "simulation"),
    ("--config.depth={root}/first.png", "depth"),
    ("--config.prompt=", "prompt"),
])
def test_bad_inputs_are_refused_before_any_weight(case, override, field):
  root, args = case
  run = root / f"bad_{field.replace(' ', '_').replace(',', '')}"
  out = lu.launch(run, *args, override.format(root=root), config=CONFIG)
  assert out.returncode == 2, out.stderr[-2000:]
  assert field in out.stderr and "Traceback" not in out.stderr
  assert not run.exists()


def test_a_camera_with_the_wrong_pose_count_is_refused(case):
  root, args = case
  lines = (root / "camera.txt").read_text().splitlines()
  (root / "short.txt").write_text("\n".join(lines[:-1]) + "\n")
  out = lu.launch(root / "bad_cam", *args, f"--config.camera={root}/short.txt", config=CONFIG)
  assert out.returncode == 2 and "camera: expected 5 poses" in out.stderr
  assert not (root / "bad_cam").exists()


def test_wan22_roots_and_shared_latent_space(tmp_path):
  """A Wan2.2 A14B root (transformer_2/ and boundary_ratio) is read without weights; a backbone
  whose VAE has another latent space is refused by field."""
  import json

  from composed_vi.errors import ConfigError
  from composed_vi.lab.problems import wan_ctrl_vi
  from configs import wan_ctrl_vi as cfg
  wan_checkpoints.make_root(str(tmp_path / "a14b"), "t2v", low_noise=True)
  wan_checkpoints.make_root(str(tmp_path / "t2v"), "t2v", seed=3)
  config = cfg.get_config("smoke")
  config.backbones.t2v.root = str(tmp_path / "a14b")
  config.backbones.vace.root = str(tmp_path / "t2v")
  config.backbones.vace.kind = "vace"
  with pytest.raises(ConfigError, match=r"backbones.vace.kind: expected 't2v'"):
    wan_ctrl_vi._backbones(config)  # a T2V folder given as VACE
  config.backbones.vace.kind = "auto"  # the default: what the folder holds
  backbones = wan_ctrl_vi._backbones(config)
  by_name = {b.name: b for b in backbones}
  assert by_name["t2v"].low_noise and by_name["t2v"].boundary == 0.875
  assert not by_name["vace"].low_noise and by_name["vace"].boundary == 0.0
  assert by_name["vace"].kind == "t2v" and by_name["t2v"].kind == "t2v"
  vae_config = tmp_path / "t2v" / "vae" / "config.json"
  data = json.loads(vae_config.read_text())
  data["latents_mean"] = [0.0] * 4
  vae_config.write_text(json.dumps(data))
  with pytest.raises(ConfigError, match=r"backbones.vace.root: expected a VAE with the latent "
                     r"space of backbones.t2v"):
    wan_ctrl_vi._backbones(config)


def test_an_rgb_simulation_is_keyed_like_its_alpha(case):
  """The MP4's keyed alpha is the PNG frames' alpha up to a one-pixel ring (compression)."""
  from composed_vi.lab.problems import wan_ctrl_vi
  from composed_vi.world.masks import dilate
  root, _ = case
  truth = read.read_video(str(root / "sim"), alpha=True)[..., 3] > 127
  keyed = wan_ctrl_vi.key_alpha(read.read_video(str(root / "sim.mp4"))) > 127
  assert keyed.shape == truth.shape
  ring = np.asarray(dilate(truth[..., None].astype(np.float32), 1, axes=(1, 2)))[..., 0] > 0.5
  outside = np.asarray(dilate((~truth)[..., None].astype(np.float32), 1, axes=(1, 2)))[..., 0]
  inner = ~(outside > 0.5)
  assert np.all(keyed[inner]) and not np.any(keyed[~ring])
  # Exact on uncompressed frames, on any plain background colour.
  frames = np.full((3, 16, 16, 3), (20, 200, 30), np.uint8)
  frames[:, 4:9, 5:12] = (200, 20, 20)
  expected = np.zeros((3, 16, 16), np.uint8)
  expected[:, 4:9, 5:12] = 255
  np.testing.assert_array_equal(wan_ctrl_vi.key_alpha(frames), expected)
