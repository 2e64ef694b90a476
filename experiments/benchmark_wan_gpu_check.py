"""The GPU check of the Wan pipeline, in one command (never a test): prints one table.

  python -m experiments.benchmark_wan_gpu_check    # on a GPU: Wan2.1 1.3B, 81 x 480 x 832
  python -m experiments.benchmark_wan_gpu_check --model=tiny --frames=5 --height=32 --width=32 \\
      --small_frames=5 --small_height=32 --small_width=32   # CPU smoke of the script itself

With random weights in bfloat16 it measures, on the device JAX and torch share:

1. one transformer forward, ours against diffusers' (``benchmark_wan.measure_forward``);
2. one Ctrl-VI level of the composition the pipeline builds (two backbones, one with CFG,
   region masks, the context expert, ``inner_steps = 2``) at N = 2 and N = 4: seconds after
   compilation and the device's peak memory;
3. a whole small run (``--small_*``: 6 levels, N = 2) from init to ``x0``.

Expected on one H100/H200 at the 1.3B config: a forward of about a second; a level costs
``(inner_steps + 1) x (1 + 2)`` forwards per particle (CFG doubles one backbone) plus the
Stein update, so about 9 N forwards.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the device

import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from composed_vi import io, sampling  # noqa: E402
from composed_vi.composition import compose  # noqa: E402
from composed_vi.experts import Context  # noqa: E402
from composed_vi.models import wan_expert  # noqa: E402
from composed_vi.models.wan import transformer as wan  # noqa: E402
from experiments import benchmark_wan  # noqa: E402

# --model, --frames, --height, --width, --repeats, --out: benchmark_wan's flags.
_MODEL, _FRAMES, _HEIGHT, _WIDTH = (benchmark_wan._MODEL, benchmark_wan._FRAMES,
                                    benchmark_wan._HEIGHT, benchmark_wan._WIDTH)
_REPEATS, _OUT = benchmark_wan._REPEATS, benchmark_wan._OUT
_PARTICLES = flags.DEFINE_list("particles", ["2", "4"], "N of section 2.")
_SMALL = [flags.DEFINE_integer(f"small_{k}", v, f"Section 3's {k}.")
          for k, v in (("frames", 17), ("height", 240), ("width", 416))]
_SKIP_DIFFUSERS = flags.DEFINE_bool("skip_diffusers", False, "Skip section 1.")


def _random_params(config, key):
  """bf16 parameters of ``config``: N(0, 0.02) kernels, zero biases, unit scales."""
  _, abstract = wan.split_abstract(config)
  flat = []
  for i, (path, var) in enumerate(nnx.to_flat_state(abstract)):
    shape = var.get_value().shape
    if path[-1] == "scale":
      value = jnp.ones(shape, jnp.bfloat16)
    elif path[-1] == "bias":
      value = jnp.zeros(shape, jnp.bfloat16)
    else:
      value = 0.02 * jax.random.normal(jax.random.fold_in(key, i), shape, jnp.bfloat16)
    flat.append((path, var.replace(value=value)))
  return nnx.from_flat_state(flat)


def _target(config, params, model_fn, latent_shape, text_len=512):
  rng = np.random.default_rng(0)
  ctx = rng.standard_normal((text_len, config.text_dim)).astype(np.float32)
  neg = rng.standard_normal((text_len, config.text_dim)).astype(np.float32)
  kw = dict(params=params, model_fn=model_fn, context=ctx)
  a = wan_expert.make_expert(config, latent_shape, negative_context=neg, guidance_scale=5.0,
                             field="a", **kw)
  b = wan_expert.make_expert(config, latent_shape, field="b", **kw)
  f, h, w, _ = latent_shape
  region = np.zeros((f, h, w, 1), np.float32)
  region[:, h // 4:h // 2, w // 4:w // 2] = 1.0
  context = Context(rng.standard_normal(latent_shape).astype(np.float32), 0.05,
                    visibility=1.0 - region)
  free = region.copy()
  free[0] = 0.0
  return compose([a, b, context], [1.0 - region, region, 6.0], repulsion_mask=free,
                 pinned_mask=1.0 - region)


def _peak_gib():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use", float("nan")) / 2**30


def _latent(frames, height, width, channels):
  return (1 + (frames - 1) // 4, height // 8, width // 8, channels)


def main(argv):
  del argv
  rows, figures = [], {}
  if not _SKIP_DIFFUSERS.value:
    fwd = benchmark_wan.measure_forward(_MODEL.value, _FRAMES.value, _HEIGHT.value,
                                        _WIDTH.value, _REPEATS.value, "cudnn"
                                        if jax.default_backend() == "gpu" else None)
    figures["forward"] = fwd
    rows.append(("forward, ours / diffusers", f"{fwd['ours_s']:.3f} s / {fwd['diffusers_s']:.3f}"
                 f" s = {fwd['ratio_ours_over_diffusers']:.2f}", f"max diff "
                 f"{fwd['max_abs_diff']:.3g} of {fwd['output_scale']:.3g}"))
  config = wan.WanConfig(**benchmark_wan.CONFIGS[_MODEL.value])
  params = _random_params(config, jax.random.key(0))
  attention = "cudnn" if jax.default_backend() == "gpu" else None
  model_fn = wan.make_model_fn(config, dtype=jnp.bfloat16, attention_impl=attention)
  shape = _latent(_FRAMES.value, _HEIGHT.value, _WIDTH.value, config.out_dim)
  target = _target(config, params, model_fn, shape)
  options = sampling.build_options("ctrl_vi", num_levels=50, inner_steps=2, shift=3.0,
                                   feature_map="target_mask")
  for n in (int(p) for p in _PARTICLES.value):
    run = sampling.driver("ctrl_vi", options, n)
    state = run.init(jax.random.key(n), target)
    start = time.perf_counter()
    state, _ = run.step(state, target)
    jax.block_until_ready(state)
    first = time.perf_counter() - start
    times = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      state, _ = run.step(state, target)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - start)
    level, peak = float(np.median(times)), _peak_gib()
    figures[f"level_N{n}"] = dict(seconds=level, first_call_s=first, peak_gib=peak,
                                  latent=list(shape))
    rows.append((f"Ctrl-VI level, N = {n}, latent {shape}", f"{level:.3f} s (first call "
                 f"{first:.1f} s)", f"peak {peak:.2f} GiB"))
  small = _latent(*(f.value for f in _SMALL), config.out_dim)
  target = _target(config, params, model_fn, small)
  options = sampling.build_options("ctrl_vi", num_levels=6, inner_steps=2, shift=3.0,
                                   feature_map="target_mask")
  run = sampling.driver("ctrl_vi", options, 2)
  start = time.perf_counter()
  state = run.init(jax.random.key(1), target)
  state, _ = run.advance(state, target, 6)
  x0 = np.asarray(run.x0(state, target), np.float32)
  total = time.perf_counter() - start
  figures["small_run"] = dict(seconds=total, latent=list(small), finite=bool(np.isfinite(x0).all()),
                              peak_gib=_peak_gib())
  rows.append((f"whole run, 6 levels, N = 2, latent {small}", f"{total:.1f} s (with compile)",
               f"finite {bool(np.isfinite(x0).all())}"))
  device = jax.devices()[0].device_kind
  print(f"# Wan GPU check: {_MODEL.value}, {device}, jax {jax.__version__}")
  width = max(len(r[0]) for r in rows)
  for r in rows:
    print(f"{r[0]:<{width}}  {r[1]:<36}  {r[2]}")
  if _OUT.value:
    io.write_text(_OUT.value, json.dumps(figures, indent=2))


if __name__ == "__main__":
  app.run(main)
