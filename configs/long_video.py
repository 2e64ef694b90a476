"""Long videos: two or more segments chained with the previous segment's last frame and the 3D
context, the camera panning right then back left to its start pose; measured: the background
error when the camera returns (composed_vi.lab.long_video).

  python -m experiments.main --config=configs/long_video.py --workdir=workdir/long_video
  python -m experiments.main --config=configs/long_video.py:smoke --workdir=/tmp/long
  python -m experiments.main --config=configs/long_video.py:far --workdir=workdir/long_far

``far``: two segments each way (the camera turns by 50 degrees, a whole field of view, so the
start view leaves the frame before it returns); about twice the compute.
"""

import ml_collections

from configs import common, world_demo


def get_config(arg=None):
  demo = world_demo.get_config()
  c = ml_collections.ConfigDict()
  c.experiment = "long_video"
  c.seed = 0
  # Held-out scenes, distinct from the demo's scene 7.
  c.scene_seeds = (101, 102, 103, 104, 105, 106, 107, 108)
  c.method = "ctrl_vi"
  c.num_particles = 4  # = chains
  c.num_levels = 32
  c.sampler = common.sampler(**{k: demo.sampler[k] for k in (
      "inner_steps", "step_size", "drive", "step_rule", "feature_map", "repulsion",
      "precondition",
      "stein_region", "stein_min_t")})
  c.world = common.world()
  c.long = ml_collections.ConfigDict(dict(
      segments_per_direction=1,  # segments panning right, then as many back left
      pan_degrees=25.0,  # per segment (the world's pans: 15 to 25 degrees)
      plucker_frame="segment",  # "segment": rays re-anchored at the start pose; "world"
      return_frames=3,  # last frames of the last segment measured as "return"
  ))
  c.variants = ("context", "last_frame_only")  # also: "context_from_last"
  c.backbones = common.tiny_backbones("i2v", "cam2v", "sim2v")
  c.composition = ml_collections.ConfigDict(demo.composition.to_dict())
  c.bootstrap_resamples = 2000
  if arg == "smoke":
    c.scene_seeds = (101,)
    c.num_particles = 2
    c.num_levels = 2
    c.sampler.inner_steps = 1
    c.bootstrap_resamples = 100
  elif arg == "far":
    c.long.segments_per_direction = 2
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '', 'smoke' or 'far', got {arg!r}")
  return c
