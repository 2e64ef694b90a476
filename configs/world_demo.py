"""The built-in demo (`make demo`): first frame + camera path + object simulation + caption,
which no single tiny backbone accepts, sampled with Ctrl-VI over the image, camera and
simulation backbones plus the 3D-cache context expert.

  python -m experiments.main --config=configs/world_demo.py --workdir=workdir/demo
  python -m experiments.main --config=configs/world_demo.py:smoke --workdir=/tmp/demo

Writes samples.npz, per-particle MP4/GIF, the inputs visualised, contact_sheet.png and
index.html (open it in a browser) to the workdir.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.experiment = "world_demo"
  c.seed = 0
  c.method = "ctrl_vi"
  c.num_particles = 4
  c.num_levels = 40
  c.mesh = "data:-1"
  c.checkpoint_every = 10
  c.world = ml_collections.ConfigDict(dict(scene_seed=7, num_frames=12, height=32, width=32))
  c.backbones = ml_collections.ConfigDict(dict(i2v="assets/backbones/i2v",
                                               cam2v="assets/backbones/cam2v",
                                               sim2v="assets/backbones/sim2v"))
  c.guidance_scale = 1.0
  c.camera_weight = 1.0
  c.sim_weight = 1.0
  c.context_weight = 6.0  # dev split: the 3D cache is ~6x more accurate than the backbones
  c.context_sigma = 0.02  # chosen on the evaluation's dev split (README, Evaluation)
  c.object_dilation = 1  # pixels added around the object region given to the simulation
  c.sampler = common.sampler(inner_steps=2, step_size=0.02)  # step: dev split, as above
  if arg == "smoke":
    c.num_particles = 2
    c.num_levels = 4
    c.checkpoint_every = 2
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
