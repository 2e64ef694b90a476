"""Checkpoints in Wan's original layout (``WanModel`` / ``VaceWanModel`` names and config, the
original VAE's names) load through the diffusers key tables.

Tiny random diffusers models are written twice, as a diffusers folder and as an original-layout
folder (their state dict renamed by our table, inverted, with an original-style config.json).
diffusers' own single-file converters map the original folder's tensors back to exactly the
diffusers state dict, so our table agrees with theirs; both folders load to bit-identical
parameters, which match the torch model's output.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")
single_file = pytest.importorskip("diffusers.loaders.single_file_utils")

from composed_vi.models.wan import convert_vae, loading, original_layout  # noqa: E402

FAST = {"xla_backend_optimization_level": 0}  # compile time only; numerics unchanged
TINY = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "t2v",
        "dim": 24, "num_heads": 2, "in_dim": 4, "out_dim": 4, "ffn_dim": 32, "freq_dim": 16,
        "num_layers": 2, "text_dim": 16, "eps": 1e-6, "text_len": 512}
CASES = {
    # name: (original config overrides, tiny diffusers overrides of the translated config)
    "t2v": ({}, {}),
    "i2v": ({"model_type": "i2v", "in_dim": 8}, {"image_dim": 12}),
    "flf2v": ({"model_type": "flf2v", "in_dim": 8}, {"image_dim": 12, "pos_embed_seq_len": 10}),
    "vace": ({"_class_name": "VaceWanModel", "model_type": "vace", "vace_layers": [0, 1],
              "vace_in_dim": 6}, {}),
}
# Real checkpoints' config.json (Wan-AI/Wan2.1-*, Wan2.2-TI2V-5B), names and shapes only.
REAL = {
    "wan2.1_t2v_1.3b": dict(model_type="t2v", dim=1536, in_dim=16, ffn_dim=8960, num_heads=12,
                            num_layers=30),
    "wan2.1_i2v_14b": dict(model_type="i2v", dim=5120, in_dim=36, ffn_dim=13824, num_heads=40,
                           num_layers=40),
    "wan2.1_flf2v_14b": dict(model_type="flf2v", dim=5120, in_dim=36, ffn_dim=13824,
                             num_heads=40, num_layers=40),
    "wan2.1_vace_1.3b": dict(_class_name="VaceWanModel", model_type="vace", dim=1536, in_dim=16,
                             ffn_dim=8960, num_heads=12, num_layers=30, vace_in_dim=96,
                             vace_layers=list(range(0, 30, 2))),
    "wan2.2_ti2v_5b": dict(model_type="ti2v", dim=3072, in_dim=48, out_dim=48, ffn_dim=14336,
                           num_heads=24, num_layers=30),
}
# diffusers' single-file converter leaves FLF2V's image positions unrenamed (its conversion
# script maps them as we do).
SINGLE_FILE_UNRENAMED = {"img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed"}


def perturb(module, seed=0):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return module.eval()


def build(diff_config):
  cls = getattr(diffusers, diff_config["_class_name"])
  torch.manual_seed(0)
  return perturb(cls(**{k: v for k, v in diff_config.items() if not k.startswith("_")}))


def write_original(folder, config, state_dict, shards=2):
  """An original-layout folder: config.json and ``state_dict`` in ``shards`` safetensors files
  (with Wan's index when sharded)."""
  folder.mkdir(parents=True, exist_ok=True)
  if config is not None:
    (folder / "config.json").write_text(json.dumps(config))
  keys = list(state_dict)
  weight_map = {}
  for i in range(shards):
    name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
    part = {k: state_dict[k].contiguous() for k in keys[i::shards]}
    safetensors_torch.save_file(part, str(folder / name))
    weight_map.update(dict.fromkeys(part, name))
  if shards > 1:
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))


def flat(params):
  return {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(params)}


def assert_same_params(a, b):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for path in fa:
    assert fa[path].dtype == fb[path].dtype and np.array_equal(fa[path], fb[path]), path


def original_transformer(tmp_path, name):
  """``(original config, diffusers config, torch model, original folder, diffusers folder)``."""
  overrides, tiny = CASES[name]
  original = {**TINY, **overrides}
  diff_config = {**original_layout.diffusers_config_from_original(original), **tiny}
  model = build(diff_config)
  table = original_layout.original_to_diffusers_keys(diff_config)
  state = model.state_dict()
  write_original(tmp_path / "original", original, {o: state[d] for o, d in table.items()})
  model.save_pretrained(tmp_path / "diffusers", safe_serialization=True)
  return original, diff_config, model, tmp_path / "original", tmp_path / "diffusers"


@pytest.mark.parametrize("name", list(REAL))
def test_tables_agree_with_diffusers_converter_at_real_configs(name):
  """Names only (torch's meta device): our table, inverted, is what diffusers' single-file
  converter maps to diffusers' state dict, key for key."""
  original = {"out_dim": 16, "freq_dim": 256, "eps": 1e-6, "text_len": 512, **REAL[name]}
  diff_config = original_layout.diffusers_config_from_original(original)
  with torch.device("meta"):
    cls = getattr(diffusers, diff_config["_class_name"])
    keys = set(cls(**{k: v for k, v in diff_config.items() if not k.startswith("_")})
               .state_dict())
  table = original_layout.original_to_diffusers_keys(diff_config)
  assert sorted(table.values()) == sorted(keys)
  # The converter renames keys and keeps values: give it each original key as its value.
  converted = single_file.convert_wan_transformer_to_diffusers(dict(zip(table, table)))
  expected = {d: o for o, d in table.items()}
  for original, diffusers_key in SINGLE_FILE_UNRENAMED.items():
    if diffusers_key in expected:
      expected[original] = expected.pop(diffusers_key)
  assert converted == expected


def test_vae_table_agrees_with_diffusers_converter_at_wan21_config():
  with torch.device("meta"):
    vae = diffusers.AutoencoderKLWan()
  table = original_layout.original_to_diffusers_vae_keys(dict(vae.config))
  assert sorted(table.values()) == sorted(vae.state_dict())
  converted = single_file.convert_wan_vae_to_diffusers(dict(zip(table, table)))
  assert converted == {d: o for o, d in table.items()}


def test_config_translation():
  """The diffusers configs of the real checkpoints; the image branch follows the tensors."""
  i2v = {**TINY, "model_type": "i2v", "dim": 5120, "num_heads": 40}
  cfg = original_layout.diffusers_config_from_original(i2v)
  assert (cfg["image_dim"], cfg["added_kv_proj_dim"], cfg["attention_head_dim"]) == (1280, 5120,
                                                                                     128)
  assert cfg["qk_norm"] == "rms_norm_across_heads" and cfg["rope_max_seq_len"] == 1024
  # Wan2.2's I2V has the same model_type and no image branch: its tensors say so.
  cfg = original_layout.diffusers_config_from_original(i2v, {"patch_embedding.weight": (1,)})
  assert cfg["image_dim"] is None and cfg["added_kv_proj_dim"] is None
  flf = original_layout.diffusers_config_from_original({**i2v, "model_type": "flf2v"})
  assert flf["pos_embed_seq_len"] == 514
  vace = original_layout.diffusers_config_from_original(
      {**TINY, "model_type": "vace", "num_layers": 6})
  assert vace["_class_name"] == "WanVACETransformer3DModel"
  assert (vace["vace_layers"], vace["vace_in_channels"]) == ([0, 2, 4], 4)
  plain = {k: v for k, v in TINY.items() if k != "text_dim"}
  assert original_layout.diffusers_config_from_original(plain)["text_dim"] == 4096


@pytest.mark.parametrize("change, match", [
    (dict(dim=None), "missing required field 'dim'"),
    (dict(model_type="s2v"), "'model_type'.*'s2v'"),
    (dict(qk_norm=False), "'qk_norm'"),
    (dict(window_size=[256, 256]), "'window_size'"),
    (dict(num_heads=5), "'num_heads'.*dim=24"),
    (dict(add_control_adapter="yes"), "'add_control_adapter' expected a bool"),
    (dict(mystery=1), "unknown field 'mystery'"),
])
def test_bad_configs_are_refused(change, match):
  config = {k: v for k, v in {**TINY, **change}.items() if v is not None}
  with pytest.raises(ValueError, match=match):
    original_layout.diffusers_config_from_original(config)


@pytest.mark.parametrize("name", list(CASES))
def test_original_folder_loads_like_diffusers_folder(tmp_path, name):
  original, diff_config, model, orig_dir, diff_dir = original_transformer(tmp_path, name)
  # (i) diffusers' converter maps our original-layout tensors to exactly its state dict.
  folder_config, tensors = loading.safetensors_io.open_folder(str(orig_dir))
  assert folder_config == original
  # The renaming is lazy: the same memory-mapped views under new names, nothing read or copied.
  _, renamed, names = original_layout.transformer_as_diffusers(folder_config, tensors)
  assert all(renamed[d] is tensors[o] and not tensors[o].flags.owndata for d, o in names.items())
  converted = single_file.convert_wan_transformer_to_diffusers(
      {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
  for original_key, diffusers_key in SINGLE_FILE_UNRENAMED.items():
    if original_key in converted:
      converted[diffusers_key] = converted.pop(original_key)
  state = model.state_dict()
  assert converted.keys() == state.keys()
  for key, value in state.items():
    assert torch.equal(converted[key], value), key
  # (ii) Both folders give bit-identical parameters, and the output is torch's.
  kwargs = dict(dtype=np.float32, compute_dtype=jnp.float32, compiler_options=FAST)
  ours = loading.load_transformer(str(orig_dir), **kwargs)
  ref = loading.load_transformer(str(diff_dir), **kwargs)
  assert ours.diffusers_config == diff_config
  assert ours.config == ref.config
  assert_same_params(ours.params, ref.params)

  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, diff_config["in_channels"], 3, 4, 6)).astype(np.float32)
  t = np.array([500.0], np.float32)
  text_len = 512 if diff_config["image_dim"] else 5  # diffusers assumes 512 with image tokens
  ctx = rng.standard_normal((1, text_len, 16)).astype(np.float32)
  image = control = None
  torch_kwargs = {}
  if diff_config["image_dim"]:
    image = rng.standard_normal((2 if name == "flf2v" else 1, 5, 12)).astype(np.float32)
    torch_kwargs["encoder_hidden_states_image"] = torch.from_numpy(image)
  if name == "vace":
    control = rng.standard_normal((1, 6, 3, 4, 6)).astype(np.float32)
    torch_kwargs["control_hidden_states"] = torch.from_numpy(control)
  with torch.no_grad():
    expected = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx),
                     **torch_kwargs).sample.numpy()
  last = (lambda a: None if a is None else np.moveaxis(a, 1, -1))
  outs = [np.moveaxis(np.asarray(ours.model_fn(m.params, last(x), t, ctx, image, last(control))),
                      -1, 1) for m in (ours, ref)]
  np.testing.assert_array_equal(outs[0], outs[1])
  err, scale = np.abs(outs[0] - expected).max(), np.abs(expected).max()
  assert err <= 2e-5 + 1e-4 * scale, (err, scale)


def test_bad_original_folders_are_refused(tmp_path):
  """(iii) A renamed, a missing or a mis-shaped tensor is refused by its original name."""
  original, diff_config, model, _, _ = original_transformer(tmp_path, "t2v")
  table = original_layout.original_to_diffusers_keys(diff_config)
  state = {o: model.state_dict()[d] for o, d in table.items()}

  def refused(name, tensors, match, config=original):
    write_original(tmp_path / name, config, tensors, shards=1)
    with pytest.raises(ValueError, match=match):
      loading.load_transformer(str(tmp_path / name))

  renamed = dict(state)
  renamed["blocks.1.ffn.00.weight"] = renamed.pop("blocks.1.ffn.0.weight")
  refused("renamed", renamed, r"tensor 'blocks\.1\.ffn\.00\.weight' .* no entry")
  missing = {k: v for k, v in state.items() if k != "blocks.0.norm3.bias"}
  refused("missing", missing, r"tensor 'blocks\.0\.norm3\.bias' \(diffusers "
          r"'blocks\.0\.norm2\.bias'\) is missing")
  shaped = {**state, "blocks.0.cross_attn.norm_k.weight": torch.ones(23)}
  refused("shape", shaped, r"'blocks\.0\.attn2\.norm_k\.weight' \(original "
          r"'blocks\.0\.cross_attn\.norm_k\.weight'\): shape \(23,\)")
  refused("no_dim", state, "missing required field 'dim'",
          {k: v for k, v in original.items() if k != "dim"})
  # Prefixed single files (ComfyUI) read the same; a diffusers-style config is not enough.
  prefixed = {f"model.diffusion_model.{k}": v for k, v in state.items()}
  write_original(tmp_path / "prefixed", original, prefixed, shards=1)
  got = loading.load_transformer(str(tmp_path / "prefixed"), dtype=np.float32)
  assert got.diffusers_config == diff_config
  refused("diffusers_config", state, "unknown field 'num_attention_heads'",
          {"_class_name": "WanTransformer3DModel", "num_attention_heads": 2})


TINY_VAE = dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                latents_std=[1.5, 0.5, 2.0, 1.0])


def test_original_vae_folder_loads_like_diffusers_folder(tmp_path):
  """Wan2.1's VAE shape (4 levels, 2 residual blocks: the decoder indices diffusers' converter
  spells out), tiny widths."""
  torch.manual_seed(0)
  vae = perturb(diffusers.AutoencoderKLWan(**TINY_VAE))
  # WanVAE_'s constructor names (``dim``), as a user would write them for Wan's config-less VAE.
  original_config = {"dim": 4, **{k: v for k, v in TINY_VAE.items() if k != "base_dim"}}
  table = original_layout.original_to_diffusers_vae_keys(dict(vae.config))
  state = vae.state_dict()
  original = {o: state[d] for o, d in table.items()}
  assert "decoder.upsamples.4.shortcut.weight" in original  # the flat decoder list
  write_original(tmp_path / "original", original_config, original, shards=1)
  vae.save_pretrained(tmp_path / "diffusers", safe_serialization=True)
  # (i) diffusers' converter agrees, tensor for tensor.
  converted = single_file.convert_wan_vae_to_diffusers(dict(original))
  assert converted.keys() == state.keys()
  assert all(torch.equal(converted[k], v) for k, v in state.items())
  # (ii) Same parameters as the diffusers folder; encode matches torch.
  model, params = loading.load_vae(str(tmp_path / "original"))
  _, ref_params = loading.load_vae(str(tmp_path / "diffusers"))
  assert_same_params(params, ref_params)
  assert model.config == convert_vae.config_from_diffusers(vae.config)
  video = np.random.default_rng(0).uniform(-1, 1, (1, 3, 5, 8, 8)).astype(np.float32)
  with torch.no_grad():
    expected = vae.encode(torch.from_numpy(video)).latent_dist.mode().numpy()
  got = np.asarray(model.encode(params, video))
  assert np.abs(got - expected).max() <= 2e-5 + 1e-4 * np.abs(expected).max()
  # (iii) Without config.json the VAE is Wan2.1's (base_dim 96), so these tensors are refused,
  # by original name; the same for the single file itself.
  bare = tmp_path / "bare"
  write_original(bare, None, original, shards=1)
  file = next(bare.glob("*.safetensors"))
  for path in (bare, file):
    with pytest.raises(ValueError, match=r"\(original '[a-z0-9.]+'\) has shape"):
      loading.load_vae(str(path))
  del original["decoder.upsamples.3.resample.1.bias"]
  write_original(tmp_path / "missing", original_config, original, shards=1)
  with pytest.raises(ValueError, match=r"'decoder\.upsamples\.3\.resample\.1\.bias' \(diffusers "
                     r"'decoder\.up_blocks\.0\.upsamplers\.0\.resample\.1\.bias'\) is missing"):
    loading.load_vae(str(tmp_path / "missing"))

