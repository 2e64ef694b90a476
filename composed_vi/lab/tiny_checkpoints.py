"""Tiny random Wan-family checkpoints, written without torch, in the layouts the real ones ship.

``configs/ctrl_vi_paper.py:tiny`` runs the paper's backbone set end to end on a CPU from a
fresh clone: nothing can be downloaded, and torch is a test-time dependency only. So every
checkpoint kind is written here from our own key tables (each tensor under the name and in the
shape the real checkpoints use, random values), and read back by the same loaders as a real
checkpoint would be:

* :func:`diffusers_root`: a Wan-AI ``*-Diffusers`` repository (``model_index.json``,
  ``transformer/`` (and Wan2.2 A14B's ``transformer_2/`` with ``boundary_ratio``), ``vae/``,
  ``text_encoder/`` (UMT5), ``tokenizer/`` (a word-level ``tokenizer.json`` with T5's special
  tokens), ``scheduler/``; for Wan2.1 I2V also ``image_encoder/`` (CLIP vision) and
  ``image_processor/``). Kinds: ``t2v``, ``i2v`` (Wan2.1: CLIP image branch), ``i2v_a14b``
  (Wan2.2: no image branch, two transformers), ``vace``.
* :func:`videox_fun_folder`: a VideoX-Fun release folder: ``config.json`` in the original Wan
  layout (``model_type``, ``dim``, ``in_dim``, ... and VideoX-Fun's ``add_control_adapter`` /
  ``add_ref_conv``) and ``diffusion_pytorch_model.safetensors`` under the original names
  (``blocks.N.self_attn.q``, ``head.head``, ``control_adapter.*``, ``ref_conv``). Kinds:
  ``fun_control`` (Wan2.1-Fun V1.1 Control: 16 noise + 16 control + 16 start-image channels,
  CLIP image branch, reference conv) and ``control_camera`` (Wan2.1-Fun V1.1 Control-Camera:
  16 + 16 channels, the camera adapter, CLIP image branch). Its text encoder and VAE are the
  originals' ``.pth`` files in a real release; a run takes them from a diffusers root instead
  (``config.encoders_root``), as every Wan2.1 model shares UMT5-xxl and the Wan2.1 VAE.

Values: weights ``N(0, 1/fan_in)``, biases and modulation tables ``0.02 N(0, 1)``, norm scales
``1 + 0.1 N(0, 1)``, each tensor from its own seed (``seed`` and the tensor's name), so a folder
is the same on every machine. 8 latent channels keep the kinds' channel counts apart (with 4,
Wan2.1 I2V's ``2 z + 4`` equals Fun-Control's ``3 z``), so each kind is told from its config.
"""

from __future__ import annotations

import json
import math
import os
import zlib

import numpy as np

from composed_vi import io
from composed_vi.errors import check_choice
from composed_vi.lab import runner
from composed_vi.lab.media import read
from composed_vi.models import clip_vision, umt5
from composed_vi.models.wan import convert_transformer, convert_vae, original_layout
from composed_vi.models.wan import transformer as wan
from composed_vi.models.wan.safetensors_io import write_file

#: The tiny sizes: latent channels, UMT5 width, CLIP width, DiT heads x head width.
Z_DIM, TEXT_DIM, IMAGE_DIM, HEADS, HEAD_DIM = 8, 16, 24, 2, 12
DIFFUSERS_KINDS = ("t2v", "i2v", "i2v_a14b", "vace")
FUN_KINDS = ("fun_control", "control_camera")
BOUNDARY_RATIO = 0.875  # Wan2.2 A14B's model_index.json
WORDS = ("a", "red", "ball", "rolls", "on", "the", "floor", "blue", "cube", "falls", "room",
         "camera", "pans", "left", "slowly", "wooden", "box", "video", "of", "and")


def random_tensor(name: str, shape, seed: int) -> np.ndarray:
  """One tensor of a random checkpoint, from ``seed`` and its ``name`` (see the module)."""
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  shape = tuple(int(s) for s in shape)
  n = rng.standard_normal(shape).astype(np.float32)
  leaf = name.rsplit(".", 1)[-1]
  if "norm" in name and leaf in ("weight", "gamma", "scale"):
    return 1.0 + 0.1 * n
  if leaf == "bias" or len(shape) < 2 or "modulation" in name or "scale_shift" in name:
    return 0.02 * n
  return n / math.sqrt(max(1, math.prod(shape[1:])))


def _write_tensors(folder: str, shapes: dict, seed: int, config: dict,
                   filename: str = "diffusion_pytorch_model.safetensors") -> None:
  os.makedirs(folder, exist_ok=True)
  write_file(os.path.join(folder, filename),
             {k: random_tensor(k, s, seed) for k, s in shapes.items()}, {"format": "pt"})
  io.write_json(os.path.join(folder, "config.json"), config)


def torch_shape(layout: str, shape) -> tuple[int, ...]:
  """The torch shape whose tensor our ``layout`` turns into ``shape`` (channels-last kernels:
  linear ``(I, O)`` <- ``(O, I)``, conv2d ``(kh, kw, I, O)`` <- ``(O, I, kh, kw)``, conv3d
  ``(kt, kh, kw, I, O)`` <- ``(O, I, kt, kh, kw)``)."""
  s = tuple(int(v) for v in shape)
  if layout == "linear" and len(s) == 2:
    return s[::-1]
  if layout == "conv2d" and len(s) == 4:
    return (s[3], s[2], s[0], s[1])
  if layout == "conv3d" and len(s) == 5:
    return (s[4], s[3], s[0], s[1], s[2])
  return s


def _transformer_shapes(diff_config: dict) -> dict[str, tuple[int, ...]]:
  """``{diffusers key: torch shape}`` of a DiT config (our key table, read backwards)."""
  config = wan.config_from_diffusers(diff_config)
  ours = convert_transformer.expected_shapes(config)
  return {k: torch_shape(layout, ours[path])
          for k, (path, layout) in convert_transformer.key_table(config).items()}


def _dit_config(kind: str, num_layers: int) -> dict:
  common = dict(patch_size=[1, 2, 2], num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
                out_channels=Z_DIM, text_dim=TEXT_DIM, freq_dim=16, ffn_dim=32,
                num_layers=num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6, rope_max_seq_len=32, image_dim=None, added_kv_proj_dim=None,
                pos_embed_seq_len=None)
  if kind == "i2v":  # 4 mask channels + the first frame's latents, and CLIP
    return dict(common, _class_name="WanTransformer3DModel", in_channels=2 * Z_DIM + 4,
                image_dim=IMAGE_DIM, added_kv_proj_dim=HEADS * HEAD_DIM)
  if kind == "i2v_a14b":  # 4 mask channels + the first frame's latents, no CLIP
    return dict(common, _class_name="WanTransformer3DModel", in_channels=2 * Z_DIM + 4)
  if kind == "vace":
    return dict(common, _class_name="WanVACETransformer3DModel", in_channels=Z_DIM,
                vace_layers=[0], vace_in_channels=2 * Z_DIM + 64)
  return dict(common, _class_name="WanTransformer3DModel", in_channels=Z_DIM)


def _vae(folder: str, seed: int) -> None:
  config = dict(_class_name="AutoencoderKLWan", base_dim=8, z_dim=Z_DIM, dim_mult=[1, 2, 2, 2],
                num_res_blocks=1, temperal_downsample=[False, True, True],
                latents_mean=[0.1, -0.2, 0.3, 0.0, 0.2, -0.1, 0.0, 0.05],
                latents_std=[1.5, 0.5, 2.0, 1.0, 1.2, 0.8, 1.0, 0.9])
  table = convert_vae.key_table(convert_vae.config_from_diffusers(config))
  _write_tensors(folder, {e.key: e.torch_shape for e in table}, seed, config)


def _text_encoder(folder: str, vocab_size: int, seed: int) -> None:
  hf = dict(architectures=["UMT5EncoderModel"], model_type="umt5", vocab_size=vocab_size,
            d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)
  config = umt5.UMT5Config.from_hf(hf)
  ours = umt5.param_shapes(config)
  shapes = {k: torch_shape(layout, ours[path])
            for k, (path, layout) in umt5.key_table(config).items()}
  _write_tensors(folder, shapes, seed, hf, "model.safetensors")


def _image_encoder(folder: str, seed: int) -> None:
  hf = dict(architectures=["CLIPVisionModel"], model_type="clip_vision_model",
            hidden_size=IMAGE_DIM, intermediate_size=40, num_hidden_layers=3,
            num_attention_heads=2, image_size=28, patch_size=7, hidden_act="quick_gelu",
            layer_norm_eps=1e-5, num_channels=3)
  config = clip_vision.CLIPVisionConfig.from_hf(hf)
  ours = clip_vision.param_shapes(config)
  shapes = {k: torch_shape(layout, ours[path])
            for k, (path, layout) in clip_vision.key_table(config).items()}
  _write_tensors(folder, shapes, seed, hf, "model.safetensors")
  io.write_json(os.path.join(os.path.dirname(folder), "image_processor",
                             "preprocessor_config.json"),
                dict(image_processor_type="CLIPImageProcessor", do_resize=True,
                     size={"shortest_edge": 28}, do_center_crop=True,
                     crop_size={"height": 28, "width": 28}, do_rescale=True,
                     rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
                     resample=3, image_mean=[0.48145466, 0.4578275, 0.40821073],
                     image_std=[0.26862954, 0.26130258, 0.27577711]))


def _tokenizer(folder: str) -> int:
  """A word-level ``tokenizer.json`` with T5's ids (pad 0, ``</s>`` 1, ``<unk>`` 2)."""
  import tokenizers
  from tokenizers import models, pre_tokenizers

  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
  vocab.update({w: i + 3 for i, w in enumerate(WORDS)})
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  os.makedirs(folder, exist_ok=True)
  io.write_text(os.path.join(folder, "tokenizer.json"), tok.to_str())
  io.write_json(os.path.join(folder, "tokenizer_config.json"),
                dict(tokenizer_class="T5TokenizerFast", eos_token="</s>", pad_token="<pad>",
                     unk_token="<unk>", model_max_length=512))
  return len(vocab)


def diffusers_root(folder: str, kind: str = "i2v", *, seed: int = 0, num_layers: int = 2) -> str:
  """A tiny Wan-AI ``*-Diffusers`` repository of ``kind`` (``DIFFUSERS_KINDS``) at ``folder``."""
  check_choice("kind", kind, DIFFUSERS_KINDS)
  vocab = _tokenizer(os.path.join(folder, "tokenizer"))
  # One family shares its UMT5, VAE and CLIP: their weights do not depend on ``seed``.
  _text_encoder(os.path.join(folder, "text_encoder"), vocab, 1)
  _vae(os.path.join(folder, "vae"), 2)
  dit = _dit_config(kind, num_layers)
  _write_tensors(os.path.join(folder, "transformer"), _transformer_shapes(dit), seed + 3, dit)
  pipeline = {"t2v": "WanPipeline", "i2v": "WanImageToVideoPipeline",
              "i2v_a14b": "WanImageToVideoPipeline", "vace": "WanVACEPipeline"}[kind]
  index = {"_class_name": pipeline, "vae": ["diffusers", "AutoencoderKLWan"],
           "scheduler": ["diffusers", "UniPCMultistepScheduler"],
           "text_encoder": ["transformers", "UMT5EncoderModel"],
           "tokenizer": ["transformers", "T5TokenizerFast"],
           "transformer": ["diffusers", dit["_class_name"]]}
  if kind == "i2v":
    _image_encoder(os.path.join(folder, "image_encoder"), 4)
    index.update(image_encoder=["transformers", "CLIPVisionModel"],
                 image_processor=["transformers", "CLIPImageProcessor"])
  if kind == "i2v_a14b":  # the low-noise expert: the same architecture, other weights
    _write_tensors(os.path.join(folder, "transformer_2"), _transformer_shapes(dit), seed + 5,
                   dit)
    index.update(transformer_2=index["transformer"], boundary_ratio=BOUNDARY_RATIO)
  io.write_json(os.path.join(folder, "scheduler", "scheduler_config.json"),
                {"_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0,
                 "num_train_timesteps": 1000, "prediction_type": "flow_prediction",
                 "use_flow_sigmas": True})
  io.write_json(os.path.join(folder, "model_index.json"), index)
  return folder


def videox_fun_config(kind: str, num_layers: int = 2) -> dict:
  """The original-layout ``config.json`` of a tiny VideoX-Fun ``kind`` (``FUN_KINDS``)."""
  check_choice("kind", kind, FUN_KINDS)
  config = dict(_class_name="WanTransformer3DModel", model_type="i2v", dim=HEADS * HEAD_DIM,
                ffn_dim=32, freq_dim=16, num_heads=HEADS, num_layers=num_layers,
                out_dim=Z_DIM, text_dim=TEXT_DIM, text_len=512, eps=1e-6,
                cross_attn_norm=True, qk_norm=True, window_size=[-1, -1])
  if kind == "fun_control":  # noise + control latents + start image
    return dict(config, in_dim=3 * Z_DIM, add_ref_conv=True, in_dim_ref_conv=Z_DIM)
  # noise + start image; the camera through the adapter (6 Pluecker channels x 4 frames)
  return dict(config, in_dim=2 * Z_DIM, add_control_adapter=True, in_dim_control_adapter=24,
              downscale_factor_control_adapter=8)


def videox_fun_folder(folder: str, kind: str = "fun_control", *, seed: int = 0,
                      num_layers: int = 2) -> str:
  """A tiny VideoX-Fun release folder of ``kind`` (``FUN_KINDS``), original Wan names."""
  original = videox_fun_config(kind, num_layers)
  # The tensors carry the CLIP branch; its width is read from them (IMAGE_DIM, not 1280).
  diff = original_layout.diffusers_config_from_original(original)
  diff.update(image_dim=IMAGE_DIM, added_kv_proj_dim=HEADS * HEAD_DIM, rope_max_seq_len=32)
  shapes = _transformer_shapes(diff)
  rename = original_layout.original_to_diffusers_keys(diff)
  _write_tensors(folder, {o: shapes[d] for o, d in rename.items()}, seed + 3, original)
  return folder


#: The files :func:`inputs` writes, by config field.
INPUT_FILES = dict(image="first.png", depth="depth.npy", camera="camera.txt",
                   simulation="simulation", simulation_depth="simulation_depth.npy")


def input_paths(folder: str) -> dict:
  """``{config field: path}`` of the inputs :func:`inputs` writes into ``folder``."""
  return {k: os.path.join(folder, v) for k, v in INPUT_FILES.items()}


def inputs(folder: str, *, height: int, width: int, num_frames: int, seed: int = 0) -> dict:
  """The inputs of a tiny run, drawn here: a first frame (a floor, a wall and a red box), its
  depth, a camera that pans right, and a blue cube falling onto the floor rendered alone (RGBA
  PNG frames) with its depth (``.npy``). Returns ``{field: path}`` for the config."""
  from PIL import Image

  os.makedirs(folder, exist_ok=True)
  h, w, t = height, width, num_frames
  y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  horizon = 0.45 * h
  wall = np.stack([0.75 + 0.1 * np.sin(x / 3), 0.7 + 0 * x, 0.6 + 0 * x], -1)
  floor = np.stack([0.55 + 0.15 * ((x // 6 + y // 6) % 2), 0.4 + 0 * x, 0.25 + 0 * x], -1)
  image = np.where((y < horizon)[..., None], wall, floor)
  depth = np.where(y < horizon, 6.0, 6.0 * horizon / np.maximum(y, horizon + 1e-3))
  bx, by = int(0.65 * w), int(0.6 * h)
  image[by:by + h // 6, bx:bx + w // 6] = (0.8, 0.15, 0.1)
  rng = np.random.default_rng(seed)
  image = np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1)
  paths = input_paths(folder)
  with io.atomic_path(paths["image"], ".png") as tmp:
    Image.fromarray((255 * image).round().astype(np.uint8)).save(tmp)
  with io.atomic_open(paths["depth"], "wb") as f:
    np.save(f, depth.astype(np.float32))
  fx = 0.9  # RealEstate10K: intrinsics normalised by the width / height
  lines = ["https://example.com/tiny"]
  for i in range(t):  # world-to-camera [R | t]: the camera moves right 0.05 per frame
    pose = [1, 0, 0, -0.05 * i, 0, 1, 0, 0, 0, 0, 1, 0]
    lines.append(" ".join(str(v) for v in [i, fx, fx * w / h, 0.5, 0.5, 0, 0, *pose]))
  io.write_text(paths["camera"], "\n".join(lines) + "\n")
  os.makedirs(paths["simulation"], exist_ok=True)
  sim_depth = np.zeros((t, h, w), np.float32)  # 0 where no simulated object is
  size = max(2, w // 6)
  for i in range(t):  # the cube falls from the top and rests on the floor
    top = int(min(0.1 * h + i * 0.5 * h / max(1, t - 1), 0.75 * h - size))
    left = int(0.25 * w)
    frame = np.zeros((h, w, 4), np.uint8)
    frame[top:top + size, left:left + size] = (40, 60, 220, 255)
    with io.atomic_path(os.path.join(paths["simulation"], f"{i:03d}.png"), ".png") as tmp:
      Image.fromarray(frame, "RGBA").save(tmp)
    sim_depth[i, top:top + size, left:left + size] = 3.0
  with io.atomic_open(paths["simulation_depth"], "wb") as f:
    np.save(f, sim_depth)
  return paths


def prepare(config, workdir: str):
  """For ``config.tiny`` (``configs/ctrl_vi_paper.py:tiny``): writes the tiny checkpoints and
  inputs into ``config.tiny_dir`` (default ``<workdir>/tiny_assets``; kept and reused when its
  manifest matches) and returns a copy of ``config`` whose unset roots, ``encoders_root`` and
  input files point at them (a field the user set is kept, and checked as any run checks
  it). Other configs are returned as they are. The sizes are checked before anything is
  written; the other fields after, when the run validates them (give a built ``tiny_dir`` to
  have a bad field refused before anything is written)."""
  if not config.get("tiny", False):
    return config
  h, w = config.height, config.width
  read.check_size(h, w, field="height, width")
  t = read.check_frame_count(config.num_frames, field="num_frames")
  folder = os.path.abspath(config.tiny_dir or os.path.join(runner.check_workdir(workdir),
                                                           "tiny_assets"))
  manifest = dict(version=1, height=h, width=w, num_frames=t, z_dim=Z_DIM)
  marker = os.path.join(folder, "manifest.json")
  ckpt = {name: os.path.join(folder, name) for name in (
      "wan22_i2v_a14b", "wan21_i2v", "fun_control", "control_camera", "vace")}
  paths = input_paths(os.path.join(folder, "inputs"))
  done = False
  if os.path.isfile(marker):
    with open(marker) as f:
      done = json.load(f) == manifest
  if not done:
    diffusers_root(ckpt["wan22_i2v_a14b"], "i2v_a14b", seed=10)
    diffusers_root(ckpt["wan21_i2v"], "i2v", seed=20)
    diffusers_root(ckpt["vace"], "vace", seed=30)
    videox_fun_folder(ckpt["fun_control"], "fun_control", seed=40)
    videox_fun_folder(ckpt["control_camera"], "control_camera", seed=50)
    inputs(os.path.join(folder, "inputs"), height=h, width=w, num_frames=t)
    io.write_json(marker, manifest)  # last: a folder without it is rebuilt
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.tiny_dir = folder
    out.encoders_root = out.encoders_root or ckpt["wan21_i2v"]
    roots = dict(i2v=ckpt["wan22_i2v_a14b"], fun_control=ckpt["fun_control"],
                 control_camera=ckpt["control_camera"], vace=ckpt["vace"])
    for name, root in roots.items():
      if name in out.backbones and not out.backbones[name].root:
        out.backbones[name].root = root
    for field, path in paths.items():
      if not out.get(field):
        setattr(out, field, path)
  return out


__all__ = ("DIFFUSERS_KINDS", "FUN_KINDS", "INPUT_FILES", "random_tensor", "torch_shape",
           "diffusers_root", "videox_fun_config", "videox_fun_folder", "input_paths", "inputs",
           "prepare")
