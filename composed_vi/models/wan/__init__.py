"""Wan-family backbones in JAX / Flax NNX (architecture by the Wan team, Apache-2.0).

``from_diffusers(module)`` converts an in-memory diffusers module (``WanTransformer3DModel``,
``WanVACETransformer3DModel`` or ``AutoencoderKLWan``) into ``(fn_or_model, params)``.
"""

from __future__ import annotations

from composed_vi.models.wan import convert_transformer, convert_vae


def from_diffusers(module):
  """Converts a diffusers Wan module into our JAX model and parameters.

  Returns:
    For a transformer: ``(fn, params)`` with
    ``fn(params, hidden_states, timestep, encoder_hidden_states,
    encoder_hidden_states_image=None, control_hidden_states=None)`` in diffusers' layouts.
    For the VAE: ``(vae, params)`` with ``vae.encode(params, video)`` and
    ``vae.decode(params, z)``.
  """
  name = type(module).__name__
  if name in ("WanTransformer3DModel", "WanVACETransformer3DModel"):
    return convert_transformer.from_diffusers(module)
  if name == "AutoencoderKLWan":
    return convert_vae.from_diffusers(module)
  raise TypeError(
      "module: expected a diffusers WanTransformer3DModel, WanVACETransformer3DModel or "
      f"AutoencoderKLWan, got {name}")
