"""The Wan2.1 video VAE (diffusers' ``AutoencoderKLWan``) in Flax NNX, channels-last.

Architecture by the Wan team (Apache-2.0); written from the mathematics of diffusers' PyTorch
source. Inside, videos are ``(B, T, H, W, C)``; the public ``WanVAE.encode`` / ``decode`` take
diffusers' channels-first ``(B, C, T, H, W)`` and ``encode_bthwc`` / ``decode_bthwc`` ours.

Time is causal. Like diffusers, encoding runs the first frame alone and then chunks of 4 frames,
decoding one latent frame at a time, and every causal convolution carries the last
``CACHE_T`` frames of its input from one chunk to the next. The cache is functional: every
module with state is called as ``y, cache = module(x, cache)``; ``cache=None`` means "first
chunk" (zero history, and the first-chunk rules of the temporal resamplers). The chunks after
the first share one shape: ``AutoencoderKLWan.encode_bthwc`` runs them in a ``lax.scan`` over
a fixed cache pytree (for use inside ``jit``), ``WanVAE`` in a Python loop over two jitted chunk
functions (no recompilation for a new number of frames).

The Wan2.2 variant (``is_residual=True`` with ``patch_size``: residual down/up blocks with
space-to-channel shortcuts and a pixel patchify) is supported too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

CACHE_T = 2  # frames of history a causal convolution with time kernel 3 needs
FIRST_CHUNK_FRAMES = 1
CHUNK_FRAMES = 4

WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
  """Hyper-parameters, named as in diffusers' ``AutoencoderKLWan`` config (defaults: Wan2.1).

  ``attn_scales`` must stay empty (diffusers cannot run an encoder with attention in its down
  blocks and builds none in its decoder); ``dropout`` is accepted and unused (inference only).
  ``latents_mean`` / ``latents_std`` are checked against the latents only when used (diffusers
  accepts, e.g., a small ``z_dim`` with the default 16 statistics).
  """

  base_dim: int = 96
  decoder_base_dim: int | None = None
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple[float, ...] = ()
  temperal_downsample: tuple[bool, ...] = (False, True, True)
  dropout: float = 0.0
  latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
  latents_std: tuple[float, ...] = WAN21_LATENTS_STD
  is_residual: bool = False
  in_channels: int = 3
  out_channels: int = 3
  patch_size: int | None = None
  scale_factor_temporal: int | None = 4
  scale_factor_spatial: int | None = 8

  def __post_init__(self):
    for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean",
                 "latents_std"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    self.validate()

  def validate(self):
    """Raises ``ValueError`` naming the first field that we cannot build or run."""
    def bad(field, expected, got):
      raise ValueError(f"WanVAEConfig.{field}: expected {expected}, got {got!r}")

    for field in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
      if int(getattr(self, field)) < 1:
        bad(field, "a positive integer", getattr(self, field))
    if self.decoder_base_dim is not None and self.decoder_base_dim < 1:
      bad("decoder_base_dim", "None or a positive integer", self.decoder_base_dim)
    if not self.dim_mult or min(self.dim_mult) < 1:
      bad("dim_mult", "a non-empty sequence of positive integers", self.dim_mult)
    if len(self.temperal_downsample) != len(self.dim_mult) - 1:
      bad("temperal_downsample", f"{len(self.dim_mult) - 1} booleans (len(dim_mult) - 1)",
          self.temperal_downsample)
    if self.attn_scales:
      bad("attn_scales", "() (diffusers' AutoencoderKLWan cannot run attention in the "
          "encoder's down blocks and has none in the decoder)", self.attn_scales)
    if self.patch_size is not None:
      if self.patch_size < 1:
        bad("patch_size", "None or a positive integer", self.patch_size)
      p2 = self.patch_size ** 2
      if self.in_channels % p2 or self.out_channels % p2:
        bad("patch_size", f"a patch whose area divides in_channels ({self.in_channels}) and "
            f"out_channels ({self.out_channels})", self.patch_size)

  @property
  def decoder_dim(self) -> int:
    return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

  @property
  def patch(self) -> int:
    return 1 if self.patch_size is None else int(self.patch_size)

  @property
  def video_channels(self) -> tuple[int, int]:
    """Channels of the pixel video in and out (before the patchify / after the unpatchify)."""
    p2 = self.patch ** 2
    return self.in_channels // p2, self.out_channels // p2

  @property
  def spatial_ratio(self) -> int:
    return 2 ** (len(self.dim_mult) - 1) * self.patch

  @property
  def temporal_ratio(self) -> int:
    return 2 ** sum(bool(t) for t in self.temperal_downsample)


# ------------------------------------------------------------------------------------------
# Layers


_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _triple(v) -> tuple[int, int, int]:
  return tuple(int(u) for u in v) if isinstance(v, Sequence) else (int(v),) * 3


class CausalConv3d(nnx.Module):
  """3D convolution, zero-padded ``2 * padding_t`` frames on the left in time only.

  Kernel ``(kt, kh, kw, in, out)``. Called as ``y, cache = conv(x, cache)``: the cache holds the
  last ``2 * padding_t`` frames of the padded input (``None``: zeros, i.e. the sequence start),
  so chunk-by-chunk application equals one causal pass over the whole sequence.
  """

  def __init__(self, in_dim: int, out_dim: int, kernel_size, *, stride=1, padding=0,
               rngs: nnx.Rngs):
    kt, kh, kw = _triple(kernel_size)
    pt, ph, pw = _triple(padding)
    self.stride = _triple(stride)
    self.time_pad = 2 * pt
    self.spatial_pad = (ph, pw)
    self.kernel = nnx.Param(_kernel_init(rngs.params(), (kt, kh, kw, in_dim, out_dim)))
    self.bias = nnx.Param(jnp.zeros((out_dim,)))

  def conv(self, x: jax.Array) -> jax.Array:
    """The convolution without time padding: (B, T, H, W, I) -> (B, T', H', W', O)."""
    (ph, pw), kernel = self.spatial_pad, self.kernel[...]
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), self.stride, [(0, 0), (ph, ph), (pw, pw)],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + self.bias[...].astype(x.dtype)

  def __call__(self, x: jax.Array, cache: jax.Array | None = None):
    if not self.time_pad:
      return self.conv(x), None
    if cache is None:
      b, _, h, w, c = x.shape
      cache = jnp.zeros((b, self.time_pad, h, w, c), x.dtype)
    x = jnp.concatenate([cache, x], axis=1)
    return self.conv(x), x[:, -self.time_pad:]


class Conv2d(nnx.Module):
  """Per-frame 2D convolution, kernel ``(kh, kw, in, out)``; padding as ``((top, bottom),
  (left, right))``."""

  def __init__(self, in_dim: int, out_dim: int, kernel_size: int, *, stride: int = 1,
               padding=((0, 0), (0, 0)), rngs: nnx.Rngs):
    self.stride = (stride, stride)
    self.padding = tuple(tuple(p) for p in padding)
    self.kernel = nnx.Param(
        _kernel_init(rngs.params(), (kernel_size, kernel_size, in_dim, out_dim)))
    self.bias = nnx.Param(jnp.zeros((out_dim,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    y = jax.lax.conv_general_dilated(
        x, self.kernel[...].astype(x.dtype), self.stride, self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y + self.bias[...].astype(x.dtype)
    return y.reshape(lead + y.shape[1:])


class RMSNorm(nnx.Module):
  """``x / max(|x|_2, 1e-12) * sqrt(C) * gamma`` over the channel axis (last)."""

  def __init__(self, dim: int):
    self.gamma = nnx.Param(jnp.ones((dim,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    # Low-precision inputs are normalised in float32, as diffusers does.
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=-1, keepdims=True))
    y = (xf / jnp.maximum(norm, 1e-12)).astype(x.dtype)
    return y * (x.shape[-1] ** 0.5) * self.gamma[...].astype(x.dtype)


class ResidualBlock(nnx.Module):
  """RMSNorm, SiLU, causal conv 3^3, twice, plus a 1^3 shortcut when the width changes.
  Cache: ``(conv1, conv2)``."""

  def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
    self.norm1 = RMSNorm(in_dim)
    self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1, rngs=rngs)
    self.norm2 = RMSNorm(out_dim)
    self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1, rngs=rngs)
    self.conv_shortcut = (CausalConv3d(in_dim, out_dim, 1, rngs=rngs)
                          if in_dim != out_dim else None)

  def __call__(self, x, cache=None):
    c1, c2 = (None, None) if cache is None else cache
    h = x if self.conv_shortcut is None else self.conv_shortcut(x)[0]
    x, c1 = self.conv1(jax.nn.silu(self.norm1(x)), c1)
    x, c2 = self.conv2(jax.nn.silu(self.norm2(x)), c2)
    return x + h, (c1, c2)


class AttentionBlock(nnx.Module):
  """Single-head self-attention over the pixels of each frame, with a residual."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.norm = RMSNorm(dim)
    self.to_qkv = Conv2d(dim, 3 * dim, 1, rngs=rngs)
    self.proj = Conv2d(dim, dim, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, h, w, c = x.shape
    qkv = self.to_qkv(self.norm(x)).reshape(b * t, h * w, 1, 3 * c)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    y = jax.nn.dot_product_attention(q, k, v)  # scale 1 / sqrt(c)
    return x + self.proj(y.reshape(b, t, h, w, c))


class Resample(nnx.Module):
  """``upsample2d/3d``: nearest 2x in space then conv 3x3 (to ``out_dim``), the 3d mode first
  doubling the frames with a causal time conv to ``2 * dim`` channels (even / odd frames);
  ``downsample2d/3d``: zero-pad right and bottom, conv 3x3 stride 2, the 3d mode then a stride-2
  time conv over the previous chunk's last frame and this chunk.

  First chunk (``cache=None``): ``upsample3d`` keeps its frames (and remembers zeros, not them,
  as history), ``downsample3d`` skips the time conv and keeps its last frame.
  """

  def __init__(self, dim: int, mode: str, out_dim: int | None = None, *, rngs: nnx.Rngs):
    self.mode = mode
    if mode.startswith("upsample"):
      out_dim = dim // 2 if out_dim is None else out_dim
      self.resample = Conv2d(dim, out_dim, 3, padding=((1, 1), (1, 1)), rngs=rngs)
      if mode == "upsample3d":
        self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), rngs=rngs)
    elif mode.startswith("downsample"):
      self.resample = Conv2d(dim, dim, 3, stride=2, padding=((0, 1), (0, 1)), rngs=rngs)
      if mode == "downsample3d":
        self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), rngs=rngs)
    else:
      raise ValueError(f"Resample.mode: expected upsample2d/3d or downsample2d/3d, got {mode!r}")

  def __call__(self, x, cache=None):
    new_cache = None
    if self.mode == "upsample3d":
      if cache is None:
        b, _, h, w, c = x.shape
        new_cache = jnp.zeros((b, CACHE_T, h, w, c), x.dtype)
      else:
        y, new_cache = self.time_conv(x, cache)
        b, t, h, w, _ = y.shape
        y = y.reshape(b, t, h, w, 2, -1).transpose(0, 1, 4, 2, 3, 5)
        x = y.reshape(b, 2 * t, h, w, -1)
    if self.mode.startswith("upsample"):
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
    x = self.resample(x)
    if self.mode == "downsample3d":
      new_cache = x[:, -1:]
      if cache is not None:
        x = self.time_conv.conv(jnp.concatenate([cache, x], axis=1))
    return x, new_cache


class MidBlock(nnx.Module):
  """Residual block, attention, residual block. Cache: the two residual blocks'."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([ResidualBlock(dim, dim, rngs=rngs) for _ in range(2)])
    self.attentions = nnx.List([AttentionBlock(dim, rngs=rngs)])

  def __call__(self, x, cache=None):
    c0, c1 = (None, None) if cache is None else cache
    x, c0 = self.resnets[0](x, c0)
    x = self.attentions[0](x)
    x, c1 = self.resnets[1](x, c1)
    return x, (c0, c1)


def _space_time_to_channels(x, factor_t: int, factor_s: int, out_dim: int):
  """Wan2.2 down shortcut: fold (ft, fs, fs) into channels, then average channel groups."""
  b, t, h, w, c = x.shape
  pad_t = (-t) % factor_t
  x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
  t = (t + pad_t) // factor_t
  x = x.reshape(b, t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, t, h // factor_s, w // factor_s, -1)
  return x.reshape(x.shape[:-1] + (out_dim, -1)).mean(axis=-1)


def _channels_to_space_time(x, factor_t: int, factor_s: int, out_dim: int, first: bool):
  """Wan2.2 up shortcut: repeat channels, unfold them into (ft, fs, fs); the first chunk drops
  the ``ft - 1`` leading frames."""
  b, t, h, w, c = x.shape
  repeats = out_dim * factor_t * factor_s * factor_s // c
  x = jnp.repeat(x, repeats, axis=-1)
  x = x.reshape(b, t, h, w, out_dim, factor_t, factor_s, factor_s)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)
  x = x.reshape(b, t * factor_t, h * factor_s, w * factor_s, out_dim)
  return x[:, factor_t - 1:] if first else x


class ResidualDownBlock(nnx.Module):
  """Wan2.2 encoder level: residual blocks and a downsampler plus a space-to-channel shortcut.
  Cache: ``(resnets, downsampler)``."""

  def __init__(self, in_dim, out_dim, num_res_blocks, *, temporal: bool, down: bool,
               rngs: nnx.Rngs):
    self.out_dim = out_dim
    self.factor_t = 2 if temporal else 1
    self.factor_s = 2 if down else 1
    if in_dim * self.factor_t * self.factor_s ** 2 % out_dim:
      raise ValueError(f"ResidualDownBlock: in_dim {in_dim} times the downsampling factor must "
                       f"be divisible by out_dim {out_dim}")
    dims = [in_dim] + [out_dim] * num_res_blocks
    self.resnets = nnx.List(
        [ResidualBlock(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    self.downsampler = (Resample(out_dim, "downsample3d" if temporal else "downsample2d",
                                 rngs=rngs) if down else None)

  def __call__(self, x, cache=None):
    c_res, c_down = ((None,) * len(self.resnets), None) if cache is None else cache
    shortcut = _space_time_to_channels(x, self.factor_t, self.factor_s, self.out_dim)
    new_res = []
    for resnet, c in zip(self.resnets, c_res):
      x, c = resnet(x, c)
      new_res.append(c)
    if self.downsampler is not None:
      x, c_down = self.downsampler(x, c_down)
    return x + shortcut, (tuple(new_res), c_down)


class UpBlock(nnx.Module):
  """Wan2.1 decoder level: ``num_res_blocks + 1`` residual blocks, then an optional upsampler.
  Cache: ``(resnets, upsampler)``."""

  def __init__(self, in_dim, out_dim, num_res_blocks, upsample_mode, *, rngs: nnx.Rngs):
    dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
    self.resnets = nnx.List(
        [ResidualBlock(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    self.upsamplers = (nnx.List([Resample(out_dim, upsample_mode, rngs=rngs)])
                       if upsample_mode else None)

  def __call__(self, x, cache=None):
    c_res, c_up = ((None,) * len(self.resnets), None) if cache is None else cache
    new_res = []
    for resnet, c in zip(self.resnets, c_res):
      x, c = resnet(x, c)
      new_res.append(c)
    if self.upsamplers is not None:
      x, c_up = self.upsamplers[0](x, c_up)
    return x, (tuple(new_res), c_up)


class ResidualUpBlock(nnx.Module):
  """Wan2.2 decoder level: residual blocks, upsampler (to ``out_dim``) and a channel-to-space
  shortcut. Cache: ``(resnets, upsampler)``."""

  def __init__(self, in_dim, out_dim, num_res_blocks, *, temporal: bool, up: bool,
               rngs: nnx.Rngs):
    self.out_dim = out_dim
    self.factor_t = 2 if temporal else 1
    self.up = up
    if up and out_dim * self.factor_t * 4 % in_dim:
      raise ValueError(f"ResidualUpBlock: out_dim {out_dim} times the upsampling factor must be "
                       f"divisible by in_dim {in_dim}")
    dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
    self.resnets = nnx.List(
        [ResidualBlock(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    self.upsampler = (Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim,
                               rngs=rngs) if up else None)

  def __call__(self, x, cache=None):
    first = cache is None
    c_res, c_up = ((None,) * len(self.resnets), None) if first else cache
    x_in = x
    new_res = []
    for resnet, c in zip(self.resnets, c_res):
      x, c = resnet(x, c)
      new_res.append(c)
    if self.upsampler is not None:
      x, c_up = self.upsampler(x, c_up)
      x = x + _channels_to_space_time(x_in, self.factor_t, 2, self.out_dim, first)
    return x, (tuple(new_res), c_up)


class Encoder3d(nnx.Module):
  """Pixels (after the optional patchify) -> ``2 * z_dim`` moments, one chunk at a time."""

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs):
    c = config
    dims = [c.base_dim * u for u in (1,) + c.dim_mult]
    last = len(c.dim_mult) - 1
    self.conv_in = CausalConv3d(c.in_channels, dims[0], 3, padding=1, rngs=rngs)
    blocks = []
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      temporal = bool(c.temperal_downsample[i]) if i != last else False
      if c.is_residual:
        blocks.append(ResidualDownBlock(in_dim, out_dim, c.num_res_blocks, temporal=temporal,
                                        down=i != last, rngs=rngs))
        continue
      for _ in range(c.num_res_blocks):
        blocks.append(ResidualBlock(in_dim, out_dim, rngs=rngs))
        in_dim = out_dim
      if i != last:
        blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d",
                               rngs=rngs))
    self.down_blocks = nnx.List(blocks)
    self.mid_block = MidBlock(dims[-1], rngs=rngs)
    self.norm_out = RMSNorm(dims[-1])
    self.conv_out = CausalConv3d(dims[-1], 2 * c.z_dim, 3, padding=1, rngs=rngs)

  def __call__(self, x, cache=None):
    if cache is None:
      cache = (None, (None,) * len(self.down_blocks), None, None)
    c_in, c_blocks, c_mid, c_out = cache
    x, c_in = self.conv_in(x, c_in)
    new_blocks = []
    for block, c in zip(self.down_blocks, c_blocks):
      x, c = block(x, c)
      new_blocks.append(c)
    x, c_mid = self.mid_block(x, c_mid)
    x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), c_out)
    return x, (c_in, tuple(new_blocks), c_mid, c_out)


class Decoder3d(nnx.Module):
  """``z_dim`` latents -> pixels (before the optional unpatchify), one latent frame at a time."""

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs):
    c = config
    mult = c.dim_mult
    dims = [c.decoder_dim * u for u in (mult[-1],) + mult[::-1]]
    temporal_up = c.temperal_downsample[::-1]
    last = len(mult) - 1
    self.conv_in = CausalConv3d(c.z_dim, dims[0], 3, padding=1, rngs=rngs)
    self.mid_block = MidBlock(dims[0], rngs=rngs)
    blocks = []
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      up = i != last
      temporal = bool(temporal_up[i]) if up else False
      if c.is_residual:
        blocks.append(ResidualUpBlock(in_dim, out_dim, c.num_res_blocks, temporal=temporal,
                                      up=up, rngs=rngs))
      else:
        # The Wan2.1 upsamplers halve the width, so every level after the first starts halved.
        in_dim = in_dim // 2 if i > 0 else in_dim
        mode = ("upsample3d" if temporal else "upsample2d") if up else None
        blocks.append(UpBlock(in_dim, out_dim, c.num_res_blocks, mode, rngs=rngs))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = RMSNorm(dims[-1])
    self.conv_out = CausalConv3d(dims[-1], c.out_channels, 3, padding=1, rngs=rngs)

  def __call__(self, x, cache=None):
    if cache is None:
      cache = (None, None, (None,) * len(self.up_blocks), None)
    c_in, c_mid, c_blocks, c_out = cache
    x, c_in = self.conv_in(x, c_in)
    x, c_mid = self.mid_block(x, c_mid)
    new_blocks = []
    for block, c in zip(self.up_blocks, c_blocks):
      x, c = block(x, c)
      new_blocks.append(c)
    x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), c_out)
    return x, (c_in, c_mid, tuple(new_blocks), c_out)


def patchify(x: jax.Array, p: int) -> jax.Array:
  """(B, T, H, W, C) -> (B, T, H/p, W/p, C*p*p), channel order ``(c, pw, ph)`` as diffusers."""
  if p == 1:
    return x
  b, t, h, w, c = x.shape
  x = x.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 6, 5, 3)
  return x.reshape(b, t, h // p, w // p, c * p * p)


def unpatchify(x: jax.Array, p: int) -> jax.Array:
  """Inverse of :func:`patchify`."""
  if p == 1:
    return x
  b, t, h, w, cp = x.shape
  x = x.reshape(b, t, h, w, cp // (p * p), p, p).transpose(0, 1, 2, 6, 3, 5, 4)
  return x.reshape(b, t, h * p, w * p, cp // (p * p))


def _chunked(fn, first: jax.Array, rest: jax.Array, chunk: int):
  """Runs ``fn(x, cache) -> (y, cache)`` on ``first`` (cache None), then scans it over
  ``rest`` in chunks of ``chunk`` frames; returns the outputs concatenated in time."""
  y, cache = fn(first, None)
  b, t = rest.shape[:2]
  if t == 0:
    return y
  chunks = rest.reshape((b, t // chunk, chunk) + rest.shape[2:]).swapaxes(0, 1)

  def body(cache, x):
    y, cache = fn(x, cache)
    return cache, y

  _, ys = jax.lax.scan(body, cache, chunks)  # (n, B, t_out, ...)
  ys = ys.swapaxes(0, 1)
  ys = ys.reshape((b, ys.shape[1] * ys.shape[2]) + ys.shape[3:])
  return jnp.concatenate([y, ys], axis=1)


class AutoencoderKLWan(nnx.Module):
  """Flax NNX counterpart of diffusers' ``AutoencoderKLWan`` (channels-last)."""

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs):
    self.config = config
    z = config.z_dim
    self.encoder = Encoder3d(config, rngs=rngs)
    self.quant_conv = CausalConv3d(2 * z, 2 * z, 1, rngs=rngs)
    self.post_quant_conv = CausalConv3d(z, z, 1, rngs=rngs)
    self.decoder = Decoder3d(config, rngs=rngs)

  def encode_chunk(self, x: jax.Array, cache=None):
    """One chunk of pixels (B, t, H, W, C) -> (posterior mean (B, t', H/s, W/s, z_dim), cache).

    ``cache=None`` for the first chunk (1 frame); later chunks have 4 frames."""
    h, cache = self.encoder(patchify(x, self.config.patch), cache)
    return self.quant_conv(h)[0][..., :self.config.z_dim], cache

  def decode_chunk(self, z: jax.Array, cache=None):
    """One latent frame (B, 1, h, w, z_dim) -> (video chunk in [-1, 1], cache): 1 frame for the
    first chunk (``cache=None``), ``config.temporal_ratio`` (4 for Wan) after."""
    y, cache = self.decoder(self.post_quant_conv(z)[0], cache)
    return jnp.clip(unpatchify(y, self.config.patch), -1.0, 1.0), cache

  def encode_bthwc(self, video: jax.Array) -> jax.Array:
    """(B, 1 + 4k, H, W, C) in [-1, 1] -> the posterior mode (mean), (B, 1 + 4k/r, H/s, W/s,
    z_dim) with ``r, s = config.temporal_ratio, config.spatial_ratio`` (4 and 8 for Wan2.1).

    One ``lax.scan`` over the chunks after the first: for use inside ``jit``."""
    if (video.shape[1] - FIRST_CHUNK_FRAMES) % CHUNK_FRAMES:
      raise ValueError(f"video: expected 1 + 4k frames, got {video.shape[1]}")
    return _chunked(self.encode_chunk, video[:, :FIRST_CHUNK_FRAMES],
                    video[:, FIRST_CHUNK_FRAMES:], CHUNK_FRAMES)

  def decode_bthwc(self, z: jax.Array) -> jax.Array:
    """(B, T', h, w, z_dim) -> video (B, 1 + r (T' - 1), h*s, w*s, C), clamped to [-1, 1]."""
    return _chunked(self.decode_chunk, z[:, :1], z[:, 1:], 1)


# ------------------------------------------------------------------------------------------
# Pure-function wrapper


def _to_array(x) -> jax.Array:
  if hasattr(x, "detach"):  # a torch tensor
    x = x.detach().cpu()
    x = (x.float() if str(x.dtype) in ("torch.bfloat16", "torch.float16") else x).numpy()
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == jnp.float64:
    x = x.astype(jnp.float32)
  return x


def _call_chunk(graphdef, method: str, params, x, cache):
  return getattr(nnx.merge(graphdef, params), method)(x, cache)


@functools.lru_cache(maxsize=None)
def _chunk_runner(compiler_options: tuple | None):
  """The jitted chunk call, one per set of XLA compiler options (shared by all instances)."""
  options = None if compiler_options is None else dict(compiler_options)
  return jax.jit(_call_chunk, static_argnums=(0, 1), compiler_options=options)


def _run_chunks(run, graphdef, method: str, params, x, first: int, chunk: int):
  """Python loop over jitted chunk calls: compiles twice (first chunk, later chunks) per
  spatial size, whatever the number of frames."""
  y, cache = run(graphdef, method, params, x[:, :first], None)
  ys = [y]
  for start in range(first, x.shape[1], chunk):
    y, cache = run(graphdef, method, params, x[:, start:start + chunk], cache)
    ys.append(y)
  return jnp.concatenate(ys, axis=1) if len(ys) > 1 else ys[0]


@functools.lru_cache(maxsize=8)
def _abstract(config: WanVAEConfig):
  return nnx.split(nnx.eval_shape(lambda: AutoencoderKLWan(config, rngs=nnx.Rngs(0))))


class WanVAE:
  """Pure-function front end of :class:`AutoencoderKLWan`: ``params`` is its ``nnx.State``.

  ``encode`` / ``decode`` take and return diffusers' channels-first layout (numpy arrays or
  torch tensors in; jax arrays out); ``encode_bthwc`` / ``decode_bthwc`` are channels-last.
  They loop over jitted chunk calls (two compilations per spatial size, any number of
  frames); inside ``jit`` use the scanned ``self.model(params).encode_bthwc`` instead.

  ``compiler_options`` go to ``jax.jit`` (e.g. ``{"xla_backend_optimization_level": 0}``
  compiles about 3x faster on CPU, for tests and one-off runs).
  """

  def __init__(self, config: WanVAEConfig, compiler_options: Mapping[str, Any] | None = None):
    self.config = config
    self.graphdef, self.abstract_params = _abstract(config)
    self._run = _chunk_runner(
        None if compiler_options is None else tuple(sorted(compiler_options.items())))

  def init(self, key: jax.Array) -> nnx.State:
    """Random parameters with the modules' distribution: kernels uniform in +-1/sqrt(fan_in),
    zero biases, unit gammas.

    One uniform draw sliced into every kernel: per-shape threefry draws (as building the
    module with ``nnx.Rngs`` does) cost about a second of XLA compilation each on CPU.
    """
    flat = nnx.to_flat_state(self.abstract_params)
    shapes = [tuple(v.get_value().shape) for _, v in flat]
    sizes = [int(np.prod(s)) if p[-1] == "kernel" else 0 for (p, _), s in zip(flat, shapes)]
    u = jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
    offsets = np.cumsum([0] + sizes)
    leaves = []
    for (path, var), shape, start, size in zip(flat, shapes, offsets, sizes):
      if path[-1] == "kernel":
        value = u[start:start + size].reshape(shape) / np.sqrt(np.prod(shape[:-1]))
      else:
        value = (jnp.ones if path[-1] == "gamma" else jnp.zeros)(shape, jnp.float32)
      leaves.append((path, var.replace(value)))
    return nnx.from_flat_state(leaves)

  def model(self, params: nnx.State) -> AutoencoderKLWan:
    return nnx.merge(self.graphdef, params)

  def _check(self, x, name: str, channels: int, frames_rule: bool) -> jax.Array:
    x = _to_array(x)
    if x.ndim != 5 or x.shape[-1] != channels:
      raise ValueError(f"{name}: expected shape (B, T, H, W, {channels}) (channels-last), "
                       f"got {tuple(x.shape)}")
    if frames_rule and (x.shape[1] - 1) % CHUNK_FRAMES:
      raise ValueError(f"{name}: expected 1 + 4k frames, got {x.shape[1]}")
    return x

  def encode_bthwc(self, params: nnx.State, video) -> jax.Array:
    """Video (B, 1 + 4k, H, W, C) in [-1, 1] -> latent mode (B, 1 + k, H/8, W/8, z_dim) (Wan2.1
    ratios; in general ``config.temporal_ratio`` and ``config.spatial_ratio``)."""
    x = self._check(video, "video", self.config.video_channels[0], True)
    return _run_chunks(self._run, self.graphdef, "encode_chunk", params, x, FIRST_CHUNK_FRAMES,
                       CHUNK_FRAMES)

  def decode_bthwc(self, params: nnx.State, z) -> jax.Array:
    """Latents (B, T', h, w, z_dim) -> video (B, 1 + 4 (T' - 1), 8h, 8w, C) in [-1, 1]."""
    z = self._check(z, "z", self.config.z_dim, False)
    return _run_chunks(self._run, self.graphdef, "decode_chunk", params, z, 1, 1)

  def encode(self, params: nnx.State, video) -> jax.Array:
    """diffusers' ``encode(video).latent_dist.mode()``: (B, C, 1 + 4k, H, W) -> (B, z, T', h, w).
    """
    x = _to_array(video)
    if x.ndim != 5:
      raise ValueError(f"video: expected shape (B, C, T, H, W), got {tuple(x.shape)}")
    return jnp.moveaxis(self.encode_bthwc(params, jnp.moveaxis(x, 1, -1)), -1, 1)

  def decode(self, params: nnx.State, z) -> jax.Array:
    """diffusers' ``decode(z).sample``: (B, z_dim, T', h, w) -> (B, C, 1 + 4 (T' - 1), H, W)."""
    z = _to_array(z)
    if z.ndim != 5:
      raise ValueError(f"z: expected shape (B, z_dim, T, h, w), got {tuple(z.shape)}")
    return jnp.moveaxis(self.decode_bthwc(params, jnp.moveaxis(z, 1, -1)), -1, 1)


# ------------------------------------------------------------------------------------------
# Latent normalisation (as the diffusers Wan pipelines do it)


def _latent_stats(config: WanVAEConfig | Mapping[str, Any]):
  get = config.get if isinstance(config, Mapping) else functools.partial(getattr, config)
  return (np.asarray(get("latents_mean"), np.float32),
          np.asarray(get("latents_std"), np.float32))


def _along(v: np.ndarray, z: jax.Array, axis: int) -> jax.Array:
  axis = axis % z.ndim
  if z.shape[axis] != v.shape[0]:
    raise ValueError(f"z: the config's latents_mean / latents_std have {v.shape[0]} values but "
                     f"z has {z.shape[axis]} channels on axis {axis} (shape {z.shape})")
  shape = [1] * z.ndim
  shape[axis] = v.shape[0]
  return jnp.asarray(v.reshape(shape), z.dtype)


def normalize_latents(z, config, axis: int = -1) -> jax.Array:
  """``(z - latents_mean) * (1 / latents_std)`` with the channels on ``axis`` (-1: ours;
  1: diffusers' layout). ``config``: a :class:`WanVAEConfig` or a diffusers config dict."""
  z = _to_array(z)
  mean, std = _latent_stats(config)
  return (z - _along(mean, z, axis)) * _along(1.0 / std, z, axis)


def denormalize_latents(z, config, axis: int = -1) -> jax.Array:
  """Inverse of :func:`normalize_latents`: ``z / (1 / latents_std) + latents_mean``."""
  z = _to_array(z)
  mean, std = _latent_stats(config)
  return z / _along(1.0 / std, z, axis) + _along(mean, z, axis)
