"""Parity of the JAX Wan DiT with diffusers' PyTorch reference at tiny random configs (CPU).

Every diffusers parameter is perturbed by 0.1 * N(0, 1) so that zero-initialised tables and unit
norms are exercised. Tolerance (float32): |ours - torch| <= 2e-5 + 1e-4 * max|torch|.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from composed_vi.models.wan import convert_transformer, from_diffusers  # noqa: E402
from composed_vi.models.wan import transformer as wan  # noqa: E402

# XLA's backend optimisations dominate CPU compile time at these sizes; numerics are unaffected.
FAST = {"xla_backend_optimization_level": 0}
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
            out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
            rope_max_seq_len=32)


def _perturbed(cls, **config):
  torch.manual_seed(0)
  module = cls(**config)
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return module.eval()


def _inputs(batch=2, channels=4, frames=3, height=4, width=6, text_len=7, text_dim=16, seed=0):
  gen = torch.Generator().manual_seed(seed)
  x = torch.randn(batch, channels, frames, height, width, generator=gen)
  t = torch.tensor([999.0, 351.5][:batch])
  context = torch.randn(batch, text_len, text_dim, generator=gen)
  return x, t, context


def _check_parity(module, *args, via_package=False, **kwargs):
  with torch.no_grad():
    ref = module(*args, **kwargs, return_dict=False)[0].numpy()
  if via_package:  # the public contract, with default compilation
    fn, params = from_diffusers(module)
  else:
    fn, params = convert_transformer.from_diffusers(module, compiler_options=FAST)
  names = ("encoder_hidden_states_image", "control_hidden_states", "control_hidden_states_scale")
  out = np.asarray(fn(params, *args, *(kwargs.get(n) for n in names)))
  assert out.shape == ref.shape
  err, scale = np.abs(out - ref).max(), np.abs(ref).max()
  assert err <= 2e-5 + 1e-4 * scale, (err, scale)
  return fn, params, ref


CASES = {
    # name: (diffusers class name, config overrides, input overrides)
    "t2v": ("WanTransformer3DModel", {}, {}),
    "t2v_head12_no_cross_norm_5frames": (
        "WanTransformer3DModel", dict(attention_head_dim=12, cross_attn_norm=False),
        dict(frames=5, height=6, width=4)),
    "fun_control_in8_out4": ("WanTransformer3DModel", dict(in_channels=8), dict(channels=8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parity_t2v(name):
  cls_name, overrides, shape = CASES[name]
  module = _perturbed(getattr(diffusers, cls_name), **{**TINY, **overrides})
  _check_parity(module, *_inputs(**shape), via_package=name == "t2v")


@pytest.mark.parametrize("pos_embed_seq_len", [None, 10])
def test_parity_i2v(pos_embed_seq_len):
  # diffusers splits image from text tokens by assuming 512 text tokens; we take them separately.
  # With pos_embed_seq_len (first-last-frame) pairs of image batch entries are joined.
  module = _perturbed(diffusers.WanTransformer3DModel, **TINY, image_dim=12, added_kv_proj_dim=16,
                      pos_embed_seq_len=pos_embed_seq_len)
  x, t, context = _inputs(text_len=512, frames=5)
  image_batch = 2 if pos_embed_seq_len is None else 4
  image = torch.randn(image_batch, 5, 12, generator=torch.Generator().manual_seed(3))
  _check_parity(module, x, t, context, encoder_hidden_states_image=image)


def test_parity_per_token_timesteps():
  module = _perturbed(diffusers.WanTransformer3DModel, **TINY)
  x, _, context = _inputs()
  tokens = 3 * 2 * 3
  t = torch.stack([torch.linspace(0.0, 999.0, tokens), torch.full((tokens,), 500.0)])
  _check_parity(module, x, t, context)


@pytest.mark.parametrize("layers,vace_layers,scale,control_frames", [
    (2, [0, 1], None, 3),
    (3, [0, 2], [0.7, 1.3], 2),  # fewer control tokens: zero-padded as in diffusers
])
def test_parity_vace(layers, vace_layers, scale, control_frames):
  module = _perturbed(diffusers.WanVACETransformer3DModel, **{**TINY, "num_layers": layers},
                      vace_layers=vace_layers, vace_in_channels=6)
  x, t, context = _inputs()
  control = torch.randn(2, 6, control_frames, 4, 6, generator=torch.Generator().manual_seed(4))
  scale = None if scale is None else torch.tensor(scale)
  _check_parity(module, x, t, context, control_hidden_states=control,
                control_hidden_states_scale=scale)


def test_channels_last_model_fn_and_bf16():
  module = _perturbed(diffusers.WanTransformer3DModel, **TINY)
  x, t, context = _inputs()
  fn, params, ref = _check_parity(module, x, t, context)
  x_last = np.moveaxis(x.numpy(), 1, -1)
  out_last = fn.model_fn(params, x_last, t.numpy(), context.numpy())
  np.testing.assert_allclose(np.moveaxis(np.asarray(out_last), -1, 1), ref, atol=1e-4)
  # bf16 compute with float32 params: measured ~0.7% of max|out| (torch bf16 is ~1%).
  bf16_fn = wan.make_model_fn(fn.config, dtype=jnp.bfloat16, compiler_options=FAST)
  out = bf16_fn(params, x_last, t.numpy(), context.numpy())
  assert out.dtype == jnp.bfloat16
  out = np.moveaxis(np.asarray(out.astype(jnp.float32)), -1, 1)
  assert np.isfinite(out).all()
  assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()


def test_remat_matches_and_differentiates():
  config = wan.config_from_diffusers({**TINY, "num_layers": 1})
  graphdef, abstract = wan.split_abstract(config)
  rng = np.random.default_rng(0)  # numpy draws: eager nnx init would compile every random op
  params = nnx.from_flat_state([
      (path, var.replace(value=jnp.asarray(0.3 * rng.standard_normal(var.shape), jnp.float32)))
      for path, var in nnx.to_flat_state(abstract)])
  remat_graphdef, _ = wan.split_abstract(config, remat=True)
  x = rng.standard_normal((1, 1, 4, 4, 4)).astype(np.float32)
  t, context = np.array([500.0], np.float32), np.ones((1, 3, 16), np.float32)

  def loss(p, remat):
    return jnp.sum(wan.forward(remat_graphdef if remat else graphdef, p, x, t, context) ** 2)

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1, compiler_options=FAST)
  (v0, g0), (v1, g1) = value_and_grad(params, False), value_and_grad(params, True)
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _state_dict_shapes(module):
  return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_key_table_names_offending_key():
  module = _perturbed(diffusers.WanTransformer3DModel, **TINY)
  config = wan.config_from_diffusers(module.config)
  state = {k: v.numpy() for k, v in module.state_dict().items()}
  bad = dict(state, **{"blocks.1.attn2.to_k.weight": np.zeros((16, 15), np.float32)})
  with pytest.raises(ValueError, match=r"blocks\.1\.attn2\.to_k\.weight.*\(16, 15\).*\(16, 16\)"):
    convert_transformer.convert_state_dict(config, bad)
  missing = {k: v for k, v in state.items() if k != "proj_out.bias"}
  with pytest.raises(ValueError, match=r"'proj_out\.bias' is missing"):
    convert_transformer.convert_state_dict(config, missing)
  with pytest.raises(ValueError, match=r"'blocks\.2\.norm2\.weight'"):
    convert_transformer.convert_state_dict(config, {**state, "blocks.2.norm2.weight": state[
        "blocks.1.norm2.weight"]})
  with pytest.raises(ValueError, match="unknown diffusers Wan config key 'window'"):
    wan.config_from_diffusers({**TINY, "window": 3})


REAL = {
    "wan2.1_t2v_1.3b": ("WanTransformer3DModel", dict(
        num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30)),
    "wan2.1_t2v_14b": ("WanTransformer3DModel", dict(
        num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40)),
    "wan2.1_i2v_14b": ("WanTransformer3DModel", dict(
        num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
        in_channels=36, image_dim=1280, added_kv_proj_dim=5120)),
    "wan2.1_vace_1.3b": ("WanVACETransformer3DModel", dict(
        num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
        vace_layers=[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28],
        vace_in_channels=96)),
}


@pytest.mark.parametrize("name", list(REAL))
def test_real_config_shapes_match_diffusers_meta(name):
  cls_name, overrides = REAL[name]
  config = {**dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096,
                   freq_dim=256), **overrides}
  with torch.device("meta"):
    module = getattr(diffusers, cls_name)(**config)
  ours = wan.config_from_diffusers(module.config)
  shapes = _state_dict_shapes(module)
  table = convert_transformer.validate_key_table(ours, shapes)  # raises on any mismatch
  assert set(table) == set(shapes)
  assert wan.count_params(ours) == sum(p.numel() for p in module.parameters())
