"""The evaluation (composed_vi.lab.evaluation): cases, statistics, the PoE reward, a resumed run."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from composed_vi import experts
from composed_vi.composition import compose
from composed_vi.errors import ConfigError
from composed_vi.lab import evaluation as ev
from composed_vi.lab import stats
from composed_vi.lab.evaluation import experiment as ev_run
from composed_vi.lab.evaluation import report
from composed_vi.sampling import sample
from composed_vi.world import demo as world_demo
from configs import evaluate as eval_config

#: The methods the evaluation config declares.
METHODS = ev.methods_from_config(eval_config.get_config())


def test_splits_are_factorial_and_disjoint():
  config = eval_config.get_config()
  test = ev.cases(config.splits.test, "test")
  dev = ev.cases(config.splits.dev, "dev")
  assert len(test) >= 40
  assert len(test) == (len(config.splits.test.backgrounds) * len(config.splits.test.cameras)
                       * len(config.splits.test.simulations))
  assert len({c.name for c in test}) == len(test)
  # The held-out split shares no seed with the split the defaults were chosen on.
  for field in ("background_seed", "camera_seed", "objects_seed"):
    assert not {getattr(c, field) for c in test} & {getattr(c, field) for c in dev}, field
  assert {c.camera_kind for c in test} == set(config.splits.test.cameras)
  # Every split is disjoint from every other in each of its seeds.
  names = sorted(config.splits.keys())
  assert {"dev", "test", "test2", "test3", "test4", "test5", "test6", "test7"} <= set(names)
  per = {n: ev.cases(config.splits[n], n) for n in names}
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      for field in ("background_seed", "camera_seed", "objects_seed"):
        shared = {getattr(c, field) for c in per[a]} & {getattr(c, field) for c in per[b]}
        assert not shared, (a, b, field, shared)


@pytest.mark.parametrize("split,scan_from", [("test2", 401), ("test3", 601), ("test4", 801),
                                                  ("test5", 1001), ("test6", 1201),
                                                  ("test7", 1401)])
def test_fresh_splits_take_the_first_simulations_that_leave_an_object_out(split, scan_from):
  """Each fresh split's simulations are the first two seeds from its scan start whose scene
  leaves a rolling object out of the simulation control (so every case has one)."""
  from composed_vi.world import scene

  config = eval_config.get_config()
  scene_config = world_demo.scene_config(config)

  def leaves_one_out(seed):
    key = jax.random.key(seed)
    objects = scene.choose_unsimulated(jax.random.fold_in(key, 7),
                                       scene.sample_objects(key, scene_config),
                                       scene_config.unsimulated_probability)
    return not np.all(np.asarray(objects.simulated)[np.asarray(objects.valid)])

  chosen = tuple(config.splits[split].simulations)
  assert all(leaves_one_out(s) for s in chosen)
  assert not any(leaves_one_out(s) for s in range(scan_from, chosen[0]))
  assert not any(leaves_one_out(s) for s in range(chosen[0] + 1, chosen[1]))


def test_case_example_is_deterministic_and_has_its_camera_kind():
  from composed_vi.world import scene

  config = eval_config.get_config()
  case = ev.cases(config.splits.test, "test")[2]
  scene_config = world_demo.scene_config(config)
  a = ev.case_example(case, scene_config)
  b = ev.case_example(case, scene_config)
  np.testing.assert_array_equal(a.video, b.video)
  assert int(a.camera_kind) == scene.CAMERA_KINDS.index(case.camera_kind)


def test_bootstrap_interval_known_answers():
  mean, lo, hi = stats.bootstrap_interval([2.0] * 10)
  assert (mean, lo, hi) == (2.0, 2.0, 2.0)
  values = np.random.default_rng(0).normal(1.0, 1.0, 400)
  mean, lo, hi = stats.bootstrap_interval(values)
  assert mean == pytest.approx(values.mean())
  half = 1.96 * values.std() / np.sqrt(values.size)  # the normal interval, for comparison
  assert lo < mean < hi
  assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
  # NaNs are dropped; all-NaN gives NaN; the same seed gives the same interval.
  assert stats.bootstrap_interval([1.0, np.nan, 3.0])[0] == 2.0
  assert np.isnan(stats.bootstrap_interval([np.nan])[0])
  assert stats.bootstrap_interval(values, seed=3) == stats.bootstrap_interval(values, seed=3)


def test_aggregate_paired_difference_and_verdict():
  rows = []
  for i in range(6):
    base = dict(first_frame_l1=0.1 * i, track_error_px=float(i), diversity=0.5)
    rows.append(dict(case=f"c{i}", method="ctrl_vi", seconds=1.0, **base))
    worse = dict(base, first_frame_l1=0.1 * i + 0.25, diversity=0.5)
    rows.append(dict(case=f"c{i}", method="average", seconds=2.0, includes_compile=i == 0,
                     **worse))
  table = stats.aggregate(rows, ["ctrl_vi", "average"], ev.METRICS)
  e = table["average"]["first_frame_l1"]
  assert e["diff"] == pytest.approx(0.25)
  assert e["diff_low"] == pytest.approx(0.25) and e["diff_high"] == pytest.approx(0.25)
  assert report.verdict(e, "lower") == "worse"
  assert report.verdict(table["average"]["diversity"], "higher") == "tied"
  assert table["ctrl_vi"]["track_error_px"]["mean"] == pytest.approx(2.5)
  # A row that includes compilation does not count towards the time.
  assert table["average"]["seconds"]["n"] == 5
  assert "diff" not in table["ctrl_vi"]["first_frame_l1"]
  assert report.verdict(dict(diff_low=-0.3, diff_high=-0.1), "higher") == "worse"
  assert report.verdict(dict(diff_low=-0.3, diff_high=-0.1), "lower") == "better"


def test_markdown_prints_small_paired_differences():
  """Composed methods differ by ~1e-4 L1: the paired table must not round that to 0.000."""
  rows = []
  for i in range(6):
    base = dict(first_frame_l1=0.04 + 0.001 * i, track_error_px=3.0 + 0.1 * i)
    rows.append(dict(case=f"c{i}", method="ctrl_vi", seconds=1.0, **base))
    rows.append(dict(case=f"c{i}", method="average", seconds=1.0,
                     **dict(base, first_frame_l1=base["first_frame_l1"] - 0.0002)))
  table = stats.aggregate(rows, ["ctrl_vi", "average"], ev.METRICS)
  methods = [METHODS["ctrl_vi"], METHODS["average"]]
  text = report.markdown(table, methods, "cmd", 6)
  line = [ln for ln in text.splitlines() if ln.startswith("| average |")][-1]
  assert "-0.0002 [-0.0002, -0.0002] better" in line
  assert "+0.000 [+0.000, +0.000] tied" in line  # tracks: identical
  # Below the fixed decimals (5e-6 L1) the difference is printed in scientific notation.
  for r in rows:
    if r["method"] == "average":
      r["first_frame_l1"] += 0.0002 + 5e-6
  table = stats.aggregate(rows, ["ctrl_vi", "average"], ev.METRICS)
  line = [ln for ln in report.markdown(table, methods, "cmd", 6).splitlines()
          if ln.startswith("| average |")][-1]
  assert "+5.0e-06 [+5.0e-06, +5.0e-06] worse" in line


def test_context_reward_reads_the_target():
  shape = (2, 3, 3, 3)
  c = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  vis = np.zeros(shape[:-1] + (1,), np.float32)
  vis[0] = 1.0
  target = compose([experts.Gaussian(np.zeros(shape), 1.0),
                    experts.Context(c, 0.5, visibility=vis)])
  x0 = np.random.default_rng(1).normal(size=(4,) + shape).astype(np.float32)
  got = np.asarray(ev.context_reward(jnp.asarray(x0), target))
  v = np.broadcast_to(vis, shape)
  want = -0.5 * np.sum(v * (x0 - c) ** 2, axis=(1, 2, 3, 4)) / v.sum() / 0.25
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_poe_smc_with_a_target_reward_pulls_towards_the_context():
  shape = (8,)
  target = compose([experts.GaussianMixture(np.stack([-np.ones(shape), np.ones(shape)]),
                                            np.array([0.2, 0.2])),
                    experts.Context(np.ones(shape), 2.0)])
  key = jax.random.key(0)
  plain, _ = sample(key, target, 64, "poe_smc", num_levels=16, inner_steps=1)
  tilted, _ = sample(key, target, 64, "poe_smc", num_levels=16, inner_steps=1,
                     reward=ev.context_reward, reward_scale=50.0)
  near = lambda x: float(np.mean(np.asarray(x).mean(axis=1) > 0))  # noqa: E731
  assert near(tilted) > near(plain)
  assert near(tilted) > 0.9


def test_sampler_options_of_the_ablations():
  config = eval_config.get_config()
  no_anneal = ev.sampler_options(METHODS["ctrl_vi_no_annealing"], config)
  assert no_anneal["levels"] == (0.02,)
  assert no_anneal["inner_steps"] == config.num_levels * config.inner_steps
  config.ctrl_vi.stein_min_t = 0.3  # every step of the ablation is at t_min, so all of them run
  assert ev.sampler_options(METHODS["ctrl_vi_no_annealing"], config)["stein_min_t"] == 0.0
  assert ev.sampler_options(METHODS["ctrl_vi"], config)["stein_min_t"] == 0.3
  assert ev.sampler_options(METHODS["ctrl_vi_every_level"], config)["stein_min_t"] == 0.0
  assert ev.sampler_options(METHODS["ctrl_vi_no_repulsion"], config)["repulsion"] == 0.0
  assert ev.sampler_options(METHODS["ctrl_vi"], config)["feature_map"] == "target_mask"
  assert ev.sampler_options(METHODS["ctrl_vi_full_kernel"], config)["feature_map"] == (
      "identity")
  assert ev.sampler_options(METHODS["ctrl_vi"], config)["stein_region"] == "all"
  assert ev.sampler_options(METHODS["ctrl_vi_stein_unspecified"], config)[
      "stein_region"] == "target_mask"
  assert ev.sampler_options(METHODS["ctrl_vi_stein_everywhere"], config)["stein_region"] == (
      "all")
  assert ev.sampler_options(METHODS["ctrl_vi_stein_unpinned"], config)["stein_region"] == (
      "unpinned")
  assert "inner_steps" not in ev.sampler_options(METHODS["average"], config)
  assert ev.sampler_options(METHODS["poe_smc"], config)["reward"] is ev.context_reward
  # The world's Ctrl-VI is on the textbook drive; the ablation is the earlier pinned drive.
  ctrl = ev.sampler_options(METHODS["ctrl_vi"], config)
  local = ev.sampler_options(METHODS["ctrl_vi_local_drive"], config)
  assert (ctrl["drive"], ctrl["step_rule"]) == ("kernel", "stiffness")
  assert (local["drive"], local["step_rule"], local["step_size"]) == ("local", "noise", 0.03)
  changed = ("drive", "step_rule", "step_size")
  assert {k: v for k, v in local.items() if k not in changed} == {
      k: v for k, v in ctrl.items() if k not in changed}
  # The config's Ctrl-VI settings reach every ctrl_vi method; an ablation's own option wins.
  config.ctrl_vi.step_size = 0.05
  config.ctrl_vi.repulsion = 2.0
  assert ev.sampler_options(METHODS["ctrl_vi"], config)["step_size"] == 0.05
  assert ev.sampler_options(METHODS["ctrl_vi_no_repulsion"], config)["repulsion"] == 0.0
  # Langevin's and PoE-SMC's steps come from config.step_sizes, not from Ctrl-VI's.
  langevin = config.step_sizes.annealed_langevin
  assert langevin != 0.05 and langevin != 0.3
  assert ev.sampler_options(METHODS["langevin"], config)["step_size"] == langevin
  config.step_sizes.poe_smc = 0.3
  assert ev.sampler_options(METHODS["poe_smc"], config)["step_size"] == 0.3
  assert ev.sampler_options(METHODS["langevin"], config)["step_size"] == langevin
  assert "step_size" not in ev.sampler_options(METHODS["average"], config)
  # One preconditioner for every score-following sampler; the ODE has no step.
  for name in ("ctrl_vi", "langevin", "poe_smc", "ctrl_vi_no_annealing"):
    assert ev.sampler_options(METHODS[name], config)["precondition"] is True
  assert "precondition" not in ev.sampler_options(METHODS["average"], config)


def test_method_composition_overrides_reach_the_target():
  """``average`` samples the raw-weight composition (started from N(0, I / W));
  ``average_normalized`` the same experts with weights summing to 1 per pixel (queried as
  they are: the default re-noises the image backbone's input, which the product's total weight
  decides, so v_bar is the same only without it)."""
  config = eval_config.get_config("smoke")
  config.composition.matched_queries = ""
  sampler = ev.Sampler(config)
  case = ev.cases(config.splits.dev, "dev")[1]
  example = ev.case_example(case, world_demo.scene_config(config))
  raw = sampler.target(METHODS["average"], example)
  norm = sampler.target(METHODS["average_normalized"], example)
  np.testing.assert_allclose(np.asarray(norm.total_weight), 1.0, rtol=1e-6)
  assert float(raw.total_weight.max()) == pytest.approx(
      1.0 + config.composition.camera_weight + config.composition.context_weight)
  np.testing.assert_allclose(np.asarray(norm.init_std()), 1.0, rtol=1e-6)
  x = jax.random.normal(jax.random.key(0), (2,) + norm.shape)
  np.testing.assert_allclose(norm.velocity(x, 0.5), raw.velocity(x, 0.5), rtol=1e-4, atol=1e-5)
  assert not sampler.composition.normalize_weights  # the override did not leak
  assert ev.sampler_options(METHODS["ctrl_vi_normalized"], config)["repulsion"] == 1e4


@pytest.mark.parametrize("field,value,match", [
    ("methods", "ctrl_vi,nope", "methods"),
    ("split", "train", "split"),
    ("num_particles", 0, "num_particles"),
    ("backbones.t2v", "/nonexistent", "backbones.t2v"),
])
def test_bad_config_is_refused_by_field(tmp_path, field, value, match):
  config = eval_config.get_config("smoke")
  with config.unlocked():
    if field.startswith("backbones."):
      config.backbones[field.split(".")[1]] = value
    else:
      config[field] = value
  with pytest.raises(ConfigError, match=match):
    ev.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_repulsion_grid_needs_ctrl_vi_and_averaging(tmp_path):
  config = eval_config.get_config("smoke")
  with config.unlocked():
    config.methods, config.repulsion_grid = "i2v,ctrl_vi", "1e4"
  with pytest.raises(ConfigError, match="repulsion_grid.*'average'"):
    ev.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_smoke_run_writes_the_report_and_resumes(tmp_path):
  config = eval_config.get_config("smoke")
  with config.unlocked():
    config.max_cases = 1
    config.methods = "i2v,ctrl_vi"
  workdir = str(tmp_path / "eval")
  table = ev.run(config, workdir)
  for name in ("results.jsonl", "table.md", "table.json", "metrics.png", "config.json",
               "gallery/index.html"):
    assert os.path.exists(os.path.join(workdir, name)), name
  rows = ev.read_rows(os.path.join(workdir, "results.jsonl"))
  assert [r["method"] for r in rows] == ["i2v", "ctrl_vi"]
  assert np.isfinite(table["ctrl_vi"]["first_frame_l1"]["mean"])
  with open(os.path.join(workdir, "table.json")) as f:
    saved = json.load(f)
  assert saved["methods"] == ["i2v", "ctrl_vi"] and saved["rows"] == 2
  # The reproduce command names the methods run; the best method per metric is recorded.
  assert saved["command"].endswith("--config.methods=i2v,ctrl_vi")
  assert saved["best_or_tied"]["first_frame_l1"]["best"] in ("i2v", "ctrl_vi")
  html = open(os.path.join(workdir, "gallery", "index.html")).read()
  assert "ctrl_vi" in html and "ground_truth.gif" in html
  # A rerun resumes: nothing is sampled again, the rows are unchanged.
  before = open(os.path.join(workdir, "results.jsonl")).read()
  ev.run(config, workdir)
  assert open(os.path.join(workdir, "results.jsonl")).read() == before
  # Adding a method to the finished run samples only that method's rows.
  with config.unlocked():
    config.methods = "i2v,ctrl_vi,average"
  table = ev.run(config, workdir)
  rows = ev.read_rows(os.path.join(workdir, "results.jsonl"))
  assert [r["method"] for r in rows] == ["i2v", "ctrl_vi", "average"]
  assert open(os.path.join(workdir, "results.jsonl")).read().startswith(before)
  assert set(table) == {"i2v", "ctrl_vi", "average"}
  # A repulsion grid on the finished run samples only its ctrl_vi variant and writes the choice
  # among the grid's value and ctrl_vi's own, against averaging.
  with config.unlocked():
    config.repulsion_grid = "1e3"
  ev.run(config, workdir)
  rows = ev.read_rows(os.path.join(workdir, "results.jsonl"))
  assert [r["method"] for r in rows] == ["i2v", "ctrl_vi", "average", "ctrl_vi_rep0"]
  with open(os.path.join(workdir, "repulsion.json")) as f:
    chosen = json.load(f)
  assert chosen["grid"] == [1e3] and chosen["split"] == config.split
  assert chosen["chosen"]["repulsion"] in (1e3, config.ctrl_vi.repulsion)
  assert set(chosen["chosen"]["worse"]) == {"1000", f"{config.ctrl_vi.repulsion:g}"}
  assert "tuning.choose_repulsion" in open(os.path.join(workdir, "table.md")).read()
  # Another config on the same workdir is refused, naming the field.
  with config.unlocked():
    config.seed = 5
  with pytest.raises(ConfigError, match="seed"):
    ev.run(config, workdir)


def test_method_settings_tell_which_rows_can_be_reused():
  """A change of Ctrl-VI's options changes only the ctrl_vi methods' settings; a config that
  lacks a field the settings need (an older run's config.json) gives None."""
  config = eval_config.get_config("smoke")
  other = eval_config.get_config("smoke")
  other.ctrl_vi.stein_region = "target_mask"
  for name in ("i2v", "average", "langevin", "poe_smc"):
    assert ev.method_settings(METHODS[name], config) == ev.method_settings(
        METHODS[name], other), name
  for name in ("ctrl_vi", "ctrl_vi_no_repulsion"):
    assert ev.method_settings(METHODS[name], config) != ev.method_settings(
        METHODS[name], other), name
  # The stein_everywhere ablation sets the option itself: the same in both.
  assert ev.method_settings(METHODS["ctrl_vi_stein_everywhere"], config) == (
      ev.method_settings(METHODS["ctrl_vi_stein_everywhere"], other))
  with other.unlocked():
    del other.composition["image_object_weight"]
  assert ev.method_settings(METHODS["average"], other) is None


def test_a_step_grid_method_is_compared_at_its_own_runs_step():
  """``ctrl_vi_step1`` of a run with step_grid 0.03,0.1 is step 0.1; of one with 0.03,0.01,
  step 0.01: not the same settings, although the names and every other field agree."""
  config = eval_config.get_config("smoke")
  old = eval_config.get_config("smoke")
  config.step_grid, old.step_grid = "0.03,0.01", "0.03,0.1"
  methods = ev.methods_from_config(config)
  assert ev_run.same_settings(methods["ctrl_vi_step0"], config, old)
  assert not ev_run.same_settings(methods["ctrl_vi_step1"], config, old)
  assert not ev_run.same_settings(methods["langevin_step1"], config, old)
  old.step_grid = "0.03"  # a name the old run does not have
  assert not ev_run.same_settings(methods["ctrl_vi_step1"], config, old)


def test_reuse_from_copies_rows_that_reproduce(tmp_path):
  config = eval_config.get_config("smoke")
  with config.unlocked():
    config.methods = "i2v,average"
    config.gallery_cases = 2
  first = str(tmp_path / "first")
  ev.run(config, first)
  old = {(r["case"], r["method"]): r for r in ev.read_rows(os.path.join(first, "results.jsonl"))}
  assert len(old) == 4
  # A run with other Ctrl-VI settings reuses both methods: the first case is sampled again
  # (bit-identical), the second copied, its gallery sample with it.
  with config.unlocked():
    config.reuse_from = first
    config.ctrl_vi.repulsion = 7.0
  second = str(tmp_path / "second")
  ev.run(config, second)
  rows = ev.read_rows(os.path.join(second, "results.jsonl"))
  assert len(rows) == 4
  cases = sorted({c for c, _ in old})
  for r in rows:
    o = old[(r["case"], r["method"])]
    metrics = {k: v for k, v in r.items() if k not in ("seconds", "includes_compile",
                                                        "reused_from")}
    assert ev_run._same_metrics(metrics, o) is None
    assert ("reused_from" in r) == (r["case"] == cases[1])
  assert os.path.exists(os.path.join(second, "gallery", cases[1], "average.npz"))
  # A tampered row does not reproduce: that method is sampled afresh, the other reused.
  tampered = str(tmp_path / "tampered")
  os.makedirs(tampered)
  shutil.copy(os.path.join(first, "config.json"), tampered)
  bad = [dict(r, first_frame_l1=r["first_frame_l1"] + 1.0) if r["method"] == "i2v" else r
         for r in old.values()]
  with open(os.path.join(tampered, "results.jsonl"), "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in bad))
  with config.unlocked():
    config.reuse_from = tampered
  third = str(tmp_path / "third")
  ev.run(config, third)
  rows = ev.read_rows(os.path.join(third, "results.jsonl"))
  assert not any("reused_from" in r for r in rows if r["method"] == "i2v")
  assert sum("reused_from" in r for r in rows if r["method"] == "average") == 1
  for r in rows:
    assert r["first_frame_l1"] == old[(r["case"], r["method"])]["first_frame_l1"]
  # Other composition settings: nothing is reused.
  with config.unlocked():
    config.reuse_from = first
    config.methods = "average"
    config.composition.context_weight = 3.0
    config.max_cases = 1
  fourth = str(tmp_path / "fourth")
  ev.run(config, fourth)
  assert not any("reused_from" in r for r in ev.read_rows(os.path.join(fourth, "results.jsonl")))
  # Bad sources are refused by field before anything is written.
  for src, where in ((str(tmp_path / "nowhere"), str(tmp_path / "w1")), (fourth, fourth)):
    with config.unlocked():
      config.reuse_from = src
    with pytest.raises(ConfigError, match="reuse_from"):
      ev.run(config, where)
  assert not os.path.exists(str(tmp_path / "w1"))


def test_best_or_tied_per_metric():
  rng = np.random.default_rng(0)
  rows = []
  for i in range(12):
    noise = 0.01 * rng.standard_normal()
    vals = dict(ctrl_vi=0.10 + noise, average=0.10 + noise + 0.002 * (-1) ** i,
                langevin=0.15 + noise)
    for m, v in vals.items():
      div = float("nan") if i == 0 else {"ctrl_vi": 0.3, "average": 0.2, "langevin": 0.25}[m]
      rows.append(dict(case=f"c{i}", method=m, first_frame_l1=v, diversity=div, seconds=1.0))
  rows.append(dict(case="c_extra", method="ctrl_vi", first_frame_l1=9.0, diversity=0.3))
  best = stats.best_or_tied(rows, ["ctrl_vi", "average", "langevin"], ev.METRICS)
  # average alternates +-0.002 around ctrl_vi: tied; langevin is 0.05 worse on every case.
  assert best["first_frame_l1"]["best"] in ("ctrl_vi", "average")
  assert set(best["first_frame_l1"]["tied"]) == {"ctrl_vi", "average"} - {
      best["first_frame_l1"]["best"]}
  assert best["first_frame_l1"]["cases"] == 12  # the case only ctrl_vi has does not count
  # Higher is better for diversity; the case where it is undefined is dropped.
  assert best["diversity"] == dict(best="ctrl_vi", tied=[], cases=11)
  assert "seconds" not in best and "track_error_px" not in best
  methods = [METHODS[n] for n in ("ctrl_vi", "average", "langevin")]
  text = report.markdown(stats.aggregate(rows, methods, ev.METRICS), methods, "cmd", 12, best)
  assert "- diversity (unspecified): `ctrl_vi`; tied: none" in text


def test_negligible_differences_are_marked_not_hidden():
  # average is above ctrl_vi by 0.0001 on every case (detectable, a fourth of the 0.0004 that
  # counts), langevin by 0.001 (beyond it): the verdicts stay interval-based, marked.
  rows = []
  for i in range(10):
    base = 0.02 + 0.001 * i
    for m, off in (("ctrl_vi", 0.0), ("average", 0.0001), ("langevin", 0.001)):
      rows.append(dict(case=f"c{i}", method=m, object_l1=base + off, seconds=1.0))
  names = ["ctrl_vi", "average", "langevin"]
  best = stats.best_or_tied(rows, names, ev.METRICS, negligible={"object_l1": 0.0004})
  assert best["object_l1"] == dict(best="ctrl_vi", tied=[], cases=10, negligible=["average"])
  assert "negligible" not in stats.best_or_tied(rows, names, ev.METRICS)["object_l1"]
  assert report.verdict(dict(diff=0.0001, diff_low=0.0001, diff_high=0.0001), "lower",
                        0.0004) == "worse (negligible)"
  assert report.verdict(dict(diff=0.001, diff_low=0.001, diff_high=0.001), "lower",
                        0.0004) == "worse"
  assert report.verdict(dict(diff=0.0, diff_low=-0.1, diff_high=0.1), "lower", 0.4) == "tied"
  methods = [METHODS[n] for n in names]
  table = stats.aggregate(rows, methods, ev.METRICS)
  text = report.markdown(table, methods, "cmd", 10, best)
  assert "; not tied but within 0.0004 of it (negligible): `average`" in text
  assert "worse (negligible)" in text and "object_l1 0.0004" in text


def test_compare_runs_gives_paired_differences_and_counts_changed_cases():
  old = [dict(case=f"c{i}", method="ctrl_vi", first_frame_l1=0.1, track_error_px=2.0,
              camera_background_error=0.05, consistency_3d=0.03, diversity=0.2, valid_all=1.0,
              seconds=1.0) for i in range(4)]
  new = [dict(r, first_frame_l1=r["first_frame_l1"] + (0.25 if i < 2 else 0.0), seconds=9.0)
         for i, r in enumerate(old)]
  text = report.compare_runs(new, old + [dict(old[0], method="only_old")])
  rows = [line for line in text.splitlines() if line.startswith("| ctrl_vi")]
  assert len(rows) == 1 and "only_old" not in text
  cells = [c.strip() for c in rows[0].strip("|").split("|")]
  assert cells[1] == "2 of 4"  # seconds differ everywhere but do not count as a change
  assert cells[2].startswith("+0.1250 [")  # mean of (0.25, 0.25, 0, 0)
  assert cells[3] == "+0.000 [+0.000, +0.000]"
