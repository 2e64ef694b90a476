"""The exact-target study: every method on seeded families of Gaussian-mixture products.

Each method's step size is chosen on the dev seeds from a grid of four values (the same budget
for every method that has a step); the test seeds report the chosen settings and the
ablations, which change one option of Ctrl-VI's chosen setting each.

Launch:
  python -m experiments.main --config=configs/exact_targets.py --workdir=/tmp/exact
  python -m experiments.main --config=configs/exact_targets.py:smoke --workdir=/tmp/x
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.experiment = "exact_targets"
  c.seed = 0
  # method -> {option: grid} (one option per method; {} for a method without a step).
  c.grids = ml_collections.ConfigDict(dict(
      ctrl_vi=dict(step_size=(0.5, 1.0, 2.0, 4.0)),
      annealed_langevin=dict(step_size=(0.1, 0.2, 0.4, 0.8)),
      poe_smc=dict(step_size=(0.1, 0.2, 0.4, 0.8)),
      ode=dict(),
  ))
  # Rows that change one option of Ctrl-VI's chosen setting (reported on the test seeds).
  c.ablations = ml_collections.ConfigDict(dict(
      ctrl_vi_local_drive=dict(drive="local"),
      ctrl_vi_noise_step=dict(step_rule="noise"),
      ctrl_vi_no_repulsion=dict(repulsion=0.0),
      ctrl_vi_half_bandwidth=dict(bandwidth_scale=0.5),
      # The D = 16 lead of 2026-12-07 (docs/journal.md): a wider kernel sees more neighbours.
      ctrl_vi_double_bandwidth=dict(bandwidth_scale=2.0),
  ))
  # Options shared by every run (None keeps each method's documented default).
  c.num_levels = ml_collections.FieldReference(None, field_type=int)
  c.inner_steps = ml_collections.FieldReference(None, field_type=int)
  # Target families (composed_vi.lab.toys.FAMILIES); dev seeds 0..n-1, test seeds from
  # test_offset.
  c.families = ("random_2d", "random_16d", "ring", "wide_narrow")
  c.seeds_per_split = 3
  c.test_offset = 1000
  c.many = ml_collections.ConfigDict(dict(num_particles=512))
  # Few particles: num_seeds test seeds per target; num_dev_seeds dev seeds for the choice.
  c.few = ml_collections.ConfigDict(dict(num_particles=4, num_seeds=20, num_dev_seeds=10,
                                         high_dim=4096))
  c.plots = True
  if arg == "smoke":
    c.grids = ml_collections.ConfigDict(dict(ctrl_vi=dict(step_size=(0.5, 1.0)), ode=dict()))
    c.ablations = ml_collections.ConfigDict(dict(ctrl_vi_local_drive=dict(drive="local")))
    c.families = ("random_2d", "ring")
    c.seeds_per_split = 1
    c.many.num_particles = 64
    c.few.num_seeds = 2
    c.few.num_dev_seeds = 2
    c.few.high_dim = 64
    c.num_levels = 8
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
