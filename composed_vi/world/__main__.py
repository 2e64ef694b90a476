"""A quick look at the world that writes no files: ``python -m composed_vi.world [height]``.

Renders one example and a batch of 64 at the default 12 frames, prints every field's shape and
range, the caption and the timings (compilation apart).
"""

import sys
import time

import jax
import numpy as np

from composed_vi import world


def main(argv):
  size = int(argv[1]) if len(argv) > 1 else 32
  config = world.SceneConfig(height=size, width=size)
  key = jax.random.key(0)
  start = time.perf_counter()
  example = jax.block_until_ready(world.render_example(key, config))
  compiled = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(world.render_example(jax.random.key(1), config))
  single = time.perf_counter() - start
  for name, value in example._asdict().items():
    value = np.asarray(value)
    print(f"{name:22s} {str(value.shape):18s} {str(value.dtype):8s} "
          f"[{value.min():.3g}, {value.max():.3g}]")
  print("caption:", world.caption(example))
  jax.block_until_ready(world.batch(key, 64, config))
  start = time.perf_counter()
  jax.block_until_ready(world.batch(jax.random.key(1), 64, config))
  batched = time.perf_counter() - start
  print(f"{config.num_frames} x {size} x {size}: first call {compiled:.1f} s (compiling), "
        f"then {single * 1e3:.0f} ms per example, {batched:.2f} s per batch of 64")


if __name__ == "__main__":
  main(sys.argv)
