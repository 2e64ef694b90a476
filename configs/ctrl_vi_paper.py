"""The paper's setting in one config: Ctrl-VI over Wan2.2 I2V A14B on the whole video, a
VideoX-Fun Control backbone on the simulation's depth in the object region, VideoX-Fun
Control-Camera on the background (optionally VACE on the objects), and the 3D-cache context.

  python -m experiments.main --config=configs/ctrl_vi_paper.py --workdir=/tmp/paper \\
      --config.prompt="a blue cube falls onto a wooden floor" \\
      --config.image=first.png --config.depth=first_depth.npy --config.camera=path.txt \\
      --config.simulation=sim_rgba/ --config.simulation_depth=sim_depth.npy \\
      --config.backbones.i2v.root=/ckpt/Wan2.2-I2V-A14B-Diffusers \\
      --config.backbones.fun_control.root=/ckpt/Wan2.1-Fun-V1.1-14B-Control \\
      --config.backbones.control_camera.root=/ckpt/Wan2.1-Fun-V1.1-14B-Control-Camera \\
      --config.encoders_root=/ckpt/Wan2.1-I2V-14B-480P-Diffusers
  python -m experiments.main --config=configs/ctrl_vi_paper.py:tiny --workdir=/tmp/paper_tiny

Checkpoint folders (nothing is downloaded):

* ``backbones.i2v.root``: a diffusers root of Wan2.2 I2V A14B (``transformer/`` for high noise,
  ``transformer_2/`` below ``boundary_ratio``, each with its guidance scale).
* ``backbones.fun_control.root`` / ``backbones.control_camera.root``: VideoX-Fun releases as
  published (``config.json`` in the original Wan layout + ``diffusion_pytorch_model.safetensors``;
  their ``.pth`` text encoder and VAE are not read).
* ``encoders_root``: a diffusers root whose ``tokenizer/``, ``text_encoder/`` (UMT5-xxl),
  ``vae/`` (the Wan2.1 VAE, which Wan2.2 A14B also uses) and ``image_encoder/`` (CLIP ViT-H,
  which the Wan2.1-Fun models read) serve the VideoX-Fun folders: Wan2.1 I2V 14B 480P's.
* ``backbones.vace.root`` (empty: unused): e.g. ``Wan2.1-VACE-14B-diffusers``, on the objects.

Inputs as ``configs/wan_ctrl_vi.py`` (whose fields this config shares): the prompt, the first
image and its depth, the camera file, the simulation's RGBA rendering and its depth.

``:tiny`` writes tiny random checkpoints of every kind (``composed_vi.lab.tiny_checkpoints``:
a Wan2.2-A14B-style I2V root, VideoX-Fun Control and Control-Camera folders in the original
layout, a VACE root and a Wan2.1 I2V root as the encoders) and drawn inputs into ``tiny_dir``
(default ``<workdir>/tiny_assets``), then runs this composition on them end to end (32 x 48
pixels, 5 frames, 4 levels, 2 particles): about a minute on a CPU.
"""

import ml_collections

from configs import wan_ctrl_vi


def get_config(arg=None):
  c = wan_ctrl_vi.get_config()
  c.experiment = "ctrl_vi_paper"
  backbone = wan_ctrl_vi.backbone
  c.backbones = ml_collections.ConfigDict(dict(
      # Wan2.2 I2V A14B: the same guidance on both experts by default (Wan2.2's own example).
      i2v=backbone(kind="i2v", region="all", guidance_scale=3.5, guidance_scale_low=3.5),
      # VideoX-Fun's default guidance (6.0) for its Control models.
      fun_control=backbone(kind="fun_control", region="object", control="depth",
                           guidance_scale=6.0),
      control_camera=backbone(kind="control_camera", region="background", control="none",
                              guidance_scale=6.0),
      vace=backbone(kind="vace", region="object", control="objects"),
  ))
  # Write tiny random checkpoints and inputs and run on them (see the module).
  c.tiny = False
  c.tiny_dir = ""
  if arg == "tiny":
    c.tiny = True
    c.prompt = "a blue cube falls onto the wooden floor and the camera pans"
    c.height, c.width, c.num_frames = 32, 48, 5
    c.object_dilation = 2
    c.num_particles = 2
    c.num_levels = 4
    c.checkpoint_every = 2
    c.compute_dtype = "float32"
    c.backbones.vace.weight = 0.5
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'tiny', got {arg!r}")
  return c
