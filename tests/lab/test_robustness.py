"""Runs that survive what clusters do to them (issue 21): damaged checkpoints, two launches on
one workdir, SIGTERM / SIGINT mid-run, NaN from an expert, a full disk. Each through the
launcher as a user meets it (one line, an exit code, nothing half-written), and each resumed
run bit-identical to an uninterrupted one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import composed_vi as cvi
from composed_vi import experts, faults, io
from composed_vi.lab import checkpoint, cli, preemption, problems, runner, training, workdir_lock
from configs import gmm_product, train_tiny
from tests import launcher_util as lu

LONG = ("--config.num_levels=8000", "--config.checkpoint_every=0")  # ~5 s of levels here


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted smoke run (12 levels, checkpoints at 8 and 12)."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  out = lu.launch(workdir)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir


def _copy_without_samples(src, dst):
  shutil.copytree(src, dst)
  os.remove(dst / "samples.npz")
  return dst


def _data_file(step_dir):
  """The largest data file of the checkpoint's state database (``state/d``; orbax merges the
  per-process databases into it, whose own files are then no longer read)."""
  folder = step_dir / "state" / "d"
  return max((folder / f for f in os.listdir(folder)), key=os.path.getsize)


def _damage(step_dir, how: str) -> None:
  if how == "overwritten":  # 100 random bytes over the start, as a failing disk leaves it
    with open(_data_file(step_dir), "r+b") as f:
      f.write(np.random.default_rng(0).bytes(100))
  elif how == "truncated":  # a partial copy
    path = _data_file(step_dir)
    os.truncate(path, os.path.getsize(path) // 3)
  elif how == "missing_file":
    os.remove(_data_file(step_dir))
  elif how == "unreadable_metadata":
    (step_dir / "diagnostics" / "metadata").write_bytes(b"\x00\xff not json")
  elif how == "missing_metadata":
    os.remove(step_dir / "diagnostics" / "metadata")
  elif how == "fingerprint":  # readable, but the data are not what was saved
    meta = step_dir / "diagnostics" / "metadata"
    payload = json.loads(meta.read_text())
    payload["fingerprint"][0] += 1
    meta.write_text(json.dumps(payload))
  else:
    raise ValueError(how)


def _no_traceback(out):
  assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("how", ["overwritten", "truncated", "missing_file",
                                 "unreadable_metadata", "missing_metadata", "fingerprint"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact(tmp_path, reference, how):
  run = _copy_without_samples(reference, tmp_path / "run")
  _damage(run / "checkpoints" / "12", how)
  out = lu.launch(run)
  assert out.returncode == 0, out.stderr[-3000:]
  _no_traceback(out)
  # The warning's own words (the run's path holds "damaged" too, from the test's name, and
  # orbax may log lines with it).
  warnings = [line for line in out.stderr.splitlines() if " is damaged (" in line]
  assert len(warnings) == 1 and "level 12" in warnings[0] and "skipped" in warnings[0], warnings
  assert "resumed from the checkpoint at level 8" in out.stderr
  np.testing.assert_array_equal(lu.samples(run), lu.samples(reference))
  # The damaged step is kept aside for inspection; the resumed run wrote level 12 again.
  assert os.path.isdir(run / "damaged_checkpoints" / "12")
  assert sorted(os.listdir(run / "checkpoints")) == ["12", "8"]


def test_no_intact_checkpoint_is_one_line_and_exit_2(tmp_path, reference):
  run = _copy_without_samples(reference, tmp_path / "run")
  _damage(run / "checkpoints" / "12", "overwritten")
  _damage(run / "checkpoints" / "8", "missing_metadata")
  out = lu.launch(run)
  assert out.returncode == 2
  _no_traceback(out)
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and str(run / "checkpoints") in errors[0], out.stderr[-2000:]
  assert "level 8, level 12" in errors[0]
  assert not os.path.exists(run / "samples.npz")


def test_fingerprint_sees_a_changed_value(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / "c"))
  tree = dict(x=jnp.arange(6.0).reshape(2, 3), k=jnp.arange(2, dtype=jnp.uint32))
  ckpts.save(1, tree, [dict(a=1)])
  restored, records = ckpts.restore(tree, 1)
  assert records == [dict(a=1)]
  assert checkpoint.fingerprint(restored) == checkpoint.fingerprint(tree)
  swapped = dict(x=tree["x"][:, ::-1], k=tree["k"])  # same values, other places
  assert checkpoint.fingerprint(swapped) != checkpoint.fingerprint(tree)
  bumped = dict(x=tree["x"].at[1, 2].set(jnp.nextafter(5.0, 6.0)), k=tree["k"])
  assert checkpoint.fingerprint(bumped) != checkpoint.fingerprint(tree)
  ckpts.close()


# ------------------------------------------------------------------------- two launches


_HOLD = """
import sys, time
from composed_vi.lab import workdir_lock
workdir_lock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_second_launch_is_refused_naming_the_holder(tmp_path):
  run = tmp_path / "run"
  os.makedirs(run)
  fd = workdir_lock.acquire(str(run))
  try:
    out = lu.launch(run)
  finally:
    workdir_lock.release(fd, str(run))
  assert out.returncode == 2
  _no_traceback(out)
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and f"process {os.getpid()}" in errors[0], out.stderr[-2000:]
  import socket

  assert repr(socket.gethostname()) in errors[0] and str(run) in errors[0]
  assert not os.path.exists(run / "config.json")  # refused before writing anything
  # Released: the next launch runs, and leaves no LOCK behind.
  out = lu.launch(run)
  assert out.returncode == 0, out.stderr[-2000:]
  assert not os.path.exists(run / workdir_lock.LOCK_NAME)


def test_lock_of_a_killed_holder_is_not_stale(tmp_path):
  run = tmp_path / "run"
  os.makedirs(run)
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], cwd=lu.ROOT,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"process {holder.pid}"):
      workdir_lock.acquire(str(run))
  finally:
    holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the lock
    holder.wait()
  assert os.path.exists(run / workdir_lock.LOCK_NAME)  # the file is left, naming the dead
  out = lu.launch(run)
  assert out.returncode == 0, out.stderr[-2000:]


# --------------------------------------------------------------------------- preemption


def _wait_for_level(run, proc, level: int, timeout: float = 120.0) -> None:
  """Waits until the run's log shows ``level`` (the progress lines go to log.txt)."""
  deadline = time.time() + timeout
  needle = f"level {level}/"
  while time.time() < deadline:
    if proc.poll() is not None:
      err = proc.stderr.read() if proc.stderr else open(proc.log.name).read()
      raise AssertionError(f"the run ended early: {err[-2000:]}")
    try:
      if needle in (run / "log.txt").read_text():
        return
    except FileNotFoundError:
      pass
    time.sleep(0.02)
  raise AssertionError(f"no {needle!r} in the log after {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_checkpoints_and_resumes_bit_identically(tmp_path, signum):
  full = tmp_path / "full"
  out = lu.launch(full, *LONG)
  assert out.returncode == 0, out.stderr[-2000:]
  run = tmp_path / "run"
  proc = subprocess.Popen(lu.command(run, *LONG), cwd=lu.ROOT, env=lu.env_for(1),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_level(run, proc, 200)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == preemption.EXIT_PREEMPTED, stderr[-2000:]
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("preempted: stopped after level ") and "rerun" in last, last
  level = int(last.split("level ")[1].split()[0])
  assert 200 <= level < 8000
  assert os.listdir(run / "checkpoints") == [str(level)]
  assert not os.path.exists(run / "samples.npz")
  out = lu.launch(run, *LONG)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"resumed from the checkpoint at level {level}" in out.stderr
  np.testing.assert_array_equal(lu.samples(run), lu.samples(full))


def test_world_config_sigterm_then_damaged_checkpoint_resumes_bit_identically(tmp_path):
  """The built-in world's demo (its smoke size, 12 levels) through the same faults: SIGTERM
  mid-run (exit 75), then the checkpoint it wrote overwritten; the rerun skips it for the
  newest intact one and its samples equal an uninterrupted run's bit for bit."""
  config = "configs/world_demo.py:smoke"
  args = ("--config.num_levels=12", "--config.checkpoint_every=3")
  full = tmp_path / "full"
  out = lu.launch(full, *args, config=config)
  assert out.returncode == 0, out.stderr[-2000:]
  run = tmp_path / "run"
  proc = subprocess.Popen(lu.command(run, *args, config=config), cwd=lu.ROOT,
                          env=lu.env_for(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  try:
    _wait_for_level(run, proc, 4, timeout=300)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
  finally:
    proc.kill()
  assert proc.returncode == preemption.EXIT_PREEMPTED, stderr[-2000:]
  assert "Traceback" not in stderr
  level = int(stderr.strip().splitlines()[-1].split("level ")[1].split()[0])
  assert 4 <= level < 12, level
  kept = sorted(int(step) for step in os.listdir(run / "checkpoints"))
  assert kept[-1] == level and kept[-2] == 3 * ((level - 1) // 3), kept
  _damage(run / "checkpoints" / str(level), "overwritten")
  out = lu.launch(run, *args, config=config)
  assert out.returncode == 0, out.stderr[-2000:]
  _no_traceback(out)
  assert [f"level {level}" in line for line in out.stderr.splitlines() if "damaged" in line] \
      == [True]
  assert f"resumed from the checkpoint at level {kept[-2]}" in out.stderr
  np.testing.assert_array_equal(lu.samples(run), lu.samples(full))


def _two_processes(workdir, *args):
  """Both processes of a two-process run (one CPU device each, gloo), started; their stderr
  goes to files beside the workdir (a pipe nobody reads while the other process is waited
  for would fill and stall the collective)."""
  port = lu.free_port()
  procs = []
  for i in range(2):
    log = open(f"{workdir}.process{i}.err", "w")  # noqa: SIM115 - closed in _finish
    procs.append(subprocess.Popen(
        lu.command(workdir, *args, "--config.mesh=data:2",
                   f"--coordinator_address=localhost:{port}", "--num_processes=2",
                   f"--process_id={i}"),
        cwd=lu.ROOT, env=lu.env_for(1), stdout=subprocess.DEVNULL, stderr=log))
    procs[-1].log = log
  return procs


def _finish(procs, timeout: float = 600) -> list[str]:
  """Waits for both processes (killing them after ``timeout``); their stderr texts."""
  errs = []
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      p.kill()
      p.log.close()
      errs.append(open(p.log.name).read())
  return errs


def test_sigint_on_one_process_of_two_stops_both_at_one_level(tmp_path):
  """A signal that reaches one process of a multi-process run (here the second, which writes
  no log) stops every process after the same level, with one checkpoint written together;
  both exit 75 and the relaunch resumes bit-identically to an uninterrupted two-process run."""
  args = ("--config.num_levels=1500", "--config.checkpoint_every=0")
  full = tmp_path / "full"
  procs = _two_processes(full, *args)
  for p, err in zip(procs, _finish(procs)):
    assert p.returncode == 0, err[-2000:]

  run = tmp_path / "run"
  procs = _two_processes(run, *args)
  try:
    _wait_for_level(run, procs[0], 100, timeout=300)
    procs[1].send_signal(signal.SIGINT)
  finally:
    errs = _finish(procs, timeout=300)
  stops = []
  for p, err in zip(procs, errs):
    assert p.returncode == preemption.EXIT_PREEMPTED, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("preempted: stopped after level "), last
    stops.append(int(last.split("level ")[1].split()[0]))
  assert stops[0] == stops[1] and 100 <= stops[0] < 1500, stops
  assert os.listdir(run / "checkpoints") == [str(stops[0])]
  assert not os.path.exists(run / "samples.npz")
  # Only process 0 prints progress; the other's terminal stays short.
  assert "level 100/" not in errs[1]

  procs = _two_processes(run, *args)
  errs = _finish(procs)
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-2000:]
  assert f"resumed from the checkpoint at level {stops[0]}" in errs[0]
  np.testing.assert_array_equal(lu.samples(run), lu.samples(full))


def test_training_stops_on_request_and_resumes_bit_identically(tmp_path, monkeypatch):
  config = train_tiny.get_config("i2v,smoke")
  config.checkpoint_every = 4
  full = training.train(config, str(tmp_path / "full"))
  monkeypatch.setattr(preemption.Watcher, "should_stop", lambda self, step: step == 1)
  with pytest.raises(preemption.PreemptedError, match="after step 1 of 4"):
    training.train(config, str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run" / "checkpoints") == ["1"]
  monkeypatch.undo()
  resumed = training.train(config, str(tmp_path / "run"))
  assert resumed["final_loss"] == full["final_loss"]
  # The same parameters and optimiser state, bit for bit (the fingerprints saved with step 4).
  fingerprints = [json.loads((p / "checkpoints" / "4" / "records" / "metadata").read_text())[
      "fingerprint"] for p in (tmp_path / "full", tmp_path / "run")]
  assert fingerprints[0] == fingerprints[1]


# ------------------------------------------------------------------------ numerical faults


def _with_faulty_expert(monkeypatch, below: float = 0.5):
  """gmm_product with one more expert that returns NaN at every t < ``below``."""
  build = problems.PROBLEMS["gmm_product"]

  def faulty_build(config, mesh=None):
    problem = build(config, mesh=mesh)
    shape = problem.target.shape
    bad = experts.FunctionExpert(
        lambda x, t: jnp.where(t < below, jnp.nan, 1.0) * jnp.zeros_like(x), shape)
    names = tuple(f"factor {i}" for i in range(len(problem.target.experts))) + ("faulty",)
    problem.target = cvi.compose(list(problem.target.experts) + [bad],
                                 list(problem.target.weights) + [1.0])
    problem.exact = None
    problem.expert_names = names
    return problem

  monkeypatch.setitem(problems.PROBLEMS, "gmm_product", faulty_build)
  return faulty_build


def test_expert_nan_stops_at_its_level_naming_t_and_the_expert(tmp_path, monkeypatch):
  faulty_build = _with_faulty_expert(monkeypatch)
  config = gmm_product.get_config("smoke")
  config.checkpoint_every = 2
  with pytest.raises(faults.NonFiniteError) as info:
    runner.run(config, str(tmp_path / "run"))
  e = info.value
  _, options, _ = runner.validate(config)
  levels = np.asarray(options.schedule())
  first_bad = int(np.argmax(levels < 0.5)) + 1  # 1-based, as the launcher counts levels
  assert (e.level, e.expert) == (first_bad, "2 ('faulty', FunctionExpert)"), str(e)
  assert e.t == pytest.approx(float(levels[first_bad - 1]))
  assert f"level {first_bad} (t=" in str(e)
  # The last good checkpoint stays the newest; nothing was written past the fault.
  steps = sorted(int(s) for s in os.listdir(tmp_path / "run" / "checkpoints"))
  assert steps and steps[-1] < first_bad
  assert not os.path.exists(tmp_path / "run" / "samples.npz")
  # cvi.sample's check names the same level and expert.
  target = faulty_build(config).target
  options_dict = runner.sampler_options(config)
  with pytest.raises(faults.NonFiniteError) as info2:
    cvi.sample(jax.random.key(config.seed), target, config.num_particles, config.method,
               check_finite=True, **options_dict)
  assert info2.value.level == first_bad and "FunctionExpert" in info2.value.expert


def test_cli_reports_faults_in_one_line(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["prog"])
  cases = [(faults.NonFiniteError(7, 0.25, "1 ('sim2v', FunctionExpert)"), cli.EXIT_NUMERICAL),
           (io.StorageError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/samples.npz"),
            cli.EXIT_STORAGE),
           (preemption.PreemptedError(5, 9, "/w"), preemption.EXIT_PREEMPTED)]
  for error, code in cases:
    def main(argv, error=error):
      del argv
      raise error

    with pytest.raises(SystemExit) as exit_info:
      cli.run(main)
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(error) in lines[0], lines


# ------------------------------------------------------------------------------ full disk


def test_atomic_writer_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  (tmp_path / "out.json").write_text('{"old": 1}')
  monkeypatch.setattr(io.os, "fsync", full)
  with pytest.raises(io.StorageError) as info:
    io.write_json(str(tmp_path / "out.json"), dict(new=2))
  assert str(info.value) == (f"cannot write {tmp_path / 'out.json'}: No space left on device "
                             "(errno 28)")
  assert os.listdir(tmp_path) == ["out.json"]  # no temporary file left
  assert json.loads((tmp_path / "out.json").read_text()) == {"old": 1}  # the old one intact
  with pytest.raises(io.StorageError):
    io.write_npz(str(tmp_path / "new.npz"), a=np.zeros(3))
  assert os.listdir(tmp_path) == ["out.json"]


def _mount_tmpfs(path, size: str) -> bool:
  os.makedirs(path, exist_ok=True)
  try:
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return out.returncode == 0


def _check_nothing_half_written(run) -> None:
  """Every file under a final name is complete; every listed checkpoint restores."""
  if os.path.exists(run / "config.json"):
    json.loads((run / "config.json").read_text())
  if os.path.exists(run / "diagnostics.jsonl"):
    for line in (run / "diagnostics.jsonl").read_text().splitlines():
      json.loads(line)
  assert not os.path.exists(run / "samples.npz") or lu.samples(run).shape == (8, 16)
  assert not os.path.exists(run / "summary.json")
  for name in os.listdir(run):
    assert not name.startswith("."), f"temporary file {name} left in {run}"


@pytest.mark.parametrize("mode", ["tmpfs", "injected"])
@pytest.mark.parametrize("size", ["16k", "100k", "160k"])
def test_full_disk_is_one_line_and_the_run_resumes_elsewhere(tmp_path, reference, size, mode,
                                                             monkeypatch):
  """On a size-limited tmpfs (mounted where this machine allows it: root; elsewhere, and in the
  'injected' mode, the checkpoint write fails with ENOSPC at the level where that tmpfs
  fills up); the sizes fill up at the first, second and last checkpoint."""
  disk = tmp_path / "disk"
  mounted = mode == "tmpfs" and _mount_tmpfs(disk, size)
  try:
    run = disk / "run"
    if mounted:
      out = lu.launch(run)
      assert out.returncode == cli.EXIT_STORAGE, out.stderr[-3000:]
      _no_traceback(out)
      errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
      assert len(errors) == 1 and "No space left on device" in errors[0], out.stderr[-2000:]
    else:
      fail_at = {"16k": 4, "100k": 8, "160k": 12}[size]
      save = checkpoint.SamplerCheckpoints.save

      def save_or_fill(self, level, state, diagnostics):
        if level >= fail_at:
          raise io.StorageError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.directory)
        save(self, level, state, diagnostics)

      monkeypatch.setattr(checkpoint.SamplerCheckpoints, "save", save_or_fill)
      with pytest.raises(io.StorageError):
        runner.run(gmm_product.get_config("smoke"), str(run))
      monkeypatch.undo()
    _check_nothing_half_written(run)
    moved = shutil.copytree(run, tmp_path / "bigger")
  finally:
    if mounted:
      subprocess.run(["umount", str(disk)], check=True)
  out = lu.launch(moved)
  assert out.returncode == 0, out.stderr[-2000:]
  np.testing.assert_array_equal(lu.samples(moved), lu.samples(reference))
