"""The built-in demo: mixed controls no single backbone accepts, composed with Ctrl-VI.

A world scene gives the controls: its first frame, its camera path, the object simulation
rendered alone and a caption. No tiny backbone takes them all: the image backbone (first frame
+ caption), the camera backbone (Pluecker rays) and the simulation backbone (objects alone) are
composed with the context expert (the first frame lifted to 3D and re-rendered along the camera
path, with its visibility), with masks: the simulation backbone has its say on the object region
(dilated), the camera backbone on the background, the image backbone everywhere.

``build(config, mesh)`` returns the :class:`composed_vi.problems.Problem` that the launcher
samples; its ``report`` writes per-particle MP4 and GIF, the inputs visualised (camera path
plot, simulation render), a contact sheet and ``index.html`` next to ``samples.npz``.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from composed_vi import experts, io, media
from composed_vi import tiny_backbones as tb
from composed_vi.composition import compose
from composed_vi.errors import ConfigError, check_positive_float, fail

BACKBONES = ("i2v", "cam2v", "sim2v")


def _scene_config(config):
  from composed_vi.world import scene

  return scene.SceneConfig(num_frames=config.world.num_frames, height=config.world.height,
                           width=config.world.width)


def scene_example(config) -> dict:
  from composed_vi.world import dataset

  ex = dataset.render_example(jax.random.key(config.world.scene_seed), _scene_config(config))
  return {k: np.asarray(v) for k, v in ex.items()}


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
  """Max-filter of a (T, H, W, 1) mask over a (2r+1)^2 spatial window."""
  out = mask.copy()
  for dy in range(-radius, radius + 1):
    for dx in range(-radius, radius + 1):
      out = np.maximum(out, np.roll(np.roll(mask, dy, axis=1), dx, axis=2))
  return out


def build(config, mesh=None):
  from composed_vi.problems import Problem

  for name in BACKBONES:
    if not os.path.isdir(config.backbones[name]):
      fail(f"backbones.{name}", "a trained tiny backbone folder (assets/backbones/<kind>; "
           "retrain with experiments/train.py)", config.backbones[name])
  for name in ("context_weight", "sim_weight", "camera_weight", "context_sigma"):
    check_positive_float(name, config[name], allow_zero=name != "context_sigma")
  example = scene_example(config)
  region = dilate(example["object_region"], config.object_dilation)
  loaded = {name: tb.load(config.backbones[name]) for name in BACKBONES}
  for name, (spec, _) in loaded.items():
    if spec.kind != name:
      fail(f"backbones.{name}", f"a backbone of kind {name!r}", spec.kind)
  exps, weights = [], []
  for name in BACKBONES:
    spec, params = loaded[name]
    exps.append(tb.expert(spec, params, example, guidance_scale=config.guidance_scale))
  weights = [1.0, config.camera_weight * (1.0 - region), config.sim_weight * region]
  exps.append(experts.Context(example["context"], config.context_sigma,
                              visibility=example["visibility"]))
  weights.append(config.context_weight)
  try:
    target = compose(exps, weights)
  except ConfigError as e:
    raise ConfigError(f"demo: {e}") from None
  del mesh
  return Problem(target, report=lambda samples, workdir: report(config, example, samples,
                                                                 workdir))


def report(config, example: dict, samples: np.ndarray, workdir: str) -> dict:
  """Videos, input visualisations, contact sheet and ``index.html``; returns metrics."""
  from composed_vi.world import controls

  out = {}
  names = []
  for i, video in enumerate(samples):
    media.write_mp4(os.path.join(workdir, f"particle_{i}.mp4"), video)
    media.write_gif(os.path.join(workdir, f"particle_{i}.gif"), video)
    names.append(i)
  media.write_mp4(os.path.join(workdir, "ground_truth.mp4"), example["video"])
  media.write_gif(os.path.join(workdir, "ground_truth.gif"), example["video"])
  sim = example["sim_rgba"]
  sim_rgb = sim[..., :3] * sim[..., 3:] + (1 - sim[..., 3:]) * 1.0  # objects on white
  media.write_gif(os.path.join(workdir, "input_simulation.gif"), sim_rgb)
  media.write_mp4(os.path.join(workdir, "input_simulation.mp4"), sim_rgb)
  media.write_gif(os.path.join(workdir, "input_context.gif"), example["context"])
  media.write_png(os.path.join(workdir, "input_first_frame.png"), example["first_frame"],
                  upscale=8)
  valid = example["object_valid"].astype(bool)
  media.plot_camera_path(os.path.join(workdir, "input_camera_path.png"), example["extrinsics"],
                         object_tracks_3d=example["positions"][:, valid])
  rows = [("first frame", example["first_frame"][None]), ("simulation", sim_rgb),
          ("3D context", example["context"]), ("ground truth", example["video"])]
  rows += [(f"particle {i}", v) for i, v in enumerate(samples)]
  media.contact_sheet(os.path.join(workdir, "contact_sheet.png"), rows, upscale=4)
  caption = controls.detokenize(example["caption_tokens"])
  metrics = evaluate(example, samples)
  out.update(metrics)
  sections = [
      dict(heading="Controls", text=f"caption: {caption}\nscene seed: {config.world.scene_seed}"
           f"\nbackbones: image (first frame + caption), camera (Pluecker rays), simulation "
           f"(objects alone, on the object region), context (3D cache)",
           items=[dict(label="first frame", image="input_first_frame.png"),
                  dict(label="camera path", image="input_camera_path.png"),
                  dict(label="simulation input", video="input_simulation.mp4",
                       gif="input_simulation.gif"),
                  dict(label="3D-cache context", gif="input_context.gif")]),
      dict(heading="Samples (Ctrl-VI particles)",
           items=[dict(label=f"particle {i}", video=f"particle_{i}.mp4",
                       gif=f"particle_{i}.gif") for i in names]
           + [dict(label="ground truth", video="ground_truth.mp4", gif="ground_truth.gif")]),
      dict(heading="Contact sheet", items=[dict(label="all frames", image="contact_sheet.png")]),
      dict(heading="Measured", table={k: f"{v:.4f}" if isinstance(v, float) else str(v)
                                      for k, v in metrics.items()}),
  ]
  media.write_html(os.path.join(workdir, "index.html"), "composed_vi demo: Ctrl-VI", sections)
  io.write_json(os.path.join(workdir, "demo_metrics.json"), metrics)
  return out


def evaluate(example: dict, samples: np.ndarray) -> dict:
  """Per-particle control errors against the scene's ground truth (means over particles)."""
  from composed_vi import world_metrics as wm

  video = example["video"]
  # Background seen in the first frame (the 3D cache), outside every object.
  vis = example["visibility"] * (1 - example["object_region"])
  bg = np.sum(np.abs(samples - video[None]) * vis[None]) / max(
      np.sum(vis) * samples.shape[0] * 3, 1.0)
  return dict(
      first_frame_l1=float(np.mean([wm.first_frame_l1(v, example) for v in samples])),
      track_error_px=float(np.nanmean([wm.track_error_px(v, example) for v in samples])),
      track_error_floor_px=wm.track_error_px(video, example),
      background_l1=float(bg),
      object_l1=float(np.mean([wm.object_l1(v, example) for v in samples])),
      diversity_unspecified_l1=wm.diversity(samples, example),
      frame_l1_to_ground_truth=float(np.mean(np.abs(samples - video[None]))))
