"""The UMT5 text encoder, its tokenizer and Wan's prompt embeddings against transformers and
diffusers at tiny random configs saved with ``save_pretrained`` (nothing is downloaded); bad
folders and checkpoints are refused by name."""

import functools
import json
import os
import types

import jax
import numpy as np
import pytest

from composed_vi.models import text, umt5
from composed_vi.models.wan import safetensors_io

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


def tolerance(ref):
  return 2e-5 + 1e-4 * float(np.abs(ref).max())


def make_encoder(seed=0, scale=0.2, **config):
  """A transformers ``UMT5EncoderModel`` with every weight moved off its initial value."""
  torch.manual_seed(seed)
  model = transformers.UMT5EncoderModel(transformers.UMT5Config(dropout_rate=0.0, **config))
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(scale * torch.randn(p.shape, generator=gen))
  return model.eval()


def batch(vocab, lengths, seq, seed=0):
  """Ids in [1, vocab) with padding (id 0, mask 0) after each row's length."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, (len(lengths), seq)).astype(np.int32)
  mask = (np.arange(seq)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  return np.where(mask > 0, ids, 0).astype(np.int32), mask


def reference(model, ids, mask):
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
  return out.last_hidden_state.float().numpy()


def ours(folder, ids, mask, dtype=None):
  enc = umt5.load_text_encoder(str(folder), dtype=dtype)
  return np.asarray(enc.apply(enc.params, ids, mask)), enc


CONFIGS = {
    # odd head count, d_kv * heads (15) != d_model (16), 8 buckets up to distance 20
    "h3_b8": dict(vocab_size=64, d_model=16, d_kv=5, d_ff=24, num_layers=2, num_heads=3,
                  relative_attention_num_buckets=8, relative_attention_max_distance=20),
    # 5 heads, 3 layers, 32 buckets (offsets >= 8 in logarithmic buckets)
    "h5_b32": dict(vocab_size=101, d_model=24, d_kv=4, d_ff=40, num_layers=3, num_heads=5,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128),
    # plain ReLU feed-forward, distances beyond max_distance share the last bucket
    "relu": dict(vocab_size=40, d_model=16, d_kv=8, d_ff=20, num_layers=1, num_heads=2,
                 relative_attention_num_buckets=8, relative_attention_max_distance=10,
                 feed_forward_proj="relu"),
    "gated_silu": dict(vocab_size=77, d_model=20, d_kv=6, d_ff=28, num_layers=1, num_heads=4,
                       relative_attention_num_buckets=16, relative_attention_max_distance=12,
                       feed_forward_proj="gated-silu"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encoder_matches_transformers(tmp_path, name):
  """A padded batch of different lengths: every position of ``last_hidden_state``."""
  cfg = CONFIGS[name]
  model = make_encoder(seed=len(name), **cfg)
  model.save_pretrained(tmp_path, safe_serialization=True)
  ids, mask = batch(cfg["vocab_size"], [37, 30, 3], 37)
  ref = reference(model, ids, mask)
  out, enc = ours(tmp_path, ids, mask)
  assert out.shape == (3, 37, cfg["d_model"]) and out.dtype == np.float32
  err = float(np.abs(out - ref).max())
  print(f"{name}: max |ours - transformers| = {err:.2e} (max |ref| {np.abs(ref).max():.2f})")
  assert err <= tolerance(ref), err
  assert enc.config == umt5.UMT5Config(**cfg)
  # Buckets depend on offsets only and padded keys are masked: padding does not change a row.
  alone = np.asarray(enc.apply(enc.params, ids[2:, :3], mask[2:, :3]))
  np.testing.assert_allclose(alone[0], out[2, :3], atol=tolerance(ref), rtol=0)


def test_sharded_and_bfloat16_checkpoints(tmp_path):
  """Sharded files with an index; bfloat16 folders, all bfloat16 or with ``wo`` in float32
  (transformers' ``_keep_in_fp32_modules``), against torch in float32 with the same rounded
  weights (the same tolerance: both compute in float32 from identical weights)."""
  cfg = CONFIGS["h3_b8"]
  model = make_encoder(seed=3, **cfg)
  ids, mask = batch(cfg["vocab_size"], [11, 6], 11, seed=1)
  sharded = tmp_path / "sharded"
  model.save_pretrained(sharded, safe_serialization=True, max_shard_size="2KB")
  assert (sharded / "model.safetensors.index.json").is_file()
  assert len(list(sharded.glob("*.safetensors"))) > 1
  ref = reference(model, ids, mask)
  out, _ = ours(sharded, ids, mask)
  print(f"sharded: {np.abs(out - ref).max():.2e}")
  assert np.abs(out - ref).max() <= tolerance(ref)

  model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16", safe_serialization=True)
  model.save_pretrained(tmp_path / "mixed", safe_serialization=True)
  from safetensors.torch import load_file, save_file
  path = str(tmp_path / "mixed" / "model.safetensors")
  save_file({k: v.float() if ".wo." in k else v for k, v in load_file(path).items()}, path,
            metadata={"format": "pt"})
  rounded = model.float()  # the bf16-rounded weights, in float32
  ref = reference(rounded, ids, mask)
  for folder in ("bf16", "mixed"):
    out, enc = ours(tmp_path / folder, ids, mask)
    dtypes = {str(v.dtype) for v in jax.tree.leaves(enc.params)}
    assert dtypes == ({"bfloat16"} if folder == "bf16" else {"bfloat16", "float32"}), dtypes
    print(f"{folder}: {np.abs(out - ref).max():.2e}")
    assert np.abs(out - ref).max() <= tolerance(ref)
    out32, enc32 = ours(tmp_path / folder, ids, mask, dtype=np.float32)
    assert {str(v.dtype) for v in jax.tree.leaves(enc32.params)} == {"float32"}
    np.testing.assert_allclose(out32, out, atol=1e-6, rtol=0)
  # bfloat16 activations (norm statistics and softmax stay float32): close, not equal.
  enc = umt5.load_text_encoder(str(tmp_path / "bf16"), compute_dtype=jax.numpy.bfloat16)
  out = np.asarray(enc.apply(enc.params, ids, mask))
  print(f"bf16 compute: {np.abs(out - ref).max():.2e}")
  assert out.dtype == np.float32 and np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()


def _rewrite(folder, change):
  """Applies ``change(tensors) -> tensors`` to a one-file checkpoint folder."""
  path = os.path.join(folder, "model.safetensors")
  tensors = dict(safetensors_numpy.load_file(path))
  safetensors_numpy.save_file(change(tensors), path, metadata={"format": "pt"})


@pytest.mark.parametrize("layout", ["encoder_only", "both_differ"])
def test_embedding_key_variants(tmp_path, layout):
  """Only ``encoder.embed_tokens.weight``, or both keys with different values (transformers
  then unties them and the encoder embeds with its own): we follow transformers."""
  cfg = CONFIGS["relu"]
  make_encoder(seed=5, **cfg).save_pretrained(tmp_path, safe_serialization=True)

  def change(t):
    shared = t.pop("shared.weight")
    t["encoder.embed_tokens.weight"] = shared + 0.5
    if layout == "both_differ":
      t["shared.weight"] = shared
    return t

  _rewrite(tmp_path, change)
  ref_model = transformers.UMT5EncoderModel.from_pretrained(tmp_path).eval()
  ids, mask = batch(cfg["vocab_size"], [9, 4], 9, seed=2)
  ref = reference(ref_model, ids, mask)
  out, _ = ours(tmp_path, ids, mask)
  assert np.abs(out - ref).max() <= tolerance(ref)


def test_relative_position_buckets_match_transformers():
  """Every (query, key) pair up to 600 tokens, Wan's 32 / 128 and smaller settings."""
  from transformers.models.umt5.modeling_umt5 import UMT5Attention
  n = 600
  offsets = torch.arange(n)[None, :] - torch.arange(n)[:, None]
  for buckets, distance in ((32, 128), (8, 20), (8, 10), (16, 12), (6, 7), (64, 256)):
    hf = transformers.UMT5Config(relative_attention_num_buckets=buckets,
                                 relative_attention_max_distance=distance)
    want = UMT5Attention(hf, has_relative_attention_bias=True)._relative_position_bucket(offsets)
    config = umt5.UMT5Config(relative_attention_num_buckets=buckets,
                             relative_attention_max_distance=distance)
    np.testing.assert_array_equal(umt5.relative_position_buckets(config, n, n), want.numpy())


def test_activations_match_transformers():
  from transformers.activations import ACT2FN
  x = np.linspace(-12, 12, 2001, dtype=np.float32)
  for name, fn in umt5._ACTIVATIONS.items():
    want = ACT2FN[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(fn(x)), want, atol=2e-6, rtol=1e-5, err_msg=name)


def test_config_errors():
  with pytest.raises(ValueError, match="model_type: expected 'umt5', got 't5'"):
    umt5.UMT5Config.from_hf({"model_type": "t5"})
  with pytest.raises(ValueError, match="is_decoder: expected False"):
    umt5.UMT5Config.from_hf({"is_decoder": True})
  with pytest.raises(ValueError, match="feed_forward_proj: expected an activation .* 'foo'"):
    umt5.UMT5Config.from_hf({"feed_forward_proj": "gated-foo"})
  with pytest.raises(ValueError, match="feed_forward_proj: expected 'gated-<act>'"):
    umt5.UMT5Config.from_hf({"feed_forward_proj": "double-gelu"})
  with pytest.raises(ValueError, match="dense_act_fn: expected 'gelu_new'.*got 'relu'"):
    umt5.UMT5Config.from_hf({"feed_forward_proj": "gated-gelu", "dense_act_fn": "relu"})
  with pytest.raises(ValueError, match="num_heads: expected a positive int, got 0"):
    umt5.UMT5Config.from_hf({"num_heads": 0})
  with pytest.raises(ValueError, match="relative_attention_max_distance: expected more than"):
    umt5.UMT5Config(relative_attention_num_buckets=32, relative_attention_max_distance=8)
  assert umt5.UMT5Config.from_hf({"feed_forward_proj": "gated-gelu"}).activation == "gelu_new"


def test_checkpoint_errors(tmp_path):
  with pytest.raises(safetensors_io.CheckpointError, match="nowhere' does not exist"):
    umt5.load_text_encoder(str(tmp_path / "nowhere"))
  cfg = CONFIGS["relu"]
  folder = str(tmp_path / "enc")
  make_encoder(seed=7, **cfg).save_pretrained(folder, safe_serialization=True)
  with open(os.path.join(folder, "config.json")) as f:
    config = json.load(f)

  def with_config(**fields):
    with open(os.path.join(folder, "config.json"), "w") as f:
      json.dump({**config, **fields}, f)

  with_config(architectures=["T5EncoderModel"])
  with pytest.raises(safetensors_io.CheckpointError, match="architectures: expected"):
    umt5.load_text_encoder(folder)
  with_config(feed_forward_proj="gated-relu", dense_act_fn="relu", is_gated_act=True)
  with pytest.raises(ValueError, match="DenseReluDense.wi.weight' .* no entry"):
    umt5.load_text_encoder(folder)
  with_config()

  key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
  _rewrite(folder, lambda t: {("encoder.block.0.layer.0.SelfAttention.rel_bias.weight"
                               if k == key else k): v for k, v in t.items()})
  with pytest.raises(ValueError, match="'encoder.block.0.layer.0.SelfAttention.rel_bias.weight'"):
    umt5.load_text_encoder(folder)
  _rewrite(folder, lambda t: {(key if "rel_bias" in k else k): v for k, v in t.items()})
  umt5.load_text_encoder(folder)  # restored

  wi = "encoder.block.0.layer.1.DenseReluDense.wi.weight"
  _rewrite(folder, lambda t: {**t, wi: np.zeros((21, 16), np.float32)})
  with pytest.raises(ValueError, match=r"'encoder.block.0.layer.1.DenseReluDense.wi.weight': "
                                       r"shape \(21, 16\) .* shape \(16, 20\)"):
    umt5.load_text_encoder(folder)
  _rewrite(folder, lambda t: {**t, wi: np.zeros((20, 16), np.float32),
                              "encoder.embed_tokens.weight": t["shared.weight"],
                              "shared.weight": np.zeros((41, 16), np.float32)})
  with pytest.raises(ValueError, match=r"'shared.weight' has shape \(41, 16\) but its tied "
                                       r"'encoder.embed_tokens.weight' has shape \(40, 16\)"):
    umt5.load_text_encoder(folder)
  _rewrite(folder, lambda t: {k: v for k, v in t.items() if k not in (
      "shared.weight", "encoder.final_layer_norm.weight")})
  with pytest.raises(ValueError, match="'encoder.final_layer_norm.weight' is missing"):
    umt5.load_text_encoder(folder)


# ---------------------------------------------------------------------------------------------
# Tokenizer and prompt embeddings.

WORDS = ["a", "red", "ball", "rolls", "on", "the", "floor", "blue", "cube", "camera", "pans",
         "slowly", "left", "then", "right", "bright"]


def make_t5_tokenizer(folder, strip_settings=False):
  """A T5-style Unigram tokenizer (pad 0, ``</s>`` 1, ``<unk>`` 2, ``</s>`` appended), saved as
  transformers' ``T5TokenizerFast``. ``strip_settings`` then rewrites its tokenizer.json with no
  post-processor and with padding / truncation lengths baked in. Returns the vocabulary size."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
  vocab += [("\u2581" + w, -3.0 - 0.1 * i) for i, w in enumerate(WORDS)]
  vocab += [("ro", -4.0), ("lls", -4.0), ("\u2581ro", -4.5)]
  vocab += [(c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz&"]
  tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.WhitespaceSplit(),
      pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)])
  tok.post_processor = processors.TemplateProcessing(
      single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
  transformers.T5TokenizerFast(tokenizer_object=tok, extra_ids=0).save_pretrained(folder)
  if strip_settings:
    path = os.path.join(folder, "tokenizer.json")
    saved = Tokenizer.from_file(path)
    saved.post_processor = None
    saved.enable_padding(length=7, pad_id=0, pad_token="<pad>")
    saved.enable_truncation(5)
    saved.save(path)
  return len(vocab)


def make_wordlevel_tokenizer(folder):
  """A WordLevel tokenizer with the ``$A </s>`` template, saved as ``PreTrainedTokenizerFast``."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                     special_tokens=[("</s>", 1)])
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                       unk_token="<unk>").save_pretrained(folder)
  return len(vocab)


MAX_LENGTH = 12
PROMPTS = [
    "a red ball rolls",
    "",
    " ".join(WORDS[:MAX_LENGTH - 1]),  # exactly MAX_LENGTH tokens with </s>
    " ".join(WORDS[:MAX_LENGTH]),  # one piece too many
    "the blue cube rolls on the floor and the camera pans slowly left, then right",
    "xyz unknownword",
]


@pytest.mark.parametrize("kind", ["t5", "t5_stripped", "wordlevel"])
def test_tokenize_matches_transformers(tmp_path, kind):
  if kind == "wordlevel":
    make_wordlevel_tokenizer(tmp_path)
    ref_tok = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
  else:
    make_t5_tokenizer(tmp_path, strip_settings=kind == "t5_stripped")
    ref_tok = transformers.T5TokenizerFast.from_pretrained(tmp_path)  # the pipelines' class
  ref = ref_tok(PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                add_special_tokens=True, return_attention_mask=True, return_tensors="np")
  full = ref_tok(PROMPTS, add_special_tokens=True)["input_ids"]
  tokens = text.tokenize(text.load_tokenizer(str(tmp_path)), PROMPTS, max_length=MAX_LENGTH)
  assert tokens.input_ids.dtype == np.int32 and tokens.attention_mask.dtype == np.int32
  np.testing.assert_array_equal(tokens.input_ids, ref["input_ids"])
  np.testing.assert_array_equal(tokens.attention_mask, ref["attention_mask"])
  np.testing.assert_array_equal(tokens.lengths, ref["attention_mask"].sum(1))
  np.testing.assert_array_equal(tokens.dropped, [max(0, len(f) - MAX_LENGTH) for f in full])
  assert tokens.dropped[2] == 0 and tokens.lengths[2] == MAX_LENGTH
  assert tokens.dropped[3] == 1 and tokens.truncated[4] and not tokens.truncated[0]
  assert tokens.input_ids[3, -1] == 1  # truncation keeps </s>


def test_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="'.*nowhere' does not exist"):
    text.load_tokenizer(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="empty' has no tokenizer.json"):
    text.load_tokenizer(str(tmp_path / "empty"))
  make_wordlevel_tokenizer(tmp_path / "tok")
  tok = text.load_tokenizer(str(tmp_path / "tok"))
  with pytest.raises(ValueError, match="max_length: expected a positive int"):
    text.tokenize(tok, ["a"], max_length=0)
  with pytest.raises(ValueError, match="prompts: expected a string or a non-empty list"):
    text.tokenize(tok, [])


def test_encode_prompts_matches_diffusers(tmp_path):
  """Against diffusers' own ``WanPipeline._get_t5_prompt_embeds`` / ``encode_prompt`` (called on
  a stand-in pipeline holding the transformers tokenizer and encoder of the same folders)."""
  from diffusers.pipelines.wan.pipeline_wan import WanPipeline
  vocab = make_t5_tokenizer(tmp_path / "tokenizer")
  model = make_encoder(seed=11, vocab_size=vocab, **{
      k: v for k, v in CONFIGS["h5_b32"].items() if k != "vocab_size"})
  model.save_pretrained(tmp_path / "text_encoder", safe_serialization=True)
  pipe = types.SimpleNamespace(
      tokenizer=transformers.T5TokenizerFast.from_pretrained(tmp_path / "tokenizer"),
      text_encoder=model, _execution_device=torch.device("cpu"))
  pipe._get_t5_prompt_embeds = functools.partial(WanPipeline._get_t5_prompt_embeds, pipe)
  prompts = ["  a red\n ball &amp;amp; rolls ", PROMPTS[4]]
  negative = "blue   cube"
  with torch.no_grad():  # as the pipelines' __call__
    want, want_neg = (t.numpy() for t in WanPipeline.encode_prompt(
        pipe, prompts, negative, max_sequence_length=MAX_LENGTH, device=torch.device("cpu"),
        dtype=torch.float32))

  tok = text.load_tokenizer(str(tmp_path / "tokenizer"))
  enc = umt5.load_text_encoder(str(tmp_path / "text_encoder"))
  got = np.asarray(text.encode_prompts(enc, tok, prompts, max_length=MAX_LENGTH))
  got_pos, got_neg = (np.asarray(a) for a in text.encode_prompt(
      enc, tok, prompts, negative, max_length=MAX_LENGTH))
  assert got.shape == (2, MAX_LENGTH, 24) and got.dtype == np.float32
  lengths = text.tokenize(tok, prompts, MAX_LENGTH, clean=True).lengths
  assert lengths[0] < MAX_LENGTH and lengths[1] == MAX_LENGTH  # one short, one truncated
  assert not got[0, lengths[0]:].any()  # exact zeros after the prompt
  err = max(np.abs(got - want).max(), np.abs(got_pos - want).max(),
            np.abs(got_neg - want_neg).max())
  print(f"encode_prompt(s): max |ours - diffusers| = {err:.2e}")
  assert err <= tolerance(want)

  small = make_encoder(seed=1, **CONFIGS["relu"])  # 40 ids < the tokenizer's vocabulary
  small.save_pretrained(tmp_path / "small", safe_serialization=True)
  with pytest.raises(ValueError, match="beyond the text encoder's vocab_size=40"):
    text.encode_prompts(umt5.load_text_encoder(str(tmp_path / "small")), tok, ["xyz"])
