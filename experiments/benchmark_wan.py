"""Forward time of our Wan DiT port against diffusers' on the same GPU (never a test).

  python -m experiments.benchmark_wan                       # Wan2.1 1.3B, 81 x 480 x 832, bf16
  python -m experiments.benchmark_wan --model=tiny --frames=5 --height=32 --width=32  # CPU smoke

Both models get the same random weights (diffusers' initialisation, converted through our key
table) in bfloat16; one forward of batch 1 with a 512-token text context. Prints the median of
``--repeats`` timed forwards after warm-up for each, their ratio, and the largest output
difference (bf16 rounding on both sides).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from absl import app, flags

from composed_vi import io
from composed_vi.models.wan import convert_transformer
from composed_vi.models.wan import transformer as wan
from composed_vi.timing import median_seconds

_MODEL = flags.DEFINE_enum("model", "1.3b", ["1.3b", "14b", "tiny"], "Architecture.")
_FRAMES = flags.DEFINE_integer("frames", 81, "Video frames (latent frames: 1 + (f - 1) / 4).")
_HEIGHT = flags.DEFINE_integer("height", 480, "Video height (latent: / 8).")
_WIDTH = flags.DEFINE_integer("width", 832, "Video width (latent: / 8).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed forwards per implementation.")
_ATTENTION = flags.DEFINE_string("attention", "cudnn", "jax.nn.dot_product_attention impl "
                                 "('cudnn', 'xla' or '' for JAX's choice).")
_OUT = flags.DEFINE_string("out", "", "Optional JSON file for the figures.")

CONFIGS = {
    "1.3b": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                 in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960,
                 num_layers=30, cross_attn_norm=True, eps=1e-6, rope_max_seq_len=1024),
    "14b": dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128,
                in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824,
                num_layers=40, cross_attn_norm=True, eps=1e-6, rope_max_seq_len=1024),
    "tiny": dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                 in_channels=16, out_channels=16, text_dim=64, freq_dim=16, ffn_dim=32,
                 num_layers=2, rope_max_seq_len=64),
}


def measure_forward(model: str, frames: int, height: int, width: int, repeats: int,
                    attention: str | None) -> dict:
  """One bf16 forward of batch 1 (512 text tokens): ours and diffusers' on the same device."""
  import torch
  from diffusers import WanTransformer3DModel

  device = "cuda" if torch.cuda.is_available() else "cpu"
  cfg = CONFIGS[model]
  torch.manual_seed(0)
  with torch.device(device):
    ref = WanTransformer3DModel(**cfg).to(torch.bfloat16).eval()
  config = wan.config_from_diffusers(dict(ref.config))
  state = {k: v.detach().float().cpu().numpy() for k, v in ref.state_dict().items()}
  params = convert_transformer.convert_state_dict(config, state, dtype=ml_dtypes.bfloat16)
  del state
  model_fn = wan.make_model_fn(config, dtype=jnp.bfloat16, attention_impl=attention or None)

  f = 1 + (frames - 1) // 4
  h, w = height // 8, width // 8
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, f, h, w, cfg["in_channels"])).astype(np.float32)
  ctx = rng.standard_normal((1, 512, cfg["text_dim"])).astype(np.float32)
  t = np.array([700.0], np.float32)

  xj, cj, tj = jnp.asarray(x, jnp.bfloat16), jnp.asarray(ctx, jnp.bfloat16), jnp.asarray(t)
  ours = lambda: model_fn(params, xj, tj, cj).block_until_ready()  # noqa: E731
  start = time.perf_counter()
  out_ours = np.asarray(ours(), np.float32)
  compile_s = time.perf_counter() - start

  xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).to(device, torch.bfloat16)
  ct = torch.from_numpy(ctx).to(device, torch.bfloat16)
  tt = torch.from_numpy(t).to(device)

  def theirs():
    with torch.no_grad():
      out = ref(xt, tt, ct).sample
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  out_theirs = np.moveaxis(theirs().float().cpu().numpy(), 1, -1)
  theirs()
  ours()
  t_ours = median_seconds(ours, repeats)
  t_theirs = median_seconds(theirs, repeats)
  ref.to("cpu")  # frees the GPU for what runs next
  if device == "cuda":
    torch.cuda.empty_cache()
  return dict(
      model=model, latent=[f, h, w], tokens=f * (h // 2) * (w // 2),
      device=str(jax.devices()[0].device_kind), torch_device=device,
      ours_s=t_ours, diffusers_s=t_theirs, ratio_ours_over_diffusers=t_ours / t_theirs,
      ours_first_call_s=compile_s,
      max_abs_diff=float(np.abs(out_ours - out_theirs).max()),
      output_scale=float(np.abs(out_theirs).max()),
      jax=jax.__version__, torch=torch.__version__)


def main(argv):
  del argv
  figures = measure_forward(_MODEL.value, _FRAMES.value, _HEIGHT.value, _WIDTH.value,
                            _REPEATS.value, _ATTENTION.value)
  print(json.dumps(figures, indent=2))
  if _OUT.value:
    io.write_text(_OUT.value, json.dumps(figures, indent=2))


if __name__ == "__main__":
  app.run(main)
