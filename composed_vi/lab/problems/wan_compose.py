"""The ``wan_compose`` experiment: Wan-family backbones from local diffusers folders, composed.

``config.backbones`` maps a name to one backbone's fields (``configs/wan_compose.py``): its
checkpoint folder (and Wan2.2's low-noise one with ``boundary``), precomputed conditioning
(text / negative / image embeddings, condition or VACE control latents: ``.npy`` files), the
guidance scale and its weight or ``.npy`` mask in the product. Every path is checked before any
weight is read; a missing folder is refused naming its field.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from composed_vi.composition import compose
from composed_vi.errors import ConfigError, check_positive_float, fail
from composed_vi.lab.problems.base import Problem
from composed_vi.models import wan_expert as wan
from composed_vi.models.wan import loading
from composed_vi.models.wan.vae import denormalize_latents

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _folder(field: str, path: str) -> str:
  if not path:
    fail(field, "the path of a diffusers checkpoint folder (config.json + *.safetensors) on "
         "this machine; nothing is downloaded", path)
  if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
    fail(field, "an existing diffusers checkpoint folder with config.json (weights are not "
         "downloaded: convert or copy them there first)", path)
  return path


def build(config, mesh=None) -> Problem:
  """The composed Wan backbones of ``config.backbones`` (``configs/wan_compose.py``)."""
  if config.compute_dtype not in _DTYPES:
    fail("compute_dtype", f"one of {sorted(_DTYPES)}", config.compute_dtype)
  shape = tuple(int(s) for s in config.latent_shape)
  # Entries without a checkpoint are unused slots of the config.
  backbones = {k: v for k, v in config.backbones.to_dict().items() if v.get("checkpoint")}
  if not backbones:
    names = list(config.backbones.keys())
    first = "t2v" if "t2v" in names else (names[0] if names else "t2v")
    fail(f"backbones.{first}.checkpoint", "the path of a diffusers checkpoint folder for at "
         "least one backbone (nothing is downloaded)", "")
  # Cheap checks first: every folder and file exists before any weight is read.
  for name, b in backbones.items():
    _folder(f"backbones.{name}.checkpoint", b["checkpoint"])
    if b.get("low_noise_checkpoint"):
      _folder(f"backbones.{name}.low_noise_checkpoint", b["low_noise_checkpoint"])
    check_positive_float(f"backbones.{name}.weight", b.get("weight", 1.0), allow_zero=True)
  if config.vae_checkpoint:
    _folder("vae_checkpoint", config.vae_checkpoint)

  experts, weights = [], []
  loaded = {}
  for name, b in backbones.items():
    field = f"backbones.{name}"
    try:
      if b["checkpoint"] not in loaded:
        loaded[b["checkpoint"]] = loading.load_transformer(
            b["checkpoint"], compute_dtype=_DTYPES[config.compute_dtype], mesh=mesh)
      high = loaded[b["checkpoint"]]
      low = None
      if b.get("low_noise_checkpoint"):
        low = loading.load_transformer(b["low_noise_checkpoint"],
                                       compute_dtype=_DTYPES[config.compute_dtype], mesh=mesh)
    except (ValueError, OSError) as e:
      raise ConfigError(f"{field}.checkpoint: {e}") from None
    experts.append(wan.make_expert(
        high.config, shape, params=high.params, model_fn=high.model_fn,
        context=b.get("text_embeddings"), negative_context=b.get("negative_embeddings"),
        context_image=b.get("image_embeddings"), condition=b.get("condition_latents"),
        control=b.get("control_latents"), control_scale=b.get("control_scale", 1.0),
        guidance_scale=b.get("guidance_scale", 1.0),
        params_low=None if low is None else low.params,
        model_fn_low=None if low is None else low.model_fn,
        boundary=b.get("boundary", 0.0), field=field))
    weight = float(b.get("weight", 1.0))
    if b.get("mask"):
      weight = weight * wan.load_array(f"{field}.mask", b["mask"])
    weights.append(weight)
  try:
    target = compose(experts, weights)
  except ConfigError as e:
    raise ConfigError(f"backbones: {e}") from None

  decode = None
  if config.vae_checkpoint:
    vae, vae_params = loading.load_vae(config.vae_checkpoint)
    vae_config = vae.config

    def decode(latents):
      z = denormalize_latents(jnp.asarray(latents), vae_config) if config.normalized_latents \
          else jnp.asarray(latents)
      return np.asarray(vae.decode_bthwc(vae_params, z))

  return Problem(target, decode=decode)
