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
  c.world = common.world(scene_seed=7)
  c.backbones = common.tiny_backbones("i2v", "cam2v", "sim2v")
  c.composition = common.composition()
  # Chosen on the evaluation's dev split (docs/journal.md): the step, and a strong repulsion that
  # acts only where no control specifies the video (feature_map='target_mask': the kernel
  # sees the target's repulsion_mask alone; with 4 particles in ~37k dimensions the RBF
  # repulsion fades by ~1/D). Steps preconditioned by the target's total weight
  # (eta t^2 / W per pixel). The Stein steps run at the levels t >= 0.6 only (16 of 40) and
  # there move every pixel; below, v_bar's transport alone was measured better.
  # The drive and step rule are the library's defaults (the textbook drive, whose mean-field
  # fixed point is the target, and the stiffness step; docs/method.md), switched from the
  # earlier pinned `drive='local'`, `step_rule='noise'` on 2026-12-07 after the dev split
  # showed them tied. The step 0.0075 is the pinned step 0.03 (chosen on dev on 2026-12-06
  # from 0.003-0.3 by the rule every score-following method gets,
  # composed_vi.lab.evaluation.tuning) times the kernel mass 1/4 of 4 particles whose kernel
  # is blind at these dimensions, so each level relaxes by what it did. The repulsion 2e4 is
  # tuning.choose_repulsion's choice on dev (16 cases, 2 seeds; workdir/dev_rep7,
  # docs/journal.md, 2026-12-07 seventh and eighth sessions) from 5e3/1e4/2e4/4e4: the most
  # diverse value whose controls are not worse than velocity averaging's and whose unsimulated
  # object is not less present, a loss counting when detectable and beyond tuning.NEGLIGIBLE
  # (4e4's tracks are +0.12 px). Without the negligible amounts the same rows chose 5e3 (1e4
  # and 2e4 had an object L1 0.0001 above averaging's), the default for one session.
  c.sampler = common.sampler(inner_steps=2, step_size=0.0075, feature_map="target_mask",
                             drive="kernel", step_rule="stiffness",
                             repulsion=2e4, precondition=True, stein_region="all",
                             stein_min_t=0.6)
  if arg == "smoke":
    c.num_particles = 2
    c.num_levels = 4
    c.checkpoint_every = 2
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
