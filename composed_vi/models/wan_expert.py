"""Wan-family backbones as experts of the engine (flow-matching velocity in our latent layout).

Wan is trained on the same rectified-flow path as ours (``x_t = (1 - t) x0 + t eps``, velocity
``eps - x0``) with the model's timestep ``1000 t``, so the expert's velocity is the network's
output. The scheduler's time shift is a property of the level schedule
(``sampler.shift``: Wan uses 3.0 at 480p and 5.0 at 720p). Conditioning inputs (UMT5 text
embeddings, CLIP image embeddings, VAE latents of the first frame or a control video) are
computed once, outside the sampling loop, and given as arrays or ``.npy`` files.

Latents are channels-last ``(F, H, W, C)`` per particle; a batch of particles is ``(N, F, H, W,
C)``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi import paths, pytree
from composed_vi.errors import check_choice, check_finite, check_positive_float, fail
from composed_vi.experts import Expert

#: What a network may predict (``WanExpert.prediction``).
PREDICTIONS = ("velocity", "x0", "x0_precond")

NUM_TRAIN_TIMESTEPS = 1000


@pytree.dataclass
class WanExpert(Expert):
  """A Wan DiT (or the Wan2.2 pair of DiTs) as an expert.

  Attributes:
    params: parameters of the (high-noise) transformer.
    context: text embeddings ``(L, text_dim)``.
    negative_context: embeddings of the negative prompt for classifier-free guidance.
    context_image: CLIP image embeddings ``(L_img, image_dim)`` (I2V models).
    condition: latents concatenated to the particles on channels ``(F, H, W, C_cond)``: Wan
      I2V's mask + first-frame latents, or Fun-Control's control latents.
    control: VACE control latents ``(F', H', W', vace_in_channels)``.
    control_scale: VACE's per-layer scale (scalar).
    params_low: the low-noise transformer of Wan2.2 A14B (used for ``t < boundary``).
    model_fn: ``fn(params, x, t, context, context_image, control, control_scale)``,
      channels-last (``composed_vi.models.wan.transformer.make_model_fn``).
    model_fn_low: the low-noise transformer's function (defaults to ``model_fn``).
    event_shape: the latent shape ``(F, H, W, C)``.
    guidance_scale: CFG scale (1: no guidance, one forward).
    boundary: Wan2.2's switch level (``boundary_ratio``; 0 keeps the high-noise model).
  """

  params: Any
  context: jax.Array
  negative_context: Any = None
  context_image: Any = None
  condition: Any = None
  control: Any = None
  control_scale: Any = None
  #: VideoX-Fun Control-Camera: the Pluecker input ``(F', H, W, 24)`` of the control adapter.
  control_camera: Any = None
  #: VideoX-Fun ``add_ref_conv`` models: the reference image's latents ``(h, w, z)``.
  ref_latents: Any = None
  params_low: Any = None
  support: Any = None
  model_fn: Callable = pytree.field(pytree_node=False, default=None)
  model_fn_low: Callable = pytree.field(pytree_node=False, default=None)
  event_shape: tuple = pytree.field(pytree_node=False, default=())
  guidance_scale: float = pytree.field(pytree_node=False, default=1.0)
  #: Wan2.2 A14B: the low-noise transformer's own CFG scale (``None``: ``guidance_scale``).
  guidance_scale_low: Any = pytree.field(pytree_node=False, default=None)
  boundary: float = pytree.field(pytree_node=False, default=0.0)
  #: what the network predicts: "velocity" (Wan), "x0" (converted: ``v = (x - x0) / t``) or
  #: "x0_precond" (``x0 = c_skip x + c_out F``, :func:`composed_vi.paths.preconditioning`).
  prediction: str = pytree.field(pytree_node=False, default="velocity")
  #: data standard deviation of the "x0_precond" parameterisation.
  sigma_data: float = pytree.field(pytree_node=False, default=0.5)
  #: an output composite ``x0 = pin_value + (1 - pin) x0_net`` where a control gives the
  #: pixels exactly (``pin`` ``(F, H, W, 1)`` in [0, 1], ``pin_value`` ``(F, H, W, C)``
  #: premultiplied; e.g. Wan2.2 TI2V's clean first frame); ``None``: no pin.
  pin: Any = None
  pin_value: Any = None
  #: an output warp of frame 0 onto the later frames where a control gives every pixel's
  #: motion (the tiny world's camera backbone): ``(index, weights, valid)``, frame ``f``'s
  #: ``x0 = valid sum_k weights_k x0[0].reshape(H W, C)[index_k] + (1 - valid) x0``
  #: (``index``, ``weights`` ``(F, H, W, K)``, ``valid`` ``(F, H, W, 1)``); ``None``: none.
  warp: Any = None

  @property
  def shape(self):
    return tuple(int(s) for s in self.event_shape)

  def _forward(self, fn, params, x, t, scale=None):
    scale = self.guidance_scale if scale is None else scale
    n = x.shape[0]
    if self.condition is not None:
      cond = jnp.broadcast_to(self.condition, (n,) + self.condition.shape).astype(x.dtype)
      x = jnp.concatenate([x, cond], axis=-1)

    def batch(a):
      return None if a is None else jnp.broadcast_to(a, (n,) + a.shape)

    ctx = batch(self.context)
    img = batch(self.context_image)
    ctrl = batch(self.control)
    extra = {k: batch(v) for k, v in (("control_camera", self.control_camera),
                                      ("ref_latents", self.ref_latents)) if v is not None}
    guided = scale != 1.0 and self.negative_context is not None
    if guided:  # conditional and unconditional in one batch of 2N
      twice = lambda a: None if a is None else jnp.concatenate([a, a])  # noqa: E731
      x = twice(x)
      ctx = jnp.concatenate([ctx, batch(self.negative_context)])
      img, ctrl = twice(img), twice(ctrl)
      extra = {k: twice(v) for k, v in extra.items()}
    timestep = jnp.full((x.shape[0],), NUM_TRAIN_TIMESTEPS, jnp.float32) * t
    out = fn(params, x, timestep, ctx, img, ctrl, self.control_scale, **extra
             ).astype(jnp.float32)
    if guided:
      vc, vu = out[:n], out[n:]
      out = vu + scale * (vc - vu)
    return out

  def velocity(self, x, t):
    if self.params_low is None or self.boundary <= 0:
      out = self._forward(self.model_fn, self.params, x, t)
    else:
      low_fn = self.model_fn_low or self.model_fn
      out = jax.lax.cond(t >= self.boundary,
                         lambda: self._forward(self.model_fn, self.params, x, t),
                         lambda: self._forward(low_fn, self.params_low, x, t,
                                               self.guidance_scale_low))
    x = x.astype(jnp.float32)
    if self.prediction == "x0_precond":
      out = paths.velocity_from_preconditioned(x, t, out, self.sigma_data)
    if self.pin is None and self.warp is None:
      # x_t = (1 - t) x0 + t eps  =>  v = eps - x0 = (x_t - x0) / t
      return (x - out) / jnp.maximum(t, 1e-4) if self.prediction == "x0" else out
    x0 = out if self.prediction == "x0" else x - t * out
    if self.pin is not None:
      x0 = self.pin_value + (1.0 - self.pin) * x0
    if self.warp is not None:
      index, weights, valid = self.warp
      first = x0[:, 0].reshape(x0.shape[0], -1, x0.shape[-1])
      warped = jnp.sum(first[:, index] * weights[..., None], axis=-2)
      x0 = valid * warped + (1.0 - valid) * x0
    return (x - x0) / jnp.maximum(t, 1e-4)


def load_array(field: str, value, ndim: int | None = None) -> np.ndarray | None:
  """An array given inline or as an ``.npy`` path (``''`` / ``None``: absent), checked finite."""
  if value is None or (isinstance(value, str) and not value):
    return None
  if isinstance(value, str):
    if not os.path.isfile(value):
      fail(field, "an existing .npy file", value)
    try:
      value = np.load(value, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - unreadable input is a user error
      fail(field, "a readable .npy file", f"{value} ({type(e).__name__})")
  arr = np.asarray(value, np.float32)
  if ndim is not None and arr.ndim == ndim + 1 and arr.shape[0] == 1:
    arr = arr[0]  # a leading batch of one, as pipelines save it
  if ndim is not None and arr.ndim != ndim:
    fail(field, f"an array with {ndim} dimensions", f"shape {arr.shape}")
  check_finite(field, arr)
  return arr


def make_expert(config, latent_shape, *, params, model_fn, context, negative_context=None,
                context_image=None, condition=None, control=None, control_scale=1.0,
                guidance_scale=1.0, params_low=None, model_fn_low=None, boundary=0.0,
                guidance_scale_low=None, control_camera=None, ref_latents=None,
                support=None, field: str = "backbone", prediction: str = "velocity",
                sigma_data: float = 0.5, pin=None, pin_value=None, warp=None,
                ) -> WanExpert:
  """Validates the conditioning against the model's ``WanConfig`` and builds a :class:`WanExpert`.

  Every error names ``field`` and the offending input.
  """
  shape = tuple(int(s) for s in latent_shape)
  if len(shape) != 4:
    fail(f"{field}.latent_shape", "(frames, height, width, channels)", shape)
  f, h, w, c = shape
  pt, ph, pw = config.patch_size
  if f % pt or h % ph or w % pw:
    fail(f"{field}.latent_shape", f"frames, height, width divisible by the patch "
         f"{config.patch_size}", shape)
  if c != config.out_dim:
    fail(f"{field}.latent_shape", f"{config.out_dim} channels (the model's out_channels)", c)
  context = load_array(f"{field}.text_embeddings", context, ndim=2)
  if context is None:
    fail(f"{field}.text_embeddings", "text embeddings (L, text_dim) or an .npy path", None)
  if context.shape[-1] != config.text_dim:
    fail(f"{field}.text_embeddings", f"last dimension {config.text_dim} (text_dim)",
         context.shape)
  negative = load_array(f"{field}.negative_embeddings", negative_context, ndim=2)
  if negative is not None and negative.shape[-1] != config.text_dim:
    fail(f"{field}.negative_embeddings", f"last dimension {config.text_dim}", negative.shape)
  if negative is not None and negative.shape != context.shape:
    # One batch for both branches: pad the shorter with zeros, as the UMT5 pipelines do.
    length = max(negative.shape[0], context.shape[0])
    context = np.pad(context, ((0, length - context.shape[0]), (0, 0)))
    negative = np.pad(negative, ((0, length - negative.shape[0]), (0, 0)))
  check_positive_float(f"{field}.guidance_scale", guidance_scale)
  if guidance_scale_low is not None:
    check_positive_float(f"{field}.guidance_scale_low", guidance_scale_low)
  if (guidance_scale != 1.0 or (guidance_scale_low or 1.0) != 1.0) and negative is None:
    fail(f"{field}.negative_embeddings", "negative prompt embeddings when guidance_scale != 1",
         None)
  image = load_array(f"{field}.image_embeddings", context_image, ndim=2)
  if (image is None) != (config.image_dim is None):
    fail(f"{field}.image_embeddings",
         "image embeddings" if config.image_dim else "none (the model has no image_dim)",
         None if image is None else image.shape)
  if image is not None and image.shape[-1] != config.image_dim:
    fail(f"{field}.image_embeddings", f"last dimension {config.image_dim}", image.shape)
  cond = load_array(f"{field}.condition_latents", condition, ndim=4)
  extra = config.in_channels - c
  if (cond is None and extra) or (cond is not None and cond.shape != (f, h, w, extra)):
    fail(f"{field}.condition_latents", f"latents of shape {(f, h, w, extra)} (in_channels "
         f"{config.in_channels} minus {c})", None if cond is None else cond.shape)
  ctrl = load_array(f"{field}.control_latents", control, ndim=4)
  if (ctrl is None) != (not config.is_vace):
    fail(f"{field}.control_latents", "VACE control latents" if config.is_vace else
         "none (not a VACE model)", None if ctrl is None else ctrl.shape)
  if ctrl is not None and ctrl.shape[-1] != config.vace_in_channels:
    fail(f"{field}.control_latents", f"{config.vace_in_channels} channels", ctrl.shape)
  camera = load_array(f"{field}.control_camera", control_camera, ndim=4)
  adapter = getattr(config, "control_adapter_in_dim", None)
  if (camera is None) != (adapter is None):
    fail(f"{field}.control_camera", "the Pluecker input (F', H, W, "
         f"{adapter}) of the control adapter" if adapter else "none (no control adapter)",
         None if camera is None else camera.shape)
  if camera is not None:
    down = config.control_adapter_downscale
    want = (f, h * down, w * down, adapter)
    if camera.shape != want:
      fail(f"{field}.control_camera", f"shape {want} (latent frames, pixels, channels)",
           camera.shape)
  ref = load_array(f"{field}.ref_latents", ref_latents, ndim=3)
  ref_dim = getattr(config, "ref_conv_in_dim", None)
  if ref is not None and (ref_dim is None or ref.shape != (h, w, ref_dim)):
    fail(f"{field}.ref_latents", f"latents of shape {(h, w, ref_dim)}" if ref_dim else
         "none (no reference conv)", ref.shape)
  pin = load_array(f"{field}.pin", pin, ndim=4)
  pin_value = load_array(f"{field}.pin_value", pin_value, ndim=4)
  if (pin is None) != (pin_value is None):
    fail(f"{field}.pin_value" if pin_value is None else f"{field}.pin",
         "pin and pin_value given together", "only one of them")
  if pin is not None:
    if pin.shape != (f, h, w, 1):
      fail(f"{field}.pin", f"shape {(f, h, w, 1)}", pin.shape)
    if pin_value.shape != shape:
      fail(f"{field}.pin_value", f"shape {shape} (the latent shape)", pin_value.shape)
    if pin.min() < 0 or pin.max() > 1:
      fail(f"{field}.pin", "values in [0, 1]", f"[{pin.min()}, {pin.max()}]")
  if warp is not None:
    if len(warp) != 3:
      fail(f"{field}.warp", "(index, weights, valid)", f"{len(warp)} arrays")
    index, weights, valid = (np.asarray(a) for a in warp)
    k = index.shape[-1] if index.ndim == 4 else None
    if index.shape != (f, h, w, k) or weights.shape != index.shape:
      fail(f"{field}.warp", f"index and weights of shape {(f, h, w, 'K')}",
           f"{index.shape} and {weights.shape}")
    if valid.shape != (f, h, w, 1):
      fail(f"{field}.warp", f"valid of shape {(f, h, w, 1)}", valid.shape)
    if index.min() < 0 or index.max() >= h * w:
      fail(f"{field}.warp", f"indices into the {h * w} pixels of frame 0",
           f"[{index.min()}, {index.max()}]")
    warp = (jnp.asarray(index, jnp.int32), jnp.asarray(weights, jnp.float32),
            jnp.asarray(valid, jnp.float32))
  if not 0 <= boundary < 1:
    fail(f"{field}.boundary", "a level in [0, 1)", boundary)
  if boundary > 0 and params_low is None:
    fail(f"{field}.low_noise_checkpoint", "a second transformer when boundary > 0", None)
  return WanExpert(
      params=params, context=jnp.asarray(context),
      negative_context=None if negative is None else jnp.asarray(negative),
      context_image=None if image is None else jnp.asarray(image),
      condition=None if cond is None else jnp.asarray(cond),
      control=None if ctrl is None else jnp.asarray(ctrl),
      control_scale=None if ctrl is None else jnp.asarray(control_scale, jnp.float32),
      control_camera=None if camera is None else jnp.asarray(camera),
      ref_latents=None if ref is None else jnp.asarray(ref),
      params_low=params_low, support=support, model_fn=model_fn, model_fn_low=model_fn_low,
      event_shape=shape, guidance_scale=float(guidance_scale), boundary=float(boundary),
      guidance_scale_low=None if guidance_scale_low is None else float(guidance_scale_low),
      prediction=check_choice(f"{field}.prediction", prediction, PREDICTIONS),
      sigma_data=check_positive_float(f"{field}.sigma_data", sigma_data),
      pin=None if pin is None else jnp.asarray(pin),
      pin_value=None if pin_value is None else jnp.asarray(pin_value), warp=warp)
