"""The built-in demo: mixed controls no single backbone accepts, composed with Ctrl-VI.

A world scene gives the controls: its first frame, its camera path, the object simulation
rendered alone and a caption. No tiny backbone takes them all: the image backbone (first frame
+ caption), the camera backbone (Pluecker rays) and the simulation backbone (objects alone) are
composed with the context expert (the first frame lifted to 3D and re-rendered along the camera
path, with its visibility), with masks: the simulation backbone has its say on the object region
(dilated), the camera backbone on the background, the image backbone everywhere.

This module is the recipe: :class:`Composition` (``config.composition``), the backbones
(:func:`load_backbones`), the composed target of one example (:func:`build_target`) and the
demo's metrics (:func:`evaluate`). The launcher's problem and its report pages are in
:mod:`composed_vi.lab.problems`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from composed_vi import experts
from composed_vi.composition import compose
from composed_vi.errors import ConfigError, check_positive_float, check_positive_int, fail
from composed_vi.world import backbones as tb
from composed_vi.world import dataset, scene
from composed_vi.world import metrics as wm
from composed_vi.world.masks import dilate, simulated_region, unsimulated_band

BACKBONES = ("i2v", "cam2v", "sim2v")


def scene_config(config):
  """The world's ``SceneConfig`` from ``config.world`` (frames, height, width and
  ``unsimulated_probability``, 0.5 when absent)."""
  return scene.SceneConfig(num_frames=config.world.num_frames, height=config.world.height,
                           width=config.world.width,
                           unsimulated_probability=float(
                               config.world.get("unsimulated_probability", 0.5)))


def scene_example(config) -> dataset.Example:
  """The example of the demo's scene (``config.world.scene_seed``), as numpy arrays."""
  ex = dataset.render_example(jax.random.key(config.world.scene_seed), scene_config(config))
  return dataset.to_numpy(ex)


def scene_absent_video(config) -> np.ndarray:
  """The demo scene's video without its unsimulated objects
  (:func:`composed_vi.world.dataset.video_without_unsimulated`), numpy."""
  cfg = scene_config(config)
  return np.asarray(dataset.video_without_unsimulated(
      dataset.sample_scene(jax.random.key(config.world.scene_seed), cfg), cfg))


@dataclasses.dataclass(frozen=True)
class Composition:
  """How the demo composes the backbones (the fields of ``configs/world_demo.py``).

  Attributes:
    camera_weight: weight of the camera backbone on the background (``1 - object region``).
    camera_band_weight: its weight relative to ``camera_weight`` on the band an unsimulated
      object may roll in (:func:`composed_vi.world.masks.unsimulated_band`), where the room is
      not static (the camera backbone carries its frame 0 along the path as if it were).
    sim_weight: weight of the simulation backbone on the (dilated) object region.
    image_object_weight: weight of the image backbone on the object region after frame 0
      (1 elsewhere). The image backbone knows the objects' first-frame places only; at 0 the
      object region of later frames is the simulation backbone's alone (METHOD.md section 6).
    context_weight: weight of the 3D-cache context expert (0: no context).
    vacated_sim_weight: weight of the simulation backbone where a simulated object was or will
      be but is not now (the region the objects sweep, after frame 0, outside their present
      region): its control says no object is there, while the image backbone, which knows
      the objects' first-frame places only, paints them there (0: not used).
    vacated_image_weight: the image backbone's weight there (with ``vacated_sim_weight > 0``).
    band_sim_weight: the simulation backbone's weight on that band (outside the simulated
      objects' region; at least this where the vacated region overlaps it). Its control says
      where the simulated objects are, and so that no copy of them is in the band, which the
      image backbone alone may paint there (0: the band is the image backbone's alone).
    band_context_weight: the context expert's weight on the band an unsimulated object may
      roll in, where the first frame's room is seen (0: the context has no say there, which
      leaves the band to the image backbone alone; the band is never pinned).
    first_frame_others_weight: the camera and simulation backbones' weight on frame 0, relative
      to their weight on later frames. Frame 0 is the first frame, which the image backbone's
      composite gives exactly; the camera backbone's own frame 0 is its network's, and pulls
      every particle the same way (1: unchanged; 0: frame 0 is the image backbone's and the
      context's alone).
    first_frame_context_weight: the context expert's weight on frame 0, relative to its weight
      on later frames (its frame 0 is the first frame itself, which the image backbone's
      composite already gives exactly; the context's Gaussian posterior mean is not exact).
    context_sigma: ``sigma_c`` of the context expert.
    object_dilation: pixels added around the object region.
    guidance_scale: classifier-free guidance of the text-conditioned backbones.
    normalize_weights: weights summing to 1 at every pixel (``compose(normalize=True)``).
    matched_queries: the backbones (comma-separated kinds, e.g. ``'i2v'``) queried on the
      particles re-noised to their own noise level where the product's is lower
      (:class:`composed_vi.experts.NoiseMatched`); ``''``: none.
  """

  camera_weight: float = 1.0
  # 0 (chosen on dev, 2026-12-06, docs/journal.md): the unsimulated object's band is the image
  # backbone's alone, where the particles differ (diversity there 0.040 -> 0.142).
  camera_band_weight: float = 0.0
  sim_weight: float = 1.0
  # 0 since the simulation backbone composites the simulation's rendering (TinySpec.output_pin;
  # chosen on dev, 2026-12-06: object L1 0.064 at 1, 0.023 at 0): the object region after
  # frame 0 is the simulation backbone's alone (METHOD.md section 6).
  image_object_weight: float = 0.0
  # Chosen on the evaluation's dev split: 6 on 2026-11-25 (docs/journal.md, "settings chosen on
  # dev"; grid 1/3/6), 24 on 2026-12-07 (grid 6/12/24, 16 cases x 2 seeds, paired: each step up
  # better on first frame, background and object L1, no control detectably worse; 48 not run).
  context_weight: float = 24.0
  band_sim_weight: float = 0.0
  band_context_weight: float = 0.0
  # 1 with matched_queries='i2v' since 2026-12-07 (sixth session; chosen on dev, 16 cases x 2
  # seeds: the unsimulated object kept +0.058 more often, no control worse by 0.0004 L1, a
  # twentieth of a grey level; docs/journal.md).
  vacated_sim_weight: float = 1.0
  vacated_image_weight: float = 1.0
  first_frame_others_weight: float = 1.0
  first_frame_context_weight: float = 1.0
  context_sigma: float = 0.02
  object_dilation: int = 1
  guidance_scale: float = 1.0
  # The raw-weight product of METHOD.md section 3 (pi_1 = N(0, I / W)); the demo's sampler
  # preconditions its steps by 1 / W instead (docs/journal.md, "preconditioned steps"). True
  # divides the weights by their sum per pixel (compose(normalize=True), temperature 1).
  normalize_weights: bool = False
  # Backbones (comma-separated kinds) queried on an input re-noised to their own level t where
  # the product's noise is t / sqrt(W) (experts.NoiseMatched); the weights are unchanged.
  matched_queries: str = "i2v"

  @classmethod
  def from_config(cls, config) -> "Composition":
    """From ``config.composition`` (a mapping of this class's fields), validated; errors name
    ``composition.<field>``."""
    given = config.get("composition") if hasattr(config, "get") else None
    if given is None:
      fail("composition", f"a mapping of {[f.name for f in dataclasses.fields(cls)]}", None)
    given = dict(given)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(names))
    if unknown:
      fail("composition", f"fields among {names}", f"unknown field(s) {unknown}")
    try:
      return cls(**given).validate()
    except ConfigError as e:
      raise ConfigError(f"composition.{e}") from None

  def validate(self) -> "Composition":
    for name in ("context_weight", "sim_weight", "camera_weight", "image_object_weight",
                 "context_sigma", "camera_band_weight", "band_context_weight", "band_sim_weight",
                 "vacated_sim_weight", "vacated_image_weight", "first_frame_others_weight",
                 "first_frame_context_weight"):
      check_positive_float(name, getattr(self, name), allow_zero=name != "context_sigma")
    check_positive_int("object_dilation", self.object_dilation, minimum=0)
    check_positive_float("guidance_scale", self.guidance_scale)
    if not isinstance(self.normalize_weights, bool):
      fail("normalize_weights", "True or False", self.normalize_weights)
    if not isinstance(self.matched_queries, str) or not set(
        self.matched_kinds) <= set(BACKBONES):
      fail("matched_queries", f"comma-separated kinds among {list(BACKBONES)} ('' for none)",
           self.matched_queries)
    return self

  @property
  def matched_kinds(self) -> tuple:
    if not isinstance(self.matched_queries, str):
      return ()
    return tuple(k.strip() for k in self.matched_queries.split(",") if k.strip())


def load_backbones(folders: dict, kinds=BACKBONES, field: str = "backbones") -> dict:
  """``{kind: (spec, params)}`` from ``folders[kind]``; errors name ``{field}.{kind}``."""
  out = {}
  for name in kinds:
    if not os.path.isdir(folders[name]):
      fail(f"{field}.{name}", "a trained tiny backbone folder (assets/backbones/<kind>; "
           "retrain with experiments/train.py)", folders[name])
    spec, params = tb.load(folders[name])
    if spec.kind != name:
      fail(f"{field}.{name}", f"a backbone of kind {name!r}", spec.kind)
    out[name] = (spec, params)
  return out


def carried_first_frame_objects(example: dataset.Example, warp, dilation: int = 1):
  """``(T, H, W, 1)`` in [0, 1]: how much of each pixel the camera backbone's warp ``warp``
  (:func:`composed_vi.world.backbones.camera_warp`, or the expert's ``WanExpert.warp``) takes
  from an object of the first frame (every object there, dilated by ``dilation`` pixels: the
  first frame's segmentation, which the simulation's alpha and the unsimulated object's mask
  give); ``None`` without a warp."""
  if warp is None:
    return None
  index, weights, valid = (np.asarray(a) for a in warp)
  objects = dilate(np.asarray(example.object_region[:1], np.float32), dilation,
                   axes=(1, 2))[0, ..., 0].reshape(-1)
  carried = np.sum(weights * objects[index], -1, keepdims=True) * valid
  return np.clip(carried, 0.0, 1.0).astype(np.float32)


def build_target(example: dataset.Example, backbones: dict, composition: Composition, fns=None,
                 context: bool = True):
  """The composed target of one world example: image backbone everywhere, camera backbone on
  the background, simulation backbone on the dilated object region, plus the context expert
  on the static background (``background_context`` where ``background_visibility``, outside
  the object region) and on all of frame 0 (the first frame, specified exactly).

  ``backbones``: ``{kind: (spec, params)}`` for ``BACKBONES``; ``fns``: optional
  ``{kind: model_fn}`` (reuse them across examples so that jitted samplers are not
  recompiled); ``context=False`` (or ``context_weight = 0``) leaves the context out.
  """
  # The simulated objects' region (what the simulation control covers); an object left out of
  # the simulation gets the band it may roll in (a coarse mask the user gives with the
  # caption): no context pins it there, the repulsion keeps the particles apart there.
  region = dilate(simulated_region(example), composition.object_dilation, axes=(1, 2))
  band = unsimulated_band(example) * (1.0 - region)
  exps = []
  for name in BACKBONES:
    spec, params = backbones[name]
    exps.append(tb.expert(spec, params, example, guidance_scale=composition.guidance_scale,
                          fn=None if fns is None else fns[name]))
  image = 1.0  # a scalar where it is 1 everywhere (the same target as before the option)
  if composition.image_object_weight != 1.0:
    image = 1.0 - (1.0 - composition.image_object_weight) * region
    image[0] = 1.0  # the first frame is the image backbone's own control
  camera = composition.camera_weight * (1.0 - region)
  if composition.camera_band_weight != 1.0:
    camera = camera * (1.0 - (1.0 - composition.camera_band_weight) * band)
  # The camera backbone carries its frame 0 along the path as if every pixel were the room
  # (TinySpec.output_pin): not where what it carries is an object of the first frame, which
  # would stay behind as a static copy (the 3D context lifts the background alone likewise).
  carried = carried_first_frame_objects(example, exps[BACKBONES.index("cam2v")].warp,
                                        composition.object_dilation)
  if carried is not None:
    camera = camera * (1.0 - carried)
  sim = composition.sim_weight * region
  vacated = None
  if composition.vacated_sim_weight > 0:
    vacated = np.max(region, axis=0, keepdims=True) * (1.0 - region)
    vacated[0] = 0.0
    if composition.vacated_image_weight != 1.0:  # (a scalar stays a scalar)
      image = image * (1.0 - (1.0 - composition.vacated_image_weight) * vacated)
    sim = sim + composition.vacated_sim_weight * vacated
  if composition.band_sim_weight > 0:
    sim = np.maximum(sim, composition.band_sim_weight * band)
  if composition.first_frame_others_weight != 1.0:
    camera = np.array(camera, np.float32)
    sim = np.array(sim, np.float32)
    camera[0] *= composition.first_frame_others_weight
    sim[0] *= composition.first_frame_others_weight
  weights = [image, camera, sim]
  # The shared static scene only (METHOD.md section 5): the first frame's BACKGROUND lifted
  # to 3D, and not where the objects are now (the simulation backbone's region). The full
  # cache would also pin the objects at their first-frame places against the simulation.
  # Frame 0 is the first frame itself, which the controls specify exactly: all of it. These
  # are the pixels the controls give exactly (the target's pinned_mask), context or not.
  visibility = np.asarray(example.background_visibility, np.float32) * (1.0 - region)
  visibility = visibility * (1.0 - band)
  visibility[0] = 1.0
  if context and composition.context_weight > 0:
    context = np.array(example.background_context, np.float32)
    context[0] = example.first_frame
    support, weight = visibility, composition.context_weight
    if composition.band_context_weight > 0:  # the room seen in the band, weighed apart
      seen_band = np.asarray(example.background_visibility, np.float32) * band  # band: off region
      seen_band[0] = 0.0
      support = np.maximum(visibility, seen_band)
      weight = np.where(seen_band > 0, composition.band_context_weight,
                        composition.context_weight).astype(np.float32)
    if composition.first_frame_context_weight != 1.0:
      weight = np.array(np.broadcast_to(weight, region.shape), np.float32)
      weight[0] *= composition.first_frame_context_weight
    exps.append(experts.Context(context, composition.context_sigma, visibility=support))
    weights.append(weight)
  # Where no control specifies the video (Ctrl-VI's feature_map='target_mask' keeps the
  # particles apart there): not seen by the 3D context, outside the object region, after
  # frame 0.
  free = (1.0 - np.asarray(example.background_visibility, np.float32)) * (1.0 - region)
  free = np.maximum(free, band)
  if vacated is not None:  # the simulation says no object is there
    free = free * (1.0 - vacated * (1.0 - band))
  free[0] = 0.0
  try:
    target = compose(exps, weights, repulsion_mask=free,
                     normalize=composition.normalize_weights, pinned_mask=visibility)
    return match_queries(target, composition.matched_kinds)
  except ConfigError as e:
    raise ConfigError(f"demo: {e}") from None


def match_queries(target, kinds):
  """``target`` (from :func:`build_target`) with the backbones named in ``kinds`` queried at
  their own noise level in its final weights (:class:`composed_vi.experts.NoiseMatched`); call
  it again after changing the weights or wrapping the backbones (e.g. per chain)."""
  if not kinds:
    return target
  total = target.total_weight
  return dataclasses.replace(target, experts=tuple(
      experts.noise_matched(e, total) if i < len(BACKBONES) and BACKBONES[i] in kinds else e
      for i, e in enumerate(target.experts)))


def evaluate(example: dataset.Example, samples: np.ndarray, absent_video=None) -> dict:
  """Per-particle control errors against the scene's ground truth (means over particles);
  given ``absent_video`` (:func:`scene_absent_video`), the unsimulated object's presence and
  the spread of its motion over the particles where it is there
  (:func:`composed_vi.world.metrics.unsimulated_presence`)."""
  video = example.video
  unsimulated = wm.unsimulated_metrics(samples, example, absent_video)
  # Background seen in the first frame (the 3D cache), outside every object.
  vis = example.visibility * (1 - example.object_region) * (1 - unsimulated_band(example))
  bg = np.sum(np.abs(samples - video[None]) * vis[None]) / max(
      np.sum(vis) * samples.shape[0] * 3, 1.0)
  return dict(
      first_frame_l1=float(np.mean([wm.first_frame_l1(v, example) for v in samples])),
      track_error_px=float(np.nanmean([wm.track_error_px(v, example) for v in samples])),
      track_error_floor_px=wm.track_error_px(video, example),
      background_l1=float(bg),
      object_l1=float(np.mean([wm.object_l1(v, example) for v in samples])),
      diversity_unspecified_l1=wm.diversity(samples, example),
      diversity_unsimulated_l1=wm.unsimulated_diversity(samples, example),
      **{k: unsimulated[k] for k in ("unsimulated_object_l1", "unsimulated_presence",
                                     "unsimulated_motion_spread")},
      # Texture on those pixels, beside the ground truth's: diversity that is noise scores
      # above the ground truth, blur below it.
      high_frequency_unspecified=wm.high_frequency_energy(samples, example),
      high_frequency_unspecified_ground_truth=wm.high_frequency_energy(video, example),
      frame_l1_to_ground_truth=float(np.mean(np.abs(samples - video[None]))))
