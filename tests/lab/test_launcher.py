"""The launcher end to end, in subprocesses: meshes on 8 fake CPU devices, two processes with
JAX's distributed runtime (gloo), SIGKILL and resume, and user errors on the command line."""

import json
import os
import signal
import subprocess
import time

import launcher_util as lu
import numpy as np
import pytest

N = "--config.num_particles=16"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The smoke run on one device (N = 16)."""
  workdir = tmp_path_factory.mktemp("single")
  out = lu.launch(workdir, N, devices=1)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def test_outputs(reference):
  x = lu.samples(reference)
  assert x.shape == (16, 16) and x.dtype == np.float32 and np.all(np.isfinite(x))
  with open(reference / "config.json") as f:
    config = json.load(f)
  assert config["num_particles"] == 16 and config["method"] == "ctrl_vi"
  lines = (reference / "diagnostics.jsonl").read_text().splitlines()
  assert [json.loads(line)["level"] for line in lines] == list(range(1, config["num_levels"] + 1))
  assert "bandwidth" in json.loads(lines[0])
  assert "level 12/12" in (reference / "log.txt").read_text()
  summary = json.loads((reference / "summary.json").read_text())
  assert summary["fraction_on_mode"] > 0.5
  # No temporary files are left behind by the atomic writes.
  assert not [p for p in os.listdir(reference) if p.endswith(".tmp")]


@pytest.mark.parametrize("mesh", ["data:8", "data:2,model:4", "data:1,model:8"])
def test_mesh_matches_single_device(reference, tmp_path, mesh):
  out = lu.launch(tmp_path, N, f"--config.mesh={mesh}", devices=8)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ETA" in out.stderr
  err = lu.relative_error(lu.samples(tmp_path), lu.samples(reference))
  assert err < 1e-5, (mesh, err)


def test_two_processes_match_one_process(reference, tmp_path):
  """Two processes x 4 CPU devices (gloo) give the samples of one process with 8 devices."""
  mesh = "--config.mesh=data:2,model:4"
  single = tmp_path / "one_process"
  out = lu.launch(single, N, mesh, devices=8)
  assert out.returncode == 0, out.stderr[-3000:]
  multi = tmp_path / "two_processes"
  port = lu.free_port()
  procs = [subprocess.Popen(
      lu.command(multi, N, mesh, f"--coordinator_address=localhost:{port}",
                 "--num_processes=2", f"--process_id={i}"),
      cwd=lu.ROOT, env=lu.env_for(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  results = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 0, err[-3000:]
  err = lu.relative_error(lu.samples(multi), lu.samples(single))
  assert err < 1e-5, err
  assert lu.relative_error(lu.samples(multi), lu.samples(reference)) < 1e-5


def test_sigkill_then_resume_is_bit_identical(tmp_path):
  args = ("--config.num_levels=60", "--config.checkpoint_every=10",
          "--config.problem.dim=8192", "--config.num_particles=32")
  full = tmp_path / "full"
  out = lu.launch(full, *args)
  assert out.returncode == 0, out.stderr[-3000:]

  killed = tmp_path / "killed"
  proc = subprocess.Popen(lu.command(killed, *args), cwd=lu.ROOT, env=lu.env_for(1),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed / "checkpoints" / "10").is_dir():
    assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (killed / "samples.npz").exists()  # killed mid-way

  out = lu.launch(killed, *args)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from the checkpoint at level" in out.stderr
  np.testing.assert_array_equal(lu.samples(killed), lu.samples(full))
  levels = [json.loads(line)["level"]
            for line in (killed / "diagnostics.jsonl").read_text().splitlines()]
  assert levels == list(range(1, 61))


@pytest.mark.parametrize("override, words", [
    ("--config.num_particle=8", ("config.num_particle", "num_particles")),  # misspelt field
    ("--config.sampler.levels=(0.5, 0.9)", ("levels", "decreasing")),  # a ConfigError
])
def test_user_error_is_refused_without_traceback(tmp_path, override, words):
  workdir = tmp_path / "w"
  out = lu.launch(workdir, override)
  assert out.returncode == 2
  for w in words:
    assert w in out.stderr, (w, out.stderr)
  assert "Traceback" not in out.stderr
  assert not workdir.exists()


def test_resume_with_other_config_is_refused(reference):
  out = lu.launch(reference, N, "--config.seed=3", "--config.sampler.step_size=0.1")
  assert out.returncode == 2
  assert "seed: 0 -> 3" in out.stderr and "sampler.step_size" in out.stderr
  assert "Traceback" not in out.stderr
