"""Pieces shared by the experiment configs."""

import ml_collections

#: Method options a config may set (None keeps the method's documented default).
SAMPLER_FIELDS = (("step_size", float), ("inner_steps", int), ("drive", str),
                  ("repulsion", float), ("repulsion_schedule", str), ("bandwidth_scale", float),
                  ("feature_map", str), ("t_max", float), ("t_min", float), ("shift", float),
                  ("levels", tuple), ("precondition", bool),
                  ("stein_region", str), ("stein_min_t", float),
                  ("calibrate_repulsion", bool))


def sampler(**defaults) -> ml_collections.ConfigDict:
  """``config.sampler``: every option typed and unset, then ``defaults``."""
  c = ml_collections.ConfigDict()
  for name, kind in SAMPLER_FIELDS:
    c[name] = ml_collections.FieldReference(None, field_type=kind)
  for name, value in defaults.items():
    c[name] = value
  return c
