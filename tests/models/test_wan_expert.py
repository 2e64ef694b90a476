"""Wan backbones as experts: the velocity is diffusers' output at timestep 1000 t, with CFG,
I2V condition latents, VACE control, the Wan2.2 switch; the wan_compose launcher end to end."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import launcher_util as lu  # noqa: E402

from composed_vi.errors import ConfigError  # noqa: E402
from composed_vi.models import wan_expert as wan  # noqa: E402
from composed_vi.models.wan import from_diffusers  # noqa: E402

TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
            out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
            rope_max_seq_len=32)
SHAPE = (3, 4, 4, 4)  # (F, H, W, C) channels-last


def tiny(seed=0, **overrides):
  torch.manual_seed(seed)
  model = diffusers.WanTransformer3DModel(**{**TINY, **overrides})
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def torch_velocity(model, x, t, ctx, cond=None):
  """diffusers' output for channels-last particles x (N, F, H, W, C) at level t."""
  if cond is not None:
    x = np.concatenate([x, np.broadcast_to(cond, x.shape[:1] + cond.shape)], -1)
  hs = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
  ts = torch.full((x.shape[0],), 1000.0 * t)
  cs = torch.from_numpy(np.broadcast_to(ctx, (x.shape[0],) + ctx.shape).copy())
  with torch.no_grad():
    out = model(hs, ts, cs).sample.numpy()
  return np.moveaxis(out, 1, -1)


def close(a, b):
  return np.abs(np.asarray(a) - b).max() <= 2e-5 + 1e-4 * np.abs(b).max()


@pytest.fixture(scope="module")
def t2v():
  model = tiny()
  fn, params = from_diffusers(model)
  return model, fn, params


def data(seed=0, n=2):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((n,) + SHAPE).astype(np.float32),
          rng.standard_normal((5, 16)).astype(np.float32),
          rng.standard_normal((5, 16)).astype(np.float32))


def test_velocity_and_cfg_match_diffusers(t2v):
  model, fn, params = t2v
  x, ctx, neg = data()
  plain = wan.make_expert(fn.config, SHAPE, params=params, model_fn=fn.model_fn, context=ctx)
  v = jax.jit(plain.velocity)(jnp.asarray(x), 0.7)
  assert close(v, torch_velocity(model, x, 0.7, ctx))
  guided = wan.make_expert(fn.config, SHAPE, params=params, model_fn=fn.model_fn, context=ctx,
                           negative_context=neg, guidance_scale=4.0)
  vc, vu = torch_velocity(model, x, 0.3, ctx), torch_velocity(model, x, 0.3, neg)
  assert close(jax.jit(guided.velocity)(jnp.asarray(x), 0.3), vu + 4.0 * (vc - vu))


def test_condition_latents_are_concatenated():
  model = tiny(seed=1, in_channels=8)
  fn, params = from_diffusers(model)
  x, ctx, _ = data(1)
  cond = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
  e = wan.make_expert(fn.config, SHAPE, params=params, model_fn=fn.model_fn, context=ctx,
                      condition=cond)
  assert close(e.velocity(jnp.asarray(x), 0.5), torch_velocity(model, x, 0.5, ctx, cond))


def test_wan22_switches_transformers_at_the_boundary(t2v):
  high_model, fn, high = t2v
  low_model = tiny(seed=5)
  _, low = from_diffusers(low_model)
  x, ctx, _ = data(3)
  e = wan.make_expert(fn.config, SHAPE, params=high, model_fn=fn.model_fn, context=ctx,
                      params_low=low, boundary=0.875)
  vel = jax.jit(e.velocity)
  assert close(vel(jnp.asarray(x), 0.9), torch_velocity(high_model, x, 0.9, ctx))
  assert close(vel(jnp.asarray(x), 0.5), torch_velocity(low_model, x, 0.5, ctx))
  # Each transformer with its own guidance scale (Wan2.2's guidance_scale / guidance_scale_2).
  _, _, neg = data(4)
  g = wan.make_expert(fn.config, SHAPE, params=high, model_fn=fn.model_fn, context=ctx,
                      negative_context=neg, params_low=low, boundary=0.875, guidance_scale=4.0,
                      guidance_scale_low=3.0)
  vel = jax.jit(g.velocity)
  for model, t, scale in ((high_model, 0.9, 4.0), (low_model, 0.5, 3.0)):
    vc, vu = torch_velocity(model, x, t, ctx), torch_velocity(model, x, t, neg)
    assert close(vel(jnp.asarray(x), t), vu + scale * (vc - vu))


def test_conditioning_is_validated(t2v, tmp_path):
  _, fn, params = t2v
  _, ctx, neg = data()
  kw = dict(params=params, model_fn=fn.model_fn)
  with pytest.raises(ConfigError, match="text_embeddings.*16"):
    wan.make_expert(fn.config, SHAPE, context=np.zeros((5, 8)), **kw)
  with pytest.raises(ConfigError, match="negative_embeddings.*guidance_scale"):
    wan.make_expert(fn.config, SHAPE, context=ctx, guidance_scale=5.0, **kw)
  bad = ctx.copy()
  bad[0, 0] = np.inf
  np.save(tmp_path / "bad.npy", bad)
  with pytest.raises(ConfigError, match="text_embeddings.*NaN/inf"):
    wan.make_expert(fn.config, SHAPE, context=str(tmp_path / "bad.npy"), **kw)
  with pytest.raises(ConfigError, match="latent_shape.*patch"):
    wan.make_expert(fn.config, (3, 5, 4, 4), context=ctx, **kw)
  with pytest.raises(ConfigError, match="condition_latents"):
    wan.make_expert(fn.config, SHAPE, context=ctx, condition=np.zeros(SHAPE), **kw)
  with pytest.raises(ConfigError, match="image_embeddings"):
    wan.make_expert(fn.config, SHAPE, context=ctx, context_image=np.zeros((4, 8)), **kw)


def test_wan_compose_launcher_end_to_end(tmp_path):
  """Two tiny backbones saved with save_pretrained, a mask, CFG: the launcher samples them."""
  for name, seed in (("a", 0), ("b", 1)):
    tiny(seed=seed).save_pretrained(tmp_path / name, safe_serialization=True)
  _, ctx, neg = data()
  np.save(tmp_path / "ctx.npy", ctx)
  np.save(tmp_path / "neg.npy", neg)
  mask = np.zeros((3, 4, 4, 1), np.float32)
  mask[:, :2] = 1.0
  np.save(tmp_path / "mask.npy", mask)
  b = "--config.backbones"
  args = [f"{b}.t2v.checkpoint={tmp_path / 'a'}", f"{b}.t2v.text_embeddings={tmp_path}/ctx.npy",
          f"{b}.t2v.negative_embeddings={tmp_path}/neg.npy", f"{b}.t2v.guidance_scale=3.0",
          f"{b}.i2v.checkpoint={tmp_path / 'b'}", f"{b}.i2v.text_embeddings={tmp_path}/ctx.npy",
          f"{b}.i2v.guidance_scale=1.0", f"{b}.i2v.mask={tmp_path}/mask.npy",
          "--config.latent_shape=(3, 4, 4, 4)", "--config.sampler.feature_map=identity"]
  out = lu.launch(tmp_path / "run", *args, config="configs/wan_compose.py:smoke")
  assert out.returncode == 0, out.stderr[-3000:]
  x = lu.samples(tmp_path / "run")
  assert x.shape == (2, 3, 4, 4, 4) and np.all(np.isfinite(x))
  # A folder that does not exist is refused by field, before anything is written.
  out = lu.launch(tmp_path / "run2", f"{b}.t2v.checkpoint={tmp_path / 'missing'}",
                  config="configs/wan_compose.py:smoke")
  assert out.returncode == 2 and "backbones.t2v.checkpoint" in out.stderr
  assert "Traceback" not in out.stderr and not os.path.exists(tmp_path / "run2")
