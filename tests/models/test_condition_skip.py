"""The condition skip of the Wan port (``WanConfig.condition_skip``, ours): a zero-initialised
linear map from each token's patch of condition channels to its output patch."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from composed_vi.models.wan import transformer as wan
from composed_vi.world import backbones as tb

TINY = dict(patch_size=(2, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=7,
            out_channels=3, text_dim=8, freq_dim=16, ffn_dim=16, num_layers=1,
            rope_max_seq_len=32)


def _params(config, seed=0, skip=None):
  _, abstract = wan.split_abstract(config)
  rng = np.random.default_rng(seed)
  flat = []
  for path, var in nnx.to_flat_state(abstract):  # the same draws with and without the skip
    if path[0] == "condition_skip":
      value = np.zeros(var.shape) if skip is None else skip
    else:
      value = 0.3 * rng.standard_normal(var.shape)
    flat.append((path, var.replace(value=jnp.asarray(value, jnp.float32))))
  return nnx.from_flat_state(flat)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((2, 4, 4, 6, 7)).astype(np.float32)
  return x, np.array([900.0, 120.0], np.float32), rng.standard_normal((2, 5, 8)).astype(
      np.float32)


def test_zero_initialised_skip_is_the_plain_model():
  """At initialisation (zeros) the model is Wan's: the same parameters give the same output."""
  plain, skip = wan.WanConfig(**TINY), wan.WanConfig(**TINY, condition_skip=True)
  model = wan.init_model(skip, nnx.Rngs(0))
  assert np.all(np.asarray(model.condition_skip[...]) == 0.0)
  assert model.condition_skip.shape == (8 * 4, 8 * 3)  # patch 2x2x2, 4 condition -> 3 out
  x, t, ctx = _inputs()
  p_plain = _params(plain)
  p_skip = _params(skip)
  out_plain = wan.make_model_fn(plain)(p_plain, x, t, ctx)
  out_skip = wan.make_model_fn(skip)(p_skip, x, t, ctx)
  np.testing.assert_array_equal(np.asarray(out_skip), np.asarray(out_plain))
  assert wan.count_params(skip) == wan.count_params(plain) + 8 * 4 * 8 * 3


def test_skip_copies_a_condition_pixel_for_pixel():
  """With ``proj_out`` zeroed and the skip set to the identity from the first three condition
  channels, the output is those channels exactly: the patch layouts of input and output agree
  (a transposed patch would move pixels)."""
  config = wan.WanConfig(**TINY, condition_skip=True)
  npatch, cc, co = 8, 4, 3
  skip = np.zeros((npatch * cc, npatch * co))
  for p in range(npatch):  # patch-major, channel-minor on both sides
    for c in range(co):
      skip[p * cc + c, p * co + c] = 1.0
  params = _params(config, skip=skip)
  state = dict(nnx.to_flat_state(params))
  flat = [(path, var.replace(value=jnp.zeros_like(var.get_value())) if path[0] == "proj_out"
           else var) for path, var in state.items()]
  params = nnx.from_flat_state(flat)
  x, t, ctx = _inputs(1)
  out = np.asarray(wan.make_model_fn(config)(params, x, t, ctx))
  np.testing.assert_allclose(out, x[..., 3:6], atol=1e-6)


def test_skip_needs_condition_channels():
  with pytest.raises(ValueError, match="condition_skip"):
    wan.WanConfig(**{**TINY, "in_channels": 3}, condition_skip=True)
  # A tiny backbone without a condition (t2v) cannot have one either.
  with pytest.raises(ValueError, match="condition_skip"):
    tb.TinySpec(kind="t2v", condition_skip=True).wan_config()
  # With rope position channels the skip reads only the condition channels before them.
  config = tb.TinySpec(kind="cam2v", camera_rope=True, condition_skip=True).wan_config()
  assert config.condition_channels == 6


def test_copy_initialised_skip_adds_the_rgb_condition():
  """``condition_skip_init='copy'``: the initial model is the zero-initialised one plus each
  pixel's condition RGB (the first frame at frame 0 for i2v, nothing at the other frames)."""
  spec = tb.TinySpec(kind="i2v", dim=24, num_heads=2, num_layers=1, ffn_dim=32,
                     condition_skip=True)
  copy = dataclasses.replace(spec, condition_skip_init="copy")
  rng = np.random.default_rng(3)
  video = rng.uniform(-1, 1, (1, 4, 8, 8, 3)).astype(np.float32)
  first = rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
  cond = np.zeros((1, 4, 8, 8, 4), np.float32)
  cond[:, 0, ..., :3], cond[:, 0, ..., 3] = first, 1.0
  x = np.concatenate([video, cond], -1)
  t, ctx = np.array([500.0], np.float32), np.zeros((1, 3, spec.text_dim), np.float32)
  plain = np.asarray(tb.model_fn(spec)(tb.init_params(spec), x, t, ctx))
  copied = np.asarray(tb.model_fn(copy)(tb.init_params(copy), x, t, ctx))
  np.testing.assert_allclose(copied[:, 0] - plain[:, 0], first, atol=1e-5)
  np.testing.assert_allclose(copied[:, 1:], plain[:, 1:], atol=1e-6)
  # Only RGB conditions can be copied, and only through a skip.
  for bad in (dict(kind="cam2v"), dict(kind="i2v", condition_skip=False)):
    with pytest.raises(ValueError, match="condition_skip_init"):
      tb.TinySpec(**{**dict(kind="i2v", condition_skip=True), **bad},
                  condition_skip_init="copy").wan_config()
  with pytest.raises(ValueError, match="condition_skip_init"):
    tb.TinySpec(kind="i2v", condition_skip=True, condition_skip_init="eye").wan_config()
