"""The exact-target study: every sampler on products of Gaussian mixtures with known answers.

Measures (i) with many particles in 2-D, the MMD and energy distance to exact samples against the
exact-vs-exact floor, and the mode-weight error; (ii) with few particles, the number of distinct
modes covered and the fraction of particles on a mode, in 2-D and in high dimension. Writes
``results.json``, ``results.md`` and PNG plots to the workdir.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from composed_vi import gmm, io, metrics
from composed_vi.composition import compose
from composed_vi.lab import toys
from composed_vi.sampling import sample


def runs(config) -> dict:
  """``label -> (method, options)``: every method with its defaults, plus ``config.variants``."""
  shared = {name: config.get(name) for name in ("num_levels", "inner_steps")
            if config.get(name) is not None}
  out = {m: (m, dict(shared)) for m in config.methods}
  for label, spec in config.get("variants", {}).items():
    spec = dict(spec)
    out[label] = (spec.pop("method"), {**shared, **spec})
  return out


def many_particles(config, method: str, key, options) -> dict:
  experts, exact = toys.asymmetric_product_2d()
  target = compose(experts)
  n = config.many.num_particles
  mmds, floors, energies, weight_errs, runs = [], [], [], [], []
  fine, fine_floors, nn_ratios = [], [], []
  # The fine kernel's length scale: the narrowest component of the exact answer.
  narrowest = float(np.min(np.asarray(exact.stds)))
  for s in range(config.many.num_seeds):
    k_run, k_a, k_b = jax.random.split(jax.random.fold_in(key, s), 3)
    start = time.perf_counter()
    x, _ = sample(k_run, target, n, method, **options)
    x = jax.block_until_ready(x)
    runs.append(time.perf_counter() - start)
    ref, ref2 = exact.sample(k_a, n), exact.sample(k_b, n)
    mmds.append(float(metrics.mmd(x, ref)))
    floors.append(float(metrics.mmd(ref2, ref)))
    energies.append(float(metrics.energy_distance(x, ref)))
    weight_errs.append(float(gmm.mode_weight_error(x, exact, reference=ref)))
    fine.append(float(metrics.fine_mmd(x, ref, narrowest)))
    fine_floors.append(float(metrics.fine_mmd(ref2, ref, narrowest)))
    nn_ratios.append(float(metrics.nearest_neighbour_ratio(x, ref)))
  return dict(mmd=float(np.mean(mmds)), mmd_floor=float(np.mean(floors)),
              mmd_ratio=float(np.mean(mmds) / np.mean(floors)),
              energy=float(np.mean(energies)), mode_weight_tv=float(np.mean(weight_errs)),
              fine_mmd_ratio=float(np.mean(fine) / np.mean(fine_floors)),
              fine_bandwidth=narrowest, nn_ratio=float(np.mean(nn_ratios)),
              seconds=float(np.median(runs)), last=np.asarray(x))


def few_particles(config, method: str, key, dim: int, options) -> dict:
  experts, exact = toys.four_modes(dim)
  target = compose(experts)
  covered, on_mode, last = [], [], None
  for s in range(config.few.num_seeds):
    x, _ = sample(jax.random.fold_in(key, s), target, config.few.num_particles, method,
                  **options)
    c, o = gmm.mode_coverage(x, exact)
    covered.append(float(c))
    on_mode.append(float(o))
    last = np.asarray(x)
  return dict(modes=float(np.mean(covered)), modes_std=float(np.std(covered)),
              on_mode=float(np.mean(on_mode)), last=last)


def run(config, workdir: str) -> dict:
  """Runs the study and writes its table and plots; returns the results dict."""
  key = jax.random.key(config.seed)
  results, particles = {}, {}
  for label, (method, options) in runs(config).items():
    logging.info("exact study: %s (%s %s)", label, method, options)
    many = many_particles(config, method, jax.random.fold_in(key, 1), options)
    few2 = few_particles(config, method, jax.random.fold_in(key, 2), 2, options)
    few_hd = few_particles(config, method, jax.random.fold_in(key, 3), config.few.high_dim,
                           options)
    particles[label] = dict(many=many.pop("last"), few2=few2.pop("last"))
    few_hd.pop("last")
    results[label] = dict(method=method, options=options, many=many, few_2d=few2,
                          few_high_dim=few_hd)
  summary = dict(config=config.to_dict(), results=results)
  io.write_json(os.path.join(workdir, "results.json"), summary)
  io.write_text(os.path.join(workdir, "results.md"), markdown_table(config, results))
  if config.plots:
    plot(os.path.join(workdir, "particles.png"), particles)
  return summary


def markdown_table(config, results) -> str:
  hd = config.few.high_dim
  lines = [
      "| run | MMD / floor (N=%d, D=2) | fine MMD / floor | NN distance / exact |"
      " energy dist. | mode-weight TV | modes N=%d D=2 | modes N=%d D=%d | on mode D=%d |"
      " s / run |" % (config.many.num_particles, config.few.num_particles,
                      config.few.num_particles, hd, hd),
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for m, r in results.items():
    lines.append("| %s | %.2f | %.2f | %.2f | %.4f | %.3f | %.2f | %.2f | %.2f | %.2f |" % (
        m, r["many"]["mmd_ratio"], r["many"]["fine_mmd_ratio"], r["many"]["nn_ratio"],
        r["many"]["energy"], r["many"]["mode_weight_tv"],
        r["few_2d"]["modes"], r["few_high_dim"]["modes"], r["few_high_dim"]["on_mode"],
        r["many"]["seconds"]))
  return "\n".join(lines) + "\n"


def plot(path: str, particles: dict) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  (a, b), exact = toys.asymmetric_product_2d()
  (_, _), exact4 = toys.four_modes(2)
  methods = list(particles)
  fig, axes = plt.subplots(2, len(methods), figsize=(3.2 * len(methods), 6.4), squeeze=False)
  grid = np.linspace(-3, 3, 200)
  xx, yy = np.meshgrid(grid, grid)
  pts = np.stack([xx.ravel(), yy.ravel()], -1)
  for row, (mix, name) in enumerate(((exact, "many"), (exact4, "few2"))):
    dens = np.exp(np.asarray(mix.log_prob(pts, 0.0))).reshape(xx.shape)
    for col, m in enumerate(methods):
      ax = axes[row, col]
      ax.contourf(xx, yy, dens, levels=20, cmap="Blues")
      p = particles[m][name]
      ax.scatter(p[:, 0], p[:, 1], s=4 if name == "many" else 30, c="tab:red")
      ax.set_xlim(-3, 3)
      ax.set_ylim(-3, 3)
      ax.set_title(f"{m} ({'N=%d' % p.shape[0]})", fontsize=9)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  io.write_figure(path, fig, dpi=90)
  plt.close(fig)
