"""The diffusers-folder loader: tiny random models saved with ``save_pretrained`` (safetensors)
load with no torch import and match diffusers; bad folders are refused by name."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
            out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
            rope_max_seq_len=32)


def perturb(module, seed=0):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return module.eval()


def inputs(seed=1, frames=3, h=4, w=6):
  rng = np.random.default_rng(seed)
  return dict(x=rng.standard_normal((1, 4, frames, h, w)).astype(np.float32),
              t=np.array([500.0], np.float32),
              ctx=rng.standard_normal((1, 5, 16)).astype(np.float32))


_LOAD_NO_TORCH = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any torch import now fails
    import jax.numpy as jnp, numpy as np
    from composed_vi.models.wan import loading
    folder, inputs, out, dtype = sys.argv[1:5]
    dtype = None if dtype == "keep" else np.float32
    m = loading.load_transformer(folder, dtype=dtype, compute_dtype=jnp.float32)
    d = np.load(inputs)
    x = np.moveaxis(d["x"], 1, -1)
    y = m.model_fn(m.params, x, d["t"], d["ctx"])
    dtypes = sorted({str(v.dtype) for v in __import__("jax").tree.leaves(m.params)})
    np.savez(out, y=np.moveaxis(np.asarray(y, np.float32), -1, 1), dtypes=np.array(dtypes))
    assert "torch" not in sys.modules or sys.modules["torch"] is None
""")


@pytest.mark.parametrize("torch_dtype, load_dtype", [
    ("float32", "keep"), ("bfloat16", "float32"), ("bfloat16", "keep")])
def test_transformer_folder_loads_without_torch(tmp_path, torch_dtype, load_dtype):
  """fp32 and bf16 folders; bf16 weights loaded as float32 match exactly (to fp32 rounding),
  kept in bf16 they match to bf16 rounding of the products."""
  model = perturb(diffusers.WanTransformer3DModel(**TINY))
  if torch_dtype == "bfloat16":  # reference: bf16-rounded weights (buffers such as RoPE kept)
    with torch.no_grad():
      for prm in model.parameters():
        prm.copy_(prm.to(torch.bfloat16).float())
  d = inputs()
  with torch.no_grad():
    ref = model(torch.from_numpy(d["x"]), torch.from_numpy(d["t"]),
                torch.from_numpy(d["ctx"])).sample.numpy()
  folder = tmp_path / "transformer"
  model.to(getattr(torch, torch_dtype)).save_pretrained(folder, safe_serialization=True,
                                                        max_shard_size="20KB")
  assert len(list(folder.glob("*.safetensors"))) > 1  # sharded, with an index
  np.savez(tmp_path / "in.npz", **d)
  out = subprocess.run([sys.executable, "-c", _LOAD_NO_TORCH, str(folder),
                        str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), load_dtype],
                       cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  res = np.load(tmp_path / "out.npz")
  assert list(res["dtypes"]) == [torch_dtype if load_dtype == "keep" else "float32"]
  bf16_params = torch_dtype == "bfloat16" and load_dtype == "keep"
  tol = (1e-2 if bf16_params else 1e-4) * np.abs(ref).max() + 2e-5
  assert np.abs(res["y"] - ref).max() <= tol


def test_bf16_tensors_are_memory_mapped(tmp_path):
  from composed_vi.models.wan import safetensors_io

  model = perturb(diffusers.WanTransformer3DModel(**TINY)).to(torch.bfloat16)
  model.save_pretrained(tmp_path, safe_serialization=True)
  config, tensors = safetensors_io.open_folder(str(tmp_path))
  assert config["_class_name"] == "WanTransformer3DModel"
  w = tensors["proj_out.weight"]
  assert str(w.dtype) == "bfloat16" and not w.flags.owndata and not w.flags.writeable
  np.testing.assert_array_equal(
      w.astype(np.float32), model.proj_out.weight.detach().float().numpy())


def test_vae_folder_loads(tmp_path):
  from composed_vi.models.wan import loading

  vae = perturb(diffusers.AutoencoderKLWan(
      base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
      temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4))
  vae.save_pretrained(tmp_path, safe_serialization=True)
  model, params = loading.load_vae(str(tmp_path))
  video = np.random.default_rng(0).uniform(-1, 1, (1, 3, 5, 8, 8)).astype(np.float32)
  with torch.no_grad():
    ref = vae.encode(torch.from_numpy(video)).latent_dist.mode().numpy()
  got = np.asarray(model.encode(params, video))
  assert np.abs(got - ref).max() <= 5e-5 + 1e-4 * np.abs(ref).max()


def test_bad_folders_are_refused(tmp_path):
  from composed_vi.models.wan import loading, safetensors_io

  with pytest.raises(safetensors_io.CheckpointError, match="does not exist"):
    loading.load_transformer(str(tmp_path / "missing"))
  model = perturb(diffusers.WanTransformer3DModel(**TINY))
  model.save_pretrained(tmp_path / "ok", safe_serialization=True)
  # A config that disagrees with the weights: the first mis-shaped key is named.
  cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
  cfg["ffn_dim"] = 48
  (tmp_path / "ok" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=r"blocks\.0\.ffn\.net\.0\.proj\.(weight|bias).*shape"):
    loading.load_transformer(str(tmp_path / "ok"))
  cfg["_class_name"] = "UNet3DConditionModel"
  (tmp_path / "ok" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(safetensors_io.CheckpointError, match="_class_name"):
    loading.load(str(tmp_path / "ok"))


def test_sharding_rules_and_memory_estimate():
  import jax

  from composed_vi.models.wan import sharding
  from composed_vi.models.wan import transformer as wan

  shapes = wan.param_shapes(wan.WanConfig(**{**TINY, "patch_size": (1, 2, 2)}))

  class Mesh:
    shape = {"data": 2, "model": 2}

  q = sharding.param_spec(("blocks", 0, "attn1", "to_q", "kernel"),
                          shapes[("blocks", 0, "attn1", "to_q", "kernel")], Mesh)
  o = sharding.param_spec(("blocks", 0, "attn1", "to_out", "kernel"),
                          shapes[("blocks", 0, "attn1", "to_out", "kernel")], Mesh)
  assert q == jax.sharding.PartitionSpec("data", "model")  # split on output features
  assert o == jax.sharding.PartitionSpec("model", "data")  # split on input features
  bias = sharding.param_spec(("blocks", 0, "attn1", "to_q", "bias"), (24,), Mesh)
  assert bias == jax.sharding.PartitionSpec(None)
  one = sharding.memory_per_device(shapes, 2, 1, 1)
  four = sharding.memory_per_device(shapes, 2, 2, 2)
  assert one == 2 * sum(int(np.prod(s)) for s in shapes.values())
  assert one / 4 < four < one / 2  # vectors stay replicated


_SHARDED = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from composed_vi import distributed
    from composed_vi.models.wan import loading
    folder = sys.argv[1]
    mesh = distributed.make_mesh("data:2,model:4")
    plain = loading.load_transformer(folder, dtype=np.float32, compute_dtype=jnp.float32)
    sharded = loading.load_transformer(folder, dtype=np.float32, compute_dtype=jnp.float32,
                                       mesh=mesh)
    q = sharded.params["blocks"][0]["attn1"]["to_q"]["kernel"][...]
    assert q.sharding.spec == jax.sharding.PartitionSpec("data", "model"), q.sharding
    assert len({s.data.shape for s in q.addressable_shards}) == 1
    assert q.addressable_shards[0].data.shape == (12, 6)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4, 4)).astype(np.float32)
    t = np.array([300.0, 800.0], np.float32)
    ctx = rng.standard_normal((2, 5, 16)).astype(np.float32)
    a = np.asarray(plain.model_fn(plain.params, x, t, ctx))
    b = np.asarray(sharded.model_fn(sharded.params, x, t, ctx))
    err = np.abs(a - b).max() / np.abs(a).max()
    assert err < 1e-5, err
    # Sequence sharding: particles P('data', 'model' on frames) propagate to the tokens.
    x4 = rng.standard_normal((2, 4, 4, 4, 4)).astype(np.float32)
    xs = jax.device_put(x4, distributed.particle_sharding(mesh, x4.shape[1:]))
    assert xs.sharding.spec == jax.sharding.PartitionSpec("data", "model", None, None, None)
    c = np.asarray(sharded.model_fn(sharded.params, xs, t, ctx))
    d = np.asarray(plain.model_fn(plain.params, x4, t, ctx))
    assert np.abs(c - d).max() / np.abs(d).max() < 1e-5
    print("ok", err)
""")


def test_transformer_placed_with_target_sharding(tmp_path):
  """Each parameter lands directly with its mesh sharding; the forward is unchanged."""
  perturb(diffusers.WanTransformer3DModel(**TINY)).save_pretrained(tmp_path,
                                                                  safe_serialization=True)
  out = subprocess.run([sys.executable, "-c", _SHARDED, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu",
                                XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
