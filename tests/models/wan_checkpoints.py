"""Tiny random Wan checkpoints in the diffusers layout, made in the test (nothing downloaded).

``make_root(folder, kind)`` writes what a Wan-AI ``*-Diffusers`` repository holds:
``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/`` (UMT5), ``tokenizer/`` (a
tiny T5-style tokenizer built here), ``scheduler/`` and, for I2V, ``image_encoder/`` (CLIP
vision) with ``image_processor/``. Every weight is perturbed from its initial value.
"""

import json
import os

import torch

Z_DIM = 4  # latent channels of the tiny VAE
TEXT_DIM = 16  # UMT5 d_model
IMAGE_DIM = 24  # CLIP hidden size
VACE_CONTROL = 2 * Z_DIM + 64


def perturb(module, seed=0, scale=0.1):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(scale * torch.randn(p.shape, generator=gen))
  return module.eval()


WORDS = ["a", "red", "ball", "rolls", "on", "the", "floor", "blue", "cube", "room", "camera",
         "pans", "left", "slowly", "bright", "video", "of"]


def make_tokenizer(folder):
  """A WordLevel tokenizer with T5's conventions (pad 0, ``</s>`` 1, ``<unk>`` 2, ``</s>``
  appended), saved as a transformers fast tokenizer."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  from transformers import PreTrainedTokenizerFast
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
  vocab.update({w: i + 3 for i, w in enumerate(WORDS)})
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                 unk_token="<unk>", model_max_length=512)
  fast.save_pretrained(folder)
  return len(vocab)


def make_root(folder, kind="i2v", seed=0, num_layers=2, low_noise=False):
  """A tiny ``kind`` checkpoint root ('t2v', 'i2v' or 'vace') at ``folder``; ``low_noise``
  adds Wan2.2 A14B's ``transformer_2/`` and ``boundary_ratio`` (0.875)."""
  import diffusers
  from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    UMT5Config,
    UMT5EncoderModel,
  )
  os.makedirs(folder, exist_ok=True)
  torch.manual_seed(seed)
  vocab = make_tokenizer(os.path.join(folder, "tokenizer"))
  text = UMT5EncoderModel(UMT5Config(vocab_size=vocab, d_model=TEXT_DIM, d_kv=8, d_ff=32,
                                     num_layers=2, num_heads=2,
                                     relative_attention_num_buckets=8))
  perturb(text, seed).save_pretrained(os.path.join(folder, "text_encoder"),
                                      safe_serialization=True)
  vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=Z_DIM, dim_mult=[1, 2, 2, 2],
                                   num_res_blocks=1, temperal_downsample=[False, True, True],
                                   latents_mean=[0.1, -0.2, 0.3, 0.0],
                                   latents_std=[1.5, 0.5, 2.0, 1.0])
  perturb(vae, seed + 1).save_pretrained(os.path.join(folder, "vae"), safe_serialization=True)
  common = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                out_channels=Z_DIM, text_dim=TEXT_DIM, freq_dim=16, ffn_dim=32,
                num_layers=num_layers, rope_max_seq_len=32)
  index = {"_class_name": "WanPipeline", "_diffusers_version": diffusers.__version__,
           "scheduler": ["diffusers", "UniPCMultistepScheduler"],
           "text_encoder": ["transformers", "UMT5EncoderModel"],
           "tokenizer": ["transformers", "T5TokenizerFast"],
           "transformer": ["diffusers", "WanTransformer3DModel"],
           "vae": ["diffusers", "AutoencoderKLWan"]}
  if kind == "i2v":
    model = diffusers.WanTransformer3DModel(in_channels=3 * Z_DIM, image_dim=IMAGE_DIM,
                                            **common)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=IMAGE_DIM, intermediate_size=40,
                                            num_hidden_layers=3, num_attention_heads=2,
                                            image_size=28, patch_size=7))
    perturb(clip, seed + 2).save_pretrained(os.path.join(folder, "image_encoder"),
                                            safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
                       ).save_pretrained(os.path.join(folder, "image_processor"))
    index.update(_class_name="WanImageToVideoPipeline",
                 image_encoder=["transformers", "CLIPVisionModel"],
                 image_processor=["transformers", "CLIPImageProcessor"])
  elif kind == "vace":
    model = diffusers.WanVACETransformer3DModel(in_channels=Z_DIM, vace_layers=[0],
                                                vace_in_channels=VACE_CONTROL, **common)
    index.update(_class_name="WanVACEPipeline",
                 transformer=["diffusers", "WanVACETransformer3DModel"])
  else:
    model = diffusers.WanTransformer3DModel(in_channels=Z_DIM, **common)
  perturb(model, seed + 3).save_pretrained(os.path.join(folder, "transformer"),
                                           safe_serialization=True)
  if low_noise:
    perturb(model, seed + 4).save_pretrained(os.path.join(folder, "transformer_2"),
                                             safe_serialization=True)
    index.update(transformer_2=index["transformer"], boundary_ratio=0.875)
  os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
  with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
    json.dump({"_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0,
               "num_train_timesteps": 1000, "prediction_type": "flow_prediction",
               "use_flow_sigmas": True}, f)
  with open(os.path.join(folder, "model_index.json"), "w") as f:
    json.dump(index, f)
  return folder
