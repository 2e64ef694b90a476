"""The paper's backbone set (configs/ctrl_vi_paper.py): ``:tiny`` writes tiny random checkpoints
of every kind without torch (a Wan2.2 A14B I2V root, VideoX-Fun Control and Control-Camera
folders in the original Wan layout, a VACE root, a Wan2.1 I2V root for the encoders) and runs
the composition end to end from a fresh clone; a misnamed folder or a kind the folder does not
hold is refused by field before anything is written."""

import json
import os
import types

import launcher_util as lu
import numpy as np
import pytest

from composed_vi.errors import ConfigError
from composed_vi.lab import tiny_checkpoints as tc
from composed_vi.lab.media import read
from composed_vi.lab.problems import wan_ctrl_vi
from composed_vi.models import conditioning, fun_control_inputs
from composed_vi.models.wan import loading, safetensors_io

CONFIG = "configs/ctrl_vi_paper.py:tiny"
H, W, T = 32, 48, 5


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  run = tmp_path_factory.mktemp("paper") / "run"
  out = lu.launch(run, config=CONFIG)
  assert out.returncode == 0, out.stderr[-3000:]
  return run


def test_tiny_paper_config_runs_end_to_end(tiny_run):
  run = tiny_run
  for i in range(2):
    video = read.read_video(str(run / f"particle_{i}.mp4"))
    assert video.shape == (T, H, W, 3)
  with open(run / "summary.json") as f:
    summary = json.load(f)
  assert summary["finite"] and summary["videos_written"] == 2 and summary["context"]
  kinds = {b["name"]: (b["kind"], b["region"], b["transformers"]) for b in summary["backbones"]}
  assert kinds == {"i2v": ("i2v", "all", 2), "fun_control": ("fun_control", "object", 1),
                   "control_camera": ("control_camera", "background", 1),
                   "vace": ("vace", "object", 1)}
  assets = run / "tiny_assets"
  # The VideoX-Fun folders are in the original layout, with VideoX-Fun's modules.
  for name, module in (("fun_control", "ref_conv.weight"),
                       ("control_camera", "control_adapter.conv.weight")):
    config = json.loads((assets / name / "config.json").read_text())
    assert config["model_type"] == "i2v" and "in_dim" in config
    header, _ = safetensors_io.read_header(
        str(assets / name / "diffusion_pytorch_model.safetensors"))
    assert "head.modulation" in header and "blocks.0.self_attn.q.weight" in header
    assert module in header
  assert (assets / "wan22_i2v_a14b" / "transformer_2" / "config.json").exists()


@pytest.mark.slow
def test_a_second_run_reuses_the_assets_and_resumes(tiny_run, tmp_path):
  """Same config, same workdir: the assets are kept (manifest) and the finished run is found."""
  before = os.path.getmtime(tiny_run / "tiny_assets" / "manifest.json")
  out = lu.launch(tiny_run, config=CONFIG)
  assert out.returncode == 0, out.stderr[-2000:]
  assert os.path.getmtime(tiny_run / "tiny_assets" / "manifest.json") == before


@pytest.mark.parametrize("override,field", [
    ("--config.backbones.fun_control.root={tmp}/no_such_folder", "backbones.fun_control.root"),
    ("--config.backbones.control_camera.root={assets}/fun_control",
     "backbones.control_camera.kind"),
    ("--config.backbones.fun_control.kind=vace", "backbones.fun_control.kind"),
    ("--config.backbones.i2v.root={assets}/vace", "backbones.i2v.kind"),
    ("--config.encoders_root={assets}/vace", "encoders_root"),
    ("--config.backbones.fun_control.control=canny", "backbones.fun_control.control"),
    ("--config.simulation_depth={assets}/inputs/depth.npy", "simulation_depth"),
    ("--config.backbones.fun_control.control=video", "control_video"),
])
def test_bad_folders_and_kinds_are_refused_by_field(tiny_run, tmp_path, override, field):
  assets = tiny_run / "tiny_assets"
  run = tmp_path / "bad"
  out = lu.launch(run, f"--config.tiny_dir={assets}",
                  override.format(assets=assets, tmp=tmp_path), config=CONFIG)
  assert out.returncode == 2, out.stderr[-2000:]
  assert f"{field}:" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert not run.exists()


def test_kinds_are_told_from_the_config():
  z = 16
  base = dict(out_channels=z)
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=16)) == "t2v"
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=36, image_dim=1280)) == "i2v"
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=36)) == "i2v"  # Wan2.2 A14B
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=48)) == "fun_control"  # Wan2.1-Fun
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=52)) == "fun_control"  # Wan2.2-Fun
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=32, control_adapter_in_dim=24)) == (
      "control_camera")
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=36, control_adapter_in_dim=24)) == (
      "control_camera")  # Wan2.2-Fun camera, inpainting layout
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=16, vace_layers=[0, 2])) == "vace"
  assert wan_ctrl_vi.detect_kind(dict(base, in_channels=20)) is None


def test_depth_video_and_simulation_depth(tmp_path):
  depth = np.zeros((2, 2, 3), np.float32)
  depth[0, 0, 0], depth[1, 1, 2] = 2.0, 4.0
  video = wan_ctrl_vi.depth_video(depth)
  assert video.shape == (2, 2, 3, 3)
  np.testing.assert_array_equal(video[0, 0, 0], [1.0, 1.0, 1.0])  # nearest: white
  np.testing.assert_array_equal(video[1, 1, 2], [0.0, 0.0, 0.0])  # twice as far: mid grey
  assert np.all(video[depth == 0] == -1.0)  # no object: black
  path = tmp_path / "d.npy"
  np.save(path, np.ones((3, 8, 8), np.float32))
  out = wan_ctrl_vi.read_simulation_depth(str(path), num_frames=3, height=16, width=4)
  assert out.shape == (3, 16, 4) and np.all(out == 1.0)
  with pytest.raises(ConfigError, match=r"simulation_depth: expected shape \(5, H, W\)"):
    wan_ctrl_vi.read_simulation_depth(str(path), num_frames=5, height=16, width=4)
  np.save(path, -np.ones((3, 8, 8), np.float32))
  with pytest.raises(ConfigError, match="simulation_depth: expected finite depths"):
    wan_ctrl_vi.read_simulation_depth(str(path), num_frames=3, height=16, width=4)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
  root = tc.diffusers_root(str(tmp_path_factory.mktemp("vae") / "t2v"), "t2v")
  return loading.load_vae(os.path.join(root, "vae"))


class _Cfg:
  """The DiT config fields fun_inputs reads."""

  def __init__(self, in_channels, ref=None):
    self.in_channels, self.out_dim, self.ref_conv_in_dim = in_channels, tc.Z_DIM, ref


def _inputs(rng):
  image = rng.uniform(-1, 1, (H, W, 3)).astype(np.float32)
  sim_depth = np.zeros((T, H, W), np.float32)
  sim_depth[:, 8:16, 8:16] = 3.0
  return dict(image=image, simulation_depth=sim_depth)


def test_fun_control_condition_layouts(tiny_vae):
  """The plain layout (Wan2.1-Fun: control latents, then the first frame's in latent frame 0)
  and the inpainting one (Wan2.2-Fun: control, the mask keeping frame 0, the latents of the
  first frame followed by zeros), against the pieces encoded here."""
  vae, params = tiny_vae
  config = types.SimpleNamespace(num_frames=T, height=H, width=W)
  inputs = _inputs(np.random.default_rng(0))
  z = tc.Z_DIM
  shape = (2, H // 8, W // 8, z)
  control = np.asarray(conditioning.encode(vae, params, wan_ctrl_vi.depth_video(
      inputs["simulation_depth"])))
  first = np.asarray(conditioning.encode(vae, params, inputs["image"][None]))[0]
  cond, ref, camera = wan_ctrl_vi.fun_inputs(config, inputs, vae, params, _Cfg(3 * z, ref=z),
                                             "fun_control", "depth", shape, "backbones.f")
  assert cond.shape == shape[:3] + (2 * z,) and camera is None
  np.testing.assert_allclose(cond[..., :z], control, atol=1e-6)
  np.testing.assert_allclose(cond[0, ..., z:], first, atol=1e-6)
  assert np.all(cond[1:, ..., z:] == 0)
  np.testing.assert_allclose(ref, first, atol=1e-6)
  # The user's own control video (e.g. Canny edges) in the control slot.
  inputs["control_video"] = np.where(np.random.default_rng(1).random((T, H, W, 1)) < 0.1,
                                     1.0, -1.0).repeat(3, -1).astype(np.float32)
  cond, _, _ = wan_ctrl_vi.fun_inputs(config, inputs, vae, params, _Cfg(3 * z, ref=z),
                                      "fun_control", "video", shape, "backbones.f")
  np.testing.assert_allclose(
      cond[..., :z], np.asarray(conditioning.encode(vae, params, inputs["control_video"])),
      atol=1e-6)
  # Inpainting layout, no control video: zeros, the kept-frame mask, the masked video.
  cond, ref, _ = wan_ctrl_vi.fun_inputs(config, inputs, vae, params, _Cfg(3 * z + 4),
                                        "fun_control", "none", shape, "backbones.f")
  assert cond.shape == shape[:3] + (2 * z + 4,) and ref is None
  assert np.all(cond[..., :z] == 0)
  np.testing.assert_array_equal(cond[0, 0, 0, z:z + 4], [1, 1, 1, 1])  # frame 0 kept
  np.testing.assert_array_equal(cond[1, 0, 0, z:z + 4], [0, 0, 0, 0])
  given = np.zeros((T, H, W, 3), np.float32)
  given[0] = inputs["image"]
  np.testing.assert_allclose(cond[..., z + 4:],
                             np.asarray(conditioning.encode(vae, params, given)), atol=1e-6)
  # A transformer whose channels fit neither layout is refused by the backbone's field.
  with pytest.raises(ConfigError, match=r"backbones.f: in_channels: expected"):
    wan_ctrl_vi.fun_inputs(config, inputs, vae, params, _Cfg(2 * z + 3), "fun_control",
                           "depth", shape, "backbones.f")
  # A camera model: no control slot, the start image, and the Pluecker input per pixel.
  from composed_vi.lab import camera_file
  poses = np.tile(np.eye(4, dtype=np.float32)[:3], (T, 1, 1))
  poses[:, 0, 3] = -0.1 * np.arange(T)
  k = np.tile(np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]], np.float32),
              (T, 1, 1))
  inputs["camera"] = camera_file.CameraPath(k, poses, H, W)
  cond, _, camera = wan_ctrl_vi.fun_inputs(config, inputs, vae, params, _Cfg(2 * z),
                                           "control_camera", "none", shape, "backbones.c")
  np.testing.assert_allclose(cond[0], first, atol=1e-6)
  assert camera.shape == (2, H, W, 24) and np.all(np.isfinite(camera))
  assert fun_control_inputs.condition_channels(z, camera=True) == cond.shape[-1]


def test_written_safetensors_read_back_with_the_safetensors_package(tmp_path):
  import ml_dtypes
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  tensors = {"b.weight": tc.random_tensor("b.weight", (3, 5), 0),
             "a.norm.weight": tc.random_tensor("a.norm.weight", (5,), 0),
             "c": np.arange(4, dtype=np.int64), "d": np.ones((2, 2), ml_dtypes.bfloat16)}
  path = str(tmp_path / "x.safetensors")
  safetensors_io.write_file(path, tensors, {"format": "pt"})
  ours = safetensors_io.open_file(path)
  # numpy has no bfloat16: the package reads the file without it.
  plain = {k: v for k, v in tensors.items() if k != "d"}
  safetensors_io.write_file(str(tmp_path / "y.safetensors"), plain)
  theirs = safetensors_numpy.load_file(str(tmp_path / "y.safetensors"))
  for k, v in tensors.items():
    np.testing.assert_array_equal(np.asarray(ours[k], np.float64), np.asarray(v, np.float64))
  for k, v in plain.items():
    np.testing.assert_array_equal(theirs[k], v)
  # The same name and seed give the same tensor; norm scales sit near 1, weights near 0.
  np.testing.assert_array_equal(tc.random_tensor("b.weight", (3, 5), 0), tensors["b.weight"])
  assert abs(tensors["a.norm.weight"].mean() - 1) < 0.2 and abs(tensors["b.weight"].mean()) < 0.5
