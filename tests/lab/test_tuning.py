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


def _rep_config(grid="5e3,1e4,2e4"):
  c = evaluate.get_config()
  c.repulsion_grid = grid
  return c


def _rep_rows(offsets):
  """Eight cases of ``average`` and of one ctrl_vi variant per entry of ``offsets``: each a
  ``(track offsets per case, diversity offset)`` added to the baseline's case values."""
  rows = []
  for i in range(8):
    rows.append(dict(case=f"c{i}", method="average", **_metrics(1.0 + 0.1 * i, 0.1 + 0.01 * i)))
  for k, (tracks, div) in enumerate(offsets):
    for i in range(8):
      m = _metrics(1.0 + 0.1 * i, 0.1 + 0.01 * i + div)
      m["track_error_px"] += tracks[i]
      rows.append(dict(case=f"c{i}", method=tuning.repulsion_variant_name(k), **m))
  return rows


def test_repulsion_variants_carry_their_repulsion_and_ctrl_vi_options():
  c = _rep_config()
  known = methods.methods_from_config(c)
  base = methods.sampler_options(known["ctrl_vi"], c)
  for k, value in enumerate((5e3, 1e4, 2e4)):
    opts = methods.sampler_options(known[tuning.repulsion_variant_name(k)], c)
    assert opts["repulsion"] == value
    assert {a: b for a, b in opts.items() if a != "repulsion"} == {
        a: b for a, b in base.items() if a != "repulsion"}
  assert base["repulsion"] == c.ctrl_vi.repulsion
  assert tuning.variant_names(c, ["ctrl_vi", "average"]) == [
      "ctrl_vi_rep0", "ctrl_vi_rep1", "ctrl_vi_rep2"]
  assert tuning.variant_names(c, ["average"]) == []


def test_choose_repulsion_exact_answer():
  c = _rep_config()
  tied = [0.1, -0.1] * 4  # mean 0: the interval holds 0
  worse = [0.3 + 0.01 * i for i in range(8)]  # every case worse
  rows = _rep_rows([(tied, 0.012), (worse, 0.05), (tied, 0.03)])
  got = tuning.choose_repulsion(rows, c)
  assert got["repulsion"] == 2e4  # the most diverse of the admissible 5e3 and 2e4
  assert got["admissible"] == [5e3, 2e4]
  assert got["worse"] == {"5000": [], "10000": ["track_error_px"], "20000": []}
  assert got["margin_grey"]["20000"][0] == pytest.approx(0.03 / tuning.GREY_LEVEL)
  assert got["margin_grey"]["20000"][1] == pytest.approx(0.03 / tuning.GREY_LEVEL)
  text = tuning.repulsion_markdown(got)
  assert "Chosen: 20000." in text
  assert "| 10000 | track_error_px | 0.185 | +6.38 [+6.38, +6.38] |" in text
  assert "| 5000 | none | 0.147 | +1.53 [+1.53, +1.53] |" in text
  # The most diverse value is worse on a control: not chosen; none admissible: the smallest.
  rows = _rep_rows([(worse, 0.01), (worse, 0.05), (worse, 0.03)])
  assert tuning.choose_repulsion(rows, c)["repulsion"] == 5e3
  # ctrl_vi's own repulsion (its rows, when run) is a candidate beside the grid's values.
  own = [dict(r, method="ctrl_vi", unsimulated_diversity=r["unsimulated_diversity"] + 0.1)
         for r in _rep_rows([(tied, 0.0)]) if r["method"] == "ctrl_vi_rep0"]
  got = tuning.choose_repulsion(_rep_rows([(tied, 0.012), (worse, 0.05), (tied, 0.03)]) + own,
                                c, own=4e4)
  assert got["repulsion"] == 4e4 and got["admissible"] == [5e3, 2e4, 4e4]
  assert tuning.choose_repulsion(rows + own, c, own=3e4)["worse"]["30000"] == []
  # Without ctrl_vi's rows its own value is no candidate.
  assert "30000" not in tuning.choose_repulsion(rows, c, own=3e4)["worse"]
  # Without the baseline or a grid value's rows there is nothing to choose.
  assert tuning.choose_repulsion([r for r in rows if r["method"] != "average"], c) is None
  assert tuning.choose_repulsion([r for r in rows if r["method"] != "ctrl_vi_rep2"], c) is None


def test_repulsion_grid_is_validated():
  with pytest.raises(ConfigError, match="repulsion_grid"):
    tuning.repulsion_grid(_rep_config("1e4,x"))
  c = _rep_config()
  c.step_grid = "0.1"
  with pytest.raises(ConfigError, match="repulsion_grid.*step_grid"):
    tuning.repulsion_grid(c)


def test_choose_repulsion_refuses_a_value_that_loses_the_unsimulated_object():
  # The most diverse value (1e4) fades the object: its presence is lower on every case, so it
  # is not admissible although no control is worse; a presence tied with averaging's passes.
  c = _rep_config()
  tied = [0.1, -0.1] * 4
  rows = _rep_rows([(tied, 0.012), (tied, 0.05), (tied, 0.03)])
  lost = {"ctrl_vi_rep1": -0.2, "ctrl_vi_rep2": 0.0}
  for r in rows:
    r["unsimulated_presence"] = 0.5 + 0.01 * int(r["case"][1:]) + lost.get(r["method"], 0.0)
    if r["method"] == "ctrl_vi_rep2":  # tied: half the cases up, half down
      r["unsimulated_presence"] += 0.05 * (-1) ** int(r["case"][1:])
  got = tuning.choose_repulsion(rows, c)
  assert got["worse"] == {"5000": [], "10000": ["unsimulated_presence"], "20000": []}
  assert got["repulsion"] == 2e4 and got["admissible"] == [5e3, 2e4]
  assert "| 10000 | unsimulated_presence |" in tuning.repulsion_markdown(got)


def test_choose_repulsion_ignores_detectable_but_negligible_losses():
  # Object L1 above averaging's on every case (detectable) by 0.0001, a fifth of NEGLIGIBLE:
  # not a loss; by 0.001 (above it) a loss. Tracks worse by 0.05 px on every case: not a loss.
  c = _rep_config()
  tied = [0.1, -0.1] * 4
  rows = _rep_rows([(tied, 0.012), ([0.05] * 8, 0.05), (tied, 0.03)])
  extra = {"ctrl_vi_rep0": 0.0001, "ctrl_vi_rep2": 0.001}
  for r in rows:
    r["object_l1"] += extra.get(r["method"], 0.0)
  got = tuning.choose_repulsion(rows, c)
  assert tuning.NEGLIGIBLE["object_l1"] == 0.0004 and tuning.NEGLIGIBLE["track_error_px"] == 0.1
  assert got["worse"] == {"5000": [], "10000": [], "20000": ["object_l1"]}
  assert got["repulsion"] == 1e4 and got["admissible"] == [5e3, 1e4]
  assert "object_l1 0.0004" in tuning.repulsion_markdown(got)


def test_the_default_repulsion_is_the_rules_choice_on_the_recorded_dev_rows(monkeypatch):
  import json
  import pathlib

  from configs import world_demo

  path = pathlib.Path(__file__).parents[2] / "assets/evaluations/dev_rep7/results.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  c = _rep_config("5e3,1e4,4e4")
  got = tuning.choose_repulsion(rows, c, own=2e4)  # ctrl_vi's rows were run at 2e4
  assert got["repulsion"] == world_demo.get_config().sampler.repulsion == 2e4
  assert got["admissible"] == [5e3, 1e4, 2e4]
  assert got["worse"]["40000"] == ["track_error_px"]
  # Counting any detectable difference (the seventh session's rule) the same rows choose 5e3.
  monkeypatch.setattr(tuning, "NEGLIGIBLE", {})
  strict = tuning.choose_repulsion(rows, c, own=2e4)
  assert strict["repulsion"] == 5e3 and strict["admissible"] == [5e3]
  assert strict["worse"]["20000"] == ["object_l1"]
