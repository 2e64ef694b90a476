"""The long-video experiment (``experiments/long_video.py``, config ``configs/long_video.py``):
per scene, the ground truth of a long path that pans right and back left, every variant's
chains, their background errors, and the summary over scenes.

The world parts are :mod:`composed_vi.world.long_video`: the path, its layout and the segment
controls (:mod:`~composed_vi.world.long_video.path`), the per-segment targets, the variants and
the chaining (:mod:`~composed_vi.world.long_video.compose`), and the metric
(:mod:`~composed_vi.world.long_video.metrics`). Here: :func:`validate` (the config, before any
compute), :func:`run`, :func:`summarise` (means over scenes with 95% bootstrap intervals and the
paired difference of every variant to ``context``), :func:`write_media` (the first scene's GIFs
and contact sheet) and :func:`markdown` (the table).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from composed_vi import io, sampling
from composed_vi.errors import check_choice, check_positive_int, fail
from composed_vi.lab import media
from composed_vi.lab.stats import bootstrap_interval
from composed_vi.world import backbones as tb
from composed_vi.world import controls
from composed_vi.world import demo as world_demo
from composed_vi.world import scene as scene_lib
from composed_vi.world.long_video import compose as lvc
from composed_vi.world.long_video import metrics as lvm
from composed_vi.world.long_video import path as lvp

#: Metrics of :func:`composed_vi.world.long_video.metrics.video_metrics` summarised over scenes
#: (lower is better).
SUMMARY_METRICS = ("return_error", "final_frame_error", "mean_segment_error")


# ----------------------------------------------------------------------------- summaries


def _mean_over_particles(per_particle: list) -> dict:
  out = {}
  for name in SUMMARY_METRICS:
    vals = np.asarray([m[name] for m in per_particle], np.float64)
    out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
  seg = np.asarray([m["segment_errors"] for m in per_particle], np.float64)
  out["segment_errors"] = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan")
                           for c in seg.T]
  out["per_particle"] = per_particle
  return out


def summarise(scenes: list, variants, num_resamples: int = 2000, seed: int = 0) -> dict:
  """Means over scenes with 95% bootstrap intervals, per variant and metric (and per segment),
  plus the paired difference of every variant to ``context`` (variant minus context)."""
  out = {}
  for variant in variants:
    entry = {}
    for name in SUMMARY_METRICS:
      mean, low, high = bootstrap_interval([s["variants"][variant][name] for s in scenes],
                                           num_resamples, seed)
      entry[name] = dict(mean=mean, low=low, high=high)
    num_segments = len(scenes[0]["variants"][variant]["segment_errors"])
    entry["segment_errors"] = []
    for k in range(num_segments):
      mean, low, high = bootstrap_interval(
          [s["variants"][variant]["segment_errors"][k] for s in scenes], num_resamples, seed)
      entry["segment_errors"].append(dict(mean=mean, low=low, high=high))
    if variant != "context" and "context" in variants:
      entry["minus_context"] = {}
      for name in SUMMARY_METRICS:
        diff = [s["variants"][variant][name] - s["variants"]["context"][name] for s in scenes]
        mean, low, high = bootstrap_interval(diff, num_resamples, seed)
        entry["minus_context"][name] = dict(mean=mean, low=low, high=high)
    out[variant] = entry
  mean, low, high = bootstrap_interval([s["context_floor"] for s in scenes], num_resamples, seed)
  out["context_floor"] = dict(mean=mean, low=low, high=high)
  return out


# ----------------------------------------------------------------------------- the experiment


@dataclasses.dataclass(frozen=True)
class Settings:
  """The validated config of :func:`run`."""

  seed: int
  scene_seeds: tuple
  num_particles: int
  method: str
  options: dict
  world: Any  # SceneConfig of one segment
  path: lvp.LongPath
  return_frames: int
  variants: tuple
  composition: world_demo.Composition
  backbone_folders: dict
  bootstrap_resamples: int


def validate(config) -> Settings:
  """Checks every field of ``configs/long_video.py`` (a ConfigError names the field) and the
  backbone folders, before any compute."""
  seed = check_positive_int("seed", config.seed, 0)
  seeds = config.scene_seeds
  if (not isinstance(seeds, (tuple, list)) or not seeds
      or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
      or len(set(seeds)) != len(seeds)):
    fail("scene_seeds", "a non-empty tuple of distinct integers >= 0", seeds)
  n = check_positive_int("num_particles", config.num_particles)
  options = {k: v for k, v in config.sampler.to_dict().items() if v is not None}
  options["num_levels"] = check_positive_int("num_levels", config.num_levels, 2)
  sampling.build_options(config.method, **options)
  w = config.world
  for name in ("num_frames", "height", "width"):
    check_positive_int(f"world.{name}", w[name], 2 if name == "num_frames" else 1)
  world = scene_lib.SceneConfig(num_frames=w.num_frames, height=w.height, width=w.width,
                                unsimulated_probability=float(
                                    w.get("unsimulated_probability", 0.5)))
  path = lvp.LongPath(config.long.segments_per_direction, config.long.pan_degrees,
                      config.long.plucker_frame).validate()
  return_frames = check_positive_int("long.return_frames", config.long.return_frames)
  if return_frames > w.num_frames - 1:
    fail("long.return_frames", f"at most world.num_frames - 1 = {w.num_frames - 1}",
         return_frames)
  variants = tuple(config.variants)
  if not variants or len(set(variants)) != len(variants):
    fail("variants", f"a non-empty tuple of distinct names from {lvc.VARIANTS}", config.variants)
  for i, v in enumerate(variants):
    check_choice(f"variants[{i}]", v, lvc.VARIANTS)
  composition = world_demo.Composition.from_config(config)
  if composition.context_weight <= 0:
    fail("context_weight", "a weight > 0 (last_frame_only is the variant without context)",
         composition.context_weight)
  folders = {k: config.backbones[k] for k in world_demo.BACKBONES}
  for name in world_demo.BACKBONES:
    if not os.path.isfile(os.path.join(folders[name], "config.json")):
      fail(f"backbones.{name}", "a trained tiny backbone folder (assets/backbones/<kind>; "
           "retrain with experiments/train.py)", folders[name])
  resamples = check_positive_int("bootstrap_resamples", config.bootstrap_resamples, 100)
  return Settings(seed, tuple(int(s) for s in seeds), n, config.method, options, world, path,
                  return_frames, variants, composition, folders, resamples)


def run(config, workdir: str, log: Callable = print) -> dict:
  """The long-video experiment: per scene, the ground truth and every variant's chains,
  measured; writes ``long_video.json``, ``long_video.md`` and the first scene's GIFs (ground
  truth and particle 0 of each variant, alone and side by side) to ``workdir``."""
  settings = validate(config)
  backbones = world_demo.load_backbones(settings.backbone_folders)
  fns = {k: tb.model_fn(spec) for k, (spec, _) in backbones.items()}
  sample_fn = lvc.ctrl_vi_sampler(settings.num_particles, settings.method, **settings.options)
  path = settings.path
  scenes, first_videos = [], None
  start = time.time()
  for si, scene_seed in enumerate(settings.scene_seeds):
    truth = lvp.long_ground_truth(jax.random.key(scene_seed), settings.world, path)
    segments = [lvp.segment_example(truth, k, path) for k in range(path.num_segments)]
    record = dict(scene_seed=scene_seed,
                  captions=[controls.detokenize(s.caption_tokens) for s in segments],
                  context_floor=lvm.context_floor(segments, settings.return_frames),
                  ground_truth=lvm.video_metrics(truth.video, segments, settings.return_frames),
                  variants={})
    # The same key for every variant (common random numbers: paired comparisons).
    key = jax.random.fold_in(jax.random.key(settings.seed), si)
    videos = {}
    for variant in settings.variants:
      chains, _ = lvc.chain(key, segments, variant, settings.num_particles, backbones,
                        settings.composition, sample_fn, fns)
      per = [lvm.video_metrics(v, segments, settings.return_frames) for v in chains]
      record["variants"][variant] = _mean_over_particles(per)
      videos[variant] = chains
      log(f"scene {scene_seed} {variant}: return_error "
          f"{record['variants'][variant]['return_error']:.4f} "
          f"({time.time() - start:.0f} s)")
    scenes.append(record)
    if si == 0:
      first_videos = (truth, videos)
  summary = summarise(scenes, settings.variants, settings.bootstrap_resamples, settings.seed)
  result = dict(
      settings=dict(seed=settings.seed, scene_seeds=list(settings.scene_seeds),
                    num_particles=settings.num_particles, method=settings.method,
                    options=settings.options,
                    world=dict(num_frames=settings.world.num_frames,
                               height=settings.world.height, width=settings.world.width),
                    long=dict(dataclasses.asdict(path), return_frames=settings.return_frames,
                              num_segments=path.num_segments,
                              num_frames=path.num_frames(settings.world.num_frames)),
                    variants=list(settings.variants),
                    composition=dataclasses.asdict(settings.composition),
                    backbones=settings.backbone_folders,
                    bootstrap_resamples=settings.bootstrap_resamples),
      summary=summary, scenes=scenes)
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "long_video.json"), result)
  io.write_text(os.path.join(workdir, "long_video.md"), markdown(result))
  write_media(workdir, *first_videos)
  return result


def write_media(workdir: str, truth: dict, videos: dict) -> None:
  """GIFs of the first scene: ``ground_truth.gif``, ``<variant>.gif`` (particle 0) and
  ``comparison.gif`` (ground truth, then each variant, side by side), and
  ``contact_sheet.png``."""
  fps = 8
  media.write_gif(os.path.join(workdir, "ground_truth.gif"), truth.video, fps=fps)
  for variant, chains in videos.items():
    media.write_gif(os.path.join(workdir, f"{variant}.gif"), chains[0], fps=fps)
  gt = truth.video
  gap = np.ones(gt.shape[:2] + (2, 3), np.float32)
  tiles = [gt]
  for chains in videos.values():
    tiles += [gap, chains[0]]
  media.write_gif(os.path.join(workdir, "comparison.gif"), np.concatenate(tiles, 2), fps=fps)
  rows = [("ground truth", gt)] + [(f"{v} (particle 0)", c[0]) for v, c in videos.items()]
  media.contact_sheet(os.path.join(workdir, "contact_sheet.png"), rows, upscale=2)


def _fmt(entry: dict) -> str:
  return f"{entry['mean']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"


def markdown(result: dict) -> str:
  """A small table: per variant the return / final-frame / mean segment errors (95% bootstrap
  intervals over scenes), the per-segment means and the paired difference to ``context``."""
  s = result["settings"]
  summary = result["summary"]
  lines = [
      "# Long videos: background error when the camera returns",
      "",
      f"{len(s['scene_seeds'])} scenes, {s['num_particles']} chains each, {s['method']} with "
      f"{s['options']}; {s['long']['num_segments']} segments of {s['world']['num_frames']} "
      f"frames ({s['long']['num_frames']} in all), {s['long']['pan_degrees']} degrees right per "
      f"segment then back left; Pluecker rays: {s['long']['plucker_frame']} frame.",
      "L1 (RGB in [-1, 1]) against the ground truth on the static background the original "
      f"first frame saw; return = the last {s['long']['return_frames']} frames. Mean over "
      "scenes [95% bootstrap interval]; lower is better.",
      "",
      "| variant | return error | final frame | mean segment | per segment |",
      "|---|---|---|---|---|",
  ]
  for variant in s["variants"]:
    e = summary[variant]
    per = ", ".join(f"{x['mean']:.4f}" for x in e["segment_errors"])
    lines.append(f"| {variant} | {_fmt(e['return_error'])} | {_fmt(e['final_frame_error'])} | "
                 f"{_fmt(e['mean_segment_error'])} | {per} |")
  lines.append(f"| 3D context itself (floor) | {_fmt(summary['context_floor'])} | | | |")
  diffs = [v for v in s["variants"] if "minus_context" in summary[v]]
  if diffs:
    lines += ["", "Paired difference to `context` (variant minus context; > 0: context better):",
              "", "| variant | return error | final frame | mean segment |", "|---|---|---|---|"]
    for variant in diffs:
      d = summary[variant]["minus_context"]
      lines.append(f"| {variant} | {_fmt(d['return_error'])} | {_fmt(d['final_frame_error'])} "
                   f"| {_fmt(d['mean_segment_error'])} |")
  return "\n".join(lines) + "\n"
