"""The channel layout of VideoX-Fun's Wan-Fun control models (Fun-Control, Control-Camera, and
their inpainting variants), built from VAE latents the caller encodes.

A Fun-Control transformer takes ``in_channels = z + C`` channels: the noisy latents (``z = 16``)
followed by the condition ``y`` this module builds, per video ``(T', h, w, C)`` channels-last (as
``composed_vi.models.conditioning``; encode pixels with ``conditioning.encode``). The order and
the zero-filling are those of VideoX-Fun's pipelines (``WanFunControlPipeline`` and
``Wan2_2FunControlPipeline``, ``videox_fun/pipeline/pipeline_wan_fun_control.py`` and
``pipeline_wan2_2_fun_control.py``):

1. ``control`` (``z``): the control video's latents (depth, pose, Canny, a trajectory
   rendering), zeros when none is given. Absent altogether in camera models (``camera=True``):
   their camera enters through the control adapter (:mod:`composed_vi.models.camera_control`).
2. Then either (plain layout) the start image's latents in latent frame 0 and zeros elsewhere
   (``z``; all zeros without a start image, and also for a single latent frame, as the pipelines
   leave it) -- in Wan2.1-Fun V1.0 Control the same slot holds the "reference" image --
3. or (``inpaint=True``, the pipelines' ``video`` / ``mask_video`` path) ``r = 4`` mask channels
   (``1 - mask``, 1 where the video is kept, frame 0 repeated ``r`` times and ``r`` frames per
   latent frame on channels, bilinearly resized to the latent grid as torch's
   ``interpolate(mode='trilinear', align_corners=False)``) and the latents of the masked video
   (:func:`masked_video`; zeros, like the mask channels, when every pixel is generated).

Hence ``in_channels``: Control 48 (16 + 16 + 16), Control-Camera 32 (16 + 16), Wan2.2
Fun-Control with inpainting 52 (16 + 16 + 4 + 16), its camera model 36. The reference image of
``add_ref_conv`` models does not go here: it is the model's separate ``ref_latents`` input (one
latent frame, zeros when there is no reference image, as the pipelines pass it).
"""

from __future__ import annotations

import numpy as np

from composed_vi.errors import fail

TEMPORAL = 4  # Wan's VAE: 4 video frames per latent frame (the first alone)


def condition_channels(z_dim: int = 16, *, camera: bool = False, inpaint: bool = False,
                       temporal: int = TEMPORAL) -> int:
  """Channels of the condition :func:`fun_control_condition` builds (``in_channels - z``)."""
  return (0 if camera else z_dim) + (temporal + z_dim if inpaint else z_dim)


def masked_video(video, mask):
  """The pixels to encode for the inpainting layout's masked-video latents: ``video`` ``(T, H, W,
  3)`` where ``mask`` ``(T, H, W)`` (1 = generate) is below 0.5, zeros elsewhere."""
  video, mask = np.asarray(video, np.float32), np.asarray(mask, np.float32)
  if mask.shape != video.shape[:-1]:
    fail("mask", f"shape {video.shape[:-1]} (the video's frames and pixels)", mask.shape)
  return video * (mask < 0.5)[..., None]


def _linear_weights(size_in: int, size_out: int) -> np.ndarray:
  """``(size_out, size_in)`` weights of torch's linear interpolation, align_corners=False."""
  scale = size_in / size_out
  src = np.maximum(scale * (np.arange(size_out) + 0.5) - 0.5, 0.0)
  i0 = np.minimum(np.floor(src).astype(int), size_in - 1)
  i1 = np.where(i0 < size_in - 1, i0 + 1, i0)
  lam = src - i0
  w = np.zeros((size_out, size_in))
  np.add.at(w, (np.arange(size_out), i0), 1.0 - lam)
  np.add.at(w, (np.arange(size_out), i1), lam)
  return w


def inpaint_mask_latents(mask, latent_height: int, latent_width: int, *,
                         temporal: int = TEMPORAL) -> np.ndarray:
  """The inpainting layout's mask channels ``(T', h, w, r)`` float32 from a pixel mask ``(T, H,
  W)`` (1 = generate; binarised at 0.5 as the pipelines' mask processor does): ``1 - mask``,
  frame 0 repeated ``r`` times, ``r`` frames per latent frame on channels, then each channel
  resized to ``h x w`` bilinearly (torch ``align_corners=False``)."""
  m = np.asarray(mask, np.float32)
  if m.ndim != 3 or (m.shape[0] - 1) % temporal:
    fail("mask", f"(T, H, W) with T = 1 + {temporal} n", m.shape)
  keep = 1.0 - (m >= 0.5).astype(np.float64)
  keep = np.concatenate([np.repeat(keep[:1], temporal, axis=0), keep[1:]], axis=0)
  keep = keep.reshape(-1, temporal, *keep.shape[1:])  # (T', r, H, W)
  rows = _linear_weights(keep.shape[2], latent_height)
  cols = _linear_weights(keep.shape[3], latent_width)
  out = np.einsum("yh,trhw,xw->tyxr", rows, keep, cols)
  return out.astype(np.float32)


def first_frame_latents(image_latents, num_latent_frames: int) -> np.ndarray:
  """``(T', h, w, z)``: an image's latents ``(h, w, z)`` or ``(1, h, w, z)`` in latent frame 0,
  zeros elsewhere; all zeros when ``T' == 1`` (the pipelines only place it when the video has
  more than one latent frame)."""
  z = np.asarray(image_latents, np.float32)
  if z.ndim == 4 and z.shape[0] == 1:
    z = z[0]
  if z.ndim != 3:
    fail("start_image", "latents (h, w, z) or (1, h, w, z)", np.shape(image_latents))
  out = np.zeros((num_latent_frames, *z.shape), np.float32)
  if num_latent_frames > 1:
    out[0] = z
  return out


def _check_latents(field: str, value, shape) -> np.ndarray:
  arr = np.asarray(value, np.float32)
  if arr.shape != tuple(shape):
    fail(field, f"latents of shape {tuple(shape)} (the noise latents' grid)", arr.shape)
  return arr


def fun_control_condition(latent_shape, *, control=None, start_image=None, camera: bool = False,
                          inpaint: bool = False, mask=None, masked_video_latents=None,
                          in_channels: int | None = None, temporal: int = TEMPORAL,
                          ) -> np.ndarray:
  """The condition ``y`` ``(T', h, w, C)`` float32 that follows the noisy latents on channels.

  Args:
    latent_shape: ``(T', h, w, z)`` of the noisy latents.
    control: ``(T', h, w, z)`` control-video latents, or None (zeros). Refused with ``camera``.
    start_image: ``(h, w, z)`` / ``(1, h, w, z)`` latents of the first frame (plain layout), or
      None (zeros). Refused with ``inpaint`` (give the image as the masked video's frame 0).
    camera: a Control-Camera model: no control slot.
    inpaint: the inpainting layout (mask channels and masked-video latents, see the module).
    mask: ``(T, H, W)`` pixel mask (1 = generate) for ``inpaint``; None generates everything.
    masked_video_latents: ``(T', h, w, z)`` latents of :func:`masked_video`; required by
      ``inpaint`` unless every pixel is generated (mask all 1: the pipelines then use zeros).
    in_channels: the transformer's ``in_channels``, checked against ``z + C`` when given.
  """
  shape = tuple(int(s) for s in latent_shape)
  if len(shape) != 4 or min(shape) < 1:
    fail("latent_shape", "(T', h, w, z) positive sizes", latent_shape)
  t, h, w, z = shape
  parts = []
  if camera:
    if control is not None:
      fail("control", "None for a camera model (the camera enters through the control adapter; "
           "VideoX-Fun drops the control video when a camera is given)", "latents")
  else:
    parts.append(np.zeros(shape, np.float32) if control is None
                 else _check_latents("control", control, shape))
  if inpaint:
    if start_image is not None:
      fail("start_image", "None with inpaint=True (put the image in the masked video's frame 0)",
           "latents")
    # The pipelines test the raw mask for all-white (255), i.e. exactly 1 here.
    generate_all = mask is None or bool(np.all(np.asarray(mask) == 1))
    if generate_all:
      parts += [np.zeros((t, h, w, temporal), np.float32), np.zeros(shape, np.float32)]
    else:
      if masked_video_latents is None:
        fail("masked_video_latents", "the latents of masked_video(video, mask) when the mask "
             "keeps some pixels", None)
      keep = inpaint_mask_latents(mask, h, w, temporal=temporal)
      if keep.shape[0] != t:
        fail("mask", f"{1 + (t - 1) * temporal} frames ({t} latent frames)",
             np.shape(mask)[0])
      parts += [keep, _check_latents("masked_video_latents", masked_video_latents, shape)]
  else:
    if masked_video_latents is not None or mask is not None:
      fail("inpaint", "True when mask / masked_video_latents are given", inpaint)
    parts.append(np.zeros(shape, np.float32) if start_image is None
                 else first_frame_latents(start_image, t))
    if start_image is not None and parts[-1].shape != shape:
      fail("start_image", f"latents of shape {(h, w, z)}", np.shape(start_image))
  y = np.concatenate(parts, axis=-1)
  if in_channels is not None and in_channels != z + y.shape[-1]:
    layout = " + ".join(filter(None, [
        f"{z} noise", None if camera else f"{z} control",
        f"{temporal} mask + {z} masked video" if inpaint else f"{z} start image"]))
    fail("in_channels", f"{z + y.shape[-1]} ({layout}; camera={camera}, inpaint={inpaint})",
         in_channels)
  return y


__all__ = ("TEMPORAL", "condition_channels", "masked_video", "inpaint_mask_latents",
           "first_frame_latents", "fun_control_condition")
