"""The ``wan_ctrl_vi`` experiment: real Wan checkpoints composed from real inputs.

``configs/wan_ctrl_vi.py`` names the inputs (prompt, first image, camera file, first-frame
depth, RGBA simulation video) and any number of backbones, each a diffusers checkpoint root with
a region of the video where it has a say. :func:`build` does, in order:

1. every check that reads no weights (``_check_inputs``): the roots and their subfolders, the
   image, camera, depth and simulation files, frame count ``1 + 4 k``, sizes divisible by 16,
   one pose per frame, the latent spaces of the backbones' VAEs equal;
2. the conditioning, in JAX: UMT5 prompt embeddings (and the negative prompt's; a prompt longer
   than ``max_sequence_length`` is truncated with a warning, as the pipelines do), CLIP image
   embeddings (Wan2.1 I2V), the I2V condition, VACE's control, the object region and the
   3D-cache context at latent resolution (``composed_vi.models.conditioning``,
   ``composed_vi.lab.scene_context``);
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
from composed_vi.models import clip_vision, conditioning, image_processing, text, umt5
from composed_vi.models import wan_expert as wan
from composed_vi.models.wan import loading
from composed_vi.models.wan.vae import denormalize_latents
from composed_vi.world.masks import dilate

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
REGIONS = ("all", "object", "background")
CONTROLS = ("objects", "first_frame", "none")
#: The VAE fields that define a latent space: backbones composed together must agree on them.
_LATENT_FIELDS = ("z_dim", "latents_mean", "latents_std", "scale_factor_temporal",
                  "scale_factor_spatial", "patch_size", "temperal_downsample", "dim_mult")


@dataclasses.dataclass
class _Backbone:
  name: str
  root: str
  fields: dict
  transformer_config: dict
  low_noise: bool  # Wan2.2 A14B: transformer_2/ and a boundary_ratio
  boundary: float


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
      fail(field, "an existing diffusers checkpoint root (nothing is downloaded)", root)
    tconf = _json(os.path.join(_subfolder(root, "transformer", field, "the DiT"), "config.json"),
                  field)
    for sub, what in (("vae", "the VAE"), ("text_encoder", "UMT5"), ("tokenizer", "UMT5's")):
      _subfolder(root, sub, field, what)
    if tconf.get("image_dim"):
      _subfolder(root, "image_encoder", field, "CLIP, for an I2V model with image_dim")
      _subfolder(root, "image_processor", field, "CLIP's preprocessing")
    index = _json(os.path.join(root, "model_index.json"), field) if os.path.isfile(
        os.path.join(root, "model_index.json")) else {}
    low = os.path.isdir(os.path.join(root, "transformer_2"))
    if low:
      _subfolder(root, "transformer_2", field, "Wan2.2's low-noise DiT")
    boundary = float(index.get("boundary_ratio") or 0.0) if low else 0.0
    check_choice(f"backbones.{name}.region", b["region"], REGIONS)
    check_positive_float(f"backbones.{name}.weight", b["weight"], allow_zero=True)
    check_positive_float(f"backbones.{name}.guidance_scale", b["guidance_scale"])
    check_positive_float(f"backbones.{name}.guidance_scale_low", b["guidance_scale_low"],
                         allow_zero=True)
    if tconf.get("vace_layers"):
      check_choice(f"backbones.{name}.control", b["control"], CONTROLS)
    out.append(_Backbone(name, root, b, tconf, low, boundary))
  if not out:
    fail("backbones", "at least one backbone with a root (a diffusers checkpoint folder)",
         "none set")
  vaes = [(bb.name, _json(os.path.join(bb.root, "vae", "config.json"), bb.name)) for bb in out]
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
    out["simulation"] = read.to_model_frames(sim, h, w)
  elif any(bb.fields["region"] != "all" for bb in backbones):
    fail("simulation", "an RGBA simulation video (a backbone's region reads its alpha)", "")
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
  return out


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

  vae, vae_params = loading.load_vae(os.path.join(backbones[0].root, "vae"))
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
    emb = prompt_embeddings(bb.root)
    try:
      high = loading.load_transformer(os.path.join(bb.root, "transformer"), compute_dtype=dtype,
                                      mesh=mesh)
      low = loading.load_transformer(os.path.join(bb.root, "transformer_2"),
                                     compute_dtype=dtype, mesh=mesh) if bb.low_noise else None
    except (ValueError, OSError) as e:
      raise ConfigError(f"{field}.root: {e}") from None
    cfg = high.config
    image_emb = cond = ctrl = None
    if cfg.image_dim:
      proc = image_processing.load_image_processor(os.path.join(bb.root, "image_processor"))
      enc = clip_vision.load_image_encoder(os.path.join(bb.root, "image_encoder"))
      pixels = image_processing.preprocess(proc, [inputs["image_uint8"]])
      image_emb = np.asarray(clip_vision.image_embeddings(enc, pixels))[0]
    if cfg.in_channels > cfg.out_dim and not cfg.is_vace:
      cond = conditioning.i2v_condition(vae, vae_params, inputs["image"], config.num_frames)
    if cfg.is_vace:
      ctrl = _vace_control(config, inputs, vae, vae_params, b["control"], region_px)
    guidance = b["guidance_scale"]
    guidance_low = (b["guidance_scale_low"] or guidance) if low is not None else None
    guided = guidance != 1.0 or (guidance_low or 1.0) != 1.0
    experts.append(wan.make_expert(
        cfg, shape, params=high.params, model_fn=high.model_fn, context=emb[0],
        negative_context=emb[1] if guided else None, context_image=image_emb,
        condition=cond, control=ctrl, control_scale=b["control_scale"],
        guidance_scale=guidance, guidance_scale_low=guidance_low,
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
  return Problem(target, decode=decode,
                 report=lambda samples, workdir: report(config, inputs, decode, samples,
                                                        workdir), expert_names=names)


def _region_weight(region_name, weight, region):
  if region_name == "all" or region is None:
    return float(weight)
  return weight * (region if region_name == "object" else 1.0 - region)


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


def report(config, inputs, decode, samples, workdir) -> dict:
  """Per-particle MP4 at ``fps``, the inputs, a contact sheet and ``index.html``."""
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
          f"{n} ({b.root}, region {b.region})" for n, b in config.backbones.items() if b.root),
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
  return dict(videos_written=int(videos.shape[0]))
