"""``cvi.sample``: one entry point for every method."""

from __future__ import annotations

import dataclasses
import functools

import jax

from composed_vi import distributed
from composed_vi.composition import ComposedTarget, check_weight, compose
from composed_vi.errors import check_choice, check_positive_int, fail
from composed_vi.experts import Expert
from composed_vi.samplers import METHODS, base


def build_options(method: str, **options):
  """Validated, hashable options of ``method`` (unknown names are refused by name)."""
  check_choice("method", method, METHODS)
  _, cls = METHODS[method]
  opts = base.make_options(cls, method, options)
  if opts.levels is not None:  # hashable, so the options can be a static jit argument
    opts = dataclasses.replace(opts, levels=tuple(float(t) for t in opts.levels))
  return opts


def with_context(target: ComposedTarget, context: Expert | None, weight=1.0) -> ComposedTarget:
  """Adds a context expert (METHOD.md section 5) to a composed target."""
  if context is None:
    return target
  extra = compose([context], [weight])
  if tuple(context.shape) != target.shape:
    fail("context.shape", f"{target.shape} (the target's shape)", tuple(context.shape))
  return ComposedTarget(experts=target.experts + extra.experts,
                        weights=target.weights + extra.weights,
                        scalar_weights=target.scalar_weights and extra.scalar_weights,
                        repulsion_mask=target.repulsion_mask, pinned_mask=target.pinned_mask)


@functools.partial(jax.jit, static_argnames=("num_particles", "method", "options", "mesh"))
def _sample(key, target, num_particles, method, options, mesh=None):
  module, _ = METHODS[method]
  levels = options.schedule()
  state = module.init(key, target, num_particles, options)

  def step(s):
    s, info = module.step(s, target, levels, options, mesh=mesh)
    return s._replace(particles=distributed.constrain_particles(s.particles, mesh)), info

  state = state._replace(particles=distributed.constrain_particles(state.particles, mesh))
  state, info = base.run_levels(step, state, levels.shape[0])
  x0 = distributed.constrain_particles(target.x0(state.particles, levels[-1]), mesh)
  return x0, info


def sample(key, target, num_particles: int, method: str = "ctrl_vi", *, context=None,
           context_weight=1.0, mesh=None, **options):
  """Samples a population from a composed target.

  Args:
    key: a JAX PRNG key.
    target: a :class:`ComposedTarget` (from :func:`compose`) or a single expert.
    num_particles: ``N >= 1``.
    method: ``'ctrl_vi'``, ``'annealed_langevin'``, ``'poe_smc'`` or ``'ode'``.
    context: optional context expert (:func:`composed_vi.experts.Context`) added to the target.
    context_weight: its weight (a scalar or a mask).
    mesh: optional ``("data", "model")`` mesh (:func:`composed_vi.distributed.make_mesh`):
      particles on ``data``, the latent on ``model``; the same samples as without it, to
      float32 rounding of the sharded reductions.
    **options: keyword options of the method, see ``composed_vi.samplers.*Options``.

  Returns:
    ``(samples, info)``: ``samples`` ``(N, *shape)`` float32 (``x0_hat`` at the last level),
    ``info`` a NamedTuple of per-level diagnostics with a leading level axis.
  """
  if isinstance(target, Expert):
    target = compose([target])
  if not isinstance(target, ComposedTarget):
    fail("target", "a ComposedTarget (cvi.compose) or an Expert", type(target).__name__)
  check_positive_int("num_particles", num_particles)
  if context is not None:
    if not isinstance(context, Expert):
      fail("context", "an Expert such as cvi.experts.Context(...)", type(context).__name__)
    check_weight(0, context_weight, target.shape, field="context_weight")
  opts = build_options(method, **options)
  if mesh is not None and num_particles % mesh.shape["data"]:
    fail("num_particles", f"a multiple of the mesh's data axis ({mesh.shape['data']})",
         num_particles)
  target = with_context(target, context, context_weight)
  if method == "ctrl_vi":  # a feature map that reads the target is checked before compute
    opts.features(target.shape, target)
  return _sample(key, target, int(num_particles), method, opts, mesh)


