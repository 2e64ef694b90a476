"""End-to-end run of the exact-target study (tiny sizes) and its absl entry point."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from composed_vi.lab import exact_study, toys
from configs import exact_targets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_config():
  c = exact_targets.get_config("smoke")
  c.many.num_particles = 32
  c.few.high_dim = 16
  c.num_levels = 4
  return c


def test_study_chooses_on_dev_and_reports_on_test(tmp_path):
  config = _tiny_config()
  summary = exact_study.run(config, str(tmp_path))
  # Dev: every grid value tried, the chosen one the lowest score; test seeds disjoint.
  grid = summary["dev"]["ctrl_vi"]["grid"]
  assert [g["options"]["step_size"] for g in grid] == [0.5, 1.0]
  best = min(grid, key=lambda g: g["score"])
  assert summary["dev"]["ctrl_vi"]["chosen"] == best["options"]
  dev, test = exact_study.split_seeds(config, "dev"), exact_study.split_seeds(config, "test")
  assert not set(dev) & set(test)
  # Test rows: each method at its chosen setting, and the ablation changes one option.
  results = summary["results"]
  assert set(results) == {"ctrl_vi", "ode", "ctrl_vi_local_drive"}
  assert results["ctrl_vi_local_drive"]["options"] == {**best["options"], "drive": "local"}
  assert results["ctrl_vi"]["test_seeds"] == test
  for row in results.values():
    for family in config.families:
      m = row["many"][family]
      assert all(np.isfinite(m[c]) and m[c] > 0 for c in ("fine_mmd_ratio", "mmd_ratio",
                                                           "nn_ratio")), m
      assert 0 <= m["missed_mass"] <= 1
    assert 0 <= row["few"]["four_2d"]["modes"] <= 4
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["results"].keys() == results.keys()
  md = (tmp_path / "results.md").read_text()
  assert "| ctrl_vi_local_drive |" in md and "(chosen)" in md
  with open(tmp_path / "particles.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Atomic writes leave no temporary files behind.
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_fine_bandwidth_ignores_negligible_components():
  _, exact = toys.asymmetric_product_2d()
  w, s = np.asarray(exact.weights), np.asarray(exact.stds)
  assert exact_study.fine_bandwidth(exact) == pytest.approx(float(np.min(s[w >= 0.01])))
  assert exact_study.fine_bandwidth(exact, min_weight=0.0) == pytest.approx(float(s.min()))


def test_families_are_seeded_and_the_ring_has_four_modes():
  for name, family in toys.FAMILIES.items():
    (a1, b1), e1 = family(7)
    (a2, b2), e2 = family(7)
    np.testing.assert_array_equal(np.asarray(e1.means), np.asarray(e2.means)), name
    assert not np.array_equal(np.asarray(family(8)[1].means), np.asarray(e1.means)), name
  _, ring = toys.ring_product(rotation=0.3)
  w = np.sort(np.asarray(ring.weights))[::-1]
  np.testing.assert_allclose(w[:4], 0.25, atol=1e-4)  # the left half's four modes
  assert w[4] < 1e-6
  np.testing.assert_allclose(np.asarray(ring.stds), 0.075 / np.sqrt(2), rtol=1e-5)


def test_mode_moment_errors_exact_answers():
  """Two separated modes: shifting the samples of one by half its std gives a mean error of
  0.5 times that mode's frequency; scaling its spread by 2 a variance error of log 4 times it;
  samples that miss a mode report its reference mass as missed."""
  from composed_vi import gmm
  from composed_vi.experts import GaussianMixture

  mix = GaussianMixture(np.array([[-8.0, 0.0], [8.0, 0.0]], np.float32),
                        np.array([0.5, 0.5], np.float32), np.array([0.25, 0.75], np.float32))
  ref = np.asarray(mix.sample(jax.random.key(0), 4000))
  on_first = ref[:, 0] < 0
  frac = on_first.mean()
  shifted = ref.copy()
  shifted[on_first] += np.array([0.25, 0.0], np.float32)
  mean_err, var_err, missed = gmm.mode_moment_errors(shifted, mix, ref)
  assert missed == 0.0
  assert mean_err == pytest.approx(0.5 * frac, rel=1e-4) and var_err == pytest.approx(0, abs=1e-6)
  spread = ref.copy()
  centre = ref[on_first].mean(0)
  spread[on_first] = centre + 2.0 * (ref[on_first] - centre)
  mean_err, var_err, _ = gmm.mode_moment_errors(spread, mix, ref)
  assert var_err == pytest.approx(np.log(4.0) * frac, rel=1e-3)
  assert mean_err == pytest.approx(0.0, abs=1e-5)
  mean_err, var_err, missed = gmm.mode_moment_errors(ref[~on_first], mix, ref)
  assert missed == pytest.approx(frac) and mean_err == pytest.approx(0.0, abs=1e-6)


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
