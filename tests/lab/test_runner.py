"""The run library in-process: every row of docs/launcher.md's bad-input table is refused before any
compute or output, with the field named; meshes are parsed and checked."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from composed_vi import distributed
from composed_vi.errors import ConfigError
from composed_vi.lab import runner
from configs import gmm_product

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smoke(**changes):
  config = gmm_product.get_config("smoke")
  for name, value in changes.items():
    node = config
    *parents, leaf = name.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def refused(config, workdir, *words):
  with pytest.raises(ConfigError) as e:
    runner.run(config, str(workdir))
  for w in words:
    assert w in str(e.value), (w, str(e.value))
  assert not os.path.exists(os.path.join(str(workdir), "samples.npz"))
  return str(e.value)


def test_runs_and_writes(tmp_path):
  summary = runner.run(smoke(), str(tmp_path))
  assert summary["finite"] and summary["num_particles"] == 8
  for name in ("config.json", "samples.npz", "diagnostics.jsonl", "log.txt", "summary.json"):
    assert (tmp_path / name).exists(), name


@pytest.mark.parametrize("changes, words", [
    (dict(mesh="data:3"), ("mesh", "divides", "data:3")),
    (dict(mesh="dat:1"), ("mesh", "axis")),
    (dict(mesh="data:-1,model:-1"), ("mesh", "-1")),
    (dict(num_particles=0), ("num_particles",)),
    (dict(method="svgd"), ("method", "svgd")),
    (dict(checkpoint_every=-1), ("checkpoint_every",)),
    ({"sampler.levels": (1.5, 0.5)}, ("levels", "(0, 1]")),
    ({"sampler.levels": (0.5, 0.9)}, ("levels", "decreasing")),
    ({"sampler.t_min": 0.0}, ("t_min", "(0, 1]")),
    ({"sampler.t_max": 0.01}, ("t_min", "t_max")),
    ({"sampler.drive": "kernal"}, ("drive", "kernal")),
    ({"sampler.feature_map": "target_mask"}, ("feature_map", "repulsion_mask")),
    ({"sampler.step_size": float("nan")}, ("step_size",)),
    (dict(method="ode", **{"sampler.drive": "local"}), ("drive", "ode")),
    ({"problem.dim": 1}, ("problem.dim",)),
    ({"problem.expert_weights": (1.0,)}, ("problem.expert_weights", "one per expert")),
    ({"problem.expert_weights": (1.0, -2.0)}, ("problem.expert_weights[1]",)),
    ({"problem.means_file": "/nonexistent/means.npz"}, ("problem.means_file", "existing")),
])
def test_bad_config_refused_before_output(tmp_path, changes, words):
  workdir = tmp_path / "w"
  refused(smoke(**changes), workdir, *words)
  assert not workdir.exists()


def test_conditioning_arrays_checked(tmp_path):
  good = np.zeros((2, 16), np.float32)
  good[0, 0], good[1, 0] = 2, -2
  nan = good.copy()
  nan[1, 3] = np.nan
  np.savez(tmp_path / "nan.npz", means_0=good, means_1=nan)
  np.savez(tmp_path / "shapes.npz", means_0=good, means_1=np.zeros((2, 12), np.float32))
  np.savez(tmp_path / "stds.npz", means_0=good, means_1=good, stds_1=np.array([0.5, np.inf]))
  np.save(tmp_path / "mask.npy", np.ones((5,), np.float32))
  np.save(tmp_path / "mask_inf.npy", np.full((16,), np.inf, np.float32))
  w = tmp_path / "w"
  refused(smoke(**{"problem.means_file": str(tmp_path / "nan.npz")}), w,
          "problem.means_file[means_1]", "NaN/inf")
  refused(smoke(**{"problem.means_file": str(tmp_path / "shapes.npz")}), w,
          "experts[1].shape", "(16,)", "(12,)")
  refused(smoke(**{"problem.means_file": str(tmp_path / "stds.npz")}), w, "stds_1")
  refused(smoke(**{"problem.mask_file": str(tmp_path / "mask.npy")}), w,
          "problem.mask_file", "broadcastable", "(5,)")
  refused(smoke(**{"problem.mask_file": str(tmp_path / "mask_inf.npy")}), w,
          "problem.mask_file", "NaN/inf")
  assert not w.exists()


def test_masked_problem_runs(tmp_path):
  mask = np.linspace(0.5, 1.0, 16).astype(np.float32)
  np.save(tmp_path / "mask.npy", mask)
  summary = runner.run(smoke(**{"problem.mask_file": str(tmp_path / "mask.npy")}),
                       str(tmp_path / "w"))
  assert summary["finite"] and "modes_covered" not in summary  # no exact answer with a mask


@pytest.mark.parametrize("workdir, words", [
    ("/proc/composed_vi/w", ("workdir", "writable")),
    ("/etc/hostname/w", ("workdir", "is a file")),
])
def test_unwritable_workdir(workdir, words):
  if workdir.startswith("/etc/hostname") and not os.path.isfile("/etc/hostname"):
    pytest.fail("this test expects /etc/hostname to be a file")
  with pytest.raises(ConfigError) as e:
    runner.run(smoke(), workdir)
  for w in words:
    assert w in str(e.value)


def test_resume_with_different_config_names_fields(tmp_path):
  runner.run(smoke(), str(tmp_path))
  msg = refused_existing(smoke(seed=4, **{"problem.std": 0.4}), tmp_path)
  assert "seed: 0 -> 4" in msg and "problem.std: 0.5 -> 0.4" in msg
  # The mesh and the checkpoint interval may change on resume.
  runner.run(smoke(mesh="data:1", checkpoint_every=3), str(tmp_path))


def refused_existing(config, workdir):
  before = (workdir / "samples.npz").read_bytes()
  with pytest.raises(ConfigError) as e:
    runner.run(config, str(workdir))
  assert (workdir / "samples.npz").read_bytes() == before
  return str(e.value)


def test_parse_mesh():
  assert distributed.parse_mesh("data:8", 8) == {"data": 8, "model": 1}
  assert distributed.parse_mesh("data:2,model:-1", 8) == {"data": 2, "model": 4}
  assert distributed.parse_mesh("model:-1", 8) == {"data": 1, "model": 8}
  assert distributed.parse_mesh("data:2", 8) == {"data": 2, "model": 1}  # a subset
  for bad in ("", "data", "data:0", "data:x", "data:2,data:2", "pipe:2", "data:3"):
    with pytest.raises(ConfigError, match="mesh"):
      distributed.parse_mesh(bad, 8)


def test_mesh_must_divide_particles():
  with pytest.raises(ConfigError, match="num_particles.*data axis"):
    distributed.make_mesh("data:4", num_particles=6, devices=jax.devices() * 4)


_HLO_CHECK = textwrap.dedent("""
    import re
    import jax
    import jax.numpy as jnp
    from composed_vi import distributed, kernels
    mesh = distributed.make_mesh("data:2,model:4", 16)
    sh = distributed.particle_sharding(mesh, (64,))
    x = jax.device_put(jax.random.normal(jax.random.key(0), (16, 64)), sh)
    for drive in ("local", "kernel"):
      f = jax.jit(lambda x, g: kernels.sharded_stein_direction(x, g, mesh=mesh, drive=drive),
                  out_shardings=(sh, None))
      hlo = f.lower(x, x).compile().as_text()
      assert " all-gather(" not in hlo, "all-gather found"
      big = [l for l in hlo.splitlines() if " all-reduce(" in l and "f32[16,16]" in l]
      # One N x N psum per step; a second only inside the centring branch, which runs when
      # the particles' common offset is large against their spread (kernels._CENTRE_ABOVE).
      always = [l for l in big if "/cond/" not in l]
      centring = [l for l in big if "/cond/branch_1_fun/" in l]
      assert len(always) == 1 and len(centring) <= 1 and len(big) == len(always) + len(
          centring), big
    # A region (Ctrl-VI's stein_region) rides along in the particles' layout: the same
    # direction and diagnostics as on one device, with the coordinates zero-padded (D = 63).
    x = jax.random.normal(jax.random.key(1), (16, 63))
    g = jax.random.normal(jax.random.key(2), (16, 63))
    region = (jnp.arange(63) % 3 == 0).astype(jnp.float32)
    for drive in ("local", "kernel"):
      a, ia = jax.jit(lambda x, g: kernels.sharded_stein_direction(
          x, g, mesh=mesh, drive=drive, region=region))(x, g)
      b, ib = kernels.stein_direction(x, g, drive=drive, region=region)
      assert float(jnp.max(jnp.abs(a - b))) < 1e-5 * float(jnp.max(jnp.abs(b))), drive
      assert float(jnp.max(jnp.abs(a * (1 - region)))) == 0.0
      for u, v in zip(ia, ib):
        assert abs(float(u) - float(v)) <= 1e-5 * abs(float(v)) + 1e-7, (drive, ia, ib)
    print("ok")
""")


def test_sharded_kernel_has_one_nxn_psum_and_no_all_gather():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _HLO_CHECK], env=env, capture_output=True,
                       text=True, timeout=300,
                       cwd=ROOT)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("method", ["ctrl_vi", "annealed_langevin", "poe_smc", "ode"])
def test_resume_from_earlier_checkpoint_is_bit_identical(tmp_path, method):
  """Every method's state (PRNG key, SMC log-weights, ...) survives a checkpoint round trip."""
  import shutil

  config = smoke(method=method, checkpoint_every=4)
  full = tmp_path / "full"
  runner.run(config, str(full))
  partial = tmp_path / "partial"
  shutil.copytree(full, partial)
  steps = sorted(int(p) for p in os.listdir(partial / "checkpoints") if p.isdigit())
  assert steps == [8, 12]  # the two latest are kept
  shutil.rmtree(partial / "checkpoints" / "12")
  os.remove(partial / "samples.npz")
  runner.run(config, str(partial))
  a, b = (np.load(d / "samples.npz")["samples"] for d in (full, partial))
  np.testing.assert_array_equal(a, b)
