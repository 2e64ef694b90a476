"""Wan conditioning inputs built in JAX, as the diffusers Wan pipelines build them.

Everything is channels-last: pixels ``(T, H, W, 3)`` in [-1, 1], masks ``(T, H, W)`` in [0, 1],
latents ``(T', h, w, C)`` with ``T' = 1 + (T - 1) / r`` (``r`` the VAE's temporal ratio, 4 for
Wan) and ``h = H / s`` (``s`` its spatial ratio, 8 for Wan2.1's VAE). Latents are normalised with
the VAE config's ``latents_mean`` / ``latents_std`` as the pipelines do. ``vae`` is a
:class:`composed_vi.models.wan.vae.WanVAE` and ``params`` its parameters
(``composed_vi.models.wan.loading.load_vae``).

* :func:`i2v_condition`: the image-to-video condition (Wan2.1/2.2 I2V, ``in_channels`` 36):
  ``r`` mask channels (1 on the given frames: frame 0, and the last one when given) followed by
  the latents of the video that holds the first (and last) frame and zeros elsewhere
  (``WanImageToVideoPipeline.prepare_latents``).
* :func:`vace_control`: VACE's control (``vace_in_channels`` 96): the latents of the inactive
  (``video * (1 - mask)``) and reactive (``video * mask``) parts, then the mask folded into
  ``s * s`` channels and resampled to ``T'`` frames (``WanVACEPipeline.prepare_video_latents``
  and ``prepare_masks``); reference images (already on their canvas) prepend frames.
* :func:`latent_mask`: a pixel mask pooled to the latent grid (for the composition's weights,
  repulsion and pinned masks): a latent cell covers ``r`` frames (frame 0 alone) and ``s x s``
  pixels.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from composed_vi.errors import fail
from composed_vi.models.wan import vae as wan_vae


def encode(vae, params, video) -> jnp.ndarray:
  """``(T, H, W, 3)`` in [-1, 1] -> normalised latent mode ``(T', h, w, z_dim)`` float32."""
  z = vae.encode_bthwc(params, jnp.asarray(video, jnp.float32)[None])[0]
  return wan_vae.normalize_latents(z.astype(jnp.float32), vae.config)


def i2v_mask(num_frames: int, height: int, width: int, *, temporal: int = 4,
             last_frame: bool = False) -> np.ndarray:
  """The I2V pipelines' mask at latent resolution ``(T', h, w, temporal)``: pixel frame 0
  repeated ``temporal`` times then frames ``1..T-1``, folded ``temporal`` frames per latent
  frame into channels; 1 on the given frames."""
  m = np.zeros(num_frames, np.float32)
  m[0] = 1.0
  if last_frame:
    m[-1] = 1.0
  m = np.concatenate([np.repeat(m[:1], temporal), m[1:]]).reshape(-1, temporal)
  return np.broadcast_to(m[:, None, None, :], (m.shape[0], height, width, temporal)).copy()


def i2v_condition(vae, params, image, num_frames: int, *, last_image=None) -> jnp.ndarray:
  """The I2V condition ``(T', h, w, r + z_dim)``: :func:`i2v_mask` then the latents of
  ``[image, 0, ..., 0 (, last_image)]``. ``image``: ``(H, W, 3)`` in [-1, 1]."""
  image = jnp.asarray(image, jnp.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    fail("image", "(H, W, 3) in [-1, 1]", tuple(image.shape))
  video = jnp.zeros((num_frames,) + image.shape, jnp.float32).at[0].set(image)
  if last_image is not None:
    last_image = jnp.asarray(last_image, jnp.float32)
    if last_image.shape != image.shape:
      fail("last_image", f"the first image's shape {tuple(image.shape)}", tuple(last_image.shape))
    video = video.at[-1].set(last_image)
  z = encode(vae, params, video)
  mask = i2v_mask(num_frames, z.shape[1], z.shape[2], temporal=vae.config.temporal_ratio,
                  last_frame=last_image is not None)
  return jnp.concatenate([jnp.asarray(mask), z], -1)


def _nearest_exact(size_in: int, size_out: int) -> np.ndarray:
  """Source indices of torch's ``interpolate(mode='nearest-exact')`` along one axis."""
  scale = size_in / size_out
  return np.minimum(np.floor((np.arange(size_out) + 0.5) * scale).astype(int), size_in - 1)


def vace_mask(mask, *, temporal: int = 4, spatial: int = 8, num_references: int = 0):
  """VACE's mask channels ``(R + ceil(T / r), h, w, s * s)`` of a pixel mask ``(T, H, W)``:
  each ``s x s`` block folded into channels (row-major within the block), frames resampled by
  nearest-exact, ``R`` zero frames for the reference images in front."""
  mask = np.asarray(mask, np.float32)
  t, height, width = mask.shape
  h, w = height // spatial, width // spatial
  folded = mask[:, :h * spatial, :w * spatial].reshape(t, h, spatial, w, spatial)
  folded = folded.transpose(0, 1, 3, 2, 4).reshape(t, h, w, spatial * spatial)
  out = folded[_nearest_exact(t, (t + temporal - 1) // temporal)]
  if num_references:
    out = np.concatenate([np.zeros((num_references,) + out.shape[1:], np.float32), out])
  return out


def vace_control(vae, params, video=None, mask=None, *, num_frames: int | None = None,
                 size: tuple[int, int] | None = None, reference_images=()) -> jnp.ndarray:
  """VACE's control ``(R + T', h, w, 2 z_dim + s * s)``.

  Args:
    video: ``(T, H, W, 3)`` in [-1, 1], or ``None`` (zeros of ``num_frames`` x ``size``).
    mask: ``(T, H, W)`` in [0, 1] (thresholded at 0.5: 1 = generate), or ``None`` (all 1).
    reference_images: ``(H, W, 3)`` images in [-1, 1] already placed on their canvas of the
      video's size; each adds one latent frame in front (its latents, then zeros).
  """
  if video is None:
    if num_frames is None or size is None:
      fail("video", "a video, or num_frames and size", None)
    video = jnp.zeros((num_frames, *size, 3), jnp.float32)
  video = jnp.asarray(video, jnp.float32)
  if mask is None:
    mask = jnp.ones(video.shape[:3], jnp.float32)
  mask = jnp.asarray(mask, jnp.float32)
  if mask.shape != video.shape[:3]:
    fail("mask", f"(T, H, W) = {tuple(video.shape[:3])}", tuple(mask.shape))
  binary = jnp.where(mask > 0.5, 1.0, 0.0)[..., None]
  latents = jnp.concatenate([encode(vae, params, video * (1 - binary)),
                             encode(vae, params, video * binary)], -1)
  refs = []
  for i, ref in enumerate(reference_images):
    ref = jnp.asarray(ref, jnp.float32)
    if ref.shape != video.shape[1:]:
      fail(f"reference_images[{i}]", f"(H, W, 3) = {tuple(video.shape[1:])}", tuple(ref.shape))
    z = encode(vae, params, ref[None])
    refs.append(jnp.concatenate([z, jnp.zeros_like(z)], -1))
  # The pipeline prepends each reference in turn, so the last one given ends up first.
  latents = jnp.concatenate(refs[::-1] + [latents], 0)
  m = vace_mask(np.asarray(mask), temporal=vae.config.temporal_ratio,
                spatial=vae.config.spatial_ratio, num_references=len(refs))
  return jnp.concatenate([latents, jnp.asarray(m)], -1)


def latent_mask(mask, *, temporal: int = 4, spatial: int = 8, mode: str = "any") -> np.ndarray:
  """A pixel mask ``(T, H, W)`` (``T = 1 + r k``) pooled to ``(T', h, w, 1)``: ``any`` (max),
  ``all`` (min) or ``mean`` over each latent cell (frame 0 alone, then ``r`` frames)."""
  mask = np.asarray(mask, np.float32)
  if mask.ndim != 3 or (mask.shape[0] - 1) % temporal:
    fail("mask", f"(1 + {temporal} k, H, W)", mask.shape)
  if mask.shape[1] % spatial or mask.shape[2] % spatial:
    fail("mask", f"height and width multiples of {spatial}", mask.shape[1:])
  reduce = {"any": np.max, "all": np.min, "mean": np.mean}.get(mode)
  if reduce is None:
    fail("mode", "'any', 'all' or 'mean'", mode)
  t, height, width = mask.shape
  h, w = height // spatial, width // spatial
  blocks = mask.reshape(t, h, spatial, w, spatial)
  first = reduce(blocks[:1], axis=(0, 2, 4))[None]
  rest = blocks[1:].reshape((t - 1) // temporal, temporal, h, spatial, w, spatial)
  rest = reduce(rest, axis=(1, 3, 5))
  return np.concatenate([first, rest], 0)[..., None]
