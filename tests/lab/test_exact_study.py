"""End-to-end run of the exact-target study (tiny sizes) and its absl entry point."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from composed_vi.lab import exact_study, toys
from configs import exact_targets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_config():
  c = exact_targets.get_config("smoke")
  c.methods = ("ode", "ctrl_vi")
  c.many.num_particles = 32
  c.many.num_seeds = 1
  c.few.num_seeds = 2
  c.few.high_dim = 16
  c.num_levels = 4
  c.variants = {"ctrl_vi_kernel": {"method": "ctrl_vi", "drive": "kernel"}}
  return c


def test_study_writes_table_and_plots(tmp_path):
  summary = exact_study.run(_tiny_config(), str(tmp_path))
  assert set(summary["results"]) == {"ode", "ctrl_vi", "ctrl_vi_kernel"}
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  row = saved["results"]["ctrl_vi_kernel"]
  assert row["method"] == "ctrl_vi" and row["options"]["drive"] == "kernel"
  assert row["many"]["mmd_floor"] > 0 and 0 <= row["few_2d"]["modes"] <= 4
  # The clump-seeing columns: a fine kernel at the narrowest exact component's std, and the
  # nearest-neighbour distances against exact samples.
  _, exact = toys.asymmetric_product_2d()
  assert row["many"]["fine_bandwidth"] == pytest.approx(float(np.min(np.asarray(exact.stds))))
  assert row["many"]["fine_mmd_ratio"] > 0 and row["many"]["nn_ratio"] > 0
  md = (tmp_path / "results.md").read_text()
  assert md.count("\n") == 2 + 3 and "| ctrl_vi_kernel |" in md
  with open(tmp_path / "particles.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Atomic writes leave no temporary files behind.
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_entry_point_refuses_misspelt_field(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.main",
       "--config=configs/exact_targets.py:smoke", f"--workdir={tmp_path}",
       "--config.num_levelz=3"],
      capture_output=True, text=True, cwd=ROOT,
      timeout=300)
  assert proc.returncode != 0
  assert "num_levelz" in proc.stderr
  assert not os.listdir(tmp_path)
