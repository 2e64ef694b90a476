"""Tiny Wan backbones of the built-in world, each understanding ONE kind of control.

Each is the Wan DiT of ``third_party/wan`` at tiny size, working directly on RGB videos
``(T, H, W, 3)`` in [-1, 1] (the world's "latent" space: no VAE), trained by flow matching on
the same rectified-flow path as the engine (``experiments/train.py``):

| kind | control | how the DiT sees it |
|---|---|---|
| ``t2v`` | caption | text context (a frozen embedding table: the "text encoder") |
| ``i2v`` | first frame + caption | condition channels: the first frame at frame 0, a mask |
| ``sim2v`` | object simulation rendered alone (RGB + alpha) | condition channels (4) |
| ``cam2v`` | camera path (Pluecker rays) | condition channels (6); with ``camera_rope``
  also the rotary positions (2): where each pixel's empty-room point was seen in frame 0 |

Each of i2v, sim2v and cam2v gives back what its control specifies exactly
(:attr:`TinySpec.output_pin`, applied to the x0 prediction when sampling; training fits every
pixel). Backbones without text see an all-padding caption. A trained backbone is stored as
``<folder>/config.json`` + ``<folder>/params.npz`` (flat ``a.b.c`` keys), small enough to ship.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from composed_vi import io
from composed_vi.errors import check_choice, fail
from composed_vi.models import wan_expert
from composed_vi.models.wan import transformer as wan
from composed_vi.world import controls, dataset

KINDS = ("t2v", "i2v", "sim2v", "cam2v")
_CONDITION_CHANNELS = {"t2v": 0, "i2v": 4, "sim2v": 4, "cam2v": 6}
SKIP_INITS = ("zero", "copy")
_USES_TEXT = {"t2v": True, "i2v": True, "sim2v": False, "cam2v": False}


@dataclasses.dataclass(frozen=True)
class TinySpec:
  """Architecture of a tiny backbone (all fields are saved in ``config.json``)."""

  kind: str = "t2v"
  dim: int = 48  # heads * head_dim
  num_heads: int = 3
  num_layers: int = 3
  ffn_dim: int = 96
  patch_size: tuple = (2, 4, 4)
  text_dim: int = 32
  vocab_size: int = 64
  text_seed: int = 1234  # the frozen "text encoder" table
  # What the network predicts (composed_vi.models.wan_expert.PREDICTIONS). With 48 features per
  # token of 96 patch values the network cannot carry per-pixel detail, so the choice decides
  # how it fails (measured on i2v, ODE samples): "velocity" and the EDM-style "x0_precond" must
  # output the noise near t = 0 and their samples stayed noisy (x0_precond, 1200 steps:
  # first-frame L1 0.27); "x0" must reproduce x_t and its samples are blurry at the patch scale
  # but follow the controls (first-frame L1 0.09). "x0" is the default.
  prediction: str = "x0"
  sigma_data: float = 0.4  # root mean square of the world's videos in [-1, 1] (0.39 measured)
  # cam2v only: rotary positions that follow the camera (WanConfig.rope_position_channels):
  # a token's (height, width) position is where its point of the empty room was seen in the
  # first frame (world.controls.first_frame_coordinates), so tokens that see one point of the
  # room share one position, as they do under a static camera. False: Wan's grid positions.
  camera_rope: bool = False
  # A zero-initialised linear path from the condition channels to the output patch
  # (WanConfig.condition_skip), so that the i2v backbone can copy its first frame and sim2v the
  # simulated objects' pixels past the output LayerNorm. Not for t2v (no condition).
  condition_skip: bool = False
  # How the skip starts: "zero" (ControlNet's, the model starts as Wan's) or "copy" (i2v and
  # sim2v, whose condition's first three channels are RGB on the video's own scale: each output
  # pixel starts as its condition pixel's RGB, the first frame or the simulated objects, 0
  # where the condition is empty). Measured with "zero" (i2v, 2000 steps of Adam at 1e-3): the
  # skip's copy weights reached 0.35 of 1, each weight moving about the learning rate per step.
  condition_skip_init: str = "zero"
  # i2v and sim2v: the prediction of x0 is composited with the control where the control gives
  # the pixels exactly, ``x0 = a c + (1 - a) x0_net`` (premultiplied: see :func:`output_pin`),
  # so that the backbone reproduces its own control: the first frame (i2v, ``a`` = the
  # first-frame mask; Wan2.2 TI2V replaces its first frame's latents the same way) and the
  # simulated objects' pixels (sim2v, ``a`` = their coverage, the alpha of the rendering).
  # cam2v, whose control gives no pixels but the motion of every pixel of the room: frames
  # 1.. are its own frame 0 carried along the camera path, ``x0[t] = v warp(x0[0]) + (1 - v)
  # x0_net[t]``, where ``warp`` samples frame 0 at the point of the (fixed, empty) room each
  # pixel sees and ``v`` says that point was inside frame 0 (:func:`camera_warp`): what a
  # render-and-inpaint camera model does with a 3D cache of its own first frame; the network
  # fills what the first frame did not see. Training fits every pixel with or without it (the
  # network learns the whole video, so the pin can be switched off to measure what it
  # learned); t2v has none. Measured without it (8 held-out scenes, 2000 steps): i2v
  # first-frame L1 0.053, sim2v object L1 0.128, cam2v camera following 0.020.
  output_pin: bool = True

  def wan_config(self) -> wan.WanConfig:
    check_choice("kind", self.kind, KINDS)
    check_choice("condition_skip_init", self.condition_skip_init, SKIP_INITS)
    if self.condition_skip_init == "copy" and (not self.condition_skip
                                               or self.kind not in ("i2v", "sim2v")):
      fail("condition_skip_init", "'zero' unless condition_skip is set and kind is 'i2v' or "
           "'sim2v' (an RGB condition)", f"'copy' (kind {self.kind!r}, condition_skip "
           f"{self.condition_skip})")
    if self.camera_rope and self.kind != "cam2v":
      fail("camera_rope", "False unless kind is 'cam2v' (it reads the camera path)", True)
    extra = 2 if self.camera_rope else 0
    return wan.WanConfig(
        patch_size=tuple(self.patch_size), num_attention_heads=self.num_heads,
        attention_head_dim=self.dim // self.num_heads,
        in_channels=3 + _CONDITION_CHANNELS[self.kind] + extra, out_channels=3,
        text_dim=self.text_dim, freq_dim=32, ffn_dim=self.ffn_dim, num_layers=self.num_layers,
        rope_max_seq_len=64, rope_position_channels=extra, condition_skip=self.condition_skip)

  def text_table(self) -> np.ndarray:
    rng = np.random.default_rng(self.text_seed)
    table = rng.standard_normal((self.vocab_size, self.text_dim)).astype(np.float32)
    table[0] = 0.0  # token 0 is padding
    return table


def text_context(spec: TinySpec, tokens) -> jax.Array:
  """``(L,)`` or ``(B, L)`` int tokens -> frozen embeddings; all padding without text."""
  tokens = jnp.asarray(tokens)
  if not _USES_TEXT[spec.kind]:
    tokens = jnp.zeros_like(tokens)
  return jnp.asarray(spec.text_table())[tokens]


def condition(spec: TinySpec, example: dataset.Example):
  """The condition channels ``(..., T, H, W, C_cond)`` of a world example (or a batch)."""
  if spec.kind == "t2v":
    return None
  if spec.kind == "i2v":
    video = example.video
    first = example.first_frame
    frame0 = jnp.zeros(video.shape, jnp.float32)
    frame0 = frame0.at[..., 0, :, :, :].set(first)
    mask = jnp.zeros(video.shape[:-1] + (1,), jnp.float32).at[..., 0, :, :, :].set(1.0)
    return jnp.concatenate([frame0, mask], axis=-1)
  if spec.kind == "sim2v":
    return jnp.asarray(example.sim_rgba, jnp.float32)
  plucker = jnp.asarray(example.plucker, jnp.float32)
  if not spec.camera_rope:
    return plucker
  intr = jnp.asarray(example.intrinsics, jnp.float32)
  extr = jnp.asarray(example.extrinsics, jnp.float32)
  height, width = plucker.shape[-3], plucker.shape[-2]
  one = lambda k, e: controls.first_frame_coordinates(k, e, height, width)  # noqa: E731
  batch = extr.shape[:-3]
  coords = jax.vmap(one)(intr.reshape(-1, 3, 3), extr.reshape((-1,) + extr.shape[-3:]))
  return jnp.concatenate([plucker, coords.reshape(batch + coords.shape[1:])], axis=-1)


def output_pin(spec: TinySpec, example: dataset.Example):
  """``(pin, value)`` of the backbone's output composite, ``x0 = value + (1 - pin) x0_net``
  (``pin`` ``(T, H, W, 1)`` in [0, 1], ``value`` ``(T, H, W, 3)`` premultiplied on the
  video's [-1, 1] scale), or ``None`` when the spec has none.

  i2v: ``pin`` is 1 on frame 0 and ``value`` the first frame. sim2v: the rendering of the
  objects alone is premultiplied ``P`` ([0, 1]) with coverage ``a``; a pixel of the video is
  ``2 (P + (1 - a) B) - 1 = (2 P - a) + (1 - a) (2 B - 1)`` for the background ``B`` behind it,
  so ``pin = a`` and ``value = 2 P - a`` (the example's signed ``2 P - 1``, plus ``1 - a``).
  Exact wherever nothing the simulation does not know (an unsimulated object) passes in front
  of a simulated one.
  """
  if not spec.output_pin or spec.kind not in ("i2v", "sim2v"):
    return None
  if spec.kind == "i2v":  # its condition is the first frame on frame 0 (zeros after) + mask
    cond = condition(spec, example)
    return cond[..., 3:], cond[..., :3]
  rgba = jnp.asarray(example.sim_rgba, jnp.float32)
  alpha = rgba[..., 3:]
  return alpha, rgba[..., :3] + 1.0 - alpha


def camera_warp(spec: TinySpec, example: dataset.Example):
  """``(index, weights, valid)`` of the cam2v output warp (:attr:`TinySpec.output_pin`), or
  ``None`` when the spec has none: frame ``t``'s pixel is the bilinear sample
  ``sum_k weights[..., k] frame0.reshape(H * W, C)[index[..., k]]`` where ``valid`` is 1
  (``index``, ``weights``: ``(T, H, W, 4)``; ``valid``: ``(T, H, W, 1)``, 0 on frame 0)."""
  if not spec.output_pin or spec.kind != "cam2v":
    return None
  extr = np.asarray(example.extrinsics, np.float32)
  height, width = np.asarray(example.video).shape[-3:-1]
  coords, valid = controls.first_frame_coordinates(
      jnp.asarray(example.intrinsics, jnp.float32), jnp.asarray(extr), height, width,
      with_valid=True)
  # coordinates put pixel centres at k + 0.5: bilinear weights between the centres around
  pos = np.asarray(coords, np.float32) - 0.5
  lo = np.floor(pos)
  frac = pos - lo
  index, weights = [], []
  for dv in (0, 1):
    for du in (0, 1):
      v = np.clip(lo[..., 0] + dv, 0, height - 1).astype(np.int32)
      u = np.clip(lo[..., 1] + du, 0, width - 1).astype(np.int32)
      index.append(v * width + u)
      weights.append((frac[..., 0] if dv else 1 - frac[..., 0])
                     * (frac[..., 1] if du else 1 - frac[..., 1]))
  valid = np.asarray(valid, np.float32)[..., None]
  valid[0] = 0.0
  return (np.stack(index, -1).astype(np.int32), np.stack(weights, -1).astype(np.float32),
          valid)


def init_params(spec: TinySpec, seed: int = 0) -> nnx.State:
  config = spec.wan_config()
  model = wan.init_model(config, nnx.Rngs(seed))
  if spec.condition_skip_init == "copy":
    model.condition_skip[...] = jnp.asarray(copy_skip(config))
  return nnx.split(model)[1]


def copy_skip(config: wan.WanConfig) -> np.ndarray:
  """The condition skip that adds each pixel's first ``out_dim`` condition channels to its
  output (the skip's rows and columns are patch-major, channel-minor)."""
  npatch, cc, co = math.prod(config.patch_size), config.condition_channels, config.out_dim
  skip = np.zeros((npatch * cc, npatch * co), np.float32)
  for p in range(npatch):
    skip[p * cc + np.arange(co), p * co + np.arange(co)] = 1.0
  return skip


def model_fn(spec: TinySpec, **kwargs):
  return wan.make_model_fn(spec.wan_config(), **kwargs)


def save(folder: str, spec: TinySpec, params: nnx.State, extra: dict | None = None) -> None:
  """Writes ``config.json`` and ``params.npz`` atomically."""
  flat = {".".join(str(p) for p in path): np.asarray(v.get_value())
          for path, v in nnx.to_flat_state(params)}
  io.write_npz(os.path.join(folder, "params.npz"), **flat)
  io.write_json(os.path.join(folder, "config.json"),
                dict(spec=dataclasses.asdict(spec), **(extra or {})))


def load(folder: str) -> tuple[TinySpec, nnx.State]:
  """``(spec, params)`` of a saved tiny backbone; names the missing file or parameter."""
  for name in ("config.json", "params.npz"):
    if not os.path.isfile(os.path.join(folder, name)):
      fail("backbone", f"a folder with {name} (train it with experiments/train.py)", folder)
  with open(os.path.join(folder, "config.json")) as f:
    meta = json.load(f)
  spec_dict = dict(meta["spec"])
  spec_dict["patch_size"] = tuple(spec_dict["patch_size"])
  spec = TinySpec(**spec_dict)
  _, abstract = wan.split_abstract(spec.wan_config())
  with np.load(os.path.join(folder, "params.npz")) as data:
    flat = []
    for path, var in nnx.to_flat_state(abstract):
      key = ".".join(str(p) for p in path)
      if key not in data.files:
        fail("backbone", f"params.npz with parameter {key}", folder)
      value = data[key]
      if tuple(value.shape) != tuple(var.get_value().shape):
        fail(f"backbone[{key}]", f"shape {tuple(var.get_value().shape)}", value.shape)
      flat.append((path, var.replace(value=jnp.asarray(value))))
  return spec, nnx.from_flat_state(flat)


def expert(spec: TinySpec, params, example: dataset.Example, *, guidance_scale: float = 1.0,
           support=None, fn=None):
  """A :class:`composed_vi.models.wan_expert.WanExpert` conditioned on one world example."""
  shape = tuple(example.video.shape)
  tokens = example.caption_tokens
  negative = np.zeros_like(np.asarray(tokens)) if guidance_scale != 1.0 else None
  pin = output_pin(spec, example)
  return wan_expert.make_expert(
      spec.wan_config(), shape, params=params, model_fn=fn or model_fn(spec),
      context=np.asarray(text_context(spec, tokens)),
      negative_context=None if negative is None else np.asarray(text_context(spec, negative)),
      condition=None if spec.kind == "t2v" else np.asarray(condition(spec, example)),
      guidance_scale=guidance_scale, support=support, field=f"backbones.{spec.kind}",
      prediction=spec.prediction, sigma_data=spec.sigma_data,
      pin=None if pin is None else np.asarray(pin[0]),
      pin_value=None if pin is None else np.asarray(pin[1]), warp=camera_warp(spec, example))
