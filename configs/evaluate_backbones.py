"""Each tiny world backbone alone against ground truth (composed_vi.lab.backbone_study): the
RESULTS.md's backbone table.

  python -m experiments.main --config=configs/evaluate_backbones.py --workdir=workdir/backbones
  python -m experiments.main --config=configs/evaluate_backbones.py:smoke --workdir=/tmp/bb

Scenes are drawn from ``seed + i`` (seeds the training data never used); every backbone samples
``num_particles`` videos per scene from its own control with the ``ode`` sampler.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.experiment = "evaluate_backbones"
  c.seed = 10_000
  c.num_scenes = 8
  c.num_particles = 2
  c.num_levels = 24
  c.world = common.world()
  c.backbones = common.tiny_backbones("t2v", "i2v", "sim2v", "cam2v")
  # TinySpec.output_pin settings to measure: i2v, sim2v and cam2v get a row per setting ("(no pin)":
  # what the network alone learned).
  c.output_pin = (True, False)
  if arg == "smoke":
    c.num_scenes = 1
    c.num_levels = 2
    c.backbones = common.tiny_backbones("t2v", "sim2v")
    c.output_pin = (True,)
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
