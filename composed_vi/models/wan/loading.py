"""Loading diffusers-format Wan checkpoint folders into our JAX models, without torch.

``load_transformer(directory)`` and ``load_vae(directory)`` read ``config.json`` and the
``*.safetensors`` files (memory-mapped, bfloat16 kept as is: no host copy), check every tensor's
name and shape against the key table validated by ``nnx.eval_shape`` of our model *before*
reading any data (the first offending key is named), and place each parameter directly with its
target sharding: with a ``mesh``, every device reads only its slice of the mapped file
(``jax.make_array_from_callback``).

Checkpoints in Wan's original layout (the Wan2.1 / Wan2.2 / VideoX-Fun ``WanModel`` config and
tensor names, the original VAE's names) load through the same path: :mod:`original_layout`
translates the config and renames the tensors (names only, the views stay memory-mapped).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from composed_vi.models.wan import (
  convert_transformer,
  convert_vae,
  original_layout,
  safetensors_io,
  sharding,
)
from composed_vi.models.wan import transformer as wan
from composed_vi.models.wan import vae as wan_vae

TRANSFORMER_CLASSES = ("WanTransformer3DModel", "WanVACETransformer3DModel")
VAE_CLASSES = ("AutoencoderKLWan",)


@dataclasses.dataclass
class LoadedTransformer:
  config: wan.WanConfig
  params: nnx.State
  model_fn: Callable  # jitted fn(params, x (B,F,H,W,C), t, context, context_image, control, ...)
  diffusers_config: dict


def _place(view: np.ndarray, layout: Callable, shape, dtype, target) -> jax.Array:
  arr = layout(view)  # a transposed view of the memory map: nothing is read yet
  if tuple(arr.shape) != tuple(shape):
    raise ValueError(f"internal: layout gives {arr.shape}, expected {shape}")
  if target is None:
    return jnp.asarray(arr if dtype is None else arr.astype(dtype))

  def slice_of(index):
    part = np.asarray(arr[index])
    return part if dtype is None else part.astype(dtype)

  return jax.make_array_from_callback(tuple(shape), target, slice_of)


def _check_class(config: dict, expected, directory: str) -> None:
  name = config.get("_class_name")
  if name is not None and name not in expected:
    raise safetensors_io.CheckpointError(
        f"{directory}/config.json: expected _class_name in {list(expected)}, got {name!r}")


def load_transformer(directory: str, *, dtype=None, compute_dtype=jnp.bfloat16, mesh=None,
                     **model_kwargs) -> LoadedTransformer:
  """A Wan (or VACE) DiT from a diffusers or original-layout folder.

  Args:
    directory: folder with ``config.json`` and ``*.safetensors`` (sharded with an index or not),
      in diffusers' layout or Wan's original one (``WanModel`` / ``VaceWanModel``).
    dtype: parameter dtype (``None`` keeps the checkpoint's, e.g. bfloat16).
    compute_dtype: the model's activation dtype.
    mesh: optional ``("data", "model")`` mesh; parameters get :mod:`sharding`'s rules.
    model_kwargs: ``WanTransformer`` options (remat, attention_impl, ...).
  """
  diff_config, tensors = safetensors_io.open_folder(directory)
  diff_config, tensors, names = original_layout.transformer_as_diffusers(diff_config, tensors)
  _check_class(diff_config, TRANSFORMER_CLASSES, directory)
  config = wan.config_from_diffusers(diff_config)
  # Names and shapes only: raises on the first unknown, missing or mis-shaped key.
  with original_layout.original_names(names):
    table = convert_transformer.validate_key_table(
        config, {k: v.shape for k, v in tensors.items()})
  _, abstract = wan.split_abstract(config)
  shapes = {tuple(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(abstract)}
  targets = sharding.param_sharding(shapes, mesh) if mesh is not None else {}
  values = {}
  for key, (path, layout) in table.items():
    values[path] = _place(tensors[key], convert_transformer._LAYOUTS[layout], shapes[path],
                          dtype, targets.get(path))
  flat = [(p, v.replace(value=values[tuple(p)])) for p, v in nnx.to_flat_state(abstract)]
  params = nnx.from_flat_state(flat)
  model_fn = wan.make_model_fn(config, dtype=compute_dtype, **model_kwargs)
  return LoadedTransformer(config, params, model_fn, diff_config)


def load_vae(directory: str, *, dtype=np.float32, mesh=None, compiler_options=None):
  """``(WanVAE, params)`` from a diffusers ``AutoencoderKLWan`` folder (float32 by default).

  ``directory`` may also hold the original Wan2.1 VAE's tensors (``Wan2.1_VAE.pth`` converted to
  safetensors; ``config.json`` optional, Wan2.1's VAE without one) or be that one file.
  The VAE is small (about 127M parameters): with a mesh its parameters are replicated.
  """
  diff_config, tensors = original_layout.open_vae(directory)
  diff_config, tensors, names = original_layout.vae_as_diffusers(diff_config, tensors)
  _check_class(diff_config, VAE_CLASSES, directory)
  config = convert_vae.config_from_diffusers(diff_config)
  table = convert_vae.key_table(config)
  used = set()
  with original_layout.original_names(names):
    for e in table:  # names and shapes first
      if e.key not in tensors:
        raise ValueError(f"{directory}: missing tensor {e.key!r} (shape {e.torch_shape})")
      if tuple(tensors[e.key].shape) != e.torch_shape:
        raise ValueError(f"{directory}: tensor {e.key!r} has shape "
                         f"{tuple(tensors[e.key].shape)}, expected {e.torch_shape}")
      used.add(e.key)
    unused = sorted(set(tensors) - used)
    if unused:
      raise ValueError(f"{directory}: tensor {unused[0]!r} is not used by the VAE key table "
                       f"({len(unused)} unused)")
  target = NamedSharding(mesh, jax.sharding.PartitionSpec()) if mesh is not None else None
  model = wan_vae.WanVAE(config, compiler_options)
  values = {}
  for e in table:
    axes = convert_vae._TO_OURS.get(e.layout)  # the key table's own transposes

    def reshape(a, axes=axes, shape=e.shape):
      return (a if axes is None else a.transpose(axes)).reshape(shape)

    values[e.path] = _place(tensors[e.key], reshape, e.shape, dtype, target)
  flat = [(p, v.replace(values[tuple(p)])) for p, v in nnx.to_flat_state(model.abstract_params)]
  return model, nnx.from_flat_state(flat)


def load(directory: str, **kwargs) -> Any:
  """Dispatches on ``config.json``'s ``_class_name`` (Wan's own ``WanModel`` / ``VaceWanModel``
  included)."""
  config, _ = safetensors_io.open_folder(directory)
  name = config.get("_class_name")
  if name in TRANSFORMER_CLASSES or name in original_layout.ORIGINAL_CLASSES:
    return load_transformer(directory, **kwargs)
  if name in VAE_CLASSES:
    return load_vae(directory, **kwargs)
  raise safetensors_io.CheckpointError(
      f"{directory}/config.json: expected _class_name in "
      f"{list(TRANSFORMER_CLASSES + VAE_CLASSES)}, got {name!r}")
