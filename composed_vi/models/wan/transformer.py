"""The Wan2.1 / Wan2.2 video diffusion transformer (DiT) in Flax NNX, channels-last.

Architecture by the Wan team (Apache-2.0, see third_party/README.md). The numerics follow
diffusers' ``WanTransformer3DModel`` and ``WanVACETransformer3DModel`` (0.42.1), which is what
the parity tests compare against: float32 layer norms and modulation, the residual stream in the
compute ``dtype``, rotary tables computed in float64 and rounded to float32.

Shapes (channels-last): latents ``x`` are ``(B, F, H, W, C)``, timesteps ``t`` are ``(B,)`` or
``(B, S)`` with ``S = (F/pt)(H/ph)(W/pw)`` tokens (per-token timesteps, Wan2.2 TI2V), text
context ``(B, L, text_dim)``, image context ``(B, L_img, image_dim)``, VACE control latents
``(B, F', H', W', vace_in_channels)`` with at most as many tokens as ``x``; VideoX-Fun's
Control-Camera input ``(B, F/pt, H s, W s, control_adapter_in_dim)`` (per pixel, ``s`` =
``control_adapter_downscale``) and reference latents ``(B, H, W, ref_conv_in_dim)``
(:mod:`composed_vi.models.wan.fun_control`).

Image tokens are kept apart from the text tokens (diffusers concatenates them and splits them
again assuming exactly 512 text tokens; with 512 text tokens both agree, with other lengths only
this port is right).

Functional use (maxdiffusion style)::

  model = init_model(config, nnx.Rngs(0))          # or nnx.eval_shape + converted params
  graphdef, params = nnx.split(model)
  out = forward(graphdef, params, x, t, context)   # pure; jit it at the boundary
  fn = make_model_fn(config)                       # or: a jitted fn(params, x, t, context, ...)
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

from composed_vi.models.wan import fun_control

Array = jax.Array

# Config keys of diffusers' models that do not change the computation: diffusers always applies
# RMSNorm across heads to q and k, whatever ``qk_norm`` says.
_INERT_DIFFUSERS_KEYS = ("qk_norm",)


@dataclasses.dataclass(frozen=True)
class WanConfig:
  """Hyper-parameters of a Wan DiT; field names and defaults are diffusers' (Wan2.1 14B T2V).

  ``vace_layers`` (a tuple of block indices, containing 0) turns the model into the VACE variant
  with ``vace_in_channels`` control channels; ``None`` is the plain transformer.

  ``rope_position_channels`` (ours, not diffusers'; 0 is Wan): with 2, the last two of the
  ``in_channels`` input channels are not embedded but give every pixel its (height, width)
  rotary position in input pixels (pixel centres at ``k + 0.5``); a token's position is the
  mean over its patch divided by the patch size, less 0.5, so the pixel grid itself gives
  Wan's positions exactly. A camera-conditioned model can put there where each pixel's scene
  point was seen in the first frame, so that tokens seeing one point share one position.

  ``condition_skip`` (ours, not diffusers'; False is Wan): a zero-initialised linear map from
  each token's patch of condition channels (the input channels after the first ``out_channels``,
  as Wan I2V concatenates them) straight to its output patch, added after ``proj_out``. The
  output LayerNorm removes every token's mean and scale, so a narrow network cannot pass a
  condition's absolute pixel values through its residual stream; this path (ControlNet's
  zero-initialised projection, placed at the output) can learn to, e.g. a first frame.

  VideoX-Fun's optional modules (not diffusers'; ``None`` is Wan): ``control_adapter_in_dim``
  adds the Control-Camera adapter (VideoX-Fun's ``add_control_adapter`` with
  ``in_dim_control_adapter``, 24 for Plücker rays of 4 frames; ``control_adapter_downscale`` its
  pixel-unshuffle factor, 8 for Wan2.1's VAE) and ``ref_conv_in_dim`` the reference-image conv
  (``add_ref_conv`` with ``in_dim_ref_conv``), see :mod:`composed_vi.models.wan.fun_control`.
  """

  patch_size: tuple[int, int, int] = (1, 2, 2)
  num_attention_heads: int = 40
  attention_head_dim: int = 128
  in_channels: int = 16
  out_channels: int | None = 16
  text_dim: int = 4096
  freq_dim: int = 256
  ffn_dim: int = 13824
  num_layers: int = 40
  cross_attn_norm: bool = True
  eps: float = 1e-6
  image_dim: int | None = None
  added_kv_proj_dim: int | None = None
  rope_max_seq_len: int = 1024
  pos_embed_seq_len: int | None = None
  vace_layers: tuple[int, ...] | None = None
  vace_in_channels: int | None = None
  rope_theta: float = 10000.0
  rope_position_channels: int = 0
  condition_skip: bool = False
  control_adapter_in_dim: int | None = None
  control_adapter_downscale: int = 8
  ref_conv_in_dim: int | None = None

  def __post_init__(self):
    object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
    if self.vace_layers is not None:
      object.__setattr__(self, "vace_layers", tuple(int(i) for i in self.vace_layers))
    if len(self.patch_size) != 3 or min(self.patch_size) < 1:
      raise ValueError(f"patch_size: expected three positive ints, got {self.patch_size}")
    if self.attention_head_dim % 2 or self.attention_head_dim < 6:
      raise ValueError("attention_head_dim: expected an even number >= 6 (three rotary axes), got "
                       f"{self.attention_head_dim}")
    if self.rope_position_channels not in (0, 2):
      raise ValueError(f"rope_position_channels: expected 0 or 2, got "
                       f"{self.rope_position_channels}")
    if self.rope_position_channels and self.in_channels <= 2:
      raise ValueError(f"in_channels: expected more than the 2 rope_position_channels, got "
                       f"{self.in_channels}")
    if self.condition_skip and self.condition_channels < 1:
      raise ValueError(f"condition_skip: needs condition channels (in_channels "
                       f"{self.in_channels} - rope_position_channels "
                       f"{self.rope_position_channels} > out_channels {self.out_dim})")
    if self.pos_embed_seq_len is not None and self.image_dim is None:
      raise ValueError("pos_embed_seq_len: needs image_dim to be set")
    if self.vace_layers is not None:
      layers = self.vace_layers
      if not layers or 0 not in layers or len(set(layers)) != len(layers):
        raise ValueError(f"vace_layers: expected distinct block indices containing 0, got {layers}")
      if max(layers) >= self.num_layers or min(layers) < 0:
        raise ValueError(f"vace_layers: expected indices in [0, {self.num_layers}), got {layers}")
      if self.vace_in_channels is None:
        raise ValueError("vace_in_channels: required when vace_layers is set")
    fun_control.check_config(self)

  @property
  def inner_dim(self) -> int:
    return self.num_attention_heads * self.attention_head_dim

  @property
  def out_dim(self) -> int:
    return self.out_channels or self.in_channels

  @property
  def condition_channels(self) -> int:
    """Input channels after the latents (and before any rope position channels)."""
    return self.in_channels - self.rope_position_channels - self.out_dim

  @property
  def is_vace(self) -> bool:
    return self.vace_layers is not None

  @property
  def rope_dims(self) -> tuple[int, int, int]:
    """Head channels given to the (frame, height, width) rotary axes."""
    hw = 2 * (self.attention_head_dim // 6)
    return self.attention_head_dim - 2 * hw, hw, hw


def config_from_diffusers(config: Mapping[str, Any]) -> WanConfig:
  """A ``WanConfig`` from a diffusers config dict (``module.config`` or ``config.json``).

  The presence of ``vace_layers`` selects the VACE variant. Private keys (``_class_name``, ...)
  and keys that do not change the computation are skipped; any other unknown key is an error.
  """
  fields = {f.name for f in dataclasses.fields(WanConfig)}
  kwargs = {}
  for key, value in dict(config).items():
    if key.startswith("_") or key in _INERT_DIFFUSERS_KEYS:
      continue
    if key not in fields:
      raise ValueError(f"config: unknown diffusers Wan config key {key!r} (value {value!r})")
    kwargs[key] = tuple(value) if isinstance(value, list) else value
  return WanConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# Position and timestep encodings (static numpy tables: exact, computed once per shape).


def _inv_freqs(config: WanConfig) -> list[np.ndarray]:
  """Per rotary axis, the float64 frequencies ``theta^(-2j/d)`` of its channel pairs."""
  return [1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
          for d in config.rope_dims]


def rope_tables(config: WanConfig, grid: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Rotary angles' ``(cos, sin)`` for a token grid ``(f, h, w)``, each ``(f*h*w, head_dim/2)``.

  Each head is split into frame / height / width channel groups (``config.rope_dims``); within a
  group, channel pair ``j`` rotates by ``pos * theta^(-2j/d)``. Computed in float64 and rounded
  to float32, as diffusers does.
  """
  if max(grid) > config.rope_max_seq_len:
    raise ValueError(f"latent grid {grid} (tokens per axis) exceeds rope_max_seq_len="
                     f"{config.rope_max_seq_len}")
  angles = []
  for axis, (n, d, inv_freq) in enumerate(zip(grid, config.rope_dims, _inv_freqs(config))):
    a = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None]
    shape = [1, 1, 1, d // 2]
    shape[axis] = n
    angles.append(np.broadcast_to(a.reshape(shape), (*grid, d // 2)))
  angles = np.concatenate(angles, axis=-1).reshape(-1, config.attention_head_dim // 2)
  return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope_from_positions(config: WanConfig, positions: Array) -> tuple[Array, Array]:
  """``(cos, sin)`` ``(B, T, head_dim/2)`` for per-token positions ``(B, T, 3)`` (frame, height,
  width; any real values), with the channel layout of :func:`rope_tables`."""
  angles = []
  for axis, inv_freq in enumerate(_inv_freqs(config)):
    angles.append(positions[..., axis:axis + 1].astype(jnp.float32)
                  * jnp.asarray(inv_freq, jnp.float32))
  angles = jnp.concatenate(angles, axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def token_positions(config: WanConfig, pixels: Array) -> Array:
  """Per-token rotary positions ``(B, T, 3)`` from per-pixel (height, width) positions
  ``pixels`` ``(B, F, H, W, 2)`` in input pixels (``WanConfig.rope_position_channels``)."""
  b, nf, nh, nw, _ = pixels.shape
  pt, ph, pw = config.patch_size
  grid = (nf // pt, nh // ph, nw // pw)
  p = pixels.astype(jnp.float32).reshape(b, grid[0], pt, grid[1], ph, grid[2], pw, 2)
  p = p.mean(axis=(2, 4, 6)) / jnp.asarray([ph, pw], jnp.float32) - 0.5
  frame = jnp.broadcast_to(jnp.arange(grid[0], dtype=jnp.float32)[None, :, None, None, None],
                           (b, *grid, 1))
  return jnp.concatenate([frame, p], axis=-1).reshape(b, -1, 3)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates interleaved channel pairs of ``x`` (B, T, N, Hd) by ``(cos, sin)`` (T, Hd/2), or
  per example by ``(B, T, Hd/2)``."""
  xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
  x1, x2 = xf[..., 0], xf[..., 1]
  if cos.ndim == 3:
    c, s = cos[:, :, None], sin[:, :, None]
  else:
    c, s = cos[None, :, None], sin[None, :, None]
  out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


def timestep_sinusoid(t: Array, dim: int, max_period: float = 10000.0) -> Array:
  """``[cos(t f), sin(t f)]``, ``f_j = max_period^(-j/(dim/2))``: float32 ``(*t.shape, dim)``."""
  half = dim // 2
  freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half)
  arg = t.astype(jnp.float32)[..., None] * jnp.asarray(freqs.astype(np.float32))
  emb = jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
  return emb


# ---------------------------------------------------------------------------------------------
# Layers.


def _dense(din, dout, rngs, dtype, param_dtype, precision):
  return nnx.Linear(din, dout, dtype=dtype, param_dtype=param_dtype, precision=precision,
                    rngs=rngs)


class LayerNorm(nnx.Module):
  """LayerNorm computed in float32 (biased variance); optional affine ``scale`` / ``bias``."""

  def __init__(self, dim: int, eps: float, affine: bool, param_dtype=jnp.float32):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype)) if affine else None
    self.bias = nnx.Param(jnp.zeros((dim,), param_dtype)) if affine else None

  def __call__(self, x: Array) -> Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    if self.scale is not None:
      y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis (statistics in float32), output in the input's dtype."""

  def __init__(self, dim: int, eps: float, param_dtype=jnp.float32):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class FeedForward(nnx.Module):
  """``fc2(gelu(fc1(x)))``; tanh-approximate GELU in the blocks, exact in the image embedder."""

  def __init__(self, din, hidden, dout, *, approximate, rngs, dtype, param_dtype, precision):
    self.approximate = approximate
    self.fc1 = _dense(din, hidden, rngs, dtype, param_dtype, precision)
    self.fc2 = _dense(hidden, dout, rngs, dtype, param_dtype, precision)

  def __call__(self, x: Array) -> Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=self.approximate))


class Mlp(nnx.Module):
  """``linear_2(act(linear_1(x)))`` with SiLU (timestep) or tanh-GELU (text)."""

  def __init__(self, din, dim, act, *, rngs, dtype, param_dtype, precision):
    self.act = act
    self.linear_1 = _dense(din, dim, rngs, dtype, param_dtype, precision)
    self.linear_2 = _dense(dim, dim, rngs, dtype, param_dtype, precision)

  def __call__(self, x: Array) -> Array:
    h = self.linear_1(x)
    h = jax.nn.silu(h) if self.act == "silu" else jax.nn.gelu(h, approximate=True)
    return self.linear_2(h)


class PatchEmbed(nnx.Module):
  """A Conv3d with stride = kernel = patch, as a matmul; ``kernel`` is ``(pt, ph, pw, C, D)``."""

  def __init__(self, patch, cin, dout, *, rngs, dtype, param_dtype, precision):
    self.patch, self.dtype, self.precision = tuple(patch), dtype, precision
    init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4)
    self.kernel = nnx.Param(init(rngs.params(), (*patch, cin, dout), param_dtype))
    self.bias = nnx.Param(jnp.zeros((dout,), param_dtype))

  def __call__(self, x: Array) -> Array:
    """(B, F, H, W, C) -> (B, f*h*w, D), tokens ordered frame-major as diffusers flattens."""
    b, f, h, w, c = x.shape
    pt, ph, pw = self.patch
    x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, pt * ph * pw * c)
    kernel = self.kernel[...].reshape(-1, self.kernel.shape[-1])
    y = jnp.matmul(x.astype(self.dtype), kernel.astype(self.dtype), precision=self.precision)
    return y + self.bias[...].astype(self.dtype)


class Attention(nnx.Module):
  """Multi-head attention with RMSNorm on q and k across heads (diffusers' ``WanAttention``).

  With ``added_kv_dim`` (Wan2.1 I2V) an extra attention of the same queries over the image
  tokens (``add_k_proj``, ``add_v_proj``, ``norm_added_k``) is added before ``to_out``.
  """

  def __init__(self, dim, heads, eps, added_kv_dim, *, rngs, dtype, param_dtype, precision,
               attention_impl):
    self.heads, self.dtype, self.attention_impl = heads, dtype, attention_impl
    dense = lambda din, dout: _dense(din, dout, rngs, dtype, param_dtype, precision)
    self.to_q, self.to_k, self.to_v = dense(dim, dim), dense(dim, dim), dense(dim, dim)
    self.to_out = dense(dim, dim)
    self.norm_q, self.norm_k = RMSNorm(dim, eps, param_dtype), RMSNorm(dim, eps, param_dtype)
    if added_kv_dim is not None:
      self.add_k_proj, self.add_v_proj = dense(added_kv_dim, dim), dense(added_kv_dim, dim)
      self.norm_added_k = RMSNorm(dim, eps, param_dtype)
    else:
      self.add_k_proj = self.add_v_proj = self.norm_added_k = None

  def _heads(self, x):
    return x.reshape(*x.shape[:2], self.heads, -1)

  def _attend(self, q, k, v):
    return jax.nn.dot_product_attention(q, k, v, implementation=self.attention_impl)

  def __call__(self, x, context=None, context_image=None, rope=None):
    """x (B, T, D); context (B, L, D) or None (self-attention); rope (cos, sin) or None."""
    kv = x if context is None else context
    q = self._heads(self.norm_q(self.to_q(x)))
    k = self._heads(self.norm_k(self.to_k(kv)))
    v = self._heads(self.to_v(kv))
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    out = self._attend(q, k, v)
    if context_image is not None and self.add_k_proj is not None:
      k_img = self._heads(self.norm_added_k(self.add_k_proj(context_image)))
      v_img = self._heads(self.add_v_proj(context_image))
      out = out + self._attend(q, k_img, v_img)
    return self.to_out(out.reshape(*x.shape[:2], -1))


class Block(nnx.Module):
  """Self-attention, cross-attention and FFN, modulated by ``scale_shift_table + temb``."""

  def __init__(self, config: WanConfig, *, rngs, dtype, param_dtype, precision, attention_impl):
    dim, eps = config.inner_dim, config.eps
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    self.dtype = dtype
    self.norm1 = LayerNorm(dim, eps, affine=False)
    self.attn1 = Attention(dim, config.num_attention_heads, eps, None,
                           attention_impl=attention_impl, **kw)
    self.attn2 = Attention(dim, config.num_attention_heads, eps, config.added_kv_proj_dim,
                           attention_impl=attention_impl, **kw)
    self.norm2 = LayerNorm(dim, eps, affine=True, param_dtype=param_dtype) \
        if config.cross_attn_norm else None
    self.ffn = FeedForward(dim, config.ffn_dim, dim, approximate=True, **kw)
    self.norm3 = LayerNorm(dim, eps, affine=False)
    table = jax.random.normal(rngs.params(), (1, 6, dim), param_dtype) / dim**0.5
    self.scale_shift_table = nnx.Param(table)

  def __call__(self, x, context, context_image, temb6, rope):
    """x (B, T, D) in ``dtype``; temb6 (B, S, 6, D) with S = 1 or T."""
    f32, dt = jnp.float32, self.dtype
    mod = self.scale_shift_table[...].astype(f32)[:, None] + temb6.astype(f32)
    shift1, scale1, gate1, shift2, scale2, gate2 = (mod[:, :, i] for i in range(6))
    h = (self.norm1(x) * (1 + scale1) + shift1).astype(dt)
    x = (x.astype(f32) + self.attn1(h, rope=rope) * gate1).astype(dt)
    h = x if self.norm2 is None else self.norm2(x).astype(dt)
    x = x + self.attn2(h, context, context_image)
    h = (self.norm3(x) * (1 + scale2) + shift2).astype(dt)
    return (x.astype(f32) + self.ffn(h).astype(f32) * gate2).astype(dt)


class VaceBlock(Block):
  """A VACE control block: a ``Block`` on the control stream, emitting a hint ``proj_out(c)``.

  The first one also takes ``proj_in(c) + x`` (the patch-embedded latents) as its input.
  """

  def __init__(self, config: WanConfig, first: bool, *, rngs, dtype, param_dtype, precision,
               attention_impl):
    super().__init__(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                     precision=precision, attention_impl=attention_impl)
    dense = lambda: _dense(config.inner_dim, config.inner_dim, rngs, dtype, param_dtype, precision)
    self.proj_in = dense() if first else None
    self.proj_out = dense()

  def __call__(self, x, control, context, context_image, temb6, rope):
    """Returns ``(hint, control)``, both (B, T, D)."""
    if self.proj_in is not None:
      control = self.proj_in(control) + x
    control = super().__call__(control, context, context_image, temb6, rope)
    return self.proj_out(control), control


class ImageEmbedder(nnx.Module):
  """CLIP image tokens -> model width: LayerNorm, exact-GELU MLP, LayerNorm (eps 1e-5).

  With ``pos_embed_seq_len`` (first-last-frame models) consecutive pairs of batch entries are
  joined along the token axis and a learned position embedding is added first.
  """

  def __init__(self, config: WanConfig, *, rngs, dtype, param_dtype, precision):
    din, dim = config.image_dim, config.inner_dim
    self.dtype = dtype
    self.norm1 = LayerNorm(din, 1e-5, affine=True, param_dtype=param_dtype)
    self.ff = FeedForward(din, din, dim, approximate=False, rngs=rngs, dtype=dtype,
                          param_dtype=param_dtype, precision=precision)
    self.norm2 = LayerNorm(dim, 1e-5, affine=True, param_dtype=param_dtype)
    n = config.pos_embed_seq_len
    self.pos_embed = None if n is None else nnx.Param(jnp.zeros((1, n, din), param_dtype))

  def __call__(self, x):
    x = x.astype(self.dtype)
    if self.pos_embed is not None:
      b, s, e = x.shape
      if 2 * s != self.pos_embed.shape[1] or b % 2:
        raise ValueError(f"encoder_hidden_states_image: with pos_embed_seq_len="
                         f"{self.pos_embed.shape[1]} expected an even batch of "
                         f"{self.pos_embed.shape[1] // 2} tokens each, got shape {x.shape}")
      x = (x.reshape(b // 2, 2 * s, e) + self.pos_embed[...]).astype(self.dtype)
    h = self.ff(self.norm1(x).astype(self.dtype))
    return self.norm2(h).astype(self.dtype)


class ConditionEmbedder(nnx.Module):
  """Timestep (sinusoid + SiLU MLP in float32, then the 6-way modulation), text and image."""

  def __init__(self, config: WanConfig, *, rngs, dtype, param_dtype, precision):
    dim = config.inner_dim
    self.freq_dim, self.dtype = config.freq_dim, dtype
    kw = dict(rngs=rngs, param_dtype=param_dtype, precision=precision)
    # diffusers keeps the timestep MLP in float32 whatever the model's dtype.
    self.time_embedder = Mlp(config.freq_dim, dim, "silu", dtype=jnp.float32, **kw)
    self.time_proj = _dense(dim, 6 * dim, rngs, dtype, param_dtype, precision)
    self.text_embedder = Mlp(config.text_dim, dim, "gelu_tanh", dtype=dtype, **kw)
    self.image_embedder = None if config.image_dim is None else ImageEmbedder(
        config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)

  def time(self, t):
    """t (B,) or (B, S) -> temb (B, S', D) and temb6 (B, S', 6, D), S' = 1 or S."""
    t = t[:, None] if t.ndim == 1 else t
    temb = self.time_embedder(timestep_sinusoid(t, self.freq_dim)).astype(self.dtype)
    temb6 = self.time_proj(jax.nn.silu(temb))
    return temb, temb6.reshape(*temb6.shape[:-1], 6, -1)

  def text(self, context):
    return self.text_embedder(context.astype(self.dtype))


class WanTransformer(nnx.Module):
  """The Wan DiT (and its VACE variant when ``config.vace_layers`` is set), channels-last.

  Args:
    config: the architecture.
    rngs: initialisation keys (use ``nnx.eval_shape`` to build without allocating).
    dtype: compute dtype of matmuls, attention and the residual stream (float32 or bfloat16);
      layer norms, the modulation and the timestep MLP stay float32.
    param_dtype: dtype of freshly initialised parameters.
    precision: ``jax.lax.Precision`` of the linear layers (``None``: backend default).
    attention_impl: ``implementation`` of ``jax.nn.dot_product_attention`` (None, 'xla', 'cudnn').
    remat: rematerialise each block in the backward pass (``nnx.remat``).
  """

  def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32, precision=None, attention_impl: str | None = None,
               remat: bool = False):
    self.config, self.dtype, self.remat, self.precision = config, dtype, remat, precision
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    dim, patch = config.inner_dim, config.patch_size
    self.patch_embedding = PatchEmbed(
        patch, config.in_channels - config.rope_position_channels, dim, **kw)
    self.condition_embedder = ConditionEmbedder(config, **kw)
    self.blocks = nnx.List([Block(config, attention_impl=attention_impl, **kw)
                            for _ in range(config.num_layers)])
    self.proj_out = _dense(dim, config.out_dim * math.prod(patch), rngs, dtype, param_dtype,
                           precision)
    table = jax.random.normal(rngs.params(), (1, 2, dim), param_dtype) / dim**0.5
    self.scale_shift_table = nnx.Param(table)
    self.norm_out = LayerNorm(dim, config.eps, affine=False)
    if config.condition_skip:
      npatch = math.prod(patch)
      self.condition_skip = nnx.Param(jnp.zeros(
          (npatch * config.condition_channels, npatch * config.out_dim), param_dtype))
    else:
      self.condition_skip = None
    if config.is_vace:
      self.vace_patch_embedding = PatchEmbed(patch, config.vace_in_channels, dim, **kw)
      self.vace_blocks = nnx.List([
          VaceBlock(config, i == 0, attention_impl=attention_impl, **kw)
          for i in range(len(config.vace_layers))])
    else:
      self.vace_patch_embedding = self.vace_blocks = None
    self.control_adapter = None if config.control_adapter_in_dim is None else \
        fun_control.ControlAdapter(config.control_adapter_in_dim, dim, patch[1:],
                                   config.control_adapter_downscale, **kw)
    self.ref_conv = None if config.ref_conv_in_dim is None else \
        fun_control.RefConv(config.ref_conv_in_dim, dim, patch[1:], **kw)

  def _check(self, x, t, context, context_image, control, control_scale):
    cfg = self.config
    if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
      raise ValueError(f"x: expected (B, F, H, W, {cfg.in_channels}), got shape {x.shape}")
    b = x.shape[0]
    for name, size, p in zip(("frames", "height", "width"), x.shape[1:4], cfg.patch_size):
      if size % p:
        raise ValueError(f"x: {name} {size} is not a multiple of the patch size {p}")
    tokens = math.prod(s // p for s, p in zip(x.shape[1:4], cfg.patch_size))
    if t.shape not in ((b,), (b, tokens)):
      raise ValueError(f"t: expected shape ({b},) or ({b}, {tokens}), got {t.shape}")
    if context.ndim != 3 or context.shape[0] != b or context.shape[-1] != cfg.text_dim:
      raise ValueError(f"context: expected ({b}, L, {cfg.text_dim}), got shape {context.shape}")
    if context_image is not None:
      if cfg.image_dim is None:
        raise ValueError("context_image: this model has no image embedder (image_dim is None)")
      if context_image.ndim != 3 or context_image.shape[-1] != cfg.image_dim:
        raise ValueError(f"context_image: expected (B, L_img, {cfg.image_dim}), got shape "
                         f"{context_image.shape}")
    if cfg.is_vace:
      n = len(cfg.vace_layers)
      want = f"(B, F', H', W', {cfg.vace_in_channels})"
      if control is None or control.ndim != 5 or control.shape[-1] != cfg.vace_in_channels:
        got = None if control is None else control.shape
        raise ValueError(f"control: the VACE model needs {want} latents, got {got}")
      ctokens = math.prod(s // p for s, p in zip(control.shape[1:4], cfg.patch_size))
      if control.shape[0] != b or ctokens > tokens:
        raise ValueError(f"control: expected batch {b} and at most {tokens} tokens, got shape "
                         f"{control.shape} ({ctokens} tokens)")
      if control_scale is not None and jnp.shape(control_scale) not in ((n,), ()):
        raise ValueError(f"control_scale: expected shape ({n},), got {jnp.shape(control_scale)}")
    elif control is not None:
      raise ValueError("control: given to a model without VACE blocks (vace_layers is None)")

  def __call__(self, x: Array, t: Array, context: Array, context_image: Array | None = None,
               control: Array | None = None, control_scale: Array | None = None,
               control_camera: Array | None = None, ref_latents: Array | None = None) -> Array:
    """Predicts the flow velocity (Wan's training target) for latents ``x``.

    Args:
      x: (B, F, H, W, in_channels) latents.
      t: (B,) timesteps in [0, 1000], or (B, S) per-token timesteps.
      context: (B, L, text_dim) text encoder states.
      context_image: (B, L_img, image_dim) image encoder states (I2V / FLF2V) or None.
      control: (B, F', H', W', vace_in_channels) VACE control latents (VACE models only).
      control_scale: (len(vace_layers),) weights of the VACE hints (default ones).
      control_camera: (B, F/pt, H s, W s, control_adapter_in_dim) per-pixel camera channels at
        the latent frame rate (``s = control_adapter_downscale``; VideoX-Fun's ``y_camera``
        channels-last), added to the patch-embedded tokens through the control adapter.
        Models with an adapter only; None skips it, as VideoX-Fun's forward does.
      ref_latents: (B, H, W, ref_conv_in_dim) reference-image latents (VideoX-Fun's
        ``full_ref``), prepended as tokens of an extra first frame. Models with a reference
        conv only; None skips it (VideoX-Fun's pipelines pass zeros when there is no image).

    Returns:
      (B, F, H, W, out_channels) in ``dtype``.
    """
    x, t, context = jnp.asarray(x), jnp.asarray(t), jnp.asarray(context)
    self._check(x, t, context, context_image, control, control_scale)
    fun_control.check_inputs(self.config, x.shape, control_camera, ref_latents)
    cfg, dt, f32 = self.config, self.dtype, jnp.float32
    b, nf, nh, nw, _ = x.shape
    pt, ph, pw = cfg.patch_size
    grid = (nf // pt, nh // ph, nw // pw)
    # The reference frame's tokens come first, at rotary frame 0; the video moves to 1..F.
    n_ref = 0 if ref_latents is None else fun_control.ref_token_count(cfg, x.shape)
    if cfg.rope_position_channels:
      x, pixels = x[..., :-cfg.rope_position_channels], x[..., -cfg.rope_position_channels:]
      rope = rope_from_positions(cfg, token_positions(cfg, pixels))
    else:
      rope_grid = (grid[0] + (1 if n_ref else 0), grid[1], grid[2])
      rope = tuple(jnp.asarray(a) for a in rope_tables(cfg, rope_grid))

    h = self.patch_embedding(x)
    if control_camera is not None:
      h = h + self.control_adapter(jnp.asarray(control_camera)).astype(h.dtype)
    if n_ref:
      ref = self.ref_conv.tokens(jnp.asarray(ref_latents)).astype(h.dtype)
      h = jnp.concatenate([ref, h], axis=1)
      if t.ndim == 2:  # VideoX-Fun pads per-token timesteps in front with the last one
        t = jnp.concatenate([jnp.repeat(t[:, -1:], n_ref, axis=1), t], axis=1)
    emb = self.condition_embedder
    temb, temb6 = emb.time(t)
    context = emb.text(context)
    if context_image is not None:
      context_image = emb.image_embedder(jnp.asarray(context_image))
      if cfg.added_kv_proj_dim is None:
        # Without dedicated image projections the image tokens are ordinary context tokens.
        context = jnp.concatenate([context_image, context], axis=1)
        context_image = None

    run = nnx.remat(_call_block) if self.remat else _call_block
    hints = {}
    if cfg.is_vace:
      c = self.vace_patch_embedding(jnp.asarray(control))
      c = jnp.pad(c, ((0, 0), (0, h.shape[1] - c.shape[1]), (0, 0)))
      n = len(cfg.vace_layers)
      scale = jnp.ones((n,), dt) if control_scale is None else jnp.asarray(control_scale)
      scale = jnp.broadcast_to(scale, (n,))
      # Hints are consumed in increasing block order, k-th VACE layer <- k-th VACE block.
      for k, (layer, vblock) in enumerate(zip(sorted(cfg.vace_layers), self.vace_blocks)):
        hint, c = run(vblock, h, c, context, context_image, temb6, rope)
        hints[layer] = (hint, scale[k])

    for i, block in enumerate(self.blocks):
      h = run(block, h, context, context_image, temb6, rope)
      if i in hints:
        hint, s = hints[i]
        h = h + (hint * s).astype(h.dtype)

    mod = self.scale_shift_table[...].astype(f32)[:, None] + temb[:, :, None]
    shift, scale = mod[:, :, 0], mod[:, :, 1]
    h = (self.norm_out(h) * (1 + scale) + shift).astype(dt)
    out = self.proj_out(h)[:, n_ref:]
    if cfg.condition_skip:
      cond = x[..., cfg.out_dim:]
      cond = cond.reshape(b, grid[0], pt, grid[1], ph, grid[2], pw, -1)
      cond = cond.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, out.shape[1], -1)
      out = out + jnp.matmul(cond.astype(dt), self.condition_skip[...].astype(dt),
                             precision=self.precision)
    out = out.reshape(b, *grid, pt, ph, pw, cfg.out_dim)
    return out.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, nf, nh, nw, cfg.out_dim)


def _call_block(block, *args):
  return block(*args)


# ---------------------------------------------------------------------------------------------
# Construction and the pure functional interface.


def init_model(config: WanConfig, rngs: nnx.Rngs, **kwargs) -> WanTransformer:
  """A randomly initialised model; ``kwargs`` are ``WanTransformer``'s (dtype, remat, ...)."""
  return WanTransformer(config, rngs=rngs, **kwargs)


class _ConstantKeys:
  """Stands in for ``nnx.Rngs`` under ``eval_shape``: every draw is the same constant key.

  With flax 0.12 / jax 0.10 each ``Rngs`` draw inside a trace updates a counter variable whose
  ``set_value`` probes ``tracer.sharding``; the resulting error message walks the whole jaxpr,
  which makes eval_shape of a 40-layer model quadratic (minutes). Shapes do not need the keys.
  """

  def params(self):
    return jax.random.key(0)


def abstract_model(config: WanConfig, **kwargs) -> WanTransformer:
  """The model with ``jax.ShapeDtypeStruct`` parameters (``nnx.eval_shape``): no allocation."""
  return nnx.eval_shape(lambda: WanTransformer(config, rngs=_ConstantKeys(), **kwargs))


_MODEL_DEFAULTS = dict(dtype=jnp.float32, param_dtype=jnp.float32, precision=None,
                       attention_impl=None, remat=False)


@functools.lru_cache(maxsize=32)
def _split_abstract(config: WanConfig, kwargs: tuple[tuple[str, Any], ...]):
  return nnx.split(abstract_model(config, **dict(kwargs)))


def split_abstract(config: WanConfig, **kwargs) -> tuple[nnx.GraphDef, nnx.State]:
  """``nnx.split`` of ``abstract_model`` (cached): the graphdef to merge with parameters.

  The returned abstract state is shared between calls: do not mutate it.
  """
  kwargs = {**_MODEL_DEFAULTS, **kwargs}
  return _split_abstract(config, tuple(sorted(kwargs.items())))


def forward(graphdef: nnx.GraphDef, params: nnx.State, x: Array, t: Array, context: Array,
            context_image: Array | None = None, control: Array | None = None,
            control_scale: Array | None = None, control_camera: Array | None = None,
            ref_latents: Array | None = None) -> Array:
  """Pure forward pass: merges ``(graphdef, params)`` and calls the model (channels-last)."""
  return nnx.merge(graphdef, params)(x, t, context, context_image, control, control_scale,
                                     control_camera, ref_latents)


def make_model_fn(config: WanConfig, *, compiler_options: dict[str, Any] | None = None,
                  **kwargs) -> Callable[..., Array]:
  """A jitted ``fn(params, x, t, context, context_image=None, control=None, control_scale=None,
  control_camera=None, ref_latents=None)``.

  ``x`` is (B, F, H, W, C) channels-last; ``params`` an ``nnx.State`` as from
  ``convert_transformer.convert_state_dict`` or ``nnx.split(model)[1]``; ``kwargs`` are
  ``WanTransformer``'s (dtype, precision, attention_impl, remat); ``compiler_options`` go to
  ``jax.jit`` (e.g. ``{"xla_backend_optimization_level": 0}`` compiles 4x faster on CPU, for
  tests). ``control_camera`` (B, F/pt, H s, W s, control_adapter_in_dim) and ``ref_latents``
  (B, H, W, ref_conv_in_dim) feed VideoX-Fun's optional modules (see ``WanTransformer``).
  Output (B, F, H, W, C_out) in ``dtype``.
  """
  graphdef, _ = split_abstract(config, **kwargs)

  def model_fn(params, x, t, context, context_image=None, control=None, control_scale=None,
               control_camera=None, ref_latents=None):
    return forward(graphdef, params, x, t, context, context_image, control, control_scale,
                   control_camera, ref_latents)

  return jax.jit(model_fn, compiler_options=compiler_options)


def param_shapes(config: WanConfig) -> dict[tuple[Any, ...], tuple[int, ...]]:
  """``{path: shape}`` of every parameter, from ``nnx.eval_shape`` (no allocation)."""
  _, state = split_abstract(config)
  return {tuple(path): tuple(var.shape) for path, var in nnx.to_flat_state(state)}


def count_params(config: WanConfig) -> int:
  return sum(math.prod(s) for s in param_shapes(config).values())


__all__: Sequence[str] = (
    "WanConfig", "config_from_diffusers", "WanTransformer", "init_model", "abstract_model",
    "split_abstract", "forward", "make_model_fn", "param_shapes", "count_params", "rope_tables",
    "apply_rope", "rope_from_positions", "token_positions", "timestep_sinusoid")
