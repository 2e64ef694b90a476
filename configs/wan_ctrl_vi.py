"""Ctrl-VI over real Wan-family checkpoints from real inputs: a prompt, a first image, a camera
path and a simulation video in; one MP4 per particle, a contact sheet and index.html out.

  python -m experiments.main --config=configs/wan_ctrl_vi.py --workdir=/tmp/ctrl_vi \\
      --config.prompt="a red ball rolls across a wooden floor" \\
      --config.image=first.png --config.depth=first_depth.npy --config.camera=path.txt \\
      --config.simulation=sim_frames/ \\
      --config.backbones.i2v.root=/ckpt/Wan2.1-I2V-14B-480P-Diffusers \\
      --config.backbones.vace.root=/ckpt/Wan2.1-VACE-1.3B-diffusers
  python -m experiments.main --config=configs/wan_ctrl_vi.py:smoke ...  (8 levels, 2 particles)

A ``root`` is a diffusers checkpoint folder as the Wan-AI ``*-Diffusers`` repositories ship
it (``transformer/`` (and ``transformer_2/`` for Wan2.2 A14B), ``vae/``, ``text_encoder/``,
``tokenizer/``, and for Wan2.1 I2V ``image_encoder/`` + ``image_processor/``), or a bare
transformer folder (``config.json`` + ``*.safetensors``, diffusers or original Wan names, e.g. a
VideoX-Fun release) whose encoders come from the diffusers root ``encoders_root``; nothing is
downloaded. ``kind`` is what the folder holds (``auto``, the default here) or, when given,
must be: ``t2v``, ``i2v``, ``vace``, ``fun_control`` or ``control_camera`` (checked from its
config before any weight is read). Inputs
(docs/launcher.md):

* ``image``: the first frame (PNG/JPEG/...), resized to ``height`` x ``width`` (Lanczos).
* ``camera``: RealEstate10K ``.txt`` or our ``.json`` (composed_vi/lab/camera_file.py), one
  pose per frame; used by the 3D-cache context.
* ``depth``: the first frame's camera depth (``.npy`` or 16-bit PNG times ``depth_scale``).
* ``simulation``: the simulated objects alone, ``num_frames`` frames: RGBA (a folder of PNG
  frames or a ``.npy`` ``(T, H, W, 4)``), whose alpha is the object region, or an RGB video
  (MP4, ...) on a plain background, keyed out: a pixel is an object where it differs from the
  median border colour by more than ``simulation_key`` (0.1 of the range) in some channel.
* ``simulation_depth``: the simulated objects' depth, ``.npy`` ``(T, H, W)`` (0 where no object
  is, times ``depth_scale``), for a ``fun_control`` backbone with ``control='depth'``.

A backbone entry with an empty ``root`` is unused. ``region`` is where it has a say (``all``,
``object``: the simulation's alpha dilated by ``object_dilation`` pixels, ``background``: the
rest), pooled to the latent grid. A VACE backbone's ``control``: ``objects`` (the simulation's
objects given, the rest generated), ``first_frame`` (frame 0 given) or ``none``; a
``fun_control`` backbone's: ``depth`` (``simulation_depth`` as a grey inverse-depth video),
``simulation`` (the simulated objects on black), ``video`` (``control_video``: a Canny, pose
or other control video of ``num_frames`` frames) or ``none``. A ``control_camera`` backbone
reads ``camera``.
"""

import ml_collections

from configs import common


def backbone(**overrides):
  b = ml_collections.ConfigDict(dict(
      root="",  # diffusers root or transformer folder (empty: unused)
      kind="auto",  # auto | t2v | i2v | vace | fun_control | control_camera (checked)
      region="all",  # all | object | background
      weight=1.0,
      guidance_scale=5.0,  # CFG with the negative prompt (1: none)
      guidance_scale_low=0.0,  # Wan2.2 A14B's low-noise transformer (0: guidance_scale)
      control="objects",  # VACE: objects | first_frame | none; fun_control: depth | ...
      control_scale=1.0,  # VACE only
  ))
  b.update(overrides)
  return b


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.experiment = "wan_ctrl_vi"
  c.seed = 0
  c.method = "ctrl_vi"
  c.num_particles = 2
  c.num_levels = 50
  c.mesh = "data:-1"
  c.checkpoint_every = 5
  c.compute_dtype = "bfloat16"
  # Inputs.
  c.prompt = ""
  c.negative_prompt = ""  # the pipelines' default when none is given
  c.max_sequence_length = 512
  c.image = ""
  c.camera = ""
  c.depth = ""
  c.depth_scale = 1.0
  c.simulation = ""
  c.simulation_key = 0.1  # an RGB simulation's background key (see above)
  c.simulation_depth = ""
  c.control_video = ""  # a Fun-Control backbone's own control video (control='video')
  # The tokenizer, UMT5, VAE (and CLIP) of backbones given as bare transformer folders.
  c.encoders_root = ""
  c.height = 480
  c.width = 832
  c.num_frames = 81
  c.fps = 16  # Wan's frame rate
  c.object_dilation = 8  # pixels added around the simulation's objects
  # The 3D-cache context expert (METHOD.md section 5): weight 0 leaves it out.
  c.context = ml_collections.ConfigDict(dict(weight=6.0, sigma=0.05, supersample=2))
  c.backbones = ml_collections.ConfigDict(dict(
      i2v=backbone(region="all"),
      vace=backbone(region="object"),
      t2v=backbone(region="background"),
  ))
  # Wan's scheduler shift at 480p (5.0 at 720p); Stein steps where nothing is specified.
  c.sampler = common.sampler(shift=3.0, inner_steps=2, feature_map="target_mask")
  if arg == "smoke":
    c.num_levels = 8
    c.checkpoint_every = 4
    c.compute_dtype = "float32"
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
