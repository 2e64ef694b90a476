"""The UMT5 text encoder (transformers' ``UMT5EncoderModel``) in Flax NNX.

Wan2.1 / Wan2.2 checkpoints carry google's umt5-xxl encoder in ``text_encoder/`` (vocabulary
256384, width 4096, 24 layers of 64 heads of 64 channels, gated-GELU feed-forward of 10240);
the pipelines condition on its last hidden state (:func:`composed_vi.models.text.encode_prompts`).

The numerics follow transformers 5.25's ``modeling_umt5``:

* pre-norm layers ``x + attn(norm(x))``, then ``x + ffn(norm(x))``, and a final norm; the norm
  is T5's RMSNorm (no mean subtraction, no bias, statistics in float32);
* attention scores are ``q k^T`` *without* the ``1/sqrt(d_kv)`` factor (T5 folds it into the
  initialisation of ``q``) plus a learned relative-position bias, which UMT5 gives *every* layer
  (T5 shares layer 0's); positions are bucketed bidirectionally (:func:`relative_position_buckets`);
* padded keys get the float32 minimum instead of the bias, as transformers' SDPA path does;
* ``feed_forward_proj`` ``"gated-<act>"`` is ``wo(act(wi_0 x) * wi_1 x)`` (``"gated-gelu"`` means
  the tanh approximation ``gelu_new``), ``"<act>"`` is ``wo(act(wi x))``.

Matmuls run in ``dtype`` (float32 by default) whatever the parameters' dtype; the softmax and the
norms' statistics always run in float32.

Checkpoints: ``key_table`` maps transformers' keys to ours. The token embedding is stored as
``shared.weight``, ``encoder.embed_tokens.weight`` (the same tensor, tied) or both; like
transformers, the encoder uses ``encoder.embed_tokens.weight`` when present.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from composed_vi.models.wan import safetensors_io

Array = jax.Array
Path = tuple[Any, ...]

CLASSES = ("UMT5EncoderModel",)
MODEL_TYPE = "umt5"
SHARED_KEY = "shared.weight"
ENCODER_EMBEDDING_KEY = "encoder.embed_tokens.weight"

_GELU = functools.partial(jax.nn.gelu, approximate=False)
_TANH_GELU = functools.partial(jax.nn.gelu, approximate=True)
# transformers' ACT2FN names; the tanh GELUs differ only in how they write sqrt(2/pi).
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": _GELU, "gelu_python": _GELU, "gelu_10": lambda x: jnp.clip(_GELU(x), -10.0, 10.0),
    "gelu_new": _TANH_GELU, "gelu_fast": _TANH_GELU, "gelu_accurate": _TANH_GELU,
    "gelu_pytorch_tanh": _TANH_GELU, "gelu_python_tanh": _TANH_GELU,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu, "relu2": lambda x: jnp.square(jax.nn.relu(x)), "relu6": jax.nn.relu6,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01), "silu": jax.nn.silu,
    "swish": jax.nn.silu, "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)), "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid, "linear": lambda x: x,
}


def _parse_feed_forward(value: Any) -> tuple[bool, str]:
  """``(gated, activation)`` of a ``feed_forward_proj`` string, as transformers reads it."""
  parts = value.split("-") if isinstance(value, str) else []
  if not parts or len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
    raise ValueError(f"feed_forward_proj: expected 'gated-<act>' or '<act>', got {value!r}")
  act = "gelu_new" if value == "gated-gelu" else parts[-1]
  if act not in _ACTIVATIONS:
    raise ValueError(f"feed_forward_proj: expected an activation in {sorted(_ACTIVATIONS)}, got "
                     f"{act!r} (from {value!r})")
  return len(parts) == 2, act


@dataclasses.dataclass(frozen=True)
class UMT5Config:
  """Hyper-parameters of a UMT5 encoder; names and defaults are transformers' ``UMT5Config``.

  Wan2.1 / Wan2.2 (umt5-xxl): ``vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240,
  num_layers=24, num_heads=64``, 32 buckets up to distance 128, ``"gated-gelu"``.
  """

  vocab_size: int = 250112
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 1024
  num_layers: int = 8
  num_heads: int = 6
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "gated-gelu"

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                 "relative_attention_num_buckets", "relative_attention_max_distance"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    # Bidirectional bucketing halves the buckets and gives half of each half to exact offsets:
    # fewer than 4 leaves no exact bucket and the logarithmic formula divides by zero.
    if self.relative_attention_num_buckets < 4:
      raise ValueError(f"relative_attention_num_buckets: expected at least 4, got "
                       f"{self.relative_attention_num_buckets}")
    if self.relative_attention_max_distance <= self.max_exact:
      raise ValueError(f"relative_attention_max_distance: expected more than the {self.max_exact} "
                       f"exact offsets of {self.relative_attention_num_buckets} buckets, got "
                       f"{self.relative_attention_max_distance}")
    eps = self.layer_norm_epsilon
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
      raise ValueError(f"layer_norm_epsilon: expected a positive float, got {eps!r}")
    _parse_feed_forward(self.feed_forward_proj)

  @property
  def inner_dim(self) -> int:
    """Width of q, k, v: ``num_heads * d_kv`` (need not equal ``d_model``)."""
    return self.num_heads * self.d_kv

  @property
  def is_gated(self) -> bool:
    return _parse_feed_forward(self.feed_forward_proj)[0]

  @property
  def activation(self) -> str:
    """The ACT2FN name of the feed-forward activation (``gelu_new`` for ``gated-gelu``)."""
    return _parse_feed_forward(self.feed_forward_proj)[1]

  @property
  def max_exact(self) -> int:
    """Offsets below this have a bucket each (per direction)."""
    return self.relative_attention_num_buckets // 4

  @classmethod
  def from_hf(cls, config: Mapping[str, Any]) -> UMT5Config:
    """From a transformers ``config.json`` dict; absent fields take transformers' defaults.

    Raises:
      ValueError: naming the field, the expected and the actual value: a model_type other than
        ``umt5`` (T5's ``t5`` shares one bias across layers), a decoder config, or saved
        ``dense_act_fn`` / ``is_gated_act`` that contradict ``feed_forward_proj``.
    """
    model_type = config.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
      raise ValueError(f"model_type: expected {MODEL_TYPE!r}, got {model_type!r}")
    if config.get("is_decoder", False):
      raise ValueError(f"is_decoder: expected False (an encoder), got {config['is_decoder']!r}")
    # Only the fields are read: dropout, initialisers, token ids and the decoder's settings do not
    # change the encoder's forward pass in eval mode.
    kwargs = {f.name: config[f.name] for f in dataclasses.fields(cls)
              if config.get(f.name) is not None}
    out = cls(**kwargs)
    for name, want in (("dense_act_fn", out.activation), ("is_gated_act", out.is_gated)):
      if name in config and config[name] != want:
        raise ValueError(f"{name}: expected {want!r} (from feed_forward_proj="
                         f"{out.feed_forward_proj!r}), got {config[name]!r}")
    return out


def relative_position_buckets(config: UMT5Config, query_length: int, key_length: int,
                              ) -> np.ndarray:
  """Bidirectional relative-position bucket of every (query, key) pair, ``(Lq, Lk)`` int32.

  Half of the buckets are for keys after the query. In each half, offsets below ``max_exact``
  have their own bucket; larger ones share logarithmically wider buckets up to
  ``relative_attention_max_distance``, beyond which all share the last.
  """
  offset = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  half = config.relative_attention_num_buckets // 2
  exact = config.max_exact
  distance = np.abs(offset)
  # float32 in transformers' order of operations: the truncation to an integer would turn a
  # rounding difference at a bucket edge into a different bucket.
  ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(exact))
  ratio = ratio / np.float32(math.log(config.relative_attention_max_distance / exact))
  large = exact + (ratio * np.float32(half - exact)).astype(np.int64)
  large = np.minimum(large, half - 1)
  bucket = np.where(distance < exact, distance, large) + np.where(offset > 0, half, 0)
  return bucket.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# The model.


class _ConstantKeys:
  """Stands in for ``nnx.Rngs`` under ``eval_shape``: shapes need no real keys, and flax's
  ``Rngs`` counters make tracing a deep model slow."""

  def params(self):
    return jax.random.key(0)


def _dense(din, dout, rngs, dtype, param_dtype, precision):
  return nnx.Linear(din, dout, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                    precision=precision, rngs=rngs)


class RMSNorm(nnx.Module):
  """T5's layer norm: ``scale * x / sqrt(mean(x^2) + eps)``, statistics in float32."""

  def __init__(self, dim: int, eps: float, dtype, param_dtype):
    self.eps, self.dtype = eps, dtype
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class SelfAttention(nnx.Module):
  """Unscaled multi-head self-attention with this layer's own relative-position bias.

  ``relative_bias`` is ``(num_buckets, num_heads)`` (an ``nn.Embedding`` weight in torch).
  """

  def __init__(self, config: UMT5Config, *, rngs, dtype, param_dtype, precision):
    d, inner = config.d_model, config.inner_dim
    self.heads, self.d_kv, self.dtype, self.precision = (config.num_heads, config.d_kv, dtype,
                                                         precision)
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    self.q, self.k, self.v = _dense(d, inner, **kw), _dense(d, inner, **kw), _dense(d, inner, **kw)
    self.o = _dense(inner, d, **kw)
    init = nnx.initializers.normal(d ** -0.5)
    self.relative_bias = nnx.Param(init(
        rngs.params(), (config.relative_attention_num_buckets, config.num_heads), param_dtype))

  def __call__(self, x: Array, buckets: Array, key_mask: Array) -> Array:
    """x (B, L, d_model), buckets (L, L) int32, key_mask (B, L) bool -> (B, L, d_model)."""
    b, n, _ = x.shape
    split = lambda y: y.reshape(b, n, self.heads, self.d_kv)
    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=self.precision,
                        preferred_element_type=jnp.float32)
    bias = jnp.take(self.relative_bias[...].astype(jnp.float32), buckets, axis=0)  # (L, L, H)
    bias = jnp.moveaxis(bias, -1, 0)[None]
    bias = jnp.where(key_mask[:, None, None, :], bias, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores + bias, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=self.precision)
    return self.o(out.reshape(b, n, -1))


class FeedForward(nnx.Module):
  """``wo(act(wi_0 x) * wi_1 x)`` when gated, else ``wo(act(wi x))``; no biases."""

  def __init__(self, config: UMT5Config, *, rngs, dtype, param_dtype, precision):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    d, f = config.d_model, config.d_ff
    self.act = _ACTIVATIONS[config.activation]
    self.gated = config.is_gated
    if self.gated:
      self.wi_0, self.wi_1 = _dense(d, f, **kw), _dense(d, f, **kw)
    else:
      self.wi = _dense(d, f, **kw)
    self.wo = _dense(f, d, **kw)

  def __call__(self, x: Array) -> Array:
    h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
    return self.wo(h)


class Block(nnx.Module):
  """``x + attention(attention_norm(x))``, then ``+ ffn(ffn_norm(.))``."""

  def __init__(self, config: UMT5Config, *, rngs, dtype, param_dtype, precision):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    d, eps = config.d_model, config.layer_norm_epsilon
    self.attention_norm = RMSNorm(d, eps, dtype, param_dtype)
    self.attention = SelfAttention(config, **kw)
    self.ffn_norm = RMSNorm(d, eps, dtype, param_dtype)
    self.ffn = FeedForward(config, **kw)

  def __call__(self, x: Array, buckets: Array, key_mask: Array) -> Array:
    x = x + self.attention(self.attention_norm(x), buckets, key_mask)
    return x + self.ffn(self.ffn_norm(x))


class UMT5Encoder(nnx.Module):
  """transformers' ``UMT5EncoderModel`` (eval mode).

  Args:
    config: the architecture.
    rngs: initialisation keys (``split_abstract`` builds it without allocating).
    dtype: activation dtype of the residual stream and the matmuls.
    param_dtype: parameter dtype at initialisation.
    precision: ``jax.lax.Precision`` of the matmuls (``None``: backend default).
  """

  def __init__(self, config: UMT5Config, *, rngs, dtype=jnp.float32, param_dtype=jnp.float32,
               precision=None):
    self.config, self.dtype = config, dtype
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    self.embedding = nnx.Param(nnx.initializers.normal(1.0)(
        rngs.params(), (config.vocab_size, config.d_model), param_dtype))
    self.blocks = nnx.List([Block(config, **kw) for _ in range(config.num_layers)])
    self.final_norm = RMSNorm(config.d_model, config.layer_norm_epsilon, dtype, param_dtype)

  def __call__(self, input_ids: Array, attention_mask: Array | None = None) -> Array:
    """Token ids ``(B, L)`` and a mask ``(B, L)`` (1 = token, 0 = padding; ``None``: all
    tokens) -> the last hidden state ``(B, L, d_model)`` in ``dtype``, padded positions
    included (they attend to the tokens but no token attends to them)."""
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f"input_ids: expected integer ids of shape (B, L), got {input_ids.dtype} "
                       f"{tuple(input_ids.shape)}")
    if attention_mask is None:
      key_mask = jnp.ones(input_ids.shape, bool)
    else:
      attention_mask = jnp.asarray(attention_mask)
      if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask: expected shape {tuple(input_ids.shape)} (as "
                         f"input_ids), got {tuple(attention_mask.shape)}")
      key_mask = attention_mask > 0
    n = input_ids.shape[1]
    buckets = jnp.asarray(relative_position_buckets(self.config, n, n))  # static per length
    h = jnp.take(self.embedding[...], input_ids, axis=0).astype(self.dtype)
    for block in self.blocks:
      h = block(h, buckets, key_mask)
    return self.final_norm(h)


_MODEL_DEFAULTS = dict(dtype=jnp.float32, param_dtype=jnp.float32, precision=None)


@functools.lru_cache(maxsize=16)
def _split_abstract(config: UMT5Config, kwargs: tuple[tuple[str, Any], ...]):
  model = nnx.eval_shape(lambda: UMT5Encoder(config, rngs=_ConstantKeys(), **dict(kwargs)))
  return nnx.split(model)


def split_abstract(config: UMT5Config, **kwargs) -> tuple[nnx.GraphDef, nnx.State]:
  """``nnx.split`` of the model with abstract parameters (cached: do not mutate the state)."""
  return _split_abstract(config, tuple(sorted({**_MODEL_DEFAULTS, **kwargs}.items())))


def param_shapes(config: UMT5Config) -> dict[Path, tuple[int, ...]]:
  """``{our parameter path: shape}`` from ``nnx.eval_shape`` (no allocation)."""
  _, state = split_abstract(config)
  return {tuple(path): tuple(var.shape) for path, var in nnx.to_flat_state(state)}


def make_apply_fn(config: UMT5Config, *, compiler_options: dict | None = None,
                  **kwargs) -> Callable[..., Array]:
  """A jitted ``apply(params, input_ids (B, L), attention_mask (B, L) | None)`` returning the
  last hidden state ``(B, L, d_model)`` in float32; ``kwargs`` are :class:`UMT5Encoder`'s."""
  graphdef, _ = split_abstract(config, **kwargs)

  def apply(params, input_ids, attention_mask=None):
    return nnx.merge(graphdef, params)(input_ids, attention_mask).astype(jnp.float32)

  return jax.jit(apply, compiler_options=compiler_options)


# ---------------------------------------------------------------------------------------------
# Checkpoint keys.

_LAYOUTS = {"copy": lambda a: a, "linear": lambda a: a.T}


def _after_layout(layout: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The shape a source tensor of ``shape`` takes after ``layout``, without data."""
  shape = tuple(int(s) for s in shape)
  return shape[::-1] if layout == "linear" and len(shape) == 2 else shape


def key_table(config: UMT5Config, embedding_key: str = SHARED_KEY,
              ) -> dict[str, tuple[Path, str]]:
  """``{transformers key: (our parameter path, layout)}``; ``embedding_key`` is the key the token
  embedding is read from (``shared.weight`` or ``encoder.embed_tokens.weight``)."""
  table: dict[str, tuple[Path, str]] = {embedding_key: (("embedding",), "copy")}

  def linear(src: str, dst: Path):
    table[f"{src}.weight"] = ((*dst, "kernel"), "linear")

  for i in range(config.num_layers):
    src, dst = f"encoder.block.{i}.layer", ("blocks", i)
    table[f"{src}.0.layer_norm.weight"] = ((*dst, "attention_norm", "scale"), "copy")
    for name in ("q", "k", "v", "o"):
      linear(f"{src}.0.SelfAttention.{name}", (*dst, "attention", name))
    table[f"{src}.0.SelfAttention.relative_attention_bias.weight"] = (
        (*dst, "attention", "relative_bias"), "copy")
    table[f"{src}.1.layer_norm.weight"] = ((*dst, "ffn_norm", "scale"), "copy")
    for name in (("wi_0", "wi_1") if config.is_gated else ("wi",)) + ("wo",):
      linear(f"{src}.1.DenseReluDense.{name}", (*dst, "ffn", name))
  table["encoder.final_layer_norm.weight"] = (("final_norm", "scale"), "copy")
  return table


def embedding_key(keys) -> str:
  """The key the encoder reads its embedding from: transformers' encoder embeds with
  ``encoder.embed_tokens.weight`` (untied from ``shared.weight`` when a checkpoint stores both
  with different values), so it wins when present."""
  return ENCODER_EMBEDDING_KEY if ENCODER_EMBEDDING_KEY in keys else SHARED_KEY


def _path_str(path: Path) -> str:
  return ".".join(str(p) for p in path)


def validate_key_table(config: UMT5Config, source_shapes: Mapping[str, Sequence[int]],
                       ) -> dict[str, tuple[Path, str]]:
  """Checks a checkpoint's ``{key: shape}`` against our model; returns the table it uses.

  Every key must be in the table (the embedding's tied duplicate only needs the embedding's
  shape), every parameter of ours filled exactly once, every shape (after the layout change)
  equal to ``nnx.eval_shape``'s.

  Raises:
    ValueError: naming the first unknown, missing or mis-shaped key, or unfilled parameter.
  """
  emb_key = embedding_key(source_shapes)
  table = key_table(config, emb_key)
  ours = param_shapes(config)
  used: dict[Path, str] = {}
  for key, shape in source_shapes.items():
    if key == SHARED_KEY and emb_key != SHARED_KEY:
      if tuple(shape) != tuple(source_shapes[emb_key]):
        raise ValueError(f"checkpoint key {key!r} has shape {tuple(shape)} but its tied "
                         f"{emb_key!r} has shape {tuple(source_shapes[emb_key])}")
      continue
    if key not in table:
      raise ValueError(f"checkpoint key {key!r} (shape {tuple(shape)}) has no entry in the UMT5 "
                       "encoder key table for this config")
    path, layout = table[key]
    if path in used:
      raise ValueError(f"checkpoint keys {used[path]!r} and {key!r} both map to "
                       f"{_path_str(path)}")
    got = _after_layout(layout, shape)
    if got != ours.get(path):
      raise ValueError(f"checkpoint key {key!r}: shape {tuple(shape)} ({layout} -> {got}) does "
                       f"not match our {_path_str(path)} of shape {ours.get(path)}")
    used[path] = key
  for key, (path, _) in table.items():
    if key not in source_shapes:
      what = (f"neither {SHARED_KEY!r} nor {ENCODER_EMBEDDING_KEY!r} is present"
              if path == ("embedding",) else f"checkpoint key {key!r} is missing")
      raise ValueError(f"{what} (our {_path_str(path)}, shape {ours[path]})")
  for path, shape in ours.items():
    if path not in used:
      raise ValueError(f"our parameter {_path_str(path)} (shape {shape}) is not filled by any "
                       "checkpoint key")
  return table


# ---------------------------------------------------------------------------------------------
# Loading.


@dataclasses.dataclass
class LoadedTextEncoder:
  """A loaded encoder: ``apply(params, input_ids (B, L), attention_mask (B, L))`` (jitted) ->
  ``(B, L, d_model)`` float32."""

  config: UMT5Config
  params: nnx.State
  apply: Callable[..., Array]
  hf_config: dict


def load_text_encoder(directory: str, dtype=None, *, compute_dtype=jnp.float32,
                      precision=jax.lax.Precision.HIGHEST,
                      compiler_options: dict | None = None) -> LoadedTextEncoder:
  """The UMT5 encoder of a transformers folder (``config.json`` + ``model*.safetensors``, sharded
  or not), read without torch, e.g. a Wan checkpoint's ``text_encoder/``.

  Args:
    directory: the folder.
    dtype: parameter dtype (``None`` keeps each tensor's, e.g. bfloat16 with float32 ``wo``).
    compute_dtype: activation dtype (norm statistics and the softmax stay float32).
    precision: matmul precision; ``HIGHEST`` by default because the encoder runs once per
      prompt and TF32 (the GPU default) would move its output by about 1e-3 relative.
    compiler_options: passed to ``jax.jit``.

  Raises:
    CheckpointError: the folder, its config or weights cannot be read, or the config names
      another architecture.
    ValueError: a config field, key or shape does not fit (named).
  """
  hf_config, tensors = safetensors_io.open_folder(directory)
  archs = hf_config.get("architectures") or []
  if archs and not set(archs) & set(CLASSES):
    raise safetensors_io.CheckpointError(
        f"{directory}/config.json: architectures: expected {list(CLASSES)}, got {archs}")
  try:
    config = UMT5Config.from_hf(hf_config)
  except ValueError as e:
    raise ValueError(f"{directory}/config.json: {e}") from None
  try:
    table = validate_key_table(config, {k: v.shape for k, v in tensors.items()})
  except ValueError as e:
    raise ValueError(f"{directory}: {e}") from None
  _, abstract = split_abstract(config)
  values = {}
  for key, (path, layout) in table.items():
    arr = _LAYOUTS[layout](tensors[key])  # a transposed view of the memory map
    values[path] = jnp.asarray(arr if dtype is None else arr.astype(dtype))
  flat = [(p, v.replace(value=values[tuple(p)])) for p, v in nnx.to_flat_state(abstract)]
  params = nnx.from_flat_state(flat)
  apply = make_apply_fn(config, dtype=compute_dtype, precision=precision,
                        compiler_options=compiler_options)
  return LoadedTextEncoder(config, params, apply, hf_config)


__all__: Sequence[str] = (
    "UMT5Config", "UMT5Encoder", "LoadedTextEncoder", "load_text_encoder", "key_table",
    "validate_key_table", "embedding_key", "relative_position_buckets", "param_shapes",
    "split_abstract", "make_apply_fn")
