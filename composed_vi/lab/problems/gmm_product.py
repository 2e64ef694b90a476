"""The ``gmm_product`` problem: a weighted product of Gaussian mixtures with a known answer."""

from __future__ import annotations

import numpy as np

from composed_vi import gmm
from composed_vi.composition import ComposedTarget, compose
from composed_vi.errors import (
  ConfigError,
  check_finite,
  check_positive_float,
  check_positive_int,
  fail,
)
from composed_vi.experts import GaussianMixture
from composed_vi.lab import toys
from composed_vi.lab.problems.base import Problem, load_array


def _mixtures_from_file(field: str, path: str) -> list[GaussianMixture]:
  """``means_0, means_1, ...`` ``(K_i, D_i)`` and optional ``stds_i`` ``(K_i,)``, ``weights_i``."""
  data = load_array(field, path, ".npz")
  names = sorted((k for k in data.files if k.startswith("means_")),
                 key=lambda k: int(k.split("_")[1]) if k.split("_")[1].isdigit() else -1)
  if not names:
    fail(field, "an .npz file with arrays means_0, means_1, ...", f"{path} with {data.files}")
  mixtures = []
  for name in names:
    i = name.split("_", 1)[1]
    means = np.asarray(data[name], np.float32)
    if means.ndim < 2 or means.shape[0] < 1:
      fail(f"{field}[{name}]", "an array (components, *latent_shape)", means.shape)
    check_finite(f"{field}[{name}]", means)
    k = means.shape[0]
    stds = np.asarray(data[f"stds_{i}"], np.float32) if f"stds_{i}" in data.files else (
        np.full((k,), 0.5, np.float32))
    weights = np.asarray(data[f"weights_{i}"], np.float32) if f"weights_{i}" in data.files else (
        np.full((k,), 1.0 / k, np.float32))
    for arr, what in ((stds, "stds"), (weights, "weights")):
      if arr.shape != (k,):
        fail(f"{field}[{what}_{i}]", f"shape ({k},) (one per component)", arr.shape)
      check_finite(f"{field}[{what}_{i}]", arr)
      if np.any(arr <= 0):
        fail(f"{field}[{what}_{i}]", "positive values", arr.tolist())
    mixtures.append(GaussianMixture(means, stds, weights / weights.sum()))
  return mixtures


def build(config, mesh=None) -> Problem:
  """Ctrl-VI's exact testbed: a weighted product of Gaussian mixtures (``config.problem``).

  Fields: ``dim``, ``separation``, ``std`` (two stripe mixtures whose product has four modes,
  :func:`composed_vi.lab.toys.four_modes`), or ``means_file`` (an ``.npz`` of ``means_i``,
  ``stds_i``, ``weights_i``); ``expert_weights`` (one scalar per expert) and ``mask_file`` (an
  ``.npy`` mask broadcastable to the latent shape, weighting expert ``mask_expert``).
  """
  p = config.problem
  if p.means_file:
    mixtures = _mixtures_from_file("problem.means_file", p.means_file)
  else:
    dim = check_positive_int("problem.dim", p.dim, minimum=2)
    sep = check_positive_float("problem.separation", p.separation)
    std = check_positive_float("problem.std", p.std)
    mixtures = list(toys.four_modes(dim, sep, std)[0])
  weights = list(p.expert_weights) if p.expert_weights else [1.0] * len(mixtures)
  if len(weights) != len(mixtures):
    fail("problem.expert_weights", f"{len(mixtures)} numbers (one per expert)", weights)
  for i, w in enumerate(weights):
    check_positive_float(f"problem.expert_weights[{i}]", w, allow_zero=True)
  if p.mask_file:
    mask = np.asarray(load_array("problem.mask_file", p.mask_file, ".npy"), np.float32)
    j = p.mask_expert
    if not isinstance(j, int) or not 0 <= j < len(mixtures):
      fail("problem.mask_expert", f"an expert index in [0, {len(mixtures)})", j)
    check_finite("problem.mask_file", mask)
    shape = tuple(mixtures[0].shape)
    try:
      ok = np.broadcast_shapes(mask.shape, shape) == shape
    except ValueError:
      ok = False
    if not ok:
      fail("problem.mask_file", f"an array broadcastable to the latent shape {shape}",
           f"shape {mask.shape}")
    weights[j] = weights[j] * mask
  # compose() refuses experts of different latent shapes, negative or non-finite weights.
  target = _compose_named(mixtures, weights)
  exact = None
  if all(np.ndim(w) == 0 and float(w) == 1.0 for w in weights):
    exact = gmm.product(*mixtures)
  return Problem(target, exact)


def _compose_named(mixtures, weights) -> ComposedTarget:
  try:
    return compose(mixtures, weights)
  except ConfigError as e:  # say which config field the expert or weight came from
    raise ConfigError(f"problem: {e}") from None
