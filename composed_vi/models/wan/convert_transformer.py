"""diffusers Wan transformer weights -> our NNX parameters (a key table checked by eval_shape).

``key_table(config)`` names, for every key of a diffusers ``WanTransformer3DModel`` /
``WanVACETransformer3DModel`` state dict, our parameter path and the layout change:

* ``linear``: ``torch.nn.Linear`` weight ``(out, in)`` -> ``kernel`` ``(in, out)``;
* ``conv3d``: ``torch.nn.Conv3d`` weight ``(O, I, t, h, w)`` -> ``kernel`` ``(t, h, w, I, O)``;
* ``conv2d``: ``torch.nn.Conv2d`` weight ``(O, I, h, w)`` -> ``kernel`` ``(h, w, I, O)``
  (VideoX-Fun's ``control_adapter.*`` and ``ref_conv``, under their VideoX-Fun names: diffusers
  has no such modules);
* ``copy``: biases, norm weights (``weight`` -> ``scale``), scale-shift tables, ``pos_embed``.

``validate_key_table`` checks the table against ``nnx.eval_shape`` of the model: every source key
used, every parameter of ours mapped exactly once, every shape equal; the first violation raises
a ``ValueError`` naming the key and both shapes. ``convert_state_dict`` works on numpy arrays, so
a safetensors loader can reuse it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from composed_vi.models.wan import transformer as wan

Path = tuple[Any, ...]

# diffusers ignores these when loading (old checkpoints carry an unused norm on image queries).
IGNORED_SOURCE_KEYS = ("norm_added_q",)

_LAYOUTS = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv3d": lambda a: a.transpose(2, 3, 4, 1, 0),
    "conv2d": lambda a: a.transpose(2, 3, 1, 0),
}


def _source_shape(layout: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The shape ``shape`` takes after ``layout`` (without touching any data)."""
  shape = tuple(int(s) for s in shape)
  if layout == "linear" and len(shape) == 2:
    return shape[::-1]
  if layout == "conv3d" and len(shape) == 5:
    return tuple(shape[i] for i in (2, 3, 4, 1, 0))
  if layout == "conv2d" and len(shape) == 4:
    return tuple(shape[i] for i in (2, 3, 1, 0))
  return shape


def key_table(config: wan.WanConfig) -> dict[str, tuple[Path, str]]:
  """``{diffusers key: (our parameter path, layout)}`` for ``config``."""
  table: dict[str, tuple[Path, str]] = {}

  def linear(src: str, dst: Path):
    table[f"{src}.weight"] = ((*dst, "kernel"), "linear")
    table[f"{src}.bias"] = ((*dst, "bias"), "copy")

  def conv(src: str, dst: Path):
    table[f"{src}.weight"] = ((*dst, "kernel"), "conv3d")
    table[f"{src}.bias"] = ((*dst, "bias"), "copy")

  def conv2d(src: str, dst: Path):
    table[f"{src}.weight"] = ((*dst, "kernel"), "conv2d")
    table[f"{src}.bias"] = ((*dst, "bias"), "copy")

  def norm(src: str, dst: Path, bias: bool):
    table[f"{src}.weight"] = ((*dst, "scale"), "copy")
    if bias:
      table[f"{src}.bias"] = ((*dst, "bias"), "copy")

  def attention(src: str, dst: Path, added_kv: bool):
    for name in ("to_q", "to_k", "to_v"):
      linear(f"{src}.{name}", (*dst, name))
    linear(f"{src}.to_out.0", (*dst, "to_out"))
    norm(f"{src}.norm_q", (*dst, "norm_q"), bias=False)
    norm(f"{src}.norm_k", (*dst, "norm_k"), bias=False)
    if added_kv:
      linear(f"{src}.add_k_proj", (*dst, "add_k_proj"))
      linear(f"{src}.add_v_proj", (*dst, "add_v_proj"))
      norm(f"{src}.norm_added_k", (*dst, "norm_added_k"), bias=False)

  def block(src: str, dst: Path):
    attention(f"{src}.attn1", (*dst, "attn1"), added_kv=False)
    attention(f"{src}.attn2", (*dst, "attn2"), added_kv=config.added_kv_proj_dim is not None)
    if config.cross_attn_norm:
      norm(f"{src}.norm2", (*dst, "norm2"), bias=True)
    linear(f"{src}.ffn.net.0.proj", (*dst, "ffn", "fc1"))
    linear(f"{src}.ffn.net.2", (*dst, "ffn", "fc2"))
    table[f"{src}.scale_shift_table"] = ((*dst, "scale_shift_table"), "copy")

  conv("patch_embedding", ("patch_embedding",))
  ce = "condition_embedder"
  linear(f"{ce}.time_embedder.linear_1", (ce, "time_embedder", "linear_1"))
  linear(f"{ce}.time_embedder.linear_2", (ce, "time_embedder", "linear_2"))
  linear(f"{ce}.time_proj", (ce, "time_proj"))
  linear(f"{ce}.text_embedder.linear_1", (ce, "text_embedder", "linear_1"))
  linear(f"{ce}.text_embedder.linear_2", (ce, "text_embedder", "linear_2"))
  if config.image_dim is not None:
    ie = (ce, "image_embedder")
    norm(f"{ce}.image_embedder.norm1", (*ie, "norm1"), bias=True)
    linear(f"{ce}.image_embedder.ff.net.0.proj", (*ie, "ff", "fc1"))
    linear(f"{ce}.image_embedder.ff.net.2", (*ie, "ff", "fc2"))
    norm(f"{ce}.image_embedder.norm2", (*ie, "norm2"), bias=True)
    if config.pos_embed_seq_len is not None:
      table[f"{ce}.image_embedder.pos_embed"] = ((*ie, "pos_embed"), "copy")
  for i in range(config.num_layers):
    block(f"blocks.{i}", ("blocks", i))
  linear("proj_out", ("proj_out",))
  table["scale_shift_table"] = (("scale_shift_table",), "copy")
  if config.is_vace:
    conv("vace_patch_embedding", ("vace_patch_embedding",))
    for k in range(len(config.vace_layers)):
      block(f"vace_blocks.{k}", ("vace_blocks", k))
      if k == 0:
        linear(f"vace_blocks.{k}.proj_in", ("vace_blocks", k, "proj_in"))
      linear(f"vace_blocks.{k}.proj_out", ("vace_blocks", k, "proj_out"))
  if config.control_adapter_in_dim is not None:
    conv2d("control_adapter.conv", ("control_adapter", "conv"))
    for name in ("conv1", "conv2"):
      conv2d(f"control_adapter.residual_blocks.0.{name}",
             ("control_adapter", "residual_blocks", 0, name))
  if config.ref_conv_in_dim is not None:
    conv2d("ref_conv", ("ref_conv",))
  return table


def expected_shapes(config: wan.WanConfig) -> dict[Path, tuple[int, ...]]:
  """``{our parameter path: shape}`` from ``nnx.eval_shape`` of the model (no allocation)."""
  return wan.param_shapes(config)


def _path_str(path: Path) -> str:
  return ".".join(str(p) for p in path)


def validate_key_table(config: wan.WanConfig, source_shapes: Mapping[str, Sequence[int]],
                       ) -> dict[str, tuple[Path, str]]:
  """Checks a diffusers state dict's ``{key: shape}`` against our model; returns the used table.

  Raises:
    ValueError: naming the first source key that is unknown, missing, or whose shape (after the
      layout change) differs from ours, or the first parameter of ours that no key fills.
  """
  table = key_table(config)
  ours = expected_shapes(config)
  used: dict[Path, str] = {}
  for key, shape in source_shapes.items():
    if any(ignored in key for ignored in IGNORED_SOURCE_KEYS):
      continue
    if key not in table:
      raise ValueError(f"state dict key {key!r} (shape {tuple(shape)}) has no entry in the Wan "
                       "key table for this config")
    path, layout = table[key]
    if path not in ours:
      raise ValueError(f"state dict key {key!r} maps to {_path_str(path)}, which our model "
                       "does not have")
    if path in used:
      raise ValueError(f"state dict keys {used[path]!r} and {key!r} both map to "
                       f"{_path_str(path)}")
    got = _source_shape(layout, shape)
    if got != ours[path]:
      raise ValueError(f"state dict key {key!r}: shape {tuple(shape)} ({layout} -> {got}) does "
                       f"not match our {_path_str(path)} of shape {ours[path]}")
    used[path] = key
  for key in table:
    if key not in source_shapes:
      raise ValueError(f"state dict key {key!r} is missing (our {_path_str(table[key][0])})")
  for path, shape in ours.items():
    if path not in used:
      raise ValueError(f"our parameter {_path_str(path)} (shape {shape}) is not filled by any "
                       "state dict key")
  return table


def convert_arrays(config: wan.WanConfig, state_dict: Mapping[str, Any], dtype=np.float32,
                   ) -> dict[Path, np.ndarray]:
  """Validated ``{our path: array}`` in our layouts from a diffusers state dict of arrays.

  ``dtype`` casts every array (``None`` keeps the source dtype, e.g. ml_dtypes bfloat16).
  """
  table = validate_key_table(config, {k: np.shape(v) for k, v in state_dict.items()})
  out = {}
  for key, (path, layout) in table.items():
    arr = _LAYOUTS[layout](np.asarray(state_dict[key]))
    out[path] = np.ascontiguousarray(arr if dtype is None else arr.astype(dtype))
  return out


def convert_state_dict(config: wan.WanConfig, state_dict: Mapping[str, Any], dtype=np.float32,
                       ) -> nnx.State:
  """An ``nnx.State`` of parameters to merge with ``split_abstract(config)[0]``."""
  arrays = convert_arrays(config, state_dict, dtype)
  _, abstract = wan.split_abstract(config)
  flat = [(path, var.replace(value=jnp.asarray(arrays[tuple(path)])))
          for path, var in nnx.to_flat_state(abstract)]
  return nnx.from_flat_state(flat)


def _to_numpy(x):
  """numpy from a numpy / jax array or a torch tensor (bfloat16 tensors go through float32)."""
  if x is None or isinstance(x, (np.ndarray, jax.Array)):
    return x
  if hasattr(x, "detach"):
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":
      x = x.float()
    return x.numpy()
  return np.asarray(x)


def from_diffusers(module, *, dtype=jnp.float32, compiler_options=None, **model_kwargs):
  """Converts an in-memory diffusers Wan transformer into ``(fn, params)``.

  ``fn(params, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
  control_hidden_states=None, control_hidden_states_scale=None)`` takes diffusers' layouts
  (hidden states (B, C, F, H, W), timestep (B,) or (B, S)) as numpy arrays, jax arrays or torch
  tensors and returns a jax array (B, C_out, F, H, W) in ``dtype``. ``fn.config`` is the
  ``WanConfig`` and ``fn.model_fn`` the jitted channels-last function of ``make_model_fn``.
  ``model_kwargs`` go to ``WanTransformer`` (precision, attention_impl, remat) and
  ``compiler_options`` to ``jax.jit``.
  """
  config = wan.config_from_diffusers(module.config)
  state_dict = {k: _to_numpy(v) for k, v in module.state_dict().items()}
  params = convert_state_dict(config, state_dict)
  graphdef, _ = wan.split_abstract(config, dtype=dtype, **model_kwargs)

  def channels_first(params, x, t, context, context_image, control, control_scale):
    to_last = lambda a: None if a is None else jnp.moveaxis(a, 1, -1)
    out = wan.forward(graphdef, params, to_last(x), t, context, context_image, to_last(control),
                      control_scale)
    return jnp.moveaxis(out, -1, 1)

  channels_first = jax.jit(channels_first, compiler_options=compiler_options)

  def fn(params, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
         control_hidden_states=None, control_hidden_states_scale=None):
    args = (hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
            control_hidden_states, control_hidden_states_scale)
    return channels_first(params, *(_to_numpy(a) for a in args))

  fn.config = config
  fn.model_fn = wan.make_model_fn(config, dtype=dtype, compiler_options=compiler_options,
                                  **model_kwargs)
  return fn, params
