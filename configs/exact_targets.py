"""The exact-target study: every method on products of Gaussian mixtures.

Launch:
  python -m experiments.exact_targets --config=configs/exact_targets.py --workdir=/tmp/exact
  python -m experiments.exact_targets --config=configs/exact_targets.py:smoke --workdir=/tmp/x
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.methods = ("ctrl_vi", "annealed_langevin", "poe_smc", "ode")
  # Options shared by every method (None keeps each method's documented default).
  c.num_levels = ml_collections.FieldReference(None, field_type=int)
  c.inner_steps = ml_collections.FieldReference(None, field_type=int)
  # Many particles, low dimension: MMD to exact samples (seeds averaged).
  c.many = ml_collections.ConfigDict(dict(num_particles=512, num_seeds=5))
  # Few particles, separated modes: distinct modes covered, in D = 2 and D = high_dim.
  c.few = ml_collections.ConfigDict(dict(num_particles=4, num_seeds=40, high_dim=4096))
  c.plots = True
  if arg == "smoke":
    c.many.num_particles = 128
    c.many.num_seeds = 2
    c.few.num_seeds = 4
    c.few.high_dim = 256
    c.num_levels = 16
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
