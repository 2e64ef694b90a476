"""The CLIP vision encoder (transformers' ``CLIPVisionModel``) in Flax NNX, channels-last.

Wan2.1 I2V checkpoints carry OpenCLIP's ViT-H/14 in ``image_encoder/`` (224 px, 257 tokens of
width 1280); the diffusers pipeline conditions on the *penultimate* hidden state (before the
last encoder layer and the post layer norm): :func:`image_embeddings`.

The numerics follow transformers 5.25's ``modeling_clip``: a patch convolution without bias,
a learned class token and absolute positions, a pre layer norm, pre-LN encoder layers
(attention, then an MLP with ``hidden_act``) and a post layer norm that only the pooled output
uses. Layer norms and the softmax run in float32, the residual stream in the compute ``dtype``.
``hidden_states[0]`` is the embedding after the pre layer norm and ``hidden_states[i]`` the
output of layer ``i``, as transformers returns them with ``output_hidden_states=True``.

Checkpoints: ``key_table`` maps transformers' keys to ours. Folders saved by transformers 4
(and ``CLIPVisionModelWithProjection`` by any version) prefix the keys with ``vision_model.``;
``CLIPVisionModel`` saved by transformers 5 has no prefix. Both load. Knowingly ignored:
``*.position_ids`` (a constant buffer older checkpoints store) and ``visual_projection.weight``
(the projection head of ``CLIPVisionModelWithProjection``, which Wan does not use).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from composed_vi.models.wan import safetensors_io

Array = jax.Array
Path = tuple[Any, ...]

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    # transformers' tanh approximations (gelu_new uses the same constant as jax's).
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

MODEL_TYPE = "clip_vision_model"
CLASSES = ("CLIPVisionModel", "CLIPVisionModelWithProjection")
IGNORED_KEY_SUFFIXES = ("position_ids",)
IGNORED_KEYS = ("visual_projection.weight",)
PREFIX = "vision_model."


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """Hyper-parameters of a CLIP ViT; names and defaults are transformers' ``CLIPVisionConfig``.

  Wan2.1 I2V: ``hidden_size=1280, intermediate_size=5120, num_attention_heads=16,
  num_hidden_layers=32, image_size=224, patch_size=14, hidden_act="gelu"``.
  """

  hidden_size: int = 768
  intermediate_size: int = 3072
  num_attention_heads: int = 12
  num_hidden_layers: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5

  def __post_init__(self):
    for name in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                 "num_channels", "image_size", "patch_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size: expected a multiple of num_attention_heads="
                       f"{self.num_attention_heads}, got {self.hidden_size}")
    if self.patch_size > self.image_size:
      raise ValueError(f"patch_size: expected at most image_size={self.image_size}, got "
                       f"{self.patch_size}")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"hidden_act: expected one of {sorted(_ACTIVATIONS)}, got "
                       f"{self.hidden_act!r}")
    if not isinstance(self.layer_norm_eps, (int, float)) or not self.layer_norm_eps > 0:
      raise ValueError(f"layer_norm_eps: expected a positive float, got {self.layer_norm_eps!r}")

  @property
  def grid(self) -> int:
    """Patches per side; the convolution drops the last ``image_size % patch_size`` pixels."""
    return self.image_size // self.patch_size

  @property
  def num_tokens(self) -> int:
    """Class token + patches (257 for ViT-H/14 at 224 px)."""
    return self.grid ** 2 + 1

  @classmethod
  def from_hf(cls, config: Mapping[str, Any]) -> CLIPVisionConfig:
    """From a transformers ``config.json`` dict; absent fields take transformers' defaults.

    Raises:
      ValueError: naming the field, the expected and the actual value (a full ``CLIPModel``
        config, model_type ``clip``, is refused: pass its ``vision_config``).
    """
    model_type = config.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
      raise ValueError(f"model_type: expected {MODEL_TYPE!r}, got {model_type!r}")
    # Only the fields are read: the other keys (dropout rates, initialisers, projection_dim,
    # dtype, ...) do not change the forward pass in eval mode.
    kwargs = {f.name: config[f.name] for f in dataclasses.fields(cls)
              if config.get(f.name) is not None}
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# The model.


class _ConstantKeys:
  """Stands in for ``nnx.Rngs`` under ``eval_shape``: shapes need no real keys, and flax's
  ``Rngs`` counters make tracing a deep model slow."""

  def params(self):
    return jax.random.key(0)


def _dense(din, dout, rngs, dtype, param_dtype, precision):
  return nnx.Linear(din, dout, dtype=dtype, param_dtype=param_dtype, precision=precision,
                    rngs=rngs)


class LayerNorm(nnx.Module):
  """Affine LayerNorm over the last axis, statistics in float32, output in ``dtype``."""

  def __init__(self, dim: int, eps: float, dtype, param_dtype):
    self.eps, self.dtype = eps, dtype
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))

  def __call__(self, x: Array) -> Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)


class Embeddings(nnx.Module):
  """Patch convolution (stride = kernel = patch, no bias) + class token + positions.

  ``patch_kernel`` is ``(p, p, C, D)`` (torch's ``(D, C, p, p)`` transposed);
  ``position_embedding`` is ``(tokens, D)`` with the class token's position first.
  """

  def __init__(self, config: CLIPVisionConfig, *, rngs, dtype, param_dtype, precision):
    self.config, self.dtype, self.precision = config, dtype, precision
    p, c, d = config.patch_size, config.num_channels, config.hidden_size
    init = nnx.initializers.normal(0.02)
    self.class_embedding = nnx.Param(init(rngs.params(), (d,), param_dtype))
    self.patch_kernel = nnx.Param(init(rngs.params(), (p, p, c, d), param_dtype))
    self.position_embedding = nnx.Param(init(rngs.params(), (config.num_tokens, d), param_dtype))

  def __call__(self, pixels: Array) -> Array:
    """(B, H, W, C) -> (B, 1 + g*g, D); patches row-major, as torch's ``flatten(2)``."""
    b = pixels.shape[0]
    g, p, c = self.config.grid, self.config.patch_size, self.config.num_channels
    x = pixels[:, :g * p, :g * p].astype(self.dtype)  # the strided conv ignores the remainder
    x = x.reshape(b, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * c)
    kernel = self.patch_kernel[...].reshape(p * p * c, -1).astype(self.dtype)
    patches = jnp.matmul(x, kernel, precision=self.precision)
    cls = jnp.broadcast_to(self.class_embedding[...].astype(self.dtype), (b, 1, patches.shape[-1]))
    return jnp.concatenate([cls, patches], axis=1) + self.position_embedding[...].astype(self.dtype)


class Attention(nnx.Module):
  """Bidirectional multi-head self-attention with biased q/k/v/out projections."""

  def __init__(self, config: CLIPVisionConfig, **kw):
    d = config.hidden_size
    self.heads = config.num_attention_heads
    self.q_proj, self.k_proj = _dense(d, d, **kw), _dense(d, d, **kw)
    self.v_proj, self.out_proj = _dense(d, d, **kw), _dense(d, d, **kw)

  def __call__(self, x: Array) -> Array:
    """(B, T, D) -> (B, T, D); scale ``head_dim ** -0.5``, softmax in float32 (jax's XLA path)."""
    split = lambda y: y.reshape(*y.shape[:2], self.heads, -1)
    out = jax.nn.dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)),
                                       split(self.v_proj(x)))
    return self.out_proj(out.reshape(x.shape))


class Mlp(nnx.Module):
  """``fc2(act(fc1(x)))``."""

  def __init__(self, config: CLIPVisionConfig, **kw):
    self.act = _ACTIVATIONS[config.hidden_act]
    self.fc1 = _dense(config.hidden_size, config.intermediate_size, **kw)
    self.fc2 = _dense(config.intermediate_size, config.hidden_size, **kw)

  def __call__(self, x: Array) -> Array:
    return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nnx.Module):
  """Pre-LN transformer layer: ``x + attn(ln1(x))``, then ``+ mlp(ln2(.))``."""

  def __init__(self, config: CLIPVisionConfig, *, rngs, dtype, param_dtype, precision):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    d, eps = config.hidden_size, config.layer_norm_eps
    self.layer_norm1 = LayerNorm(d, eps, dtype, param_dtype)
    self.self_attn = Attention(config, **kw)
    self.layer_norm2 = LayerNorm(d, eps, dtype, param_dtype)
    self.mlp = Mlp(config, **kw)

  def __call__(self, x: Array) -> Array:
    x = x + self.self_attn(self.layer_norm1(x))
    return x + self.mlp(self.layer_norm2(x))


class CLIPVisionEncoder(nnx.Module):
  """transformers' ``CLIPVisionModel`` with channels-last input.

  Args:
    config: the architecture.
    rngs: initialisation keys (``split_abstract`` builds it without allocating).
    dtype: activation dtype of the residual stream and the matmuls.
    param_dtype: parameter dtype at initialisation.
    precision: ``jax.lax.Precision`` of the matmuls (``None``: backend default).
  """

  def __init__(self, config: CLIPVisionConfig, *, rngs, dtype=jnp.float32,
               param_dtype=jnp.float32, precision=None):
    self.config = config
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    d, eps = config.hidden_size, config.layer_norm_eps
    self.embeddings = Embeddings(config, **kw)
    self.pre_layernorm = LayerNorm(d, eps, dtype, param_dtype)
    self.layers = nnx.List([EncoderLayer(config, **kw) for _ in range(config.num_hidden_layers)])
    self.post_layernorm = LayerNorm(d, eps, dtype, param_dtype)

  def _check(self, pixels: Array) -> None:
    c = self.config
    want = (c.image_size, c.image_size, c.num_channels)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
      raise ValueError(f"pixel_values: expected shape (B, {want[0]}, {want[1]}, {want[2]}) "
                       f"(channels-last), got {tuple(pixels.shape)}")

  def __call__(self, pixels: Array, layer: int | None = None) -> tuple[Array, ...] | Array:
    """Hidden states of normalised ``pixels`` ``(B, H, W, C)``.

    Returns all ``num_hidden_layers + 1`` states ``(B, tokens, D)`` as a tuple (``layer=None``)
    or only ``hidden_states[layer]`` (Python indexing, ``-2`` the penultimate), computing no
    layer past it. None of them has the post layer norm (see :meth:`pool`).
    """
    self._check(pixels)
    n = len(self.layers) + 1
    if layer is not None and not -n <= layer < n:
      raise ValueError(f"layer: expected an index into {n} hidden states, got {layer}")
    stop = len(self.layers) if layer is None else layer % n
    h = self.pre_layernorm(self.embeddings(pixels))
    states = [h]
    for i in range(stop):
      h = self.layers[i](h)
      states.append(h)
    return tuple(states) if layer is None else h

  def pool(self, last_hidden_state: Array) -> Array:
    """transformers' ``pooler_output``: the post layer norm of the class token, (B, D)."""
    return self.post_layernorm(last_hidden_state[:, 0])


_MODEL_DEFAULTS = dict(dtype=jnp.float32, param_dtype=jnp.float32, precision=None)


@functools.lru_cache(maxsize=16)
def _split_abstract(config: CLIPVisionConfig, kwargs: tuple[tuple[str, Any], ...]):
  model = nnx.eval_shape(lambda: CLIPVisionEncoder(config, rngs=_ConstantKeys(), **dict(kwargs)))
  return nnx.split(model)


def split_abstract(config: CLIPVisionConfig, **kwargs) -> tuple[nnx.GraphDef, nnx.State]:
  """``nnx.split`` of the model with abstract parameters (cached: do not mutate the state)."""
  return _split_abstract(config, tuple(sorted({**_MODEL_DEFAULTS, **kwargs}.items())))


def param_shapes(config: CLIPVisionConfig) -> dict[Path, tuple[int, ...]]:
  """``{our parameter path: shape}`` from ``nnx.eval_shape`` (no allocation)."""
  _, state = split_abstract(config)
  return {tuple(path): tuple(var.shape) for path, var in nnx.to_flat_state(state)}


def make_apply_fn(config: CLIPVisionConfig, *, compiler_options: dict | None = None,
                  **kwargs) -> Callable[..., Any]:
  """A jitted ``apply(params, pixel_values, layer=None)`` (``layer`` static).

  ``pixel_values`` is ``(B, H, W, C)`` float, normalised, channels-last; returns the tuple of
  hidden states or ``hidden_states[layer]``, each ``(B, tokens, hidden_size)``. ``kwargs`` are
  :class:`CLIPVisionEncoder`'s (dtype, precision).
  """
  graphdef, _ = split_abstract(config, **kwargs)

  def apply(params, pixel_values, layer=None):
    return nnx.merge(graphdef, params)(pixel_values, layer)

  return jax.jit(apply, static_argnames=("layer",), compiler_options=compiler_options)


# ---------------------------------------------------------------------------------------------
# Checkpoint keys.

_LAYOUTS = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv2d": lambda a: a.transpose(2, 3, 1, 0),  # (D, C, p, p) -> (p, p, C, D)
}


def _after_layout(layout: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The shape a source tensor of ``shape`` takes after ``layout``, without data."""
  shape = tuple(int(s) for s in shape)
  if layout == "linear" and len(shape) == 2:
    return shape[::-1]
  if layout == "conv2d" and len(shape) == 4:
    return tuple(shape[i] for i in (2, 3, 1, 0))
  return shape


def key_table(config: CLIPVisionConfig, prefix: str = PREFIX) -> dict[str, tuple[Path, str]]:
  """``{transformers key: (our parameter path, layout)}``; ``prefix`` is ``"vision_model."``
  (transformers 4, ``CLIPVisionModelWithProjection``) or ``""`` (transformers 5)."""
  table: dict[str, tuple[Path, str]] = {}

  def linear(src: str, dst: Path):
    table[f"{prefix}{src}.weight"] = ((*dst, "kernel"), "linear")
    table[f"{prefix}{src}.bias"] = ((*dst, "bias"), "copy")

  def norm(src: str, dst: Path):
    table[f"{prefix}{src}.weight"] = ((*dst, "scale"), "copy")
    table[f"{prefix}{src}.bias"] = ((*dst, "bias"), "copy")

  table[f"{prefix}embeddings.class_embedding"] = (("embeddings", "class_embedding"), "copy")
  table[f"{prefix}embeddings.patch_embedding.weight"] = (("embeddings", "patch_kernel"), "conv2d")
  table[f"{prefix}embeddings.position_embedding.weight"] = (
      ("embeddings", "position_embedding"), "copy")
  norm("pre_layrnorm", ("pre_layernorm",))
  for i in range(config.num_hidden_layers):
    src, dst = f"encoder.layers.{i}", ("layers", i)
    norm(f"{src}.layer_norm1", (*dst, "layer_norm1"))
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      linear(f"{src}.self_attn.{name}", (*dst, "self_attn", name))
    norm(f"{src}.layer_norm2", (*dst, "layer_norm2"))
    linear(f"{src}.mlp.fc1", (*dst, "mlp", "fc1"))
    linear(f"{src}.mlp.fc2", (*dst, "mlp", "fc2"))
  norm("post_layernorm", ("post_layernorm",))
  return table


def checkpoint_prefix(keys) -> str:
  """``"vision_model."`` when any key carries it, else ``""``."""
  return PREFIX if any(k.startswith(PREFIX) for k in keys) else ""


def _ignored(key: str) -> bool:
  return key in IGNORED_KEYS or key.endswith(IGNORED_KEY_SUFFIXES)


def _path_str(path: Path) -> str:
  return ".".join(str(p) for p in path)


def validate_key_table(config: CLIPVisionConfig, source_shapes: Mapping[str, Sequence[int]],
                       ) -> dict[str, tuple[Path, str]]:
  """Checks a checkpoint's ``{key: shape}`` against our model; returns the table it uses.

  Every key but the ignored ones must be in the table, every parameter of ours filled exactly
  once, every shape (after the layout change) equal to ``nnx.eval_shape``'s.

  Raises:
    ValueError: naming the first unknown, missing or mis-shaped key, or unfilled parameter.
  """
  table = key_table(config, checkpoint_prefix(source_shapes))
  ours = param_shapes(config)
  used: dict[Path, str] = {}
  for key, shape in source_shapes.items():
    if _ignored(key):
      continue
    if key not in table:
      raise ValueError(f"checkpoint key {key!r} (shape {tuple(shape)}) has no entry in the CLIP "
                       "vision key table for this config")
    path, layout = table[key]
    if path not in ours:
      raise ValueError(f"checkpoint key {key!r} maps to {_path_str(path)}, which our model "
                       "does not have")
    if path in used:
      raise ValueError(f"checkpoint keys {used[path]!r} and {key!r} both map to "
                       f"{_path_str(path)}")
    got = _after_layout(layout, shape)
    if got != ours[path]:
      raise ValueError(f"checkpoint key {key!r}: shape {tuple(shape)} ({layout} -> {got}) does "
                       f"not match our {_path_str(path)} of shape {ours[path]}")
    used[path] = key
  for key, (path, _) in table.items():
    if key not in source_shapes:
      raise ValueError(f"checkpoint key {key!r} is missing (our {_path_str(path)})")
  for path, shape in ours.items():
    if path not in used:
      raise ValueError(f"our parameter {_path_str(path)} (shape {shape}) is not filled by any "
                       "checkpoint key")
  return table


# ---------------------------------------------------------------------------------------------
# Loading.


@dataclasses.dataclass
class LoadedImageEncoder:
  """A loaded encoder: ``apply(params, pixel_values (B, H, W, C), layer=None)`` (jitted)."""

  config: CLIPVisionConfig
  params: nnx.State
  apply: Callable[..., Any]
  hf_config: dict


def load_image_encoder(directory: str, dtype=None, *, compute_dtype=jnp.float32,
                       precision=None, compiler_options: dict | None = None,
                       ) -> LoadedImageEncoder:
  """The CLIP vision encoder of a transformers folder (``config.json`` + ``*.safetensors``),
  read without torch, e.g. Wan2.1 I2V's ``image_encoder/``.

  Args:
    directory: the folder.
    dtype: parameter dtype (``None`` keeps the checkpoint's).
    compute_dtype: activation dtype (layer norms and softmax stay float32).
    precision: matmul precision (``None``: backend default, which may be TF32 on GPUs).
    compiler_options: passed to ``jax.jit``.

  Raises:
    CheckpointError: the folder, its config or weights cannot be read.
    ValueError: the config is not a CLIP vision model, or a key or shape does not fit (named).
  """
  hf_config, tensors = safetensors_io.open_folder(directory)
  archs = hf_config.get("architectures") or []
  if archs and not set(archs) & set(CLASSES):
    raise safetensors_io.CheckpointError(
        f"{directory}/config.json: expected architectures in {list(CLASSES)}, got {archs}")
  config = CLIPVisionConfig.from_hf(hf_config)
  table = validate_key_table(config, {k: v.shape for k, v in tensors.items()})
  _, abstract = split_abstract(config)
  values = {}
  for key, (path, layout) in table.items():
    arr = _LAYOUTS[layout](tensors[key])  # a transposed view of the memory map
    values[path] = jnp.asarray(arr if dtype is None else arr.astype(dtype))
  flat = [(p, v.replace(value=values[tuple(p)])) for p, v in nnx.to_flat_state(abstract)]
  params = nnx.from_flat_state(flat)
  apply = make_apply_fn(config, dtype=compute_dtype, precision=precision,
                        compiler_options=compiler_options)
  return LoadedImageEncoder(config, params, apply, hf_config)


def image_embeddings(loaded: LoadedImageEncoder, pixels) -> Array:
  """Wan's image conditioning: ``hidden_states[-2]``, (B, tokens, hidden_size).

  ``pixels`` ``(B, H, W, C)`` float32, normalised, as :func:`image_processing.preprocess`
  returns; the last layer is not computed.
  """
  return loaded.apply(loaded.params, jnp.asarray(pixels), layer=-2)


__all__: Sequence[str] = (
    "CLIPVisionConfig", "CLIPVisionEncoder", "LoadedImageEncoder", "load_image_encoder",
    "image_embeddings", "key_table", "validate_key_table", "checkpoint_prefix", "param_shapes",
    "split_abstract", "make_apply_fn")
