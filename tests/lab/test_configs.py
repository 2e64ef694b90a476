"""Configs are data: every sampler option can be set from one, the composition's fields are the
library's, every config names an experiment of the launcher and loads with its variants."""

import dataclasses
import pathlib

import pytest

from composed_vi import samplers
from composed_vi.lab import launcher, runner
from composed_vi.sampling import build_options
from composed_vi.world import demo
from configs import common, gmm_product
from configs import evaluate as evaluate_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
#: Not config fields: ``num_levels`` is top-level, ``reward`` is a callable.
NOT_IN_CONFIG = {"num_levels", "reward"}

#: A valid value other than the default, for every option (and the method that has it).
VALUES = dict(
    t_max=0.9, t_min=0.05, shift=3.0, levels=(0.9, 0.5, 0.1), inner_steps=3, step_size=0.05,
    precondition=True, drive="local", step_rule="noise", repulsion=2.5, repulsion_schedule="linear",
    feature_map="pool", pool_factor=4, num_features=8, feature_seed=3, bandwidth=0.7,
    bandwidth_scale=0.5, calibrate_repulsion=True, stein_region="target_mask", stein_min_t=0.4,
    mala="false", reward_scale=2.0, ess_threshold=0.25, solver="heun",
)


def _owner(name: str) -> str:
  for method, (_, cls) in samplers.METHODS.items():
    if name in {f.name for f in dataclasses.fields(cls)}:
      return method
  raise AssertionError(name)


def test_the_config_fields_are_exactly_the_options_dataclasses_fields():
  options = {f.name for _, cls in samplers.METHODS.values() for f in dataclasses.fields(cls)}
  fields = [name for name, _ in common.SAMPLER_FIELDS]
  assert len(fields) == len(set(fields))
  assert set(fields) == options - NOT_IN_CONFIG
  assert set(VALUES) == set(fields)


@pytest.mark.parametrize("name", [name for name, _ in common.SAMPLER_FIELDS])
def test_every_sampler_option_round_trips_from_a_config(name):
  config = gmm_product.get_config()
  method = _owner(name)
  config.method = method
  config.sampler[name] = VALUES[name]
  opts = build_options(method, **runner.sampler_options(config))
  expected = {"mala": False}.get(name, VALUES[name])
  assert getattr(opts, name) == expected
  _, cls = samplers.METHODS[method]
  assert getattr(cls(), name) != expected  # the config changed it


def test_an_option_of_another_method_is_refused_by_name():
  config = gmm_product.get_config()
  config.sampler.solver = "heun"  # an ODE option on a ctrl_vi config
  with pytest.raises(Exception, match="solver"):
    build_options(config.method, **runner.sampler_options(config))


def test_composition_fields_are_the_librarys():
  fields = {f.name: f.default for f in dataclasses.fields(demo.Composition)}
  assert common.composition().to_dict() == fields
  with pytest.raises(KeyError, match="nope"):
    common.composition(nope=1.0)


def test_every_config_names_an_experiment_of_the_launcher():
  for path in sorted(CONFIGS.glob("*.py")):
    if path.name in ("__init__.py", "common.py"):
      continue
    module = __import__(f"configs.{path.stem}", fromlist=["get_config"])
    config = module.get_config()
    assert config.experiment in launcher.EXPERIMENTS, path.name
    if "smoke" in (module.__doc__ or ""):
      module.get_config("smoke")  # the variant its docstring advertises loads
    with pytest.raises((ValueError, KeyError)):
      module.get_config("no-such-variant")


def test_the_evaluation_declares_its_methods():
  config = evaluate_config.get_config()
  specs = config.method_specs.to_dict()
  assert {"ctrl_vi", "average", "poe_smc", "ctrl_vi_no_context"} <= set(specs)
  for name in config.methods.split(","):
    assert name in specs
