"""Timings of the closed-form SVGD update against BlackJAX's svgd step, measured in one run.

  python -m experiments.benchmark [--quick] [--out=bench.json]

Three sections, printed as aligned tables followed by a final ``ratio`` line:

1. One SVGD step at N=16, D=65536 on a standard-normal log density: ours
   (``kernels.stein_direction`` with the score of the same log density, then ``x + lr * phi``)
   against ``blackjax.svgd`` (its step includes its median-heuristic update). Both are jitted
   and compiled ahead of time, warmed up, timed with ``block_until_ready``; the median is
   reported. A fixed-bandwidth run of ours checks that both compute the same update.
2. Memory scaling in D (powers of two) at N=16: BlackJAX's double vmap materialises an
   N x N x D tensor (``N^2 D 4`` bytes); sizes whose estimate exceeds a fraction of the memory
   are not run (``does not fit``). XLA's own compiled temp size is reported next to the
   estimate. Ours is then run at N=64, D=2**21 (full run only: ``--quick`` stops at 2**20).
3. jit compile time of a full ``composed_vi.sample`` per method on a 2-D product of two Gaussian
   mixtures: first call (compile + run) minus second call (run, another key).

Nothing is asserted: the numbers are reported as measured.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import composed_vi as cvi
from composed_vi import io, kernels
from composed_vi.experts import GaussianMixture
from composed_vi.timing import time_calls

_QUICK = flags.DEFINE_bool("quick", False, "Fewer sizes and repeats, D <= 2^20 (a few minutes on "
                           "a 2-core CPU).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results (written atomically).")

LR = 0.1  # SVGD step size (plain SGD, as optax.sgd in BlackJAX)
HEAD_N, HEAD_D = 16, 65536
SWEEP_N = 16
BIG_N, BIG_D = 64, 2**21
MEMORY_FRACTION = 0.4  # BlackJAX runs only where N^2 D 4 bytes fit in this fraction of memory
TARGET_SPEEDUP = 10.0


# ----------------------------------------------------------------------------- helpers


def log_density(x):
  """Standard normal log density (up to a constant) of one particle ``(D,)``."""
  return -0.5 * jnp.sum(jnp.square(x))


grad_log_density = jax.grad(log_density)


def ours_step(x):
  """One SVGD step with the closed-form update, the score computed here (as BlackJAX does)."""
  scores = jax.vmap(grad_log_density)(x)
  phi, _ = kernels.stein_direction(x, scores, drive="kernel", repulsion=1.0)
  return x + LR * phi


def ours_direction(x, scores):
  """``kernels.stein_direction`` alone, with its defaults, the scores given (what the issue's
  bound is stated for: within 3x of one Gram matrix)."""
  return kernels.stein_direction(x, scores)[0]


def ours_direction_with_info(x, scores):
  """The same call returning its diagnostics too (``(phi, SteinInfo)``: the drive's and the
  repulsion's norms, the bandwidth, the kernel's off-diagonal mean), as a caller that keeps the
  whole result gets it."""
  return kernels.stein_direction(x, scores)


def ours_step_fixed(x, bandwidth):
  """The same step with a given bandwidth (to compare with BlackJAX's update exactly)."""
  scores = jax.vmap(grad_log_density)(x)
  phi, _ = kernels.stein_direction(x, scores, bandwidth=bandwidth, drive="kernel",
                                   repulsion=1.0)
  return x + LR * phi


def blackjax_algorithm():
  return blackjax.svgd(grad_log_density, optax.sgd(LR), blackjax.vi.svgd.rbf_kernel,
                       blackjax.vi.svgd.update_median_heuristic)


@jax.jit
def blackjax_length_scale(x):
  """BlackJAX's median heuristic ``median(|x_i - x_j|)^2 / log N`` without its N x N x D vmap."""
  n = x.shape[0]
  dist = jnp.sqrt(kernels.pairwise_sq_dists(x))
  return jnp.median(dist[jnp.tril_indices(n, k=-1)]) ** 2 / jnp.log(n)


def blackjax_state(algorithm, x):
  """Initial SVGD state whose kernel parameters come from the median heuristic."""
  return algorithm.init(x, {"length_scale": blackjax_length_scale(x)})


def compile_ahead(fn, *args):
  """``(compiled, seconds, memory_bytes)``: AOT compilation, so no timed call compiles."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - start
  return compiled, seconds, footprint(compiled)


def footprint(compiled):
  """``{'temp': bytes, 'total': bytes}`` from XLA's memory analysis (None where unavailable)."""
  try:
    m = compiled.memory_analysis()
    temp = int(m.temp_size_in_bytes)
    total = temp + int(m.argument_size_in_bytes) + int(m.output_size_in_bytes)
    return {"temp": temp, "total": total}
  except Exception:  # not every backend implements it
    return {"temp": None, "total": None}


def blocked(fn, *args):
  """``fn(*args)`` as a call that waits for its result (what ``time_calls`` measures)."""
  return lambda: jax.block_until_ready(fn(*args))


def memory_budget():
  """``(bytes, source)`` of the memory a run may use: the device's limit or physical RAM."""
  dev = jax.devices()[0]
  if dev.platform != "cpu":
    try:
      stats = dev.memory_stats() or {}
      if "bytes_limit" in stats:
        return int(stats["bytes_limit"]), f"{dev.platform} memory (bytes_limit)"
    except Exception:
      pass
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  source = "physical RAM (os.sysconf)"
  for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(path) as f:
        limit = f.read().strip()
    except OSError:
      continue
    if limit.isdigit() and int(limit) < ram:
      ram, source = int(limit), f"cgroup limit ({path})"
    break
  return int(ram), source


def gb(nbytes) -> str:
  return "-" if nbytes is None else f"{nbytes / 1e9:.2f} GB"


def secs(s) -> str:
  if s is None:
    return "-"
  return f"{s * 1e3:.1f} ms" if s < 1.0 else f"{s:.2f} s"


def table(headers, rows) -> str:
  """Left-aligned text table with a rule under the header."""
  cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
  lines += [fmt(r) for r in cells[1:]]
  return "\n".join(lines)


def particles(n: int, d: int, seed: int = 0):
  return jax.random.normal(jax.random.key(seed), (n, d), jnp.float32)


# ----------------------------------------------------------------------------- sections


def bench_step(quick: bool):
  """Section 1: one SVGD step, ours vs BlackJAX, at N=16, D=65536."""
  warmup, repeats, budget = (1, 3, 10.0) if quick else (2, 10, 30.0)
  x = particles(HEAD_N, HEAD_D)
  algorithm = blackjax_algorithm()
  state = blackjax_state(algorithm, x)

  ours, ours_compile, ours_mem = compile_ahead(ours_step, x)
  bj, bj_compile, bj_mem = compile_ahead(algorithm.step, state)
  # The bound a kernel step cannot beat: one Gram matrix x x^T of the same particles.
  gram, _, _ = compile_ahead(lambda x: x @ x.T, x)
  scores = jax.block_until_ready(jax.vmap(grad_log_density)(x))
  direction, _, _ = compile_ahead(ours_direction, x, scores)
  with_info, _, _ = compile_ahead(ours_direction_with_info, x, scores)
  # Interleave the four so that a slow phase of the machine does not favour one of them
  # (the direction and the Gram matrix are cheap: more repeats for them).
  ours_times, bj_times, gram_times, dir_times, info_times = [], [], [], [], []
  for _ in range(2):
    ours_times += time_calls(blocked(ours, x), repeats, warmup=warmup, budget_s=budget / 2)
    bj_times += time_calls(blocked(bj, state), repeats, warmup=warmup, budget_s=budget / 2)
    for _ in range(5):
      gram_times += time_calls(blocked(gram, x), repeats, warmup=warmup, budget_s=budget / 2)
      dir_times += time_calls(blocked(direction, x, scores), repeats, warmup=warmup,
                              budget_s=budget / 2)
      info_times += time_calls(blocked(with_info, x, scores), repeats, warmup=warmup,
                               budget_s=budget / 2)
  ours_s, bj_s = statistics.median(ours_times), statistics.median(bj_times)
  gram_s, dir_s = statistics.median(gram_times), statistics.median(dir_times)
  info_s = statistics.median(info_times)

  # Same bandwidth for both: the updates must agree up to float32 rounding.
  length_scale = state.kernel_parameters["length_scale"]
  bj_new = bj(state).particles
  ours_new = jax.jit(ours_step_fixed)(x, length_scale)
  update = float(jnp.max(jnp.abs(bj_new - x)))
  diff = float(jnp.max(jnp.abs(ours_new - bj_new)))
  return {
      "n": HEAD_N, "d": HEAD_D, "lr": LR,
      "ours_s": ours_s, "blackjax_s": bj_s,
      "ours_times_s": ours_times, "blackjax_times_s": bj_times,
      "ours_compile_s": ours_compile, "blackjax_compile_s": bj_compile,
      "ours_xla_bytes": ours_mem, "blackjax_xla_bytes": bj_mem,
      "ratio_ours_over_blackjax": ours_s / bj_s, "speedup": bj_s / ours_s,
      "gram_s": gram_s, "gram_times_s": gram_times, "ratio_ours_over_gram": ours_s / gram_s,
      "direction_s": dir_s, "direction_times_s": dir_times,
      "ratio_direction_over_gram": dir_s / gram_s,
      "direction_info_s": info_s, "direction_info_times_s": info_times,
      "ratio_direction_info_over_gram": info_s / gram_s,
      "max_abs_diff_same_bandwidth": diff, "max_abs_update": update,
  }


def bench_memory(quick: bool, budget_bytes: int):
  """Section 2: D sweep at N=16 (BlackJAX gated on N^2 D 4 bytes), then ours at N=64, D=2^21."""
  limit = MEMORY_FRACTION * budget_bytes
  if quick:
    # Steps at D >= 2^22 take minutes here (allocation-bound); the full run measures them.
    exponents = range(16, 21, 2)
    warmup, repeats, budget = 1, 1, 5.0  # a cold first call is far slower: always warm up
    blackjax_run_cap = 2**18  # --quick: larger BlackJAX sizes are compiled but not run
  else:
    exponents = range(16, 25)
    warmup, repeats, budget = 1, 3, 10.0
    blackjax_run_cap = None
  algorithm = blackjax_algorithm()
  rows = []
  for e in exponents:
    d = 2**e
    x = particles(SWEEP_N, d, seed=e)
    estimate = SWEEP_N * SWEEP_N * d * 4
    row = {"n": SWEEP_N, "d": d, "blackjax_estimate_bytes": estimate}
    ours, _, ours_mem = compile_ahead(ours_step, x)
    row["ours_times_s"] = time_calls(blocked(ours, x), repeats, warmup=warmup, budget_s=budget)
    row["ours_s"] = statistics.median(row["ours_times_s"])
    row["ours_xla_bytes"] = ours_mem
    del ours
    state_shape = jax.eval_shape(lambda x: blackjax_state(algorithm, x), x)
    bj, _, bj_mem = compile_ahead(algorithm.step, state_shape)
    row["blackjax_xla_bytes"] = bj_mem
    if estimate > limit:
      row["blackjax"] = f"does not fit (estimated {estimate / 1e9:.1f} GB)"
      row["blackjax_s"] = None
    elif blackjax_run_cap is not None and d > blackjax_run_cap:
      row["blackjax"] = f"not run (--quick; estimated {estimate / 1e9:.1f} GB)"
      row["blackjax_s"] = None
    else:
      state = blackjax_state(algorithm, x)
      row["blackjax_times_s"] = time_calls(blocked(bj, state), repeats, warmup=warmup,
                                          budget_s=budget)
      row["blackjax_s"] = statistics.median(row["blackjax_times_s"])
      row["blackjax"] = secs(row["blackjax_s"])
      del state
    del bj, x
    rows.append(row)

  fits = [r["d"] for r in rows if r["blackjax_estimate_bytes"] <= limit]
  first_no_fit = next((r["d"] for r in rows if r["blackjax_estimate_bytes"] > limit), None)

  big = None if quick else _bench_big(algorithm)
  return {
      "memory_budget_bytes": budget_bytes, "limit_bytes": limit, "fraction": MEMORY_FRACTION,
      "sweep": rows, "blackjax_largest_fitting_d": max(fits) if fits else None,
      "blackjax_first_not_fitting_d": first_no_fit, "ours_big": big,
  }


def _bench_big(algorithm) -> dict:
  """Ours at N=64, D=2^21, where BlackJAX's N x N x D tensor does not fit (full run only)."""
  big_n, big_d = BIG_N, BIG_D
  x = particles(big_n, big_d, seed=1)
  ours, ours_compile, ours_mem = compile_ahead(ours_step, x)
  big_times = time_calls(blocked(ours, x), 3, warmup=1, budget_s=30.0)
  big_s = statistics.median(big_times)
  state_shape = jax.eval_shape(lambda x: blackjax_state(algorithm, x), x)
  _, _, bj_big_mem = compile_ahead(algorithm.step, state_shape)
  del ours, x
  return {
      "n": big_n, "d": big_d, "ours_s": big_s, "ours_times_s": big_times,
      "ours_compile_s": ours_compile, "ours_xla_bytes": ours_mem,
      "blackjax_estimate_bytes": big_n * big_n * big_d * 4, "blackjax_xla_bytes": bj_big_mem,
  }


def two_mixtures():
  """2-D product of two Gaussian mixtures (their product has four modes on the diagonals)."""
  a = GaussianMixture([[-2.0, -2.0], [2.0, 2.0]], 0.6)
  b = GaussianMixture([[-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]], 0.8)
  return cvi.compose([a, b])


def bench_compile(quick: bool):
  """Section 3: jit compile time of ``cvi.sample`` per method (first call - second call)."""
  del quick  # one compile per method is the measurement; nothing to shorten
  target = two_mixtures()
  rows = []
  for method in cvi.METHODS:
    kwargs = dict(num_particles=64, method=method, num_levels=64)
    start = time.perf_counter()
    jax.block_until_ready(cvi.sample(jax.random.key(0), target, **kwargs))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(cvi.sample(jax.random.key(1), target, **kwargs))
    second = time.perf_counter() - start
    rows.append({"method": method, "first_s": first, "second_s": second,
                 "compile_s": first - second})
  return {"num_particles": 64, "num_levels": 64, "dim": 2, "rows": rows}


# ----------------------------------------------------------------------------- report


def report(results) -> str:
  out = []
  env = results["environment"]
  out.append(f"# composed_vi SVGD benchmark ({'quick' if results['quick'] else 'full'}) - "
             f"jax {env['jax']}, blackjax {env['blackjax']}, {env['device']}, "
             f"{env['cpu_count']} CPUs, memory {gb(env['memory_bytes'])} ({env['memory_source']})")

  s = results["step"]
  out.append("")
  out.append(f"## 1. One SVGD step, standard normal, N={s['n']}, D={s['d']} "
             "(jitted, median after warm-up, scores included)")
  out.append(table(
      ["implementation", "median", "repeats", "compile", "XLA temp", "ratio vs blackjax"],
      [["ours (kernels.stein_direction)", secs(s["ours_s"]), len(s["ours_times_s"]),
        secs(s["ours_compile_s"]), gb(s["ours_xla_bytes"]["temp"]),
        f"{s['ratio_ours_over_blackjax']:.3f}"],
       ["blackjax.svgd step", secs(s["blackjax_s"]), len(s["blackjax_times_s"]),
        secs(s["blackjax_compile_s"]), gb(s["blackjax_xla_bytes"]["temp"]), "1.000"],
       ["ours, stein_direction alone (scores given)", secs(s["direction_s"]),
        len(s["direction_times_s"]), "-", "-", f"{s['direction_s'] / s['blackjax_s']:.3f}"],
       ["ours, stein_direction with its diagnostics", secs(s["direction_info_s"]),
        len(s["direction_info_times_s"]), "-", "-",
        f"{s['direction_info_s'] / s['blackjax_s']:.3f}"],
       ["one Gram matrix x @ x.T (the bound)", secs(s["gram_s"]), len(s["gram_times_s"]), "-",
        "-", f"{s['gram_s'] / s['blackjax_s']:.3f}"]]))
  out.append(f"ours / Gram matrix = {s['ratio_ours_over_gram']:.1f}x (whole step); "
             f"stein_direction alone / Gram matrix = {s['ratio_direction_over_gram']:.1f}x "
             f"({s['ratio_direction_info_over_gram']:.1f}x with its diagnostics)")
  out.append(f"same bandwidth: max |ours - blackjax| = {s['max_abs_diff_same_bandwidth']:.2e} "
             f"(max |update| = {s['max_abs_update']:.2e})")

  m = results["memory"]
  out.append("")
  out.append(f"## 2. Memory scaling at N={SWEEP_N}: BlackJAX run only where N^2*D*4 bytes <= "
             f"{m['fraction']:.0%} of memory = {gb(m['limit_bytes'])}")
  rows = []
  for r in m["sweep"]:
    ratio = "-" if r["blackjax_s"] is None else f"{r['ours_s'] / r['blackjax_s']:.3f}"
    rows.append([f"2^{int(math.log2(r['d']))}", r["d"], secs(r["ours_s"]),
                 gb(r["ours_xla_bytes"]["total"]), r["blackjax"],
                 gb(r["blackjax_estimate_bytes"]), gb(r["blackjax_xla_bytes"]["temp"]), ratio])
  out.append(table(["D", "", "ours", "ours XLA mem", "blackjax", "blackjax N^2*D*4",
                    "blackjax XLA temp", "ours/blackjax"], rows))
  b = m["ours_big"]
  out.append(f"BlackJAX by the estimate: largest swept D that fits = "
             f"{m['blackjax_largest_fitting_d']}, first swept D that does not = "
             f"{m['blackjax_first_not_fitting_d']}")
  if b is None:
    out.append(f"(--quick: ours at N={BIG_N}, D=2^{int(math.log2(BIG_D))} runs in the full "
               "benchmark only)")
  else:
    out.append(table(
        ["config", "ours", "repeats", "compile", "ours XLA mem", "blackjax N^2*D*4",
         "blackjax XLA temp"],
        [[f"N={b['n']}, D=2^{int(math.log2(b['d']))}", secs(b["ours_s"]),
          len(b["ours_times_s"]), secs(b["ours_compile_s"]), gb(b["ours_xla_bytes"]["total"]),
          f"does not fit (estimated {b['blackjax_estimate_bytes'] / 1e9:.1f} GB)",
          gb(b["blackjax_xla_bytes"]["temp"])]]))
  out.append("note: 'blackjax XLA temp' is XLA's own compiled scratch size for BlackJAX's step; "
             "where it is far below N^2*D*4, XLA fused the N x N x D intermediates away and the "
             "estimate overstates BlackJAX's footprint (only the estimate gates the runs).")

  c = results["compile"]
  out.append("")
  out.append(f"## 3. jit compile of cvi.sample, 2-D product of two mixtures, "
             f"N={c['num_particles']}, {c['num_levels']} levels")
  out.append(table(["method", "first call", "second call", "compile ~ first - second"],
                   [[r["method"], secs(r["first_s"]), secs(r["second_s"]), secs(r["compile_s"])]
                    for r in c["rows"]]))

  out.append("")
  met = "met" if s["speedup"] >= TARGET_SPEEDUP else "NOT met"
  out.append(f"ratio: ours/blackjax time = {s['ratio_ours_over_blackjax']:.3f} at N={s['n']}, "
             f"D={s['d']} (ours {s['speedup']:.1f}x faster; target >= {TARGET_SPEEDUP:.0f}x "
             f"{met})")
  return "\n".join(out)


def main(argv):
  del argv
  quick = _QUICK.value
  start = time.perf_counter()
  budget_bytes, source = memory_budget()
  dev = jax.devices()[0]
  results = {
      "quick": quick,
      "environment": {
          "jax": jax.__version__, "blackjax": blackjax.__version__,
          "numpy": np.__version__, "python": platform.python_version(),
          "device": f"{dev.platform}:{dev.device_kind}", "cpu_count": os.cpu_count(),
          "memory_bytes": budget_bytes, "memory_source": source,
      },
  }
  results["step"] = bench_step(quick)
  results["memory"] = bench_memory(quick, budget_bytes)
  results["compile"] = bench_compile(quick)
  results["wall_s"] = time.perf_counter() - start
  print(report(results))
  print(f"(wall time {results['wall_s']:.0f} s)")
  if _OUT.value:
    io.write_text(_OUT.value, json.dumps(results, indent=2) + "\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
