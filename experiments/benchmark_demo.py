"""Composition overhead of Ctrl-VI on the demo: one level's time over its backbone forwards.

  python -m experiments.benchmark_demo            # the trained backbones of assets/backbones
  python -m experiments.benchmark_demo --random   # untrained backbones of the same size

One Ctrl-VI level runs ``inner_steps`` Stein steps and one transport, each evaluating every
expert once, so it needs ``(inner_steps + 1)`` forwards of each. The ratio (level time) /
(sum of those forwards timed alone) is the composition overhead: 1.0 is the physical limit.
Each time is the median of ``--repeats`` jitted calls after warm-up; the figures come from
one run of this script, never from a test.
"""

import json
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from composed_vi.lab import cli
from composed_vi.lab.problems import world_demo as demo_problem
from composed_vi.samplers import ctrl_vi
from composed_vi.sampling import build_options
from composed_vi.timing import median_seconds
from composed_vi.world import backbones as tb
from composed_vi.world import demo as world_demo
from configs import world_demo as demo_config

_RANDOM = flags.DEFINE_bool("random", False, "Untrained backbones (same architecture).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per measurement.")
_PARTICLES = flags.DEFINE_integer("num_particles", 4, "Particles.")


def main(argv):
  del argv
  config = demo_config.get_config()
  if _RANDOM.value:
    root = tempfile.mkdtemp()
    for kind in world_demo.BACKBONES:
      spec = tb.TinySpec(kind=kind, vocab_size=64)
      tb.save(f"{root}/{kind}", spec, tb.init_params(spec))
      config.backbones[kind] = f"{root}/{kind}"
  problem = demo_problem.build(config)
  target = problem.target
  n = _PARTICLES.value
  opts = build_options("ctrl_vi", num_levels=config.num_levels,
                       **{k: v for k, v in config.sampler.to_dict().items() if v is not None})
  levels = opts.schedule()
  # The timed level is the middle one of those that take Stein steps (t >= stein_min_t): below
  # it a level is the transport alone, one forward of each expert.
  stein_levels = int(np.sum(np.asarray(levels) >= opts.stein_min_t))
  index = stein_levels // 2
  state = ctrl_vi.init(jax.random.key(0), target, n, opts)
  state = state._replace(level=jnp.asarray(index, jnp.int32))
  x = state.particles
  t = levels[index]

  forwards = {}
  for i, expert in enumerate(target.experts):
    fn = jax.jit(lambda x, t, e=expert: e.velocity(x, t))
    forwards[type(expert).__name__ + f"[{i}]"] = median_seconds(
        lambda fn=fn: fn(x, t).block_until_ready(), _REPEATS.value, warmup=1)
  step = jax.jit(lambda s: ctrl_vi.step(s, target, levels, opts)[0].particles)
  level_s = median_seconds(lambda: step(state).block_until_ready(), _REPEATS.value, warmup=1)
  needed = (opts.inner_steps + 1) * sum(forwards.values())
  figures = dict(num_particles=n, inner_steps=opts.inner_steps, shape=list(target.shape),
                 level_t=float(t), stein_levels=stein_levels, num_levels=len(levels),
                 forward_s=forwards, forwards_needed_s=needed, level_s=level_s,
                 overhead_ratio=level_s / needed, device=jax.devices()[0].device_kind,
                 trained_backbones=not _RANDOM.value)
  print(json.dumps(figures, indent=2))


if __name__ == "__main__":
  cli.run(main)
