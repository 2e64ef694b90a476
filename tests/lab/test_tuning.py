"""The step of every score-following method chosen on dev by one rule (evaluation.tuning)."""

import math

import pytest

from composed_vi.errors import ConfigError
from composed_vi.lab.evaluation import methods, tuning
from configs import evaluate


def _config(grid="0.5,1,2"):
  c = evaluate.get_config()
  c.step_grid = grid
  return c


def _rows(method, per_value):
  """Two cases per grid value, each metric of a value as given (same on both cases)."""
  rows = []
  for k, metrics in enumerate(per_value):
    for case in ("a", "b"):
      rows.append(dict(case=case, method=tuning.variant_name(method, k), **metrics))
  return rows


def _metrics(scale, diversity=0.1):
  return dict(first_frame_l1=0.02 * scale, track_error_px=1.0 * scale,
              camera_background_error=0.05 * scale, object_l1=0.1 * scale,
              consistency_3d=0.03 * scale, unsimulated_diversity=diversity)


def test_variants_carry_their_step_and_the_shared_options():
  c = _config()
  known = methods.methods_from_config(c)
  for method in tuning.TUNED:
    for k, value in enumerate((0.5, 1.0, 2.0)):
      variant = known[tuning.variant_name(method, k)]
      opts = methods.sampler_options(variant, c)
      assert opts["step_size"] == value
      base = methods.sampler_options(known[method], c)
      assert {k2: v for k2, v in opts.items() if k2 != "step_size"} == {
          k2: v for k2, v in base.items() if k2 != "step_size"}
  # the base methods keep the config's steps, not a grid value
  assert methods.sampler_options(known["langevin"], c)["step_size"] == (
      c.step_sizes.annealed_langevin)
  assert methods.sampler_options(known["poe_smc"], c)["step_size"] == c.step_sizes.poe_smc
  assert c.step_sizes.annealed_langevin not in (0.5, 1.0, 2.0)


def test_choose_exact_answer_and_tie_break():
  c = _config()
  # Errors 1.3x, 1x and 2x the best: the score is exactly that ratio; value 1 wins.
  rows = _rows("langevin", [_metrics(1.3), _metrics(1.0), _metrics(2.0)])
  got = tuning.choose(rows, c)["langevin"]
  assert got["step_size"] == 1.0
  assert got["scores"] == pytest.approx({"0.5": 1.3, "1": 1.0, "2": 2.0})
  # Within TIE of the best: the larger unsimulated diversity wins.
  rows = _rows("poe_smc", [_metrics(1.005, 0.3), _metrics(1.0, 0.1), _metrics(2.0, 0.9)])
  assert tuning.choose(rows, c)["poe_smc"]["step_size"] == 0.5
  # One control better, another worse: the geometric mean decides.
  a, b = _metrics(1.0), _metrics(1.0)
  a["track_error_px"] *= 4.0
  b["object_l1"] *= 1.5
  rows = _rows("ctrl_vi", [a, b, _metrics(3.0)])
  got = tuning.choose(rows, c)["ctrl_vi"]
  assert got["step_size"] == 1.0
  assert got["scores"]["0.5"] == pytest.approx(math.exp(math.log(4.0) / 5))
  # A method without rows of every grid value is not chosen.
  assert "ctrl_vi" not in tuning.choose(rows[:-2], c)


@pytest.mark.parametrize("bad", ["0.5,x", "0.5,0.5", "-1,2"])
def test_grid_is_validated(bad):
  with pytest.raises(ConfigError, match="step_grid"):
    tuning.grid(_config(bad))
