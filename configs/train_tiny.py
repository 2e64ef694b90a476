"""Flow-matching training of one tiny world backbone (see composed_vi/world/backbones.py).

  python -m experiments.train --config=configs/train_tiny.py:i2v --workdir=workdir/train/i2v
  python -m experiments.train --config=configs/train_tiny.py:sim2v,smoke --workdir=/tmp/t

The argument is the kind (t2v, i2v, sim2v, cam2v), optionally followed by ",smoke".

Sizes: 192 features per token (4 heads, 4 layers) for the 96 values of a 2x4x4 RGB patch, so
that a backbone can carry its own control through (issue 18); 2000 steps of batch 16 on 2048
rendered scenes, about 2 s a step on 2 CPU cores, ~1 h a backbone (a run resumes from its
checkpoints, every 250 steps). The checkpoints shipped in assets/backbones/{i2v,sim2v,cam2v}
are these configs' runs, each one's config.json holding the exact training config ("train")
and summary. i2v starts its condition skip as the copy of the first frame
(``condition_skip_init='copy'``); sim2v keeps the zero start, measured better on its tracks
(8 held-out scenes, configs/evaluate_backbones.py: zero start track error 1.45 px and object
L1 0.128, copy start 1.95 px and 0.102). Those figures are the networks alone: since
2026-12-06 the backbones sample with their output pins (TinySpec.output_pin: the first frame,
the simulation's rendering, the camera's warp of frame 0), which training does not read, so
these configs still reproduce the shipped weights.
assets/backbones/t2v is the earlier 48-feature one
(3 heads, 3 layers, 1000 steps of learning rate 2e-3 on 1024 scenes), which the composition
does not use.
"""

import ml_collections

KINDS = ("t2v", "i2v", "sim2v", "cam2v")


def get_config(arg=None):
  parts = [p for p in (arg or "i2v").split(",") if p]
  kind = parts[0] if parts and parts[0] != "smoke" else "i2v"
  if kind not in KINDS or any(p not in KINDS + ("smoke",) for p in parts):
    raise ValueError(f"config argument: expected a kind of {KINDS} and optionally ',smoke', "
                     f"got {arg!r}")
  c = ml_collections.ConfigDict()
  c.experiment = "train_tiny"
  c.kind = kind
  c.seed = 0
  c.num_steps = 2000
  c.batch_size = 16
  c.learning_rate = 1e-3
  c.checkpoint_every = 250
  # One checkpoint kept (params + AdamW state, 28 MB at these sizes) so that a stopped run
  # resumes. The finished runs' folders (assets/training, 78 MB) stay out of git: the shipped
  # weights are the exports in assets/backbones, which this config reproduces.
  c.keep_checkpoints = 1
  c.log_every = 25
  c.export_dir = f"assets/backbones/{kind}"
  c.data = ml_collections.ConfigDict(dict(seed=1, num_examples=2048, num_frames=12, height=32,
                                          width=32))
  c.model = ml_collections.ConfigDict(dict(dim=192, num_heads=4, num_layers=4, ffn_dim=512,
                                           patch_size=(2, 4, 4), text_dim=32,
                                           prediction="x0", sigma_data=0.4,
                                           # rotary positions that follow the camera
                                           # (tiny_backbones.TinySpec.camera_rope)
                                           camera_rope=kind == "cam2v",
                                           # a learned path from the condition to the output
                                           # (tiny_backbones.TinySpec.condition_skip)
                                           condition_skip=kind != "t2v"))
  if kind == "i2v":
    # The skip starts as the copy of the first frame (TinySpec.condition_skip_init): the zero
    # start ('zero', the others' default) learned 0.35 of the copy in 2000 steps (first-frame
    # L1 0.059 against 0.053 with the copy start).
    c.model.condition_skip_init = "copy"
  if "smoke" in parts:
    c.num_steps = 4
    c.batch_size = 2
    c.checkpoint_every = 2
    c.keep_checkpoints = 2  # the smoke test exports the mid-way checkpoint (step 2)
    c.log_every = 1
    c.export_dir = ""
    c.data.num_examples = 4
    c.model.update(dim=48, num_heads=3, num_layers=2, ffn_dim=96)
  return c
