"""Wan checkpoints in their original layout, read through the diffusers key tables.

The Wan team's own releases (Wan-Video/Wan2.1 and Wan2.2 ``WanModel`` / ``VaceWanModel``, and
VideoX-Fun's Wan models, which keep those names) differ from the diffusers layout in their
config field names and tensor names only: every tensor has the same shape and memory layout. So
we translate the config (:func:`diffusers_config_from_original`) and rename the tensors through
a name table (:func:`original_to_diffusers_keys`), and the diffusers loading path then runs
unchanged, with its own key table checked against ``nnx.eval_shape``. The renaming touches names
only: the values stay the memory-mapped views of the checkpoint files.

VideoX-Fun's optional modules (``add_control_adapter``: the Control-Camera ``SimpleAdapter``;
``add_ref_conv``: the reference-image conv) become ``WanConfig``'s ``control_adapter_in_dim`` /
``control_adapter_downscale`` and ``ref_conv_in_dim``; their tensors (``control_adapter.*``,
``ref_conv.*``) keep their VideoX-Fun names in the key table, diffusers having no such modules.

The same goes for the original VAE (``Wan2.1_VAE.pth``, converted to safetensors), whose folder
needs no ``config.json`` (:func:`original_to_diffusers_vae_keys`).

The names follow diffusers' single-file converters (``convert_wan_transformer_to_diffusers`` and
``convert_wan_vae_to_diffusers`` in ``diffusers/loaders/single_file_utils.py``); the tests check
our tables against them. FLF2V's ``img_emb.emb_pos``, which the single-file converter leaves
unrenamed, maps to ``pos_embed`` as diffusers' ``scripts/convert_wan_to_diffusers.py`` maps it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from composed_vi.models.wan import convert_transformer, convert_vae, safetensors_io
from composed_vi.models.wan import transformer as wan
from composed_vi.models.wan.vae import WanVAEConfig

# ---------------------------------------------------------------------------------------------
# Transformer names: (original, diffusers). Module names carry their parameters' suffixes
# (weight, bias) along; parameter names are whole.

_TOP_MODULES = (
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    ("head.head", "proj_out"),
    ("vace_patch_embedding", "vace_patch_embedding"),
    # VideoX-Fun (``SimpleAdapter`` with one residual block; the reference conv).
    ("control_adapter.conv", "control_adapter.conv"),
    ("control_adapter.residual_blocks.0.conv1", "control_adapter.residual_blocks.0.conv1"),
    ("control_adapter.residual_blocks.0.conv2", "control_adapter.residual_blocks.0.conv2"),
    ("ref_conv", "ref_conv"),
)
_TOP_PARAMS = (
    ("head.modulation", "scale_shift_table"),
    ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
)
# Inside ``blocks.N`` and ``vace_blocks.N``.
_BLOCK_MODULES = (
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("cross_attn.k_img", "attn2.add_k_proj"),
    ("cross_attn.v_img", "attn2.add_v_proj"),
    ("cross_attn.norm_k_img", "attn2.norm_added_k"),
    # Wan's norm3 is the (affine) cross-attention norm, diffusers' norm2; the parameter-free
    # norms before self-attention and the FFN hold no tensors.
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("before_proj", "proj_in"),
    ("after_proj", "proj_out"),
)
_BLOCK_PARAMS = (("modulation", "scale_shift_table"),)

# ComfyUI-style single files prefix every key; diffusers' converter strips it too.
_PREFIX = "model.diffusion_model."
# diffusers' own marker of an original-layout Wan transformer (``CHECKPOINT_KEY_NAMES``).
_TRANSFORMER_MARKER = "head.modulation"
ORIGINAL_CLASSES = ("WanModel", "VaceWanModel")
_MODEL_TYPES = ("t2v", "i2v", "flf2v", "vace", "ti2v")
_REQUIRED = ("model_type", "dim", "in_dim", "out_dim", "ffn_dim", "freq_dim", "num_heads",
             "num_layers")
# WanModel's defaults for the fields its config.json does not store (``ignore_for_config``).
_DEFAULTS = {"patch_size": (1, 2, 2), "text_dim": 4096, "eps": 1e-6, "cross_attn_norm": True,
             "qk_norm": True, "window_size": (-1, -1)}
_OPTIONAL = ("vace_layers", "vace_in_dim", "cross_attn_type")  # VACE; VideoX-Fun's image switch
# Recorded by the original or VideoX-Fun configs without changing the network we build: the
# caller pads the text to ``text_len`` (the pipelines use 512).
_INERT = ("text_len", "in_channels", "hidden_size")
# VideoX-Fun's optional modules: flag -> {its size fields: (our WanConfig field, VideoX-Fun's
# default)}. The size fields are read only while the flag is true.
_FUN_MODULES = {
    "add_control_adapter": {"in_dim_control_adapter": ("control_adapter_in_dim", 24),
                            "downscale_factor_control_adapter": ("control_adapter_downscale", 8)},
    "add_ref_conv": {"in_dim_ref_conv": ("ref_conv_in_dim", 16)},
}
_FUN_FIELDS = tuple(_FUN_MODULES) + tuple(f for sizes in _FUN_MODULES.values() for f in sizes)
_CLIP_DIM = 1280  # Wan2.1 I2V / FLF2V image features (open-clip ViT-H/14)
_FLF_IMAGE_TOKENS = 2 * 257  # FLF2V joins the first and last frame's CLIP tokens
_ROPE_MAX_SEQ_LEN = 1024  # WanModel's rope_params(1024, ...)


def _strip_prefix(keys: Iterable[str]) -> dict[str, str]:
  """``{key without the ComfyUI prefix: key}``."""
  return {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: k for k in keys}


def is_original_transformer(config: Mapping[str, Any], keys: Iterable[str]) -> bool:
  """Whether a transformer checkpoint (``config.json`` dict, tensor names) is in Wan's original
  layout: its tensors carry Wan's names (``head.modulation``) or its config Wan's fields."""
  names = _strip_prefix(keys)
  return (_TRANSFORMER_MARKER in names or config.get("_class_name") in ORIGINAL_CLASSES
          or ("dim" in config and "num_heads" in config))


def _positive_int(config: Mapping[str, Any], name: str) -> int:
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"original Wan config: field {name!r} expected a positive integer, got "
                     f"{value!r}")
  return value


def diffusers_config_from_original(config: Mapping[str, Any],
                                   shapes: Mapping[str, Sequence[int]] | None = None) -> dict:
  """A diffusers ``WanTransformer3DModel`` / ``WanVACETransformer3DModel`` config from an
  original Wan (or VideoX-Fun) ``config.json`` dict.

  ``model_type`` ('t2v', 'i2v', 'flf2v', 'vace', 'ti2v'), ``dim``, ``in_dim``, ``out_dim``,
  ``ffn_dim``, ``freq_dim``, ``num_heads`` and ``num_layers`` are required; ``patch_size``,
  ``text_dim``, ``eps``, ``cross_attn_norm``, ``qk_norm`` and ``window_size`` default to
  ``WanModel``'s values (its config.json does not store them). VACE (``VaceWanModel``,
  ``model_type`` 'vace' or ``vace_layers`` / ``vace_in_dim`` present) takes ``vace_layers``
  (default every second block) and ``vace_in_dim`` (default ``in_dim``). VideoX-Fun's
  ``add_control_adapter`` (with ``in_dim_control_adapter``, default 24, and
  ``downscale_factor_control_adapter``, default 8) and ``add_ref_conv`` (with
  ``in_dim_ref_conv``, default 16) add ``control_adapter_in_dim`` / ``control_adapter_downscale``
  and ``ref_conv_in_dim`` to the returned config (absent when the flags are false).

  The image branch (CLIP projection and the image keys of cross-attention) is read from the
  tensors when ``shapes`` (``{original key: shape}``) are given, since Wan2.1's and Wan2.2's I2V
  models share ``model_type`` 'i2v' and only the former has one; without them, 'i2v' and
  'flf2v' get Wan2.1's (1280-wide CLIP features; FLF2V's 514 image tokens with positions).

  Raises:
    ValueError: naming a missing or unknown field, or a value we cannot build (``qk_norm``
      false, windowed attention, an unknown ``model_type``, a non-bool VideoX-Fun flag, a
      VideoX-Fun module on a VACE model).
  """
  config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
  known = set(_REQUIRED) | set(_DEFAULTS) | set(_OPTIONAL) | set(_INERT) | set(_FUN_FIELDS)
  for name in config:
    if name not in known:
      raise ValueError(f"original Wan config: unknown field {name!r} (= {config[name]!r}); "
                       f"known fields: {sorted(known)}")
  for name in _REQUIRED:
    if name not in config:
      raise ValueError(f"original Wan config: missing required field {name!r}")
  model_type = config["model_type"]
  if model_type not in _MODEL_TYPES:
    raise ValueError(f"original Wan config: field 'model_type' expected one of "
                     f"{list(_MODEL_TYPES)}, got {model_type!r}")
  for name in _FUN_MODULES:
    if not isinstance(config.get(name, False), bool):
      raise ValueError(f"original Wan config: field {name!r} expected a bool, got "
                       f"{config[name]!r}")
  c = {**_DEFAULTS, **config}
  dim, heads = _positive_int(c, "dim"), _positive_int(c, "num_heads")
  if dim % heads:
    raise ValueError(f"original Wan config: field 'num_heads' expected a divisor of dim={dim}, "
                     f"got {heads}")
  if c["qk_norm"] is not True:
    raise ValueError(f"original Wan config: field 'qk_norm' expected true (the port always "
                     f"normalises queries and keys), got {c['qk_norm']!r}")
  if [int(w) for w in c["window_size"]] != [-1, -1]:
    raise ValueError(f"original Wan config: field 'window_size' expected [-1, -1] (global "
                     f"attention), got {c['window_size']!r}")
  if not isinstance(c["cross_attn_norm"], bool):
    raise ValueError(f"original Wan config: field 'cross_attn_norm' expected a bool, got "
                     f"{c['cross_attn_norm']!r}")
  num_layers = _positive_int(c, "num_layers")
  out = {
      "_class_name": "WanTransformer3DModel",
      "patch_size": [int(p) for p in c["patch_size"]],
      "num_attention_heads": heads,
      "attention_head_dim": dim // heads,
      "in_channels": _positive_int(c, "in_dim"),
      "out_channels": _positive_int(c, "out_dim"),
      "text_dim": _positive_int(c, "text_dim"),
      "freq_dim": _positive_int(c, "freq_dim"),
      "ffn_dim": _positive_int(c, "ffn_dim"),
      "num_layers": num_layers,
      "cross_attn_norm": c["cross_attn_norm"],
      "qk_norm": "rms_norm_across_heads",
      "eps": float(c["eps"]),
      "image_dim": None,
      "added_kv_proj_dim": None,
      "rope_max_seq_len": _ROPE_MAX_SEQ_LEN,
      "pos_embed_seq_len": None,
  }
  if shapes is not None:
    image = shapes.get("img_emb.proj.0.weight")
    out["image_dim"] = None if image is None else int(image[0])
    out["added_kv_proj_dim"] = dim if "blocks.0.cross_attn.k_img.weight" in shapes else None
    positions = shapes.get("img_emb.emb_pos")
    out["pos_embed_seq_len"] = None if positions is None else int(positions[1])
  else:
    has_image = model_type in ("i2v", "flf2v")
    cross = c.get("cross_attn_type")
    out["image_dim"] = _CLIP_DIM if has_image else None
    out["added_kv_proj_dim"] = dim if (has_image if cross is None
                                       else cross == "i2v_cross_attn") else None
    out["pos_embed_seq_len"] = _FLF_IMAGE_TOKENS if model_type == "flf2v" else None
  vace = (model_type == "vace" or "vace_layers" in c or "vace_in_dim" in c
          or config.get("_class_name") == "VaceWanModel")
  if vace:
    layers = c.get("vace_layers")
    out["_class_name"] = "WanVACETransformer3DModel"
    out["vace_layers"] = (list(range(0, num_layers, 2)) if layers is None
                          else [int(i) for i in layers])
    out["vace_in_channels"] = (out["in_channels"] if c.get("vace_in_dim") is None
                               else _positive_int(c, "vace_in_dim"))
  for flag, sizes in _FUN_MODULES.items():
    if not config.get(flag, False):
      continue
    if vace:
      raise ValueError(f"original Wan config: field {flag!r} expected false for a VACE model "
                       f"(VideoX-Fun's VACE model has no such module), got true")
    for name, (ours, default) in sizes.items():
      out[ours] = _positive_int({name: config.get(name, default)}, name)
  return out


def _original_block_name(rest: str) -> str | None:
  params = {d: o for o, d in _BLOCK_PARAMS}
  modules = {d: o for o, d in _BLOCK_MODULES}
  if rest in params:
    return params[rest]
  module, _, leaf = rest.rpartition(".")
  return f"{modules[module]}.{leaf}" if module in modules else None


def _original_top_name(key: str) -> str | None:
  params = {d: o for o, d in _TOP_PARAMS}
  modules = {d: o for o, d in _TOP_MODULES}
  if key in params:
    return params[key]
  module, _, leaf = key.rpartition(".")
  return f"{modules[module]}.{leaf}" if module in modules else None


def original_to_diffusers_keys(config: Mapping[str, Any] | wan.WanConfig) -> dict[str, str]:
  """``{original key: diffusers key}`` for every tensor of a transformer with this diffusers
  config (dict or ``WanConfig``); the diffusers keys are exactly ``convert_transformer``'s key
  table, each produced once."""
  if not isinstance(config, wan.WanConfig):
    config = wan.config_from_diffusers(config)
  table: dict[str, str] = {}
  for key in convert_transformer.key_table(config):
    block = re.fullmatch(r"((?:vace_)?blocks\.\d+)\.(.+)", key)
    if block:
      rest = _original_block_name(block.group(2))
      original = None if rest is None else f"{block.group(1)}.{rest}"
    else:
      original = _original_top_name(key)
    if original is None:
      raise RuntimeError(f"internal: diffusers key {key!r} has no original-layout name")
    if original in table:
      raise RuntimeError(f"internal: diffusers keys {table[original]!r} and {key!r} both come "
                         f"from original key {original!r}")
    table[original] = key
  return table


# ---------------------------------------------------------------------------------------------
# VAE names. The original encoder and decoder are flat ``nn.Sequential`` lists
# (``downsamples.N``, ``upsamples.N``, ``middle.{0,1,2}``, ``head.{0,2}``); diffusers groups the
# decoder's into up blocks of ``num_res_blocks + 1`` residual blocks and one upsampler.

_VAE_MODULES = {  # diffusers -> original, outside the block lists
    "quant_conv": "conv1",
    "post_quant_conv": "conv2",
    **{f"{part}.{d}": f"{part}.{o}" for part in ("encoder", "decoder") for d, o in (
        ("conv_in", "conv1"), ("norm_out", "head.0"), ("conv_out", "head.2"),
        ("mid_block.resnets.0", "middle.0"), ("mid_block.attentions.0", "middle.1"),
        ("mid_block.resnets.1", "middle.2"))},
}
# A residual block is ``residual = Sequential(norm, SiLU, conv, norm, SiLU, Dropout, conv)``.
_VAE_RESNET = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3",
               "conv2": "residual.6", "conv_shortcut": "shortcut"}
_VAE_MARKERS = ("encoder.conv1.weight", "decoder.middle.0.residual.0.gamma")
# AutoencoderKLWan's field for WanVAE_'s ``dim``; the other constructor names are shared.
_VAE_RENAMED_FIELDS = {"dim": "base_dim"}


def is_original_vae(keys: Iterable[str]) -> bool:
  """Whether VAE tensor names are the original ``WanVAE_``'s (``encoder.conv1.weight``)."""
  keys = set(keys)
  return any(marker in keys for marker in _VAE_MARKERS)


def diffusers_vae_config_from_original(config: Mapping[str, Any]) -> dict:
  """An ``AutoencoderKLWan`` config from an original VAE's (optional) config dict.

  Wan ships its VAE without a config (``Wan2.1_VAE.pth``): an empty dict is Wan2.1's VAE
  (diffusers' defaults, as diffusers' single-file loader assumes). ``WanVAE_``'s constructor
  names are accepted (``dim`` for ``base_dim``) next to diffusers' own; unknown fields are refused
  by ``convert_vae.config_from_diffusers``.
  """
  out = {"_class_name": "AutoencoderKLWan"}
  for name, value in dict(config).items():
    if name.startswith("_"):
      continue
    target = _VAE_RENAMED_FIELDS.get(name, name)
    if target in out:
      raise ValueError(f"original Wan VAE config: fields {name!r} and {target!r} both given")
    out[target] = value
  if out.get("is_residual"):
    raise ValueError("original Wan VAE config: field 'is_residual' expected false (only the "
                     "Wan2.1 VAE's original layout is mapped; load Wan2.2's from a diffusers "
                     "folder), got true")
  return out


def _original_vae_name(key: str, num_res_blocks: int) -> str:
  module, leaf = key.rsplit(".", 1)
  m = re.fullmatch(r"encoder\.down_blocks\.(\d+)(?:\.(.+))?", module)
  if m:
    base, rest = f"encoder.downsamples.{m.group(1)}", m.group(2)
  elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)(?:\.(.+))?", module):
    index = int(m.group(1)) * (num_res_blocks + 2) + int(m.group(2))
    base, rest = f"decoder.upsamples.{index}", m.group(3)
  elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0(?:\.(.+))?", module):
    index = int(m.group(1)) * (num_res_blocks + 2) + num_res_blocks + 1
    base, rest = f"decoder.upsamples.{index}", m.group(2)
  else:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
      prefix = ".".join(parts[:n])
      if prefix in _VAE_MODULES:
        base, rest = _VAE_MODULES[prefix], ".".join(parts[n:]) or None
        break
    else:
      raise RuntimeError(f"internal: diffusers VAE key {key!r} has no original-layout name")
  if rest is not None:
    head, _, tail = rest.partition(".")
    rest = ".".join(p for p in (_VAE_RESNET.get(head, head), tail) if p)
  return ".".join(p for p in (base, rest, leaf) if p)


def original_to_diffusers_vae_keys(config: Mapping[str, Any] | WanVAEConfig) -> dict[str, str]:
  """``{original key: diffusers key}`` for every tensor of a Wan2.1-layout VAE with this config
  (``AutoencoderKLWan`` dict or ``WanVAEConfig``); the diffusers keys are exactly
  ``convert_vae``'s key table, each produced once."""
  if not isinstance(config, WanVAEConfig):
    config = convert_vae.config_from_diffusers(config)
  if config.is_residual:
    raise ValueError("VAE config: is_residual (Wan2.2's VAE) has no original-layout table")
  table: dict[str, str] = {}
  for entry in convert_vae.key_table(config):
    original = _original_vae_name(entry.key, config.num_res_blocks)
    if original in table:
      raise RuntimeError(f"internal: diffusers VAE keys {table[original]!r} and {entry.key!r} "
                         f"both come from original key {original!r}")
    table[original] = entry.key
  return table


# ---------------------------------------------------------------------------------------------
# Renaming checkpoints.


def rename(tensors: Mapping[str, Any], table: Mapping[str, str], what: str) -> dict[str, Any]:
  """``tensors`` under their diffusers names (the same value objects: nothing is copied).

  Raises:
    ValueError: naming the first tensor the table does not know, or the first key of the table
      that no tensor fills.
  """
  for key, value in tensors.items():
    if key not in table:
      raise ValueError(f"original-layout {what} tensor {key!r} (shape {tuple(value.shape)}) has "
                       "no entry in the original-to-diffusers key table for this config")
  for key, target in table.items():
    if key not in tensors:
      raise ValueError(f"original-layout {what} tensor {key!r} (diffusers {target!r}) is missing")
  return {table[key]: value for key, value in tensors.items()}


def transformer_as_diffusers(config: dict, tensors: Mapping[str, Any],
                             ) -> tuple[dict, Mapping[str, Any], dict[str, str]]:
  """``(diffusers config, tensors under diffusers names, {diffusers key: original key})``.

  A diffusers-layout checkpoint comes back as it is, with no names to translate.
  """
  if not is_original_transformer(config, tensors):
    return config, tensors, {}
  stripped = _strip_prefix(tensors)
  tensors = {k: tensors[full] for k, full in stripped.items()}
  diff_config = diffusers_config_from_original(config, {k: v.shape for k, v in tensors.items()})
  table = original_to_diffusers_keys(diff_config)
  return (diff_config, rename(tensors, table, "transformer"),
          {d: stripped[o] for o, d in table.items()})


def vae_as_diffusers(config: dict, tensors: Mapping[str, Any],
                     ) -> tuple[dict, Mapping[str, Any], dict[str, str]]:
  """Like :func:`transformer_as_diffusers`, for the VAE."""
  if not is_original_vae(tensors):
    return config, tensors, {}
  diff_config = diffusers_vae_config_from_original(config)
  table = original_to_diffusers_vae_keys(diff_config)
  return diff_config, rename(tensors, table, "VAE"), {d: o for o, d in table.items()}


def open_vae(path: str) -> tuple[dict, dict[str, Any]]:
  """``(config, tensors)`` of a VAE checkpoint: a diffusers folder, an original-layout folder
  (``config.json`` optional: Wan ships none) or a single ``.safetensors`` file."""
  if os.path.isfile(path):
    return {}, safetensors_io.open_file(path)
  if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "config.json")):
    return safetensors_io.open_folder(path)
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    raise safetensors_io.CheckpointError(f"checkpoint folder {path!r} has no config.json and no "
                                         "*.safetensors file")
  tensors: dict[str, Any] = {}
  for file in files:
    for name, arr in safetensors_io.open_file(file).items():
      if name in tensors:
        raise safetensors_io.CheckpointError(f"tensor {name!r} appears in two files of {path!r}")
      tensors[name] = arr
  return {}, tensors


@contextlib.contextmanager
def original_names(names: Mapping[str, str]):
  """Re-raises a ``ValueError`` of the diffusers checks inside with every diffusers key it
  quotes followed by the checkpoint's own (original) name for it."""
  try:
    yield
  except ValueError as error:
    if not names:
      raise

    def name(match):
      key = match.group(1)
      return f"{match.group(0)} (original {names[key]!r})" if key in names else match.group(0)

    raise type(error)(re.sub(r"'([^']*)'", name, str(error))) from error
