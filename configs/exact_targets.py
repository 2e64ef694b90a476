"""The exact-target study: every method on products of Gaussian mixtures.

Launch:
  python -m experiments.main --config=configs/exact_targets.py --workdir=/tmp/exact
  python -m experiments.main --config=configs/exact_targets.py:smoke --workdir=/tmp/x
  python -m experiments.main --config=configs/exact_targets.py:variants --workdir=/tmp/v
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.experiment = "exact_targets"
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
  # Extra labelled runs: {label: {method: ..., option: value, ...}} (the drive study below).
  c.variants = ml_collections.ConfigDict()
  if arg == "variants":  # the Ctrl-VI design study recorded in RESULTS.md
    c.methods = ("ctrl_vi",)
    c.plots = False
    c.variants = ml_collections.ConfigDict({
        "textbook_kernel_drive": dict(method="ctrl_vi", drive="kernel", step_size=0.1,
                                      num_levels=64),
        "self_drive": dict(method="ctrl_vi", drive="self", step_size=0.1, num_levels=64),
        "local_drive_64_levels": dict(method="ctrl_vi", drive="local", step_size=0.1,
                                      num_levels=64),
        "normalized_drive": dict(method="ctrl_vi", drive="normalized", step_size=0.2),
        "calibrated_repulsion": dict(method="ctrl_vi", calibrate_repulsion=True),
        "x0_features": dict(method="ctrl_vi", feature_map="x0"),
        "no_repulsion": dict(method="ctrl_vi", repulsion=0.0),
    })
  elif arg == "smoke":
    c.many.num_particles = 128
    c.many.num_seeds = 2
    c.few.num_seeds = 4
    c.few.high_dim = 256
    c.num_levels = 16
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '', 'smoke' or 'variants', got {arg!r}")
  return c
