"""The comparison of methods and ablations on the built-in world (composed_vi.lab.evaluation).

  python -m experiments.evaluate --config=configs/evaluate.py --workdir=workdir/evaluate
  python -m experiments.evaluate --config=configs/evaluate.py:smoke --workdir=/tmp/eval

Cases are ``backgrounds x cameras x simulations`` of a split, all from the seeds listed here.
``test`` (48 cases) is held out: the demo's composition defaults and every sampler setting
below were chosen on ``dev`` (and on the demo scene) only. The world's training data come from
``jax.random.fold_in(key(1), i)`` splits (configs/train_tiny.py), never from these seeds.
"""

import dataclasses

import ml_collections

from composed_vi.lab.evaluation import METHODS
from composed_vi.world.demo import Composition
from configs import world_demo


def get_config(arg=None):
  demo = world_demo.get_config()
  c = ml_collections.ConfigDict()
  c.experiment = "evaluate"
  c.variant = arg or ""
  c.seed = 0
  c.split = "test"
  c.max_cases = 0  # 0: every case of the split
  # Every method but ctrl_vi_stein_everywhere, which with today's defaults (Stein steps on
  # every pixel) is ctrl_vi itself; it stays for the earlier tables.
  c.methods = ",".join(m for m in METHODS if m != "ctrl_vi_stein_everywhere")
  c.num_particles = 4
  c.num_levels = demo.num_levels
  c.inner_steps = demo.sampler.inner_steps
  c.poe_smc_reward_scale = 10.0
  # Every sampler that steps along the score (Ctrl-VI, Langevin, PoE-SMC) steps by
  # eta t^2 / W per pixel (samplers.base.step_sizes), as the demo does.
  c.precondition = demo.sampler.precondition
  # Ctrl-VI options for every ctrl_vi method (an ablation's own option wins); None: the
  # sampler's default. Chosen on the dev split (README, "Evaluation").
  c.ctrl_vi = ml_collections.ConfigDict(dict(
      step_size=ml_collections.FieldReference(demo.sampler.step_size, field_type=float),
      repulsion=ml_collections.FieldReference(demo.sampler.repulsion, field_type=float),
      feature_map=ml_collections.FieldReference(demo.sampler.feature_map, field_type=str),
      repulsion_schedule=ml_collections.FieldReference(None, field_type=str),
      bandwidth_scale=ml_collections.FieldReference(None, field_type=float),
      calibrate_repulsion=ml_collections.FieldReference(None, field_type=bool),
      stein_region=ml_collections.FieldReference(demo.sampler.stein_region, field_type=str),
      stein_min_t=ml_collections.FieldReference(demo.sampler.stein_min_t, field_type=float)))
  c.gallery_cases = 3
  # An earlier evaluation workdir whose rows are copied for the methods whose settings are
  # unchanged (each checked bit for bit on its first reuse_check_cases cases), so that
  # changing Ctrl-VI does not rerun the baselines (composed_vi.lab.evaluation.reuse_rows).
  c.reuse_from = ""
  c.reuse_check_cases = 1
  c.world = ml_collections.ConfigDict(demo.world.to_dict())
  del c.world["scene_seed"]
  c.backbones = ml_collections.ConfigDict(dict(
      t2v="assets/backbones/t2v", i2v="assets/backbones/i2v", cam2v="assets/backbones/cam2v",
      sim2v="assets/backbones/sim2v"))
  for field in dataclasses.fields(Composition):  # the demo's composition, every field
    c[field.name] = demo[field.name]
  c.splits = ml_collections.ConfigDict(dict(
      dev=dict(backgrounds=(11, 12), cameras=("static", "pan_left", "dolly_in", "orbit"),
               simulations=(21, 22), camera_seed_base=3100),
      test=dict(backgrounds=(101, 102, 103, 104),
                cameras=("static", "pan_left", "pan_right", "dolly_in", "dolly_out", "orbit"),
                simulations=(201, 202), camera_seed_base=5100),
  ))
  if arg == "smoke":
    c.max_cases = 2
    c.num_particles = 2
    c.num_levels = 3
    c.inner_steps = 1
    c.gallery_cases = 1
    c.methods = "i2v,average,poe_smc,ctrl_vi,ctrl_vi_no_annealing"
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
