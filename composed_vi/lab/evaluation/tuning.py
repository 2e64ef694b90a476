"""Every score-following method's step chosen on ``dev`` in the same way (issue 18).

``config.step_grid`` (e.g. ``"0.25,0.5,1,2"``) adds, for each method of ``TUNED`` that
``config.methods`` names, one variant per grid value (``<method>_step<k>``, its ``step_size``
set to the ``k``-th value); the report's :func:`choose` then picks, per method, the value whose
control errors are best: the geometric mean over :data:`CONTROL_METRICS` of each metric's mean
over cases divided by the best grid value's mean of it (1 is best on every control), ties within
:data:`TIE` broken by the larger unsimulated-object diversity. Every method gets the same grid,
the same cases and the same rule; the chosen values go to ``config.step_sizes`` (and
``config.ctrl_vi.step_size``) of the held-out run.
"""

from __future__ import annotations

import math

import numpy as np

from composed_vi.errors import check_positive_float, fail

#: The score-following methods whose step is tuned.
TUNED = ("ctrl_vi", "langevin", "poe_smc")
#: The controls (errors, lower is better) that decide the step.
CONTROL_METRICS = ("first_frame_l1", "track_error_px", "camera_background_error", "object_l1",
                   "consistency_3d")
#: Relative score difference treated as a tie (broken by diversity).
TIE = 0.01


def grid(config) -> tuple[float, ...]:
  """The values of ``config.step_grid`` (``()`` when unset); errors name the field."""
  text = str(config.get("step_grid", "") or "")
  if not text:
    return ()
  try:
    values = tuple(float(v) for v in text.split(",") if v.strip())
  except ValueError:
    fail("step_grid", "comma-separated positive numbers, e.g. '0.25,0.5,1,2'", text)
  for v in values:
    check_positive_float("step_grid", v)
  if len(set(values)) != len(values) or not values:
    fail("step_grid", "distinct positive numbers", text)
  return values


def variant_name(method: str, k: int) -> str:
  return f"{method}_step{k}"


def grid_specs(config, specs: dict) -> dict:
  """``{name: spec}``: one variant of each tuned method in ``specs`` per grid value."""
  out = {}
  for method in TUNED:
    if method not in specs:
      continue
    base = specs[method].to_dict() if hasattr(specs[method], "to_dict") else dict(specs[method])
    for k, value in enumerate(grid(config)):
      spec = dict(base, options=dict(base.get("options") or {}, step_size=value))
      spec["description"] = f"{base.get('description', method)}; step_size {value:g} (grid)"
      out[variant_name(method, k)] = spec
  return out


def _mean(rows, method, metric):
  vals = np.asarray([r[metric] for r in rows if r["method"] == method and metric in r],
                    np.float64)
  vals = vals[np.isfinite(vals)]
  return float(vals.mean()) if vals.size else float("nan")


def choose(rows: list[dict], config) -> dict:
  """``{method: {"step_size", "scores": {value: score}, "diversity": {value: d}}}`` for each
  tuned method whose grid variants have rows (see the module docstring for the rule)."""
  values = grid(config)
  out = {}
  names = {r["method"] for r in rows}
  for method in TUNED:
    variants = [variant_name(method, k) for k in range(len(values))]
    if not values or not all(v in names for v in variants):
      continue
    means = {m: [_mean(rows, v, m) for v in variants] for m in CONTROL_METRICS}
    scores = []
    for k in range(len(values)):
      logs = []
      for m in CONTROL_METRICS:
        best = np.nanmin(means[m]) if np.isfinite(means[m]).any() else float("nan")
        if np.isfinite(means[m][k]) and np.isfinite(best) and best > 0:
          logs.append(math.log(means[m][k] / best))
      scores.append(math.exp(float(np.mean(logs))) if logs else float("inf"))
    diversity = [_mean(rows, v, "unsimulated_diversity") for v in variants]
    best = min(scores)
    tied = [k for k, s in enumerate(scores) if s <= best * (1 + TIE)]
    pick = max(tied, key=lambda k: (np.nan_to_num(diversity[k], nan=-1.0), -scores[k]))
    out[method] = dict(step_size=values[pick],
                       scores={f"{v:g}": s for v, s in zip(values, scores)},
                       diversity={f"{v:g}": d for v, d in zip(values, diversity)})
  return out
