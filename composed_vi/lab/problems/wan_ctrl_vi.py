"""The ``wan_ctrl_vi`` experiment: real Wan checkpoints composed from real inputs.

``configs/wan_ctrl_vi.py`` names the inputs (prompt, first image, camera file, first-frame
depth, RGBA simulation video and its depth) and any number of backbones, each a checkpoint with
its kind and a region of the video where it has a say (``configs/ctrl_vi_paper.py``: the paper's
set). A backbone's ``root`` is a diffusers root (``transformer/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ...) or a bare transformer folder (``config.json`` + ``*.safetensors`` in the
diffusers or the original Wan layout, e.g. a VideoX-Fun release), whose tokenizer, UMT5, VAE and
CLIP then come from the diffusers root ``encoders_root``. Its ``kind`` is ``auto`` (what the
folder holds, :func:`detect_kind`) or must be what the folder holds: ``t2v``, ``i2v`` (Wan2.1
with CLIP or Wan2.2 A14B), ``vace``, ``fun_control`` (VideoX-Fun Control: a depth, simulation,
user or no control video) or ``control_camera`` (VideoX-Fun Control-Camera: the camera file's
Pluecker rays).
:func:`build` does, in order:

1. every check that reads no weights (``_check_inputs``): the roots and their subfolders, the
   image, camera, depth and simulation files, frame count ``1 + 4 k``, sizes divisible by 16,
   one pose per frame, the latent spaces of the backbones' VAEs equal;
2. the conditioning, in JAX: UMT5 prompt embeddings (and the negative prompt's; a prompt longer
   than ``max_sequence_length`` is truncated with a warning, as the pipelines do), CLIP image
   embeddings (Wan2.1 I2V and Fun), the I2V condition, VACE's control, the Fun-Control channel
   layout (``composed_vi.models.fun_control_inputs``), the Control-Camera input
   (``composed_vi.models.camera_control``), the object region and the 3D-cache context at
   latent resolution (``composed_vi.models.conditioning``, ``composed_vi.lab.scene_context``);
3. the composed target: each backbone weighted by its region, plus the context on the static
   background and the first frame, ``pinned_mask`` = what the context pins, ``repulsion_mask``
   = what nothing specifies (the world demo's recipe, ``composed_vi.world.demo.build_target``).

The report decodes each particle with the VAE and writes ``particle_<i>.mp4`` at ``fps``, the
inputs, a contact sheet and ``index.html``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
from absl import logging

from composed_vi import io
from composed_vi.composition import compose
from composed_vi.errors import (
  ConfigError,
  check_choice,
  check_positive_float,
  check_positive_int,
  fail,
)
from composed_vi.experts import Context
from composed_vi.lab import camera_file, media, scene_context
from composed_vi.lab.media import read
from composed_vi.lab.problems.base import Problem
from composed_vi.models import (
  camera_control,
  clip_vision,
  conditioning,
  fun_control_inputs,
  image_processing,
  text,
  umt5,
)
from composed_vi.models import wan_expert as wan
from composed_vi.models.wan import loading, original_layout, safetensors_io
from composed_vi.models.wan.vae import denormalize_latents
from composed_vi.world.masks import dilate

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
REGIONS = ("all", "object", "background")
KINDS = ("t2v", "i2v", "vace", "fun_control", "control_camera")
#: A backbone's ``control`` by kind (the others ignore it).
CONTROLS = {"vace": ("objects", "first_frame", "none"),
            "fun_control": ("depth", "simulation", "video", "none")}
#: The VAE fields that define a latent space: backbones composed together must agree on them.
_LATENT_FIELDS = ("z_dim", "latents_mean", "latents_std", "scale_factor_temporal",
                  "scale_factor_spatial", "patch_size", "temperal_downsample", "dim_mult")


@dataclasses.dataclass
class _Backbone:
  name: str
  root: str
  fields: dict
  transformer_config: dict  # diffusers fields (an original-layout config translated)
  low_noise: bool  # Wan2.2 A14B: transformer_2/ and a boundary_ratio
  boundary: float
  kind: str = "t2v"
  transformer: str = ""  # the transformer's folder
  encoders: str = ""  # the diffusers root of its tokenizer, UMT5, VAE (and CLIP)


def detect_kind(config: dict) -> str | None:
  """The kind of a DiT from its (diffusers) config: VACE layers, a camera adapter, or the
  channels after the ``z`` noise channels (0: t2v; 4 mask + z: I2V; z control + z start image,
  or z control + 4 mask + z masked video: Fun-Control). None when it fits none."""
  z = int(config.get("out_channels") or 16)
  extra = int(config.get("in_channels") or z) - z
  if config.get("vace_layers"):
    return "vace"
  if config.get("control_adapter_in_dim"):
    return "control_camera"
  if extra == 0:
    return "t2v"
  if extra == 4 + z:  # with z = 4 (test models only) this is also Fun-Control's 2 z: I2V wins
    return "i2v"
  if extra in (2 * z, 2 * z + 4):
    return "fun_control"
  return None


def _transformer_folder(root: str, field: str) -> tuple[str, bool, dict]:
  """``(folder, is a diffusers root, diffusers config)`` of a backbone's ``root``; only the
  safetensors headers are read."""
  if os.path.isfile(os.path.join(root, "transformer", "config.json")):
    folder, is_root = os.path.join(root, "transformer"), True
  elif os.path.isfile(os.path.join(root, "config.json")):
    folder, is_root = root, False
  else:
    fail(field, "a diffusers checkpoint root (with transformer/config.json) or a transformer "
         "folder (config.json + *.safetensors, e.g. a VideoX-Fun release)", root)
  try:
    raw, tensors = safetensors_io.open_folder(folder)
    config, _, _ = original_layout.transformer_as_diffusers(raw, tensors)
  except (ValueError, OSError) as e:
    raise ConfigError(f"{field}: {e}") from None
  return folder, is_root, config


def _json(path: str, field: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    fail(field, "a readable JSON file", f"{path}: {e}")


def _subfolder(root: str, name: str, field: str, what: str) -> str:
  path = os.path.join(root, name)
  config = "config.json" if name not in ("tokenizer", "image_processor") else (
      "tokenizer.json" if name == "tokenizer" else "preprocessor_config.json")
  if not os.path.isfile(os.path.join(path, config)):
    fail(field, f"a checkpoint root with {name}/{config} ({what})", root)
  return path


def _backbones(config) -> list[_Backbone]:
  out = []
  for name, b in config.backbones.to_dict().items():
    if not b.get("root"):
      continue
    field = f"backbones.{name}.root"
    root = b["root"]
    if not os.path.isdir(root):
      fail(field, "an existing checkpoint folder (nothing is downloaded)", root)
    kind = check_choice(f"backbones.{name}.kind", b.get("kind", "auto"), ("auto",) + KINDS)
    folder, is_root, tconf = _transformer_folder(root, field)
    found = detect_kind(tconf)
    if kind == "auto" and found:
      kind = found
    if found != kind:
      fail(f"backbones.{name}.kind", f"{found!r} (what {folder} holds: in_channels "
           f"{tconf.get('in_channels')}, out_channels {tconf.get('out_channels')}"
           f"{', a camera adapter' if tconf.get('control_adapter_in_dim') else ''}"
           f"{', VACE layers' if tconf.get('vace_layers') else ''})"
           if found else f"a kind among {list(KINDS)}, but {folder} holds none of them", kind)
    if is_root:
      encoders, enc_field = root, field
    else:
      encoders, enc_field = config.get("encoders_root", ""), "encoders_root"
      if not encoders or not os.path.isdir(encoders):
        fail("encoders_root", f"a diffusers root whose tokenizer/, text_encoder/ and vae/ serve "
             f"backbones.{name} (a bare transformer folder: {root})", encoders)
    for sub, what in (("vae", "the VAE"), ("text_encoder", "UMT5"), ("tokenizer", "UMT5's")):
      _subfolder(encoders, sub, enc_field, what)
    if tconf.get("image_dim"):
      _subfolder(encoders, "image_encoder", enc_field,
                 f"CLIP, for backbones.{name}: a model with image_dim")
      _subfolder(encoders, "image_processor", enc_field, "CLIP's preprocessing")
    index = _json(os.path.join(root, "model_index.json"), field) if is_root and os.path.isfile(
        os.path.join(root, "model_index.json")) else {}
    low = is_root and os.path.isdir(os.path.join(root, "transformer_2"))
    if low:
      _subfolder(root, "transformer_2", field, "Wan2.2's low-noise DiT")
    boundary = float(index.get("boundary_ratio") or 0.0) if low else 0.0
    check_choice(f"backbones.{name}.region", b["region"], REGIONS)
    check_positive_float(f"backbones.{name}.weight", b["weight"], allow_zero=True)
    check_positive_float(f"backbones.{name}.guidance_scale", b["guidance_scale"])
    check_positive_float(f"backbones.{name}.guidance_scale_low", b["guidance_scale_low"],
                         allow_zero=True)
    if kind in CONTROLS:
      check_choice(f"backbones.{name}.control", b["control"], CONTROLS[kind])
    out.append(_Backbone(name, root, b, tconf, low, boundary, kind, folder, encoders))
  if not out:
    fail("backbones", "at least one backbone with a root (a checkpoint folder)", "none set")
  vaes = [(bb.name, _json(os.path.join(bb.encoders, "vae", "config.json"), bb.name))
          for bb in out]
  ref_name, ref = vaes[0]
  for name, v in vaes[1:]:
    diff = [k for k in _LATENT_FIELDS if v.get(k) != ref.get(k)]
    if diff:
      fail(f"backbones.{name}.root", f"a VAE with the latent space of backbones.{ref_name} "
           f"(composed backbones share one latent space)", f"{diff[0]} {v.get(diff[0])} vs "
           f"{ref.get(diff[0])}")
  return out


def _inputs(config, backbones):
  """Every input file read and checked; no weights. Returns a dict of arrays."""
  h, w = config.height, config.width
  check_positive_int("height", h)
  check_positive_int("width", w)
  read.check_size(h, w, field="height, width")
  t = read.check_frame_count(config.num_frames, field="num_frames")
  check_positive_int("fps", config.fps)
  check_positive_int("max_sequence_length", config.max_sequence_length)
  if not config.prompt:
    fail("prompt", "a text prompt", config.prompt)
  needs_image = any(bb.transformer_config.get("image_dim")
                    or bb.transformer_config.get("in_channels", 0)
                    > bb.transformer_config.get("out_channels", 16) for bb in backbones)
  controls = {bb.fields.get("control") for bb in backbones if bb.kind == "fun_control"}
  out = {}
  if config.image:
    out["image_uint8"] = read.read_image(config.image, field="image")
    out["image"] = read.to_model_frames(out["image_uint8"], h, w)[0]
  elif needs_image or config.context.weight > 0:
    fail("image", "a first-frame image (an I2V backbone or the context needs it)", "")
  if config.simulation:
    sim = read.read_video(config.simulation, field="simulation", alpha=True)
    if sim.shape[0] != t:
      fail("simulation", f"{t} frames (num_frames)", sim.shape[0])
    if sim.shape[-1] == 3 or np.all(sim[..., 3] == 255):  # RGB (an MP4): key the background
      threshold = check_positive_float("simulation_key", config.get("simulation_key", 0.1))
      sim = np.concatenate([sim[..., :3], key_alpha(sim[..., :3], threshold)[..., None]], -1)
    out["simulation"] = read.to_model_frames(sim, h, w)
  elif any(bb.fields["region"] != "all" for bb in backbones) or "simulation" in controls:
    fail("simulation", "an RGBA simulation video (a backbone's region or a Fun-Control "
         "backbone's control reads it)", "")
  if config.get("control_video"):
    video = read.read_video(config.control_video, field="control_video")
    if video.shape[0] != t:
      fail("control_video", f"{t} frames (num_frames)", video.shape[0])
    out["control_video"] = read.to_model_frames(video, h, w)
  elif "video" in controls:
    fail("control_video", "a control video (Canny, pose, depth, ...: MP4, GIF, a folder of "
         "frames or .npy) for a Fun-Control backbone with control 'video'", "")
  if config.get("simulation_depth"):
    out["simulation_depth"] = read_simulation_depth(
        config.simulation_depth, num_frames=t, height=h, width=w, scale=config.depth_scale)
  elif "depth" in controls:
    fail("simulation_depth", "the simulation's depth video (.npy (T, H, W), 0 where no "
         "object is) for a Fun-Control backbone with control 'depth'", "")
  if config.context.weight > 0:
    check_positive_float("context.sigma", config.context.sigma)
    check_positive_int("context.supersample", config.context.supersample)
    if not config.camera:
      fail("camera", "a camera file (.txt RealEstate10K or .json) for the context", "")
    if not config.depth:
      fail("depth", "the first frame's depth (.npy or 16-bit PNG) for the context", "")
    out["camera"] = camera_file.read(config.camera, height=h, width=w, num_frames=t,
                                     field="camera")
    out["depth"] = scene_context.read_depth(config.depth, height=h, width=w,
                                            scale=config.depth_scale, field="depth")
  elif config.camera:
    out["camera"] = camera_file.read(config.camera, height=h, width=w, num_frames=t,
                                     field="camera")
  elif any(bb.kind == "control_camera" for bb in backbones):
    fail("camera", "a camera file (.txt RealEstate10K or .json) for the Control-Camera "
         "backbone", "")
  return out


def key_alpha(frames, threshold: float = 0.1) -> np.ndarray:
  """The alpha of the objects in an RGB simulation video ``uint8 (T, H, W, 3)`` rendered on a
  plain background (black, white, green, ...; an MP4 has no alpha channel): the background
  colour is the median of every frame's border pixels, and a pixel is an object (255) where
  some channel differs from it by more than ``threshold`` (in [0, 1]; 0.1 is 25 grey levels,
  above an MP4's compression noise), else 0."""
  x = np.asarray(frames, np.float32) / 255.0
  border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
  background = np.median(border.reshape(-1, 3), axis=0)
  return np.where(np.abs(x - background).max(-1) > threshold, 255, 0).astype(np.uint8)


def read_simulation_depth(path: str, *, num_frames: int, height: int, width: int,
                          scale: float = 1.0, field: str = "simulation_depth") -> np.ndarray:
  """``(T, height, width)`` float32 depth of the simulated objects from a ``.npy`` ``(T, H, W)``
  (0 where no object is), times ``scale``; each frame resized by nearest neighbour."""
  from PIL import Image
  if not path.lower().endswith(".npy") or not os.path.isfile(path):
    fail(field, "an existing .npy file (T, H, W) of depths", path)
  try:
    depth = np.load(path)
  except (OSError, ValueError) as e:
    fail(field, "a .npy file numpy can read", f"{path}: {e}")
  if depth.ndim != 3 or depth.shape[0] != num_frames:
    fail(field, f"shape ({num_frames}, H, W) (num_frames depth frames)", depth.shape)
  depth = depth.astype(np.float32) * np.float32(scale)
  if not np.all(np.isfinite(depth)) or depth.min() < 0:
    fail(field, "finite depths >= 0 (0: no object)",
         f"range [{np.nanmin(depth):.3g}, {np.nanmax(depth):.3g}]")
  if depth.shape[1:] != (height, width):
    depth = np.stack([np.asarray(Image.fromarray(d, "F").resize(
        (width, height), Image.Resampling.NEAREST)) for d in depth])
  return depth


def depth_video(depth) -> np.ndarray:
  """A depth control video ``(T, H, W, 3)`` in [-1, 1] as depth-control models are trained on
  (a grey image of relative inverse depth, near bright, nothing far and black): ``1 / depth``
  normalised by its maximum over the video, 0 where ``depth`` is 0."""
  depth = np.asarray(depth, np.float32)
  inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)
  inv = inv / inv.max() if inv.max() > 0 else inv
  return np.repeat((2.0 * inv - 1.0)[..., None], 3, axis=-1).astype(np.float32)


def _object_region(config, inputs, vae_config) -> tuple[np.ndarray, np.ndarray]:
  """(pixel region (T, H, W), latent region (T', h, w, 1)): the simulation's alpha, dilated."""
  if "simulation" not in inputs:
    t, h, w = config.num_frames, config.height, config.width
    return np.zeros((t, h, w), np.float32), None
  alpha = (inputs["simulation"][..., 3] > 0.5).astype(np.float32)[..., None]
  region = np.asarray(dilate(alpha, config.object_dilation, axes=(1, 2)))[..., 0]
  latent = conditioning.latent_mask(region, temporal=vae_config.temporal_ratio,
                                    spatial=vae_config.spatial_ratio, mode="any")
  return region, latent


def build(config, mesh=None) -> Problem:
  """The composed Wan target of ``config`` (``configs/wan_ctrl_vi.py``) and its report."""
  check_choice("compute_dtype", config.compute_dtype, _DTYPES)
  backbones = _backbones(config)
  inputs = _inputs(config, backbones)
  dtype = _DTYPES[config.compute_dtype]

  vae, vae_params = loading.load_vae(os.path.join(backbones[0].encoders, "vae"))
  r, s = vae.config.temporal_ratio, vae.config.spatial_ratio
  shape = (1 + (config.num_frames - 1) // r, config.height // s, config.width // s,
           vae.config.z_dim)
  region_px, region = _object_region(config, inputs, vae.config)

  encoders = {}

  def prompt_embeddings(root):
    if root not in encoders:
      tok = text.load_tokenizer(os.path.join(root, "tokenizer"))
      enc = umt5.load_text_encoder(os.path.join(root, "text_encoder"))
      prompts = [config.prompt, config.negative_prompt]
      dropped = text.tokenize(tok, prompts, max_length=config.max_sequence_length,
                              clean=True).dropped
      if dropped[0]:
        logging.warning("prompt: %d tokens beyond max_sequence_length=%d are truncated, as "
                        "the Wan pipelines do", int(dropped[0]), config.max_sequence_length)
      emb = np.asarray(text.encode_prompts(enc, tok, prompts,
                                           max_length=config.max_sequence_length))
      encoders[root] = emb
    return encoders[root]

  experts, weights = [], []
  for bb in backbones:
    field = f"backbones.{bb.name}"
    b = bb.fields
    emb = prompt_embeddings(bb.encoders)
    try:
      high = loading.load_transformer(bb.transformer, compute_dtype=dtype, mesh=mesh)
      low = loading.load_transformer(os.path.join(bb.root, "transformer_2"),
                                     compute_dtype=dtype, mesh=mesh) if bb.low_noise else None
    except (ValueError, OSError) as e:
      raise ConfigError(f"{field}.root: {e}") from None
    cfg = high.config
    image_emb = cond = ctrl = camera = ref = None
    if cfg.image_dim:
      proc = image_processing.load_image_processor(os.path.join(bb.encoders, "image_processor"))
      enc = clip_vision.load_image_encoder(os.path.join(bb.encoders, "image_encoder"))
      pixels = image_processing.preprocess(proc, [inputs["image_uint8"]])
      image_emb = np.asarray(clip_vision.image_embeddings(enc, pixels))[0]
    if bb.kind == "i2v":
      cond = conditioning.i2v_condition(vae, vae_params, inputs["image"], config.num_frames)
    elif bb.kind == "vace":
      ctrl = _vace_control(config, inputs, vae, vae_params, b["control"], region_px)
    elif bb.kind in ("fun_control", "control_camera"):
      cond, ref, camera = fun_inputs(config, inputs, vae, vae_params, cfg, bb.kind,
                                     b.get("control", "none"), shape, field)
    guidance = b["guidance_scale"]
    guidance_low = (b["guidance_scale_low"] or guidance) if low is not None else None
    guided = guidance != 1.0 or (guidance_low or 1.0) != 1.0
    experts.append(wan.make_expert(
        cfg, shape, params=high.params, model_fn=high.model_fn, context=emb[0],
        negative_context=emb[1] if guided else None, context_image=image_emb,
        condition=cond, control=ctrl, control_scale=b["control_scale"],
        guidance_scale=guidance, guidance_scale_low=guidance_low, control_camera=camera,
        ref_latents=ref,
        params_low=None if low is None else low.params,
        model_fn_low=None if low is None else low.model_fn, boundary=bb.boundary, field=field))
    weights.append(_region_weight(b["region"], b["weight"], region))

  target_parts = _context(config, inputs, vae, vae_params, region, region_px, shape)
  if target_parts is not None:
    ctx_expert, ctx_weight, pinned, free = target_parts
    experts.append(ctx_expert)
    weights.append(ctx_weight)
  else:
    pinned = None
    free = np.ones(shape[:3] + (1,), np.float32)
    free[0] = 0.0 if "image" in inputs else 1.0
  try:
    target = compose(experts, weights, repulsion_mask=free, pinned_mask=pinned)
  except ConfigError as e:
    raise ConfigError(f"backbones: {e}") from None

  decoded = {}  # the runner writes videos.npz, the report the MP4s: one decode for both

  def decode(latents):
    key = hash(np.asarray(latents).tobytes())
    if key not in decoded:
      z = denormalize_latents(jnp.asarray(latents), vae.config)
      decoded.clear()
      decoded[key] = np.asarray(vae.decode_bthwc(vae_params, z))
    return decoded[key]

  names = tuple(bb.name for bb in backbones) + (("context",) if target_parts else ())
  experts_used = [dict(name=bb.name, kind=bb.kind, root=bb.root, region=bb.fields["region"],
                       transformers=2 if bb.low_noise else 1) for bb in backbones]
  return Problem(target, decode=decode,
                 report=lambda samples, workdir: report(config, inputs, decode, samples,
                                                        workdir, experts_used),
                 expert_names=names)


def _region_weight(region_name, weight, region):
  if region_name == "all" or region is None:
    return float(weight)
  return weight * (region if region_name == "object" else 1.0 - region)


def fun_inputs(config, inputs, vae, params, cfg, kind, control, shape, field):
  """``(condition, reference latents or None, Control-Camera input or None)`` of a VideoX-Fun
  backbone, as VideoX-Fun's pipelines build them for a start image:

  * the condition (``fun_control_inputs.fun_control_condition``): the control video's latents
    (``fun_control`` only: the simulation's depth as a grey inverse-depth video, the simulation's
    objects on black, the user's ``control_video`` (Canny, pose, ...), or zeros for ``none``),
    then the first frame's latents in latent frame 0,
    or in the inpainting layout (Wan2.2 Fun, ``in_channels`` with 4 more) the mask keeping
    frame 0 and the latents of ``[first frame, 0, ..., 0]``;
  * the reference conv's input (``add_ref_conv``): the first frame's latents;
  * the Control-Camera input: the camera file's Pluecker rays relative to frame 0, packed
    ``temporal`` frames per latent frame (``camera_control.control_camera``).
  """
  t, h, w = config.num_frames, config.height, config.width
  z, temporal = cfg.out_dim, vae.config.temporal_ratio
  is_camera = kind == "control_camera"
  inpaint = cfg.in_channels - z == fun_control_inputs.condition_channels(
      z, camera=is_camera, inpaint=True, temporal=temporal)
  first = np.asarray(conditioning.encode(vae, params, inputs["image"][None]))[0]
  control_latents = None
  if not is_camera and control != "none":
    if control == "depth":
      video = depth_video(inputs["simulation_depth"])
    elif control == "video":  # the user's own control video (Canny edges, pose, ...)
      video = inputs["control_video"]
    else:  # the simulated objects alone, on black
      sim = inputs["simulation"]
      video = np.where(sim[..., 3:] > 0.5, sim[..., :3], -1.0).astype(np.float32)
    control_latents = np.asarray(conditioning.encode(vae, params, video))
  try:
    if inpaint:
      mask = np.ones((t, h, w), np.float32)
      mask[0] = 0.0
      given = np.zeros((t, h, w, 3), np.float32)
      given[0] = inputs["image"]
      masked = np.asarray(conditioning.encode(
          vae, params, fun_control_inputs.masked_video(given, mask)))
      cond = fun_control_inputs.fun_control_condition(
          shape, control=control_latents, camera=is_camera, inpaint=True, mask=mask,
          masked_video_latents=masked, in_channels=cfg.in_channels, temporal=temporal)
    else:
      cond = fun_control_inputs.fun_control_condition(
          shape, control=control_latents, start_image=first, camera=is_camera,
          in_channels=cfg.in_channels, temporal=temporal)
  except ConfigError as e:
    raise ConfigError(f"{field}: {e}") from None
  ref = first if cfg.ref_conv_in_dim else None
  camera = None
  if is_camera:
    cam = inputs["camera"]
    camera = camera_control.control_camera(cam.intrinsics, cam.extrinsics, h, w,
                                           temporal=temporal)
  return cond, ref, camera


def _vace_control(config, inputs, vae, params, control, region_px):
  t, h, w = config.num_frames, config.height, config.width
  if control == "objects":  # the simulated objects given, everything else generated
    sim = inputs["simulation"]
    alpha = (sim[..., 3] > 0.5).astype(np.float32)
    video = sim[..., :3] * alpha[..., None]
    return conditioning.vace_control(vae, params, video, 1.0 - alpha)
  if control == "first_frame":
    video = np.zeros((t, h, w, 3), np.float32)
    video[0] = inputs["image"]
    mask = np.ones((t, h, w), np.float32)
    mask[0] = 0.0
    return conditioning.vace_control(vae, params, video, mask)
  return conditioning.vace_control(vae, params, None, None, num_frames=t, size=(h, w))


def _context(config, inputs, vae, params, region, region_px, shape):
  """(context expert, weight, pinned mask, repulsion mask) or None without a context."""
  if config.context.weight <= 0:
    return None
  keep = region_px[0] < 0.5  # the first frame's static background only
  image = inputs["image"]
  pixels, vis = scene_context.splat(np.where(keep[..., None], image, 0.0),
                                    np.where(keep, inputs["depth"], 0.0), inputs["camera"],
                                    supersample=config.context.supersample)
  pixels[0], vis[0] = image, 1.0  # frame 0 is the first frame, given exactly
  latents = conditioning.encode(vae, params, pixels)
  visibility = conditioning.latent_mask(vis[..., 0], temporal=vae.config.temporal_ratio,
                                        spatial=vae.config.spatial_ratio, mode="all")
  seen = visibility if region is None else visibility * (1.0 - region)
  seen[0] = 1.0
  free = (1.0 - seen) * (1.0 if region is None else 1.0 - region)
  free[0] = 0.0
  ctx = Context(latents, config.context.sigma, visibility=seen)
  return ctx, float(config.context.weight), seen, free


def report(config, inputs, decode, samples, workdir, experts=()) -> dict:
  """Per-particle MP4 at ``fps``, the inputs, a contact sheet and ``index.html``; the summary
  lists the composed backbones (``experts``: name, kind, root, region, transformers)."""
  videos = decode(samples)
  fps = config.fps
  for i, video in enumerate(videos):
    media.write_mp4(os.path.join(workdir, f"particle_{i}.mp4"), video, fps=fps, upscale=1)
  rows, items = [], []
  if "image" in inputs:
    media.write_png(os.path.join(workdir, "input_first_frame.png"), inputs["image"], upscale=1)
    rows.append(("first frame", inputs["image"][None]))
    items.append(dict(label="first frame", image="input_first_frame.png"))
  if "simulation" in inputs:
    sim = inputs["simulation"]
    sim_rgb = sim[..., :3] * sim[..., 3:] + (1 - sim[..., 3:])
    media.write_mp4(os.path.join(workdir, "input_simulation.mp4"), sim_rgb, fps=fps, upscale=1)
    rows.append(("simulation", sim_rgb))
    items.append(dict(label="simulation", video="input_simulation.mp4"))
  if "camera" in inputs:
    media.plot_camera_path(os.path.join(workdir, "input_camera_path.png"),
                           inputs["camera"].extrinsics)
    items.append(dict(label="camera path", image="input_camera_path.png"))
  rows += [(f"particle {i}", v) for i, v in enumerate(videos)]
  step = max(1, (config.num_frames - 1) // 8)
  media.contact_sheet(os.path.join(workdir, "contact_sheet.png"), rows,
                      frames=list(range(0, config.num_frames, step)))
  sections = [
      dict(heading="Controls", text=f"prompt: {config.prompt}\nbackbones: " + ", ".join(
          f"{e['name']} ({e['kind']}, {e['root']}, region {e['region']})" for e in experts),
           items=items),
      dict(heading="Samples (Ctrl-VI particles)",
           items=[dict(label=f"particle {i}", video=f"particle_{i}.mp4")
                  for i in range(len(videos))]),
      dict(heading="Contact sheet", items=[dict(label="frames", image="contact_sheet.png")]),
  ]
  media.write_html(os.path.join(workdir, "index.html"), "composed_vi: Ctrl-VI on Wan", sections)
  io.write_json(os.path.join(workdir, "videos_meta.json"),
                dict(num_particles=int(videos.shape[0]), frames=int(videos.shape[1]), fps=fps,
                     height=int(videos.shape[2]), width=int(videos.shape[3])))
  return dict(videos_written=int(videos.shape[0]), backbones=list(experts),
              context=config.context.weight > 0)
