"""diffusers ``AutoencoderKLWan`` weights -> our :class:`~composed_vi.models.wan.vae.WanVAE`.

The key table is derived from ``nnx.eval_shape`` of our model, whose modules carry diffusers'
names, so every one of our parameters has exactly one diffusers key. Conversion then checks the
other direction: every key of the state dict is used, with the shape the table expects.

Renames: ``kernel`` <-> ``weight``; a resampler's spatial conv ``resample`` <-> ``resample.1``
(the conv inside diffusers' ``nn.Sequential``). Layouts: Conv3d ``(O, I, t, h, w) -> (t, h, w,
I, O)``, Conv2d ``(O, I, h, w) -> (h, w, I, O)``, RMSNorm gamma ``(C, 1, 1[, 1]) -> (C,)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from composed_vi.models.wan.vae import WanVAE, WanVAEConfig

_TO_OURS = {  # diffusers layout -> ours, as a numpy transpose
    "conv3d": (2, 3, 4, 1, 0),
    "conv2d": (2, 3, 1, 0),
}


class KeyEntry(NamedTuple):
  """One row of the key table."""

  key: str  # diffusers state_dict key
  path: tuple  # our nnx.State path
  layout: str  # conv3d | conv2d | gamma | vector
  shape: tuple[int, ...]  # ours
  torch_shape: tuple[int, ...]  # diffusers'


def config_from_diffusers(config: Mapping[str, Any]) -> WanVAEConfig:
  """A diffusers ``AutoencoderKLWan`` config (dict or FrozenDict) -> :class:`WanVAEConfig`.

  Private entries (``_class_name``, ``_diffusers_version``, ...) are ignored; an unknown field
  raises ``ValueError`` naming it, since it could change the architecture.
  """
  fields = {f.name for f in dataclasses.fields(WanVAEConfig)}
  kwargs = {}
  for name, value in dict(config).items():
    if name.startswith("_"):
      continue
    if name not in fields:
      raise ValueError(f"AutoencoderKLWan config field {name!r} (= {value!r}) is not supported "
                       f"by the JAX port; known fields: {sorted(fields)}")
    kwargs[name] = tuple(value) if isinstance(value, (list, tuple)) else value
  return WanVAEConfig(**kwargs)


def _torch_key(path: tuple) -> str:
  parts = []
  for p in path:
    if p == "kernel":
      parts.append("weight")
    elif p == "resample":
      parts += ["resample", "1"]
    else:
      parts.append(str(p))
  return ".".join(parts)


def _layout(path: tuple, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
  """Layout kind and diffusers' shape of one of our parameters."""
  if path[-1] == "kernel" and len(shape) == 5:
    return "conv3d", tuple(shape[i] for i in (4, 3, 0, 1, 2))
  if path[-1] == "kernel" and len(shape) == 4:
    return "conv2d", tuple(shape[i] for i in (3, 2, 0, 1))
  if path[-1] == "gamma":
    # The attention block's norm acts on images (C, 1, 1); the others on videos (C, 1, 1, 1).
    return "gamma", shape + ((1, 1) if path[-2] == "norm" else (1, 1, 1))
  if len(shape) == 1:
    return "vector", shape
  raise RuntimeError(f"no layout rule for our parameter {path} of shape {shape}")


def key_table(config: WanVAEConfig) -> list[KeyEntry]:
  """Every parameter of our model (from ``nnx.eval_shape``) with its diffusers key and shapes."""
  abstract = WanVAE(config).abstract_params
  table, seen = [], {}
  for path, var in nnx.to_flat_state(abstract):
    shape = tuple(var.get_value().shape)
    layout, torch_shape = _layout(path, shape)
    key = _torch_key(path)
    if key in seen:
      raise RuntimeError(f"key table: {path} and {seen[key]} both map to {key!r}")
    seen[key] = path
    table.append(KeyEntry(key, path, layout, shape, torch_shape))
  return table


def expected_shapes(config: WanVAEConfig) -> dict[str, tuple[int, ...]]:
  """diffusers state_dict key -> diffusers shape, for every parameter of the model."""
  return {e.key: e.torch_shape for e in key_table(config)}


def convert_state_dict(config: WanVAEConfig, state_dict: Mapping[str, Any]) -> nnx.State:
  """A diffusers ``AutoencoderKLWan`` state dict (numpy-convertible values) -> our params.

  Raises ``ValueError`` naming the first missing key, the first key whose shape differs from
  the table (with both shapes) and the first key of the state dict that the table does not use.
  """
  table = key_table(config)
  values = {}
  for e in table:
    if e.key not in state_dict:
      raise ValueError(f"state_dict: missing key {e.key!r} (our {'/'.join(map(str, e.path))}, "
                       f"shape {e.torch_shape})")
    v = np.asarray(state_dict[e.key])
    if tuple(v.shape) != e.torch_shape:
      raise ValueError(f"state_dict[{e.key!r}]: expected shape {e.torch_shape} "
                       f"(ours {e.shape}), got {tuple(v.shape)}")
    if e.layout in _TO_OURS:
      v = v.transpose(_TO_OURS[e.layout])
    values[e.path] = jnp.asarray(v.reshape(e.shape), jnp.float32)
  used = {e.key for e in table}
  unused = [k for k in state_dict if k not in used]
  if unused:
    shape = tuple(np.shape(state_dict[unused[0]]))
    raise ValueError(f"state_dict: key {unused[0]!r} (shape {shape}) is not used by the key "
                     f"table ({len(unused)} unused keys)")
  abstract = WanVAE(config).abstract_params
  flat = [(path, var.replace(values[path])) for path, var in nnx.to_flat_state(abstract)]
  return nnx.from_flat_state(flat)


def from_diffusers(module, compiler_options=None) -> tuple[WanVAE, nnx.State]:
  """A diffusers ``AutoencoderKLWan`` (in memory) -> ``(WanVAE, params)`` in float32.

  ``compiler_options``: passed to :class:`~composed_vi.models.wan.vae.WanVAE`."""
  config = config_from_diffusers(module.config)
  state_dict = {k: v.detach().cpu().float().numpy() for k, v in module.state_dict().items()}
  return WanVAE(config, compiler_options), convert_state_dict(config, state_dict)
