"""The CLIP vision encoder and its preprocessing against transformers: tiny random
``CLIPVisionModel`` folders saved with ``save_pretrained`` (every weight perturbed) load without
torch and give every hidden state; ``CLIPImageProcessor`` (PIL backend) folders give the same
pixels; bad folders, keys and options are refused by name."""

import numpy as np
import pytest
from PIL import Image

from composed_vi.models import clip_vision, image_processing
from composed_vi.models.wan import safetensors_io

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

FAST = {"xla_backend_optimization_level": 0}  # compile fast on CPU; numerics unchanged

CONFIGS = {
    "heads3_img28_p7_quickgelu": dict(hidden_size=24, intermediate_size=40, num_attention_heads=3,
                                      num_hidden_layers=2, image_size=28, patch_size=7,
                                      hidden_act="quick_gelu"),
    "heads5_img32_p4_gelu": dict(hidden_size=40, intermediate_size=72, num_attention_heads=5,
                                 num_hidden_layers=3, image_size=32, patch_size=4,
                                 hidden_act="gelu"),
    # 32 is no multiple of 7: the strided conv drops the last 4 pixel rows and columns.
    "heads3_img32_p7_gelu_1layer": dict(hidden_size=30, intermediate_size=50,
                                        num_attention_heads=3, num_hidden_layers=1,
                                        image_size=32, patch_size=7, hidden_act="gelu",
                                        layer_norm_eps=1e-6),
}


def perturb(module, seed=0):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.2 * torch.randn(p.shape, generator=gen))
  return module.eval()


def save(model, folder):
  model.save_pretrained(folder, safe_serialization=True)
  return str(folder)


def pixels(config, batch=2, seed=1):
  rng = np.random.default_rng(seed)
  size = config["image_size"]
  return rng.standard_normal((batch, size, size, 3)).astype(np.float32)


def reference(model, x):
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2)), output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states], out


def max_error(ours, ref):
  """(max abs error, allowed error) with the tolerance 2e-5 + 1e-4 * max|ref|."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape
  return float(np.max(np.abs(ours - ref))), 2e-5 + 1e-4 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hidden_states_match_transformers(tmp_path, name):
  torch.manual_seed(0)  # transformers' initialisation, before the perturbation
  cfg = transformers.CLIPVisionConfig(**CONFIGS[name])
  model = perturb(transformers.CLIPVisionModel(cfg))
  folder = save(model, tmp_path / "image_encoder")
  x = pixels(CONFIGS[name])
  ref, out = reference(model, x)

  loaded = clip_vision.load_image_encoder(folder, compiler_options=FAST)
  ours = loaded.apply(loaded.params, x)
  assert len(ours) == len(ref) == cfg.num_hidden_layers + 1
  errors = [max_error(o, r) for o, r in zip(ours, ref)]
  for i, (err, tol) in enumerate(errors):
    assert err <= tol, f"{name}: hidden_states[{i}] error {err:.3g} > {tol:.3g}"
  emb = clip_vision.image_embeddings(loaded, x)  # Wan's conditioning: hidden_states[-2]
  assert emb.shape == (2, loaded.config.num_tokens, cfg.hidden_size)
  err, tol = max_error(emb, ref[-2])
  assert err <= tol, f"{name}: hidden_states[-2] error {err:.3g} > {tol:.3g}"
  np.testing.assert_array_equal(np.asarray(emb), np.asarray(ours[-2]))
  graphdef, _ = clip_vision.split_abstract(loaded.config)
  pooled = clip_vision.nnx.merge(graphdef, loaded.params).pool(ours[-1])
  perr, ptol = max_error(pooled, out.pooler_output.numpy())
  assert perr <= ptol
  print(f"\n{name}: max |error| per hidden state "
        f"{[f'{e:.2e}' for e, _ in errors]}, [-2] {err:.2e} (tol {tol:.2e}), pooled {perr:.2e}")


def test_with_projection_and_legacy_keys_load(tmp_path):
  """``CLIPVisionModelWithProjection`` (keys under ``vision_model.``, a ``visual_projection``
  ignored) and a ``position_ids`` buffer as older checkpoints store it."""
  spec = dict(hidden_size=20, intermediate_size=36, num_attention_heads=5, num_hidden_layers=2,
              image_size=28, patch_size=4, hidden_act="quick_gelu", projection_dim=6)
  torch.manual_seed(0)
  model = perturb(transformers.CLIPVisionModelWithProjection(
      transformers.CLIPVisionConfig(**spec)), seed=3)
  folder = tmp_path / "image_encoder"
  save(model, folder)
  tensors = {k: np.array(v) for k, v in safetensors_io.open_file(
      str(folder / "model.safetensors")).items()}
  assert "visual_projection.weight" in tensors
  assert all(k.startswith("vision_model.") for k in tensors if k != "visual_projection.weight")
  tensors["vision_model.embeddings.position_ids"] = np.arange(50, dtype=np.int64)[None]
  safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
  x = pixels(spec, batch=1, seed=4)
  ref, _ = reference(model, x)
  loaded = clip_vision.load_image_encoder(str(folder), compiler_options=FAST)
  err, tol = max_error(clip_vision.image_embeddings(loaded, x), ref[-2])
  assert err <= tol
  print(f"\nwith projection: hidden_states[-2] error {err:.2e} (tol {tol:.2e})")


def test_wan_vit_h14_key_table():
  """The Wan2.1 I2V encoder's shapes (ViT-H/14, 257 tokens x 1280) fit the key table, checked on
  a meta-device transformers model (no weights allocated)."""
  spec = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16,
              num_hidden_layers=32, image_size=224, patch_size=14, hidden_act="gelu",
              projection_dim=1024, model_type="clip_vision_model")
  with torch.device("meta"):
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**spec))
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  config = clip_vision.CLIPVisionConfig.from_hf(spec)
  table = clip_vision.validate_key_table(config, shapes)
  assert set(shapes) - set(table) == {"visual_projection.weight"}
  # embeddings 3, pre and post layer norms 2 each, 16 tensors per layer
  assert config.num_tokens == 257 and len(table) == 3 + 2 + 16 * 32 + 2


# ---------------------------------------------------------------------------------------------
# Refusals.


@pytest.fixture(scope="module")
def tiny_tensors(tmp_path_factory):
  spec = dict(CONFIGS["heads3_img28_p7_quickgelu"], num_hidden_layers=1)
  folder = tmp_path_factory.mktemp("tiny") / "image_encoder"
  save(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**spec)), folder)
  _, tensors = safetensors_io.open_folder(str(folder))
  return folder, {k: np.array(v) for k, v in tensors.items()}


def _rewrite(folder, tensors):
  safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
  return str(folder)


def test_missing_folder_is_refused(tmp_path):
  with pytest.raises(safetensors_io.CheckpointError, match="does not exist"):
    clip_vision.load_image_encoder(str(tmp_path / "nowhere"))


def test_renamed_key_is_named(tiny_tensors):
  folder, tensors = tiny_tensors
  tensors = dict(tensors)
  tensors["encoder.layers.0.mlp.fc_1.weight"] = tensors.pop("encoder.layers.0.mlp.fc1.weight")
  with pytest.raises(ValueError, match=r"'encoder\.layers\.0\.mlp\.fc_1\.weight'.*no entry"):
    clip_vision.load_image_encoder(_rewrite(folder, tensors))
  # The renamed key aside, the original is then missing.
  shapes = {k: v.shape for k, v in tensors.items() if "fc_1" not in k}
  with pytest.raises(ValueError, match=r"'encoder\.layers\.0\.mlp\.fc1\.weight' is missing"):
    clip_vision.validate_key_table(clip_vision.CLIPVisionConfig(
        **{**CONFIGS["heads3_img28_p7_quickgelu"], "num_hidden_layers": 1}), shapes)


def test_wrong_shape_is_named(tiny_tensors):
  folder, tensors = tiny_tensors
  tensors = dict(tensors)
  pos = tensors["embeddings.position_embedding.weight"]
  tensors["embeddings.position_embedding.weight"] = pos[:-1]
  key = r"'embeddings\.position_embedding\.weight': shape \(16, 24\)"
  with pytest.raises(ValueError, match=key):
    clip_vision.load_image_encoder(_rewrite(folder, tensors))


@pytest.mark.parametrize("override, field", [
    (dict(hidden_act="gelu_magic"), "hidden_act"),
    (dict(hidden_size=25), "hidden_size"),
    (dict(patch_size=0), "patch_size"),
    (dict(model_type="clip"), "model_type"),
])
def test_bad_config_names_the_field(override, field):
  with pytest.raises(ValueError, match=f"^{field}: expected"):
    clip_vision.CLIPVisionConfig.from_hf({**CONFIGS["heads3_img28_p7_quickgelu"], **override})


# ---------------------------------------------------------------------------------------------
# Preprocessing.

PROCESSORS = {
    "clip_bicubic": dict(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24}),
    # A crop larger than the resized image: zero padding, odd pad split; other mean/std.
    "pad_bilinear": dict(size={"shortest_edge": 15}, crop_size={"height": 20, "width": 17},
                         resample=2, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.25]),
    "fixed_size_lanczos": dict(size={"height": 21, "width": 26},
                               crop_size={"height": 16, "width": 19}, resample=1),
}


def _images(seed=0):
  rng = np.random.default_rng(seed)
  arr = lambda h, w, c=3: rng.integers(0, 256, (h, w, c), dtype=np.uint8)
  return [
      arr(37, 53),  # landscape
      arr(61, 29),  # portrait
      arr(9, 12),  # smaller than every crop
      arr(24, 24),  # already the target size
      arr(33, 47, 4),  # RGBA array: composited onto white
      Image.fromarray(arr(45, 31)),
      Image.fromarray(arr(30, 41, 4), mode="RGBA"),
      Image.fromarray(arr(26, 35, 1)[..., 0], mode="L"),
  ]


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_preprocess_matches_transformers(tmp_path, name):
  hf = transformers.CLIPImageProcessor(**PROCESSORS[name])
  hf.save_pretrained(tmp_path)
  hf = transformers.CLIPImageProcessor.from_pretrained(tmp_path)
  assert hf.backend == "pil"  # without torchvision; the backend we port
  config = image_processing.load_image_processor(str(tmp_path))
  images = _images()
  ours = image_processing.preprocess(config, images)
  ref = np.stack([hf(images=[im], return_tensors="np")["pixel_values"][0] for im in images])
  ref = ref.transpose(0, 2, 3, 1)
  assert ours.dtype == np.float32 and ours.shape == ref.shape
  assert float(np.max(np.abs(ours - ref))) <= 1e-6
  print(f"\n{name}: preprocess max |error| {float(np.max(np.abs(ours - ref))):.2e}")


def test_preprocess_wan_default_224(tmp_path):
  """The Wan I2V processor (CLIP defaults, 224 px, bicubic) on a 480x832 frame."""
  transformers.CLIPImageProcessor().save_pretrained(tmp_path)
  hf = transformers.CLIPImageProcessor.from_pretrained(tmp_path)
  image = np.random.default_rng(5).integers(0, 256, (480, 832, 3), dtype=np.uint8)
  ours = image_processing.preprocess(image_processing.load_image_processor(str(tmp_path)), image)
  ref = hf(images=[image], return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
  assert ours.shape == (1, 224, 224, 3)
  assert float(np.max(np.abs(ours - ref))) <= 1e-6


def test_missing_preprocessor_config_is_refused(tmp_path):
  with pytest.raises(safetensors_io.CheckpointError, match="preprocessor_config.json"):
    image_processing.load_image_processor(str(tmp_path))
  with pytest.raises(safetensors_io.CheckpointError, match="does not exist"):
    image_processing.load_image_processor(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("override, field", [
    (dict(do_pad=True), "do_pad"),
    (dict(size={"shortest_edge": 10, "longest_edge": 20}), "size"),
    (dict(resample=9), "resample"),
    (dict(frobnicate=1), "frobnicate"),
    (dict(image_processor_type="SiglipImageProcessor"), "image_processor_type"),
])
def test_unsupported_options_are_named(override, field):
  with pytest.raises(ValueError, match=f"^{field}: "):
    image_processing.ImageProcessorConfig.from_hf({"size": {"shortest_edge": 8}, **override})


def test_bad_image_is_named():
  config = image_processing.ImageProcessorConfig()
  with pytest.raises(ValueError, match=r"images\[1\]: expected"):
    image_processing.preprocess(config, [np.zeros((5, 5, 3), np.uint8),
                                         np.zeros((5, 5, 3), np.float32)])
