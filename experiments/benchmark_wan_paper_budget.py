"""Memory and time of the paper's backbone set, on paper (no weights, no device).

  python -m experiments.benchmark_wan_paper_budget    # a few seconds
  python -m experiments.benchmark_wan_paper_budget --forward_s=3.6    # measured forward

The set: four 14B-class transformers in bfloat16 (Wan2.2 I2V A14B counts as two, switched at
its boundary; a Fun-Control 14B on the simulation's depth; a Fun Control-Camera 14B; VACE 14B
optional), the Wan2.1 VAE (float32), the UMT5-xxl text encoder (run once, then freed), and
``N`` particles at 81 x 480 x 832 (latent 21 x 60 x 104 x 16, 32,760 tokens).

Memory per device, on a ``(data, model)`` mesh (``composed_vi.models.wan.sharding``): the
transformers' parameters sharded on both axes, plus the activations of one forward: the widest
transient of a DiT block is about ``S (3 d + ffn)`` values per sample (q, k, v and the FFN's
hidden layer; 2 bytes each in bf16), doubled by classifier-free guidance, for the particles a
device holds (``N / data``), divided by ``model`` (the token axis follows the frame axis on
``model``). Cached activations are not kept (no gradients through the backbones).

Forwards per video: Ctrl-VI evaluates every expert ``inner_steps + 1`` times per level at the
levels with Stein steps (``t >= stein_min_t``) and once at the others; each guided expert costs
two forwards per particle. FLOPs per forward: ``2 P S`` for the linear layers plus
``4 S^2 d L`` for attention; ``--forward_s`` replaces the FLOP estimate with a measured time
(``experiments/benchmark_wan_gpu_check.py`` measures it).
"""

from __future__ import annotations

import math

from absl import app, flags

from composed_vi.models.wan import sharding
from composed_vi.models.wan import transformer as wan
from experiments.benchmark_wan_checkpoints import _14B

_FORWARD_S = flags.DEFINE_float("forward_s", 0.0, "Measured seconds per 14B forward (0: FLOPs).")
_TFLOPS = flags.DEFINE_float("tflops", 990.0, "Peak bf16 dense TFLOP/s of one device (H200).")
_MFU = flags.DEFINE_float("mfu", 0.4, "Assumed fraction of peak reached by a forward.")

TOKENS = 21 * 30 * 52  # 81 x 480 x 832 -> latent 21 x 60 x 104, patch (1, 2, 2)
BACKBONES = (("Wan2.2 I2V A14B (high + low noise)", 2, dict(_14B, in_channels=36)),
             ("Fun-Control 14B (depth)", 1, dict(_14B, in_channels=48)),
             ("Fun Control-Camera 14B", 1, dict(_14B, in_channels=36)),
             ("VACE 14B (optional)", 1, dict(_14B, vace_layers=tuple(range(0, 40, 5)),
                                             vace_in_channels=96)))
UMT5_XXL_PARAMS = 5.681e9
VAE_PARAMS = 0.127e9


def _forwards(levels, inner_steps, stein_levels, guided_experts, experts):
  per_eval = experts + guided_experts  # CFG doubles a guided expert
  return (stein_levels * (inner_steps + 1) + (levels - stein_levels)) * per_eval


def main(argv):
  del argv
  params, shapes_all = 0, []
  for _, count, fields in BACKBONES:
    shapes = wan.param_shapes(wan.WanConfig(**fields))
    shapes_all.append((count, shapes))
    params += count * sum(math.prod(s) for s in shapes.values())
  d, ffn = 5120, 13824
  act_per_sample = TOKENS * (3 * d + ffn) * 2  # bytes, bf16
  print(f"The paper's set: {params / 1e9:.1f}e9 transformer parameters (4 backbones, the "
        f"I2V one two transformers), latent 21 x 60 x 104 x 16 ({TOKENS} tokens)\n")
  print("| devices (data, model) | N | parameters / device | activations / device | "
        "total / device | fits 80 GB? | fits 141 GB? |")
  print("|---|---|---|---|---|---|---|")
  for devices in (8, 16, 64):
    for n in (2, 4):
      # The launcher needs N to be a multiple of the data axis: one particle per data slice.
      data, model = n, devices // n
      par = sum(c * sharding.memory_per_device(s, 2, data, model) for c, s in shapes_all)
      per_dev = 1
      act = 2 * act_per_sample * per_dev / model  # CFG doubles the batch
      fixed = VAE_PARAMS * 4  # the VAE stays for decoding; UMT5 is freed after encoding
      total = par + act + fixed
      gib = lambda x: f"{x / 2**30:.1f} GiB"  # noqa: E731
      print(f"| {devices} ({data}, {model}) | {n} | {gib(par)} | {gib(act)} | {gib(total)} "
            f"| {'yes' if total < 80e9 else 'no'} | {'yes' if total < 141e9 else 'no'} |")
  flops = 2 * 14.3e9 * TOKENS + 4 * TOKENS**2 * d * 40
  forward_s = _FORWARD_S.value or flops / (_TFLOPS.value * 1e12 * _MFU.value)
  source = "measured" if _FORWARD_S.value else (f"{flops:.2e} FLOPs at {_MFU.value:.0%} of "
                                                f"{_TFLOPS.value:.0f} TFLOP/s")
  print(f"\nOne 14B forward at 81 x 480 x 832: {forward_s:.2f} s ({source}); UMT5-xxl "
        f"{UMT5_XXL_PARAMS / 1e9:.2f}e9 parameters run once.\n")
  print("| schedule | N | forwards per video | one H200 | 8 devices (data parallel) |")
  print("|---|---|---|---|---|")
  for name, levels, inner, stein in (
      ("Ctrl-VI, 50 levels, 2 Stein steps at every level", 50, 2, 50),
      ("Ctrl-VI, 50 levels, Stein steps at t >= 0.6 (20 levels)", 50, 2, 20),
      ("velocity averaging (ODE), 50 levels", 50, 0, 0)):
    for n in (2, 4):
      # 3 guided backbones always on (I2V, Fun-Control, Control-Camera), VACE left out.
      f = n * _forwards(levels, inner, stein, guided_experts=3, experts=3)
      hours = f * forward_s / 3600
      print(f"| {name} | {n} | {f} | {hours:.1f} h | {hours * 60 / 8:.0f} min |")
  print("\nThe paper reports about 40 minutes per segment on one H200, i.e. about "
        f"{40 * 60 / forward_s:.0f} forwards at this forward time: its sampler must evaluate "
        "far fewer (fewer levels or particles, or Stein steps at few levels). "
        "experiments/benchmark_wan_gpu_check.py measures the forward and one level to settle it.")


if __name__ == "__main__":
  app.run(main)
