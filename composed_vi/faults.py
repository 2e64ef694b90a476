"""Numerical faults caught where they appear: a NaN or inf in the particles, an expert's output
or the diagnostics.

The check is one reduction over the particles per level (:func:`all_finite`), fetched with the
level's diagnostics, which the launcher syncs anyway; only when it fails are the experts asked,
one at a time, which of them returns a non-finite value at the level's starting particles
(:func:`blame`). Diagnostics use NaN for "not computed" (e.g. Ctrl-VI's Stein fields below
``stein_min_t``), so only an infinite diagnostic is a fault.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


class NonFiniteError(FloatingPointError):
  """A NaN or inf appeared at ``level`` (1-based, the level the launcher reports) and noise
  level ``t``; ``expert`` names the expert that returned it, when one did."""

  def __init__(self, level: int, t: float, expert: str | None = None, where: str = "particles",
               detail: str = ""):
    self.level, self.t, self.expert, self.where = int(level), float(t), expert, where
    if expert is not None:
      cause = f"expert {expert} returned NaN or inf at the level's starting particles"
    elif where == "particles":
      cause = ("every expert was finite at the level's starting particles; the update itself "
               "overflowed (step size, repulsion or weights)")
    else:
      cause = "the particles were finite"
    super().__init__(f"non-finite {where} at level {self.level} (t={self.t:.4g}): {cause}"
                     + (f"; {detail}" if detail else ""))


@jax.jit
def all_finite(tree) -> jax.Array:
  """One boolean: every inexact leaf of ``tree`` is finite (one fused reduction)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def infinite_diagnostics(info: dict) -> list[str]:
  """The names of the diagnostics (host floats) that are infinite."""
  return [k for k, v in info.items() if isinstance(v, float) and math.isinf(v)]


@jax.jit
def _expert_finite(expert, x, t):
  v, s = expert.velocity_and_score(x, t)
  return jnp.all(jnp.isfinite(v)) & jnp.all(jnp.isfinite(s))


def expert_label(i: int, expert, names=()) -> str:
  name = names[i] if i < len(names) else None
  kind = type(expert).__name__
  return f"{i} ({name!r}, {kind})" if name else f"{i} ({kind})"


def blame(target, x, t, names=()) -> str | None:
  """The label of the first expert of ``target`` whose velocity or score at ``(x, t)`` is not
  finite, or None. ``names``: optional names of the experts, in order."""
  if not bool(all_finite(x)):
    return None  # the particles themselves were already bad
  for i, expert in enumerate(target.experts):
    if not bool(_expert_finite(expert, x, jnp.asarray(t, jnp.float32))):
      return expert_label(i, expert, names)
  return None
