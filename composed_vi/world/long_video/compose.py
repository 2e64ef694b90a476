"""One segment's composed target for ``N`` chains, the variants, and the chaining of segments.

The particles of one Ctrl-VI population are the ``N`` chains: they share the camera,
simulation and context controls but not the first frame, so the image backbone sees a
per-particle condition (:class:`PerParticle`). Ctrl-VI's default ``local`` drive uses each
particle's own score, so a chain is driven by its own first frame; the kernel couples the
chains only through the repulsion. Samples are clipped to [-1, 1] (the image range) before they
are chained and measured.

Variants (:data:`VARIANTS`): ``context`` (ours: last frame + 3D context of the original first
frame), ``last_frame_only`` (no context: the context expert's weight is 0) and
``context_from_last`` (the context lifted from each particle's previous last frame with the
ground-truth depth of that frame).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from composed_vi import pytree, sampling
from composed_vi.errors import check_choice, fail
from composed_vi.experts import WrappedExpert
from composed_vi.world import backbones as tb
from composed_vi.world import dataset
from composed_vi.world import demo as world_demo
from composed_vi.world.long_video.path import contexts_from_frames

VARIANTS = ("context", "last_frame_only", "context_from_last")


@pytree.dataclass
class PerParticle(WrappedExpert):
  """An expert whose field ``field`` differs per particle: particle ``i`` is evaluated with
  ``expert.replace(field=values[i])`` (e.g. the image backbone's first-frame condition when the
  ``N`` particles are ``N`` chains). ``field`` may be a tuple of names with ``values`` a tuple
  of arrays, one per name (the condition and the output pin's first frame). ``x`` must hold
  exactly ``N`` particles, in order."""

  expert: Any
  values: Any
  field: Any = pytree.field(pytree_node=False, default="condition")

  def _fields(self):
    if isinstance(self.field, str):
      return (self.field,), (self.values,)
    return tuple(self.field), tuple(self.values)

  def velocity_and_score(self, x, t):
    names, values = self._fields()
    n = values[0].shape[0]
    if x.shape[0] != n:
      raise ValueError(f"PerParticle: expected {n} particles (one per value), got {x.shape[0]}")

    def one(xi, vi):
      v, s = self.expert.replace(**dict(zip(names, vi))).velocity_and_score(xi[None], t)
      return v[0], s[0]

    return jax.vmap(one)(x, values)

  def velocity(self, x, t):
    return self.velocity_and_score(x, t)[0]


def per_chain_image_expert(expert, spec: tb.TinySpec, first_frames, video_shape) -> PerParticle:
  """The image backbone's expert with chain ``i``'s first frame (``first_frames[i]``) as its
  condition and, where it has one, as its output pin (:attr:`TinySpec.output_pin`)."""
  first_frames = np.asarray(first_frames, np.float32)
  video = np.zeros((first_frames.shape[0],) + tuple(video_shape), np.float32)
  chains = dataset.Example(*(None,) * len(dataset.Example._fields))._replace(
      video=video, first_frame=first_frames)
  conditions = jnp.asarray(tb.condition(spec, chains))
  pin = tb.output_pin(spec, chains)
  if pin is None:
    return PerParticle(expert, conditions, "condition")
  return PerParticle(expert, (conditions, jnp.asarray(pin[1])), ("condition", "pin_value"))


def segment_target(example, first_frames, variant: str, backbones: dict,
                   composition: world_demo.Composition, fns=None):
  """The composed target of one segment for ``N`` chains.

  ``first_frames`` ``(N, H, W, 3)``: chain ``i``'s first frame (the image backbone's condition);
  ``variant`` in :data:`VARIANTS` (``context_from_last`` lifts each first frame with the true
  depth of the segment's first frame).
  """
  check_choice("variant", variant, VARIANTS)
  first_frames = np.asarray(first_frames, np.float32)
  n = first_frames.shape[0]
  contexts = None
  if variant == "context_from_last":
    ctx, vis = contexts_from_frames(jnp.asarray(first_frames), jnp.asarray(example.depth[0]),
                                    jnp.asarray(example.intrinsics),
                                    jnp.asarray(example.extrinsics),
                                    int(getattr(example, "splat_supersample", 2)))
    contexts = np.asarray(ctx) * np.asarray(vis)[None]
    # The composition's context expert reads the background fields (the whole generated frame
    # is lifted here: a generated frame has no object segmentation).
    example = example._replace(context=contexts[0], visibility=np.asarray(vis),
                               background_context=contexts[0],
                               background_visibility=np.asarray(vis))
  if composition.context_weight <= 0:
    fail("context_weight", "a weight > 0 (the context expert is part of every variant's target)",
         composition.context_weight)
  # The backbones' noise-matched queries are added last, from this segment's final weights
  # (and outside the per-chain image expert, so that every chain draws its own noise).
  target = world_demo.build_target(example, backbones,
                                   dataclasses.replace(composition, matched_queries=""),
                                   fns=fns, context=True)
  experts, weights = list(target.experts), list(target.weights)
  if variant == "last_frame_only":
    # The context expert stays with weight 0: it adds exactly 0 to the composed velocity and
    # score and nothing to the total weight (the target is the one without it), and every
    # variant keeps one pytree structure, so the jitted sampler compiles once.
    weights[-1] = jnp.zeros_like(weights[-1])
    if composition.normalize_weights:  # the others sum to 1 again where the context had a say
      total = sum(weights)
      weights = [w / total for w in weights]
  i2v = world_demo.BACKBONES.index("i2v")
  experts[i2v] = per_chain_image_expert(experts[i2v], backbones["i2v"][0], first_frames,
                                        tuple(example.video.shape))
  # The context's frame 0 is the first frame (world_demo.build_target): here each chain's own
  # first frame, never the segment's true one.
  means = np.array(contexts if contexts is not None else np.broadcast_to(
      np.asarray(experts[-1].means[0]), (n,) + tuple(example.video.shape)), np.float32)
  means[:, 0] = first_frames
  experts[-1] = PerParticle(experts[-1], jnp.asarray(means)[:, None], "means")
  return world_demo.match_queries(target.replace(experts=tuple(experts), weights=tuple(weights)),
                                 composition.matched_kinds)


def chain(key, segments: list, variant: str, num_particles: int, backbones: dict,
          composition: world_demo.Composition, sample_fn: Callable, fns=None):
  """Samples the segments one after the other, ``N = num_particles`` chains.

  Segment ``k`` gets ``jax.random.fold_in(key, k)``; ``sample_fn(key, target)`` returns the
  ``(N, T, H, W, 3)`` samples. Chain ``i``'s next first frame is its particle ``i``'s last
  frame (clipped to [-1, 1]). Returns ``(videos (N, L, H, W, 3), first_frames)`` with
  ``first_frames[k]`` ``(N, H, W, 3)`` the first frames given to segment ``k``; the long video
  keeps each segment's frames ``1..T-1`` after the shared frame.
  """
  first = np.broadcast_to(np.asarray(segments[0].first_frame, np.float32),
                          (num_particles,) + segments[0].first_frame.shape).copy()
  pieces, firsts = [], []
  for k, example in enumerate(segments):
    firsts.append(first)
    target = segment_target(example, first, variant, backbones, composition, fns)
    x = np.clip(np.asarray(sample_fn(jax.random.fold_in(key, k), target), np.float32), -1, 1)
    if x.shape != (num_particles,) + tuple(example.video.shape):
      raise ValueError(f"sample_fn: expected {(num_particles,) + example.video.shape}, "
                       f"got {x.shape}")
    pieces.append(x if k == 0 else x[:, 1:])
    first = x[:, -1].copy()
  return np.concatenate(pieces, 1), firsts


def ctrl_vi_sampler(num_particles: int, method: str = "ctrl_vi", **options) -> Callable:
  """``sample_fn(key, target)`` of :func:`chain` running :func:`composed_vi.sampling.sample`."""
  def sample_fn(key, target):
    x, _ = sampling.sample(key, target, num_particles, method, **options)
    return np.asarray(x)

  return sample_fn
