"""The real Wan checkpoints the loaders read: parameters and bf16 memory per device.

  python -m experiments.benchmark_wan_checkpoints     # a few seconds; third_party/README.md's table

Every count is exact, from ``eval_shape`` of our modules at the checkpoints' published configs
(the diffusers ``config.json`` of each Wan-AI ``*-Diffusers`` repository); nothing is
downloaded. Transformers are sharded by ``composed_vi.models.wan.sharding`` on a
``(data, model)`` mesh: 8 devices as (8, 1) and 64 as (8, 8) (kernels are split on both axes,
so other factorisations give about the same). The encoders and the VAE run before and after the
sampling loop and are counted replicated (whole on every device).
"""

from __future__ import annotations

import math

from absl import app

from composed_vi.models import clip_vision, umt5
from composed_vi.models.wan import sharding, vae
from composed_vi.models.wan import transformer as wan

_BASE = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16,
             text_dim=4096, freq_dim=256, cross_attn_norm=True, eps=1e-6, rope_max_seq_len=1024)
_13B = dict(_BASE, num_attention_heads=12, ffn_dim=8960, num_layers=30)
_14B = dict(_BASE, num_attention_heads=40, ffn_dim=13824, num_layers=40)

#: (checkpoint, transformers in it, WanConfig fields)
TRANSFORMERS = [
    ("Wan2.1-T2V-1.3B-Diffusers", 1, _13B),
    ("Wan2.1-T2V-14B-Diffusers", 1, _14B),
    ("Wan2.1-I2V-14B-480P-Diffusers", 1, dict(_14B, in_channels=36, image_dim=1280,
                                              added_kv_proj_dim=5120)),
    ("Wan2.1-VACE-1.3B-diffusers", 1, dict(_13B, vace_layers=tuple(range(0, 30, 2)),
                                           vace_in_channels=96)),
    ("Wan2.1-VACE-14B-diffusers", 1, dict(_14B, vace_layers=tuple(range(0, 40, 5)),
                                          vace_in_channels=96)),
    ("Wan2.2-T2V-A14B-Diffusers", 2, _14B),
    ("Wan2.2-I2V-A14B-Diffusers", 2, dict(_14B, in_channels=36)),
    ("Wan2.2-TI2V-5B-Diffusers", 1, dict(_BASE, num_attention_heads=24, ffn_dim=14336,
                                         num_layers=30, in_channels=48, out_channels=48)),
    # VideoX-Fun releases (original layout; CLIP image branch, tests/models/
    # test_published_checkpoints.py checks these names and shapes against the published files).
    ("Wan2.1-Fun-V1.1-1.3B-Control", 1, dict(_13B, in_channels=48, image_dim=1280,
                                             added_kv_proj_dim=1536, ref_conv_in_dim=16)),
    ("Wan2.1-Fun-V1.1-14B-Control", 1, dict(_14B, in_channels=48, image_dim=1280,
                                            added_kv_proj_dim=5120, ref_conv_in_dim=16)),
    ("Wan2.1-Fun-V1.1-1.3B-Control-Camera", 1, dict(_13B, in_channels=32, image_dim=1280,
                                                    added_kv_proj_dim=1536,
                                                    control_adapter_in_dim=24)),
    ("Wan2.1-Fun-V1.1-14B-Control-Camera", 1, dict(_14B, in_channels=32, image_dim=1280,
                                                   added_kv_proj_dim=5120,
                                                   control_adapter_in_dim=24)),
]
ENCODERS = [
    ("UMT5-xxl encoder (text_encoder/, every checkpoint)", umt5.param_shapes(umt5.UMT5Config(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64))),
    ("CLIP ViT-H/14 (image_encoder/, Wan2.1 I2V)", clip_vision.param_shapes(
        clip_vision.CLIPVisionConfig(hidden_size=1280, intermediate_size=5120,
                                     num_attention_heads=16, num_hidden_layers=32,
                                     image_size=224, patch_size=14, hidden_act="gelu"))),
]
MESHES = ((1, 1), (8, 1), (8, 8))


def _gib(x: float) -> str:
  return f"{x / 2**30:.2f}"


def rows() -> list[tuple]:
  out = []
  for name, count, fields in TRANSFORMERS:
    config = wan.WanConfig(**fields)
    shapes = wan.param_shapes(config)
    params = count * sum(math.prod(s) for s in shapes.values())
    per = [count * sharding.memory_per_device(shapes, 2, d, m) for d, m in MESHES]
    out.append((name + (f" ({count} transformers)" if count > 1 else ""), params, *per))
  for name, shapes in ENCODERS:
    params = sum(math.prod(s) for s in shapes.values())
    out.append((name, params, *[2 * params] * len(MESHES)))
  for name, config in (("Wan2.1 VAE (vae/)", vae.WanVAEConfig()),):
    shapes = {p: tuple(v.get_value().shape) for p, v in
              __import__("flax").nnx.to_flat_state(vae.WanVAE(config).abstract_params)}
    params = sum(math.prod(s) for s in shapes.values())
    out.append((name, params, *[4 * params] * len(MESHES)))  # float32
  return out


def main(argv):
  del argv
  print("| checkpoint | parameters | GiB / device, 1 | 8 devices | 64 devices |")
  print("|---|---|---|---|---|")
  for name, params, *per in rows():
    print(f"| {name} | {params / 1e9:.3f}e9 | " + " | ".join(_gib(x) for x in per) + " |")


if __name__ == "__main__":
  app.run(main)
