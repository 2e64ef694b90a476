"""Evaluation methods: how each declared method samples a case, and what its rows depend on.

Methods are declared in the config (``config.method_specs``, read by
:func:`methods_from_config`); :func:`sampler_options` turns a method and the config into the
sampler's options, :class:`Sampler` samples any method on any case (backbones loaded once,
each method compiled once) and :func:`method_settings` is what a row depends on (for reuse).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi import samplers
from composed_vi.composition import compose
from composed_vi.errors import ConfigError, check_choice, fail
from composed_vi.lab import runner
from composed_vi.lab.evaluation import tuning
from composed_vi.samplers import smc
from composed_vi.sampling import build_options, sample
from composed_vi.world import backbones as tb
from composed_vi.world import dataset
from composed_vi.world import demo as world_demo

KINDS = ("t2v", "i2v", "cam2v", "sim2v")
#: Top-level fields every row depends on (with the method's options and composition).
_ROW_FIELDS = ("seed", "split", "num_particles", "world", "backbones")


@dataclasses.dataclass(frozen=True)
class Method:
  """How a method samples: which experts, which sampler, which option overrides."""

  name: str
  experts: str  # "composed" or one backbone kind
  sampler: str  # a key of composed_vi.samplers.METHODS
  context: bool = True
  options: tuple = ()  # ((name, value), ...) on top of the sampler's evaluation options
  description: str = ""
  composition: tuple = ()  # ((name, value), ...) on top of the config's world_demo.Composition


def methods_from_config(config) -> dict:
  """``{name: Method}`` from ``config.method_specs`` (each entry names its experts, sampler,
  context, options and composition overrides; errors name ``method_specs.<name>.<field>``)."""
  specs = config.get("method_specs")
  if not specs:
    fail("method_specs", "a mapping of method names to their experts, sampler and options",
         specs)
  kinds = ("composed",) + KINDS
  out = {}
  specs = dict(specs.items())
  specs.update(tuning.grid_specs(config, specs))
  for name, spec in specs.items():
    spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    field = f"method_specs.{name}"
    allowed = {"experts", "sampler", "context", "options", "composition", "description"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
      fail(field, f"fields among {sorted(allowed)}", f"unknown field(s) {unknown}")
    experts = check_choice(f"{field}.experts", spec.get("experts"), kinds)
    sampler = check_choice(f"{field}.sampler", spec.get("sampler"), tuple(samplers.METHODS))
    context = spec.get("context", True)
    if not isinstance(context, bool):
      fail(f"{field}.context", "True or False", context)
    composition = dict(spec.get("composition") or {})
    names = {f.name for f in dataclasses.fields(world_demo.Composition)}
    unknown = sorted(set(composition) - names)
    if unknown:
      fail(f"{field}.composition", f"fields among {sorted(names)}", f"unknown {unknown}")
    out[name] = Method(name, experts, sampler, context,
                       tuple(sorted((spec.get("options") or {}).items())),
                       str(spec.get("description", "")), tuple(sorted(composition.items())))
  return out


#: Reported metrics: (name, better direction, label).
METRICS = (
    ("first_frame_l1", "lower", "first-frame L1"),
    ("track_error_px", "lower", "object track error (px)"),
    ("camera_background_error", "lower", "camera/background L1"),
    ("object_l1", "lower", "object L1 (simulated objects' pixels)"),
    ("consistency_3d", "lower", "3D consistency error"),
    ("diversity", "higher", "diversity (unspecified)"),
    ("unsimulated_diversity", "higher", "diversity (unsimulated object's band)"),
    ("unsimulated_presence", "higher", "unsimulated object present"),
    ("unsimulated_motion_spread", "higher", "unsimulated object's motion spread (px)"),
    ("valid_all", "higher", "valid particles"),
    ("seconds", "lower", "seconds per case"),
)


@smc.target_reward
def context_reward(x0, target):
  """PoE-SMC's reward: ``-0.5 mean_V (x0 - c)^2 / sigma_c^2`` with the target's context
  expert (its last expert) ``c``, ``sigma_c`` and visibility ``V``; ``(N,)``."""
  ctx = target.experts[-1]
  c, sigma = ctx.means[0], ctx.stds[0]
  vis = jnp.broadcast_to(ctx.support if ctx.support is not None else 1.0, c.shape)
  sq = jnp.sum(vis * jnp.square(x0 - c), axis=tuple(range(1, x0.ndim)))
  return -0.5 * sq / jnp.maximum(jnp.sum(vis), 1.0) / sigma**2


def sampler_options(method: Method, config) -> dict:
  """The options of ``method`` under an evaluation ``config`` (same levels for every method)."""
  opts = dict(num_levels=config.num_levels)
  if method.sampler != "ode":
    opts["inner_steps"] = config.inner_steps
    opts["precondition"] = config.precondition
  if method.sampler == "poe_smc":
    opts.update(reward=context_reward, reward_scale=config.poe_smc_reward_scale)
  if method.sampler == "ctrl_vi":  # the config's Ctrl-VI settings (chosen on the dev split)
    opts.update({k: v for k, v in config.ctrl_vi.to_dict().items() if v is not None})
  steps = config.get("step_sizes")
  if steps is not None and steps.get(method.sampler) is not None:  # Langevin's, PoE-SMC's
    opts["step_size"] = steps[method.sampler]
  extra = dict(method.options)
  if extra.pop("anneal", True) is False:
    # Every step at the last level of the annealed schedule these options would run.
    t_min = build_options(method.sampler, **{**opts, **extra}).t_min
    opts["levels"] = (t_min,)
    opts["inner_steps"] = config.num_levels * config.inner_steps
    opts["stein_min_t"] = 0.0  # every step is at t_min: none would run below a stein_min_t
    del opts["num_levels"]
  opts.update(extra)
  return opts


class Sampler:
  """Loads the backbones once and samples any method on any case (compiled once per method)."""

  def __init__(self, config, backbones: dict | None = None):
    self.config = config
    self.composition = world_demo.Composition.from_config(config)
    self.backbones = backbones or world_demo.load_backbones(config.backbones, KINDS)
    self.fns = {k: tb.model_fn(spec) for k, (spec, _) in self.backbones.items()}

  def target(self, method: Method, example: dataset.Example):
    if method.experts == "composed":
      composition = dataclasses.replace(self.composition, **dict(method.composition))
      return world_demo.build_target(example, self.backbones, composition, self.fns,
                                     context=method.context)
    spec, params = self.backbones[method.experts]
    return compose([tb.expert(spec, params, example,
                              guidance_scale=self.composition.guidance_scale,
                              fn=self.fns[method.experts])])

  def __call__(self, method: Method, example: dataset.Example, key) -> np.ndarray:
    target = self.target(method, example)
    out, _ = sample(key, target, self.config.num_particles, method.sampler,
                    **sampler_options(method, self.config))
    return np.asarray(jax.block_until_ready(out))


def method_settings(method: Method, config):
  """What the rows of ``method`` depend on besides the code and the backbones' weights: its
  resolved sampler options, its composition and the shared fields (``_ROW_FIELDS``); ``None``
  when ``config`` (for instance an older run's ``config.json``) lacks a field they need."""
  try:
    options = build_options(method.sampler, **sampler_options(method, config))
    fields = {f.name for f in dataclasses.fields(world_demo.Composition)}
    if set(config["composition"].keys()) != fields:  # an older run's: defaults may differ
      return None
    composition = dataclasses.replace(world_demo.Composition.from_config(config),
                                      **dict(method.composition))
    shared = json.dumps({k: runner.config_dict(config[k]) if hasattr(config[k], "to_dict")
                         else config[k] for k in _ROW_FIELDS}, sort_keys=True, default=str)
  except (AttributeError, KeyError, TypeError, ConfigError):
    return None
  return options, composition, shared
