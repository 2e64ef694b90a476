"""Pieces shared by the experiment configs (data only: this file imports ml_collections alone)."""

import ml_collections

#: Every option of the samplers' options dataclasses that a config can hold, with its type
#: (``composed_vi.samplers.*Options``; ``tests/lab/test_configs.py`` checks that this list is
#: exactly their fields). Two are not here: ``num_levels`` is the config's top-level field, and
#: ``reward`` (PoE-SMC) is a Python callable, which a problem supplies.
#: ``mala`` is ``'auto'``, ``'true'`` or ``'false'`` (a string, as a flag gives it).
SAMPLER_FIELDS = (
    # every method (AnnealingOptions)
    ("t_max", float), ("t_min", float), ("shift", float), ("levels", tuple),
    ("inner_steps", int), ("step_size", float), ("precondition", bool),
    # ctrl_vi (CtrlVIOptions)
    ("drive", str), ("step_rule", str), ("repulsion", float), ("repulsion_schedule", str),
    ("feature_map", str),
    ("pool_factor", int), ("num_features", int), ("feature_seed", int), ("bandwidth", float),
    ("bandwidth_scale", float), ("calibrate_repulsion", bool), ("stein_region", str),
    ("stein_min_t", float),
    # annealed_langevin (LangevinOptions) and poe_smc (SMCOptions)
    ("mala", str), ("reward_scale", float), ("ess_threshold", float),
    # ode (ODEOptions)
    ("solver", str),
)


def sampler(**defaults) -> ml_collections.ConfigDict:
  """``config.sampler``: every option typed and unset (None: the method's default), then
  ``defaults``. Options of another method than the config's are refused if set."""
  c = ml_collections.ConfigDict()
  for name, kind in SAMPLER_FIELDS:
    c[name] = ml_collections.FieldReference(None, field_type=kind)
  return _override(c, defaults, "sampler: unknown option")


def composition(**overrides) -> ml_collections.ConfigDict:
  """``config.composition``: how the built-in world's backbones are composed
  (``composed_vi.world.demo.Composition``, whose fields and defaults these are; the defaults
  were chosen on the evaluation's dev split)."""
  c = ml_collections.ConfigDict(dict(
      camera_weight=1.0,  # the camera backbone, on the background (1 - object region)
      camera_band_weight=0.0,  # ... times this on the band an unsimulated object may roll in
      sim_weight=1.0,  # the simulation backbone, on the dilated object region
      image_object_weight=0.0,  # the image backbone on the object region after frame 0
      context_weight=24.0,  # the 3D-cache context expert (0: none)
      band_sim_weight=0.0,  # the simulation backbone on an unsimulated object's band
      band_context_weight=0.0,  # ... on the room seen in an unsimulated object's band
      vacated_sim_weight=1.0,  # the simulation backbone where its objects are not now
      vacated_image_weight=1.0,  # ... and the image backbone's weight there
      first_frame_others_weight=1.0,  # camera and simulation backbones on frame 0, relative
      first_frame_context_weight=1.0,  # the context expert on frame 0, relative
      context_sigma=0.02,  # its sigma_c
      object_dilation=1,  # pixels added around the object region
      guidance_scale=1.0,  # CFG of the text-conditioned backbones
      normalize_weights=False,  # weights divided by their sum per pixel
      matched_queries="i2v",  # backbones (kinds) queried re-noised to their own level
  ))
  return _override(c, overrides, "composition: unknown field")


def _override(c: ml_collections.ConfigDict, values: dict, unknown: str):
  """``c`` with ``values`` set; a name ``c`` does not have raises ``KeyError(unknown name)``."""
  for name, value in values.items():
    if name not in c:
      raise KeyError(f"{unknown} {name!r}")
    c[name] = value
  return c


def world(**overrides) -> ml_collections.ConfigDict:
  """``config.world``: the built-in world's video size (and, for one scene, its seed).

  ``unsimulated_probability``: 1 leaves one rolling object out of the simulation control in
  every scene with two or more objects (``SceneConfig.unsimulated_probability``; the
  backbones were trained at its default 0.5), so each case has something unspecified to
  vary."""
  c = ml_collections.ConfigDict(dict(num_frames=12, height=32, width=32,
                                     unsimulated_probability=1.0))
  c.update(overrides)
  return c


def tiny_backbones(*kinds) -> ml_collections.ConfigDict:
  """``config.backbones``: the shipped tiny world backbones, ``{kind: folder}``."""
  return ml_collections.ConfigDict({k: f"assets/backbones/{k}" for k in kinds})
