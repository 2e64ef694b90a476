"""Ctrl-VI over Wan-family backbones read from local diffusers checkpoint folders.

Nothing is downloaded: point the `checkpoint` fields at folders holding `config.json` and
`diffusion_pytorch_model*.safetensors` (e.g. the `transformer/` folder of
Wan-AI/Wan2.1-T2V-1.3B-Diffusers) and the conditioning fields at `.npy` arrays computed once
with the pipelines' encoders (UMT5 text embeddings (L, 4096), CLIP image embeddings (257, 1280),
VAE latents (F, H, W, C) channels-last, normalised as the Wan pipelines do). A missing folder is
refused, naming its field, before anything is loaded.

  python -m experiments.main --config=configs/wan_compose.py --workdir=/tmp/wan \\
      --config.backbones.t2v.checkpoint=/ckpt/Wan2.1-T2V-1.3B-Diffusers/transformer \\
      --config.backbones.t2v.text_embeddings=/data/prompt.npy \\
      --config.backbones.t2v.negative_embeddings=/data/negative.npy \\
      --config.vae_checkpoint=/ckpt/Wan2.1-T2V-1.3B-Diffusers/vae
  python -m experiments.main --config=configs/wan_compose.py:smoke --workdir=/tmp/wan_smoke \\
      --config.backbones.t2v.checkpoint=... (a small latent and 8 levels)

A second backbone (image-to-video, VACE or Fun-Control) is `--config.backbones.i2v.*`: set its
`checkpoint` to enable it (an empty checkpoint drops the entry).
"""

import ml_collections

from configs import common


def backbone(**overrides):
  b = ml_collections.ConfigDict(dict(
      checkpoint="",  # diffusers transformer folder
      low_noise_checkpoint="",  # Wan2.2 A14B: the low-noise transformer
      boundary=0.0,  # Wan2.2: level below which the low-noise transformer runs (0.875 T2V)
      text_embeddings="",  # .npy (L, text_dim)
      negative_embeddings="",  # .npy (L, text_dim): needed when guidance_scale != 1
      image_embeddings="",  # .npy (L_img, image_dim): I2V models
      condition_latents="",  # .npy (F, H, W, in_channels - C): I2V mask + image / Fun-Control
      control_latents="",  # .npy (F, H, W, vace_in_channels): VACE
      control_scale=1.0,
      guidance_scale=5.0,
      weight=1.0,
      mask="",  # .npy broadcastable to latent_shape: where this backbone has a say
  ))
  b.update(overrides)
  return b


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.experiment = "wan_compose"
  c.seed = 0
  c.method = "ctrl_vi"
  c.num_particles = 4
  c.num_levels = 50
  c.mesh = "data:-1"
  c.checkpoint_every = 5
  c.latent_shape = (21, 60, 104, 16)  # 81 frames at 480 x 832 through the Wan2.1 VAE
  c.compute_dtype = "bfloat16"
  c.vae_checkpoint = ""  # decode the samples to videos.npz when set
  c.normalized_latents = True  # samples are in the pipelines' normalised latent space
  c.backbones = ml_collections.ConfigDict(dict(t2v=backbone(), i2v=backbone()))

  # Wan's scheduler shift at 480p (5.0 at 720p); the SVGD kernel on 2x2-pooled latents.
  c.sampler = common.sampler(shift=3.0, feature_map="pool", inner_steps=2)

  if arg == "smoke":
    c.num_particles = 2
    c.num_levels = 8
    c.checkpoint_every = 4
    c.latent_shape = (3, 4, 4, 16)
    c.compute_dtype = "float32"
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
