"""The sampler constructor (options, levels and mesh closed over; the target an argument) and
the one level-loop driver shared by ``cvi.sample`` and the launcher."""

import chex
import jax
import numpy as np
import pytest

import composed_vi as cvi
from composed_vi import experts, samplers, sampling


def _targets():
  a = experts.GaussianMixture([[2.0, 0.0], [-2.0, 0.0]], [0.5, 0.5])
  b = experts.GaussianMixture([[0.0, 2.0], [0.0, -2.0]], [0.5, 0.5])
  c = experts.GaussianMixture([[1.0, 1.0], [-1.0, -1.0]], [0.4, 0.6])
  return cvi.compose([a, b]), cvi.compose([a, c])


@pytest.mark.parametrize("method", sorted(samplers.METHODS))
def test_the_target_is_an_argument_not_a_constant(method):
  """One compiled step serves two targets of the same structure (no retrace), and their
  samples differ: the target is a jit argument of ``step``."""
  chex.clear_trace_counter()  # the counter is per code location, across parametrisations
  first, second = _targets()
  sampler = samplers.make(method, sampling.build_options(method, num_levels=8))
  assert sampler.levels.shape == (8,)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, target):
    return sampler.step(state, target)

  outs = []
  for target in (first, second):
    state = sampler.init(jax.random.key(0), target, 16)
    assert state.particles.shape == (16, 2)
    for _ in range(8):
      state, info = step(state, target)
    outs.append(np.asarray(state.particles))
    assert int(state.level) == 8 and np.isfinite(np.asarray(info.t))
  assert not np.allclose(outs[0], outs[1])


@pytest.mark.parametrize("method", sorted(samplers.METHODS))
def test_level_by_level_equals_one_call(method):
  """The launcher's per-level calls and ``cvi.sample``'s single scan give the same samples."""
  target, _ = _targets()
  opts = sampling.build_options(method, num_levels=12)
  run = sampling.driver(method, opts, 8)
  state = run.init(jax.random.key(3), target)
  for _ in range(12):
    state, _ = run.step(state, target)
  by_level = np.asarray(run.x0(state, target))
  at_once, info = cvi.sample(jax.random.key(3), target, 8, method, num_levels=12)
  np.testing.assert_allclose(by_level, np.asarray(at_once), rtol=0, atol=1e-6)
  assert np.asarray(info.t).shape == (12,)


def test_driver_functions_are_compiled_once_per_setting():
  target, other = _targets()
  opts = sampling.build_options("ode", num_levels=4)
  before = sampling._advance_kept._cache_size()
  for t in (target, other):
    run = sampling.driver("ode", opts, 4)  # a new Driver, the same compiled functions
    state = run.init(jax.random.key(0), t)
    run.advance(state, t, 4)
  assert sampling._advance_kept._cache_size() == before + 1


def test_options_check_their_target_before_compute():
  target, _ = _targets()
  with pytest.raises(cvi.ConfigError, match="feature_map"):
    cvi.sample(jax.random.key(0), target, 4, "ctrl_vi", feature_map="target_mask")
  with pytest.raises(cvi.ConfigError, match="stein_region"):
    sampling.build_options("ctrl_vi", stein_region="unpinned").check_target(target)
  f = experts.FunctionExpert(lambda x, t: -x, (2,))
  with pytest.raises(cvi.ConfigError, match="mala"):
    sampling.build_options("annealed_langevin", mala=True).check_target(cvi.compose([f]))
  sampling.build_options("annealed_langevin", mala="auto").check_target(cvi.compose([f]))


def test_sampler_of_an_unknown_method_is_refused():
  with pytest.raises(cvi.ConfigError, match="method"):
    samplers.make("nope")
  assert isinstance(samplers.make("ode").options, samplers.ode.ODEOptions)
