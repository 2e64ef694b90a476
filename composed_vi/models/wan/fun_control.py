"""VideoX-Fun's optional input modules of the Wan DiT: the Control-Camera adapter and the
reference-image convolution (aigc-apps/VideoX-Fun, Apache-2.0; ported from the mathematics of
``videox_fun/models/wan_transformer3d.py`` and ``wan_camera_adapter.py``, channels-last).

* :class:`ControlAdapter` (VideoX-Fun's ``SimpleAdapter``, config ``add_control_adapter``): the
  camera input ``(B, F, H, W, C)`` holds ``C`` channels per *pixel* at the *latent* frame rate
  (24 for Control-Camera: 6 Plücker channels of 4 video frames, see
  :mod:`composed_vi.models.camera_control`). Each frame is pixel-unshuffled by
  ``downscale`` (``C * downscale^2`` channels on the latent grid), convolved with kernel = stride
  = the spatial patch size (onto the token grid, ``dim`` channels) and passed through one
  residual block (3x3 conv, ReLU, 3x3 conv, plus the input). The result is added to the
  patch-embedded tokens.
* :class:`RefConv` (config ``add_ref_conv``): a 2-D convolution with kernel = stride = the spatial
  patch size on one latent frame ``(B, H, W, C_ref)`` (the reference image's VAE latents); its
  ``(H/ph)(W/pw)`` tokens are *prepended* to the sequence as an extra frame: rotary frame
  position 0 (the video's frames move to 1..F), per-token timesteps padded in front with the
  last token's, and dropped again after the output projection.

Both are optional in VideoX-Fun's forward too (``y_camera=None`` / ``full_ref=None`` skip them);
its pipelines always pass the reference (zeros when no image is given) to a model that has one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def pixel_unshuffle(x: Array, factor: int) -> Array:
  """``(N, H, W, C)`` -> ``(N, H/r, W/r, C r^2)`` with torch's ``PixelUnshuffle`` channel order:
  output channel ``c r^2 + i r + j`` is input channel ``c`` at pixel ``(r y + i, r x + j)``."""
  n, h, w, c = x.shape
  r = factor
  x = x.reshape(n, h // r, r, w // r, r, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(n, h // r, w // r, c * r * r)


class Conv2d(nnx.Module):
  """A 2-D convolution, channels-last; ``kernel`` is ``(kh, kw, I, O)`` (torch's ``(O, I, kh,
  kw)`` transposed), ``padding`` 'VALID' or an int (zeros on every side)."""

  def __init__(self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int],
               padding: str | int, *, rngs, dtype, param_dtype, precision):
    self.stride, self.dtype, self.precision = tuple(stride), dtype, precision
    self.padding = padding if isinstance(padding, str) else [(padding, padding)] * 2
    init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
    self.kernel = nnx.Param(init(rngs.params(), (*kernel, cin, cout), param_dtype))
    self.bias = nnx.Param(jnp.zeros((cout,), param_dtype))

  def __call__(self, x: Array) -> Array:
    """(N, H, W, I) -> (N, H', W', O) in ``dtype``."""
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    return y + self.bias[...].astype(self.dtype)


class ResidualBlock(nnx.Module):
  """``x + conv2(relu(conv1(x)))`` with 3x3 convolutions (padding 1)."""

  def __init__(self, dim: int, *, rngs, dtype, param_dtype, precision):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    self.conv1 = Conv2d(dim, dim, (3, 3), (1, 1), 1, **kw)
    self.conv2 = Conv2d(dim, dim, (3, 3), (1, 1), 1, **kw)

  def __call__(self, x: Array) -> Array:
    return x + self.conv2(jax.nn.relu(self.conv1(x)))


class ControlAdapter(nnx.Module):
  """VideoX-Fun's ``SimpleAdapter``: pixel-unshuffle, patch conv, one residual block."""

  def __init__(self, cin: int, dim: int, patch_hw: tuple[int, int], downscale: int, *, rngs,
               dtype, param_dtype, precision):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, precision=precision)
    self.downscale = downscale
    self.conv = Conv2d(cin * downscale * downscale, dim, patch_hw, patch_hw, "VALID", **kw)
    self.residual_blocks = nnx.List([ResidualBlock(dim, **kw)])

  def __call__(self, camera: Array) -> Array:
    """``(B, F, H, W, C)`` per-pixel camera channels -> ``(B, F h w, dim)`` tokens, ordered
    frame-major as the patch embedding's (``h = H / (downscale ph)``)."""
    b, f, h, w, c = camera.shape
    x = pixel_unshuffle(camera.reshape(b * f, h, w, c), self.downscale)
    x = self.conv(x)
    for block in self.residual_blocks:
      x = block(x)
    return x.reshape(b, -1, x.shape[-1])


class RefConv(Conv2d):
  """The reference-image conv: one latent frame ``(B, H, W, C)`` -> ``(B, (H/ph)(W/pw), dim)``."""

  def __init__(self, cin: int, dim: int, patch_hw: tuple[int, int], *, rngs, dtype, param_dtype,
               precision):
    super().__init__(cin, dim, patch_hw, patch_hw, "VALID", rngs=rngs, dtype=dtype,
                     param_dtype=param_dtype, precision=precision)

  def tokens(self, ref: Array) -> Array:
    y = self(ref)
    return y.reshape(y.shape[0], -1, y.shape[-1])


def check_config(config) -> None:
  """Refuses ``WanConfig`` values of the Fun modules that we cannot build (naming the field)."""
  for name in ("control_adapter_in_dim", "ref_conv_in_dim"):
    value = getattr(config, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
      raise ValueError(f"{name}: expected None or a positive int, got {value!r}")
  down = config.control_adapter_downscale
  if isinstance(down, bool) or not isinstance(down, int) or down < 1:
    raise ValueError(f"control_adapter_downscale: expected a positive int, got {down!r}")
  for name in ("control_adapter_in_dim", "ref_conv_in_dim"):
    if getattr(config, name) is not None and config.vace_layers is not None:
      raise ValueError(f"{name}: expected None with vace_layers set (VideoX-Fun's VACE model has "
                       f"no control adapter or reference conv), got {getattr(config, name)}")
  if config.ref_conv_in_dim is not None and config.rope_position_channels:
    raise ValueError(f"ref_conv_in_dim: expected None with rope_position_channels (the reference "
                     f"tokens have no pixel positions), got {config.ref_conv_in_dim}")


def check_inputs(config, x_shape: tuple[int, ...], control_camera, ref_latents) -> None:
  """Checks the Fun inputs against the latents' shape ``(B, F, H, W, C)`` (raises naming the
  argument, the expected and the actual shape)."""
  b, nf, nh, nw = x_shape[:4]
  pt, ph, pw = config.patch_size
  if control_camera is not None:
    if config.control_adapter_in_dim is None:
      raise ValueError("control_camera: given to a model without a control adapter "
                       "(control_adapter_in_dim is None)")
    r = config.control_adapter_downscale
    want = (b, nf // pt, nh * r, nw * r, config.control_adapter_in_dim)
    if tuple(control_camera.shape) != want:
      raise ValueError(f"control_camera: expected shape {want} (batch, latent frames / pt, "
                       f"height and width in pixels = latent x {r}, control_adapter_in_dim "
                       f"channels), got {tuple(control_camera.shape)}")
  if ref_latents is not None:
    if config.ref_conv_in_dim is None:
      raise ValueError("ref_latents: given to a model without a reference conv "
                       "(ref_conv_in_dim is None)")
    want = (b, nh, nw, config.ref_conv_in_dim)
    if tuple(ref_latents.shape) != want:
      raise ValueError(f"ref_latents: expected shape {want} (one latent frame on the latents' "
                       f"grid, ref_conv_in_dim channels), got {tuple(ref_latents.shape)}")


def ref_token_count(config, x_shape: tuple[int, ...]) -> int:
  """Tokens the reference frame prepends for latents of shape ``(B, F, H, W, C)``."""
  _, ph, pw = config.patch_size
  return math.prod((x_shape[2] // ph, x_shape[3] // pw))


__all__ = ("pixel_unshuffle", "Conv2d", "ResidualBlock", "ControlAdapter", "RefConv",
           "check_config", "check_inputs", "ref_token_count")
