"""Statistics over benchmark cases: bootstrap intervals, paired differences, best-or-tied.

Every function is deterministic for a given ``seed`` and drops non-finite values (a metric
undefined on a case, such as diversity on a static camera), so tables reproduce bit for bit.
Rows are ``{"case": name, "method": name, <metric>: value, ...}`` dicts, as the evaluation
writes them to ``results.jsonl``; a metric is ``(name, "lower" | "higher", label)``.
"""

from __future__ import annotations

import numpy as np


def bootstrap_interval(values, num_resamples: int = 2000, seed: int = 0, level: float = 0.95):
  """``(mean, low, high)`` of ``values`` (NaNs dropped) with a percentile bootstrap interval.

  Deterministic for a given ``seed``; ``(nan, nan, nan)`` for no finite value.
  """
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return float("nan"), float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, v.size, (num_resamples, v.size))].mean(axis=1)
  a = (1 - level) / 2
  return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_difference(values, reference, num_resamples: int = 2000, seed: int = 0):
  """``(mean, low, high)`` of ``values - reference`` case by case (the same cases, in the same
  order), with its bootstrap interval: the comparison that common random numbers make
  sharp."""
  a, b = np.asarray(values, np.float64), np.asarray(reference, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"reference: expected shape {a.shape} (one value per case), got {b.shape}")
  return bootstrap_interval(a - b, num_resamples, seed)


def row_value(row: dict, metric: str) -> float:
  """A row's metric; ``seconds`` of a row that includes compilation counts as missing."""
  if metric == "seconds" and row.get("includes_compile"):
    return float("nan")
  return float(row.get(metric, float("nan")))


def by_method(rows: list[dict]) -> dict:
  """``{method: {case: row}}``."""
  by = {}
  for r in rows:
    by.setdefault(r["method"], {})[r["case"]] = r
  return by


def _name(m) -> str:
  return m if isinstance(m, str) else m.name


def aggregate(rows: list[dict], methods, metrics, reference: str = "ctrl_vi",
              num_resamples: int = 2000, seed: int = 0) -> dict:
  """Per method and metric: ``mean``, 95% ``low``/``high`` over cases, ``n`` (finite cases),
  and ``diff``/``diff_low``/``diff_high``: the paired difference ``method - reference`` over
  the cases both have (only when ``reference`` was run)."""
  by = by_method(rows)
  out = {}
  for m in methods:
    name = _name(m)
    per_case = by.get(name, {})
    out[name] = {}
    for metric, _, _ in metrics:
      vals = [row_value(per_case[c], metric) for c in sorted(per_case)]
      mean, lo, hi = bootstrap_interval(vals, num_resamples, seed)
      entry = dict(mean=mean, low=lo, high=hi,
                   n=int(np.sum(np.isfinite(np.asarray(vals, np.float64)))))
      ref = by.get(reference, {})
      common = sorted(set(per_case) & set(ref))
      if name != reference and common:
        entry["diff"], entry["diff_low"], entry["diff_high"] = paired_difference(
            [row_value(per_case[c], metric) for c in common],
            [row_value(ref[c], metric) for c in common], num_resamples, seed)
      out[name][metric] = entry
  return out


def best_or_tied(rows: list[dict], methods, metrics, num_resamples: int = 2000,
                 seed: int = 0, negligible: dict | None = None) -> dict:
  """Per metric (``seconds`` aside): the method with the best mean over the cases every
  method has, and those tied with it (the 95% bootstrap interval of the paired difference to
  the best holds 0). ``{metric: {"best": name, "tied": [names], "cases": n}}``, over the cases
  where every method's value is finite (diversity is undefined on static-camera cases);
  methods with no finite value on a metric are left out of it. With ``negligible``
  (``{metric: amount}``), a metric listed there also gets ``"negligible"``: the methods not tied
  whose mean is within ``amount`` of the best's (a detectable difference too small to count)."""
  names = [_name(m) for m in methods]
  by = by_method(rows)
  common = sorted(set.intersection(*[set(by.get(n, {})) for n in names])) if names else []
  out = {}
  for metric, better, _ in metrics:
    if metric == "seconds" or not common:
      continue
    values = {n: np.array([row_value(by[n][c], metric) for c in common]) for n in names}
    keep = [n for n in names if np.isfinite(values[n]).any()]
    if not keep:
      continue
    finite = np.all([np.isfinite(values[n]) for n in keep], axis=0)
    if not finite.any():
      continue
    values = {n: values[n][finite] for n in keep}  # cases where the metric is defined
    sign = 1.0 if better == "lower" else -1.0
    best = min(keep, key=lambda n: sign * float(values[n].mean()))
    tied, close = [], []
    amount = (negligible or {}).get(metric)
    for n in keep:
      if n == best:
        continue
      diff, lo, hi = paired_difference(values[n], values[best], num_resamples, seed)
      if lo <= 0 <= hi:
        tied.append(n)
      elif amount is not None and abs(diff) <= amount:
        close.append(n)
    out[metric] = dict(best=best, tied=tied, cases=int(finite.sum()))
    if amount is not None:
      out[metric]["negligible"] = close
  return out
