"""The 3D-cache context of a real first frame (METHOD.md section 5) for latent-space backbones.

The first frame is lifted to 3D with its depth map and the camera path's first pose, splatted
into every frame of the path with a z-buffer (``world.controls.lift_and_splat``, the built-in
world's own 3D cache), VAE-encoded, and its visibility pooled to the latent grid: a latent cell
is visible only when every pixel it covers is (:func:`composed_vi.models.conditioning.latent_mask`
with ``mode='all'``), so holes and disocclusions never pin a latent. The context expert is then
``experts.Context(latents, sigma, visibility)``.

Depth comes from a file the user gives (:func:`read_depth`): camera depth along the optical axis
(``z``, not the ray length), in the camera path's units, 0 for no point.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from composed_vi.errors import fail
from composed_vi.lab.camera_file import CameraPath
from composed_vi.models import conditioning
from composed_vi.world import controls


class LatentContext(NamedTuple):
  """``latents``: ``(T', h, w, z_dim)`` normalised; ``visibility``: ``(T', h, w, 1)`` in {0, 1};
  ``pixels``: ``(T, H, W, 3)`` the splatted context in [-1, 1] (0 where unseen);
  ``pixel_visibility``: ``(T, H, W, 1)``."""

  latents: jnp.ndarray
  visibility: np.ndarray
  pixels: np.ndarray
  pixel_visibility: np.ndarray


def read_depth(path: str, *, height: int, width: int, scale: float = 1.0,
               field: str = "depth") -> np.ndarray:
  """``(height, width)`` float32 depth from ``.npy`` (float, any size) or a 16-bit / float
  image (PNG, TIFF), times ``scale``; resized by nearest neighbour (depth edges stay sharp)."""
  from PIL import Image, UnidentifiedImageError
  if not os.path.isfile(path):
    fail(field, "an existing depth file (.npy, 16-bit PNG or float TIFF)", path)
  if path.lower().endswith(".npy"):
    depth = np.load(path)
  else:
    try:
      with Image.open(path) as im:
        depth = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
      fail(field, "a depth image Pillow can read", f"{path}: {e}")
  depth = np.asarray(depth)
  if depth.ndim == 3 and depth.shape[-1] == 1:
    depth = depth[..., 0]
  if depth.ndim != 2:
    fail(field, "one channel (H, W)", f"shape {depth.shape} in {path}")
  depth = depth.astype(np.float32) * np.float32(scale)
  if not np.all(np.isfinite(depth)) or depth.min() < 0:
    fail(field, "finite depths >= 0 (0: no point)",
         f"range [{np.nanmin(depth):.3g}, {np.nanmax(depth):.3g}] in {path}")
  if depth.shape != (height, width):
    depth = np.asarray(Image.fromarray(depth, "F").resize((width, height),
                                                          Image.Resampling.NEAREST))
  return depth


def splat(image, depth, camera: CameraPath, *, supersample: int = 2):
  """``(context (T, H, W, 3), visibility (T, H, W, 1))`` of ``image`` ``(H, W, 3)`` lifted with
  ``depth`` ``(H, W)`` and rendered along ``camera`` (one intrinsic matrix for the path)."""
  image = np.asarray(image, np.float32)
  depth = np.asarray(depth, np.float32)
  if image.shape[:2] != (camera.height, camera.width) or image.shape[-1] != 3:
    fail("image", f"({camera.height}, {camera.width}, 3), the camera's size", image.shape)
  if depth.shape != image.shape[:2]:
    fail("depth", f"the image's size {image.shape[:2]}", depth.shape)
  k = camera.intrinsics
  if np.abs(k - k[:1]).max() > 1e-4 * np.abs(k[0]).max():
    fail("camera", "one intrinsic matrix for every frame (a zooming path is not supported)",
         "intrinsics that change along the path")
  ctx, vis = controls.lift_and_splat(jnp.asarray(image), jnp.asarray(depth),
                                     jnp.asarray(k[0]), jnp.asarray(camera.extrinsics),
                                     supersample)
  return np.array(ctx), np.array(vis)  # writable copies


def latent_context(vae, params, image, depth, camera: CameraPath, *,
                   supersample: int = 2) -> LatentContext:
  """The context in the VAE's latent space (see the module docstring)."""
  pixels, vis = splat(image, depth, camera, supersample=supersample)
  latents = conditioning.encode(vae, params, pixels)
  visibility = conditioning.latent_mask(vis[..., 0], temporal=vae.config.temporal_ratio,
                                        spatial=vae.config.spatial_ratio, mode="all")
  return LatentContext(latents, visibility, pixels, vis)
