"""The ``world_demo`` problem: the built-in demo's target, and its report pages.

``build(config)`` composes the demo scene's controls (:mod:`composed_vi.world.demo`); the
``report`` writes per-particle MP4 and GIF, the inputs visualised (camera path plot, simulation
render), a contact sheet and ``index.html`` next to ``samples.npz``.
"""

from __future__ import annotations

import os

import numpy as np

from composed_vi import io
from composed_vi.lab import media
from composed_vi.lab.problems.base import Problem
from composed_vi.world import controls, dataset, demo, scene
from composed_vi.world.masks import unsimulated_band


def build(config, mesh=None) -> Problem:
  """The demo's composed target (``configs/world_demo.py``) and its report pages."""
  del mesh  # the tiny backbones' parameters are replicated
  composition = demo.Composition.from_config(config)
  backbones = demo.load_backbones(config.backbones)
  example = demo.scene_example(config)
  target = demo.build_target(example, backbones, composition)
  names = (tuple(demo.BACKBONES) + ("context",))[:len(target.experts)]
  return Problem(target, report=lambda samples, workdir: report(config, example, samples,
                                                                 workdir), expert_names=names)


def report(config, example: dataset.Example, samples: np.ndarray, workdir: str) -> dict:
  """Videos, input visualisations, contact sheet and ``index.html``; returns metrics."""
  out = {}
  names = []
  for i, video in enumerate(samples):
    media.write_mp4(os.path.join(workdir, f"particle_{i}.mp4"), video)
    media.write_gif(os.path.join(workdir, f"particle_{i}.gif"), video)
    names.append(i)
  media.write_mp4(os.path.join(workdir, "ground_truth.mp4"), example.video)
  media.write_gif(os.path.join(workdir, "ground_truth.gif"), example.video)
  sim = example.sim_rgba
  sim_rgb = sim[..., :3] * sim[..., 3:] + (1 - sim[..., 3:]) * 1.0  # objects on white
  media.write_gif(os.path.join(workdir, "input_simulation.gif"), sim_rgb)
  media.write_mp4(os.path.join(workdir, "input_simulation.mp4"), sim_rgb)
  media.write_gif(os.path.join(workdir, "input_context.gif"), example.background_context)
  media.write_png(os.path.join(workdir, "input_first_frame.png"), example.first_frame,
                  upscale=8)
  valid = example.object_valid.astype(bool)
  media.plot_camera_path(os.path.join(workdir, "input_camera_path.png"), example.extrinsics,
                         object_tracks_3d=example.positions[:, valid])
  rows = [("first frame", example.first_frame[None]), ("simulation", sim_rgb),
          ("3D context (background)", example.background_context),
          ("ground truth", example.video)]
  band = unsimulated_band(example)
  if band.any():  # the coarse mask where the unsimulated object may roll (white)
    rows.insert(3, ("unsimulated band", np.broadcast_to(2.0 * band - 1.0,
                                                         band.shape[:-1] + (3,))))
  rows += [(f"particle {i}", v) for i, v in enumerate(samples)]
  media.contact_sheet(os.path.join(workdir, "contact_sheet.png"), rows, upscale=4)
  caption = controls.detokenize(example.caption_tokens)
  left_out = [f"{scene.COLOUR_NAMES[int(c)]} {controls.SHAPE_WORDS[int(sh)]}"
              for c, sh, ok, sim in zip(example.colours, example.shapes, example.object_valid,
                                        example.object_simulated) if ok and not sim]
  metrics = demo.evaluate(example, samples, demo.scene_absent_video(config))
  out.update(metrics)
  sections = [
      dict(heading="Controls", text=f"caption: {caption}\nscene seed: {config.world.scene_seed}"
           f"\nbackbones: image (first frame + caption), camera (Pluecker rays), simulation "
           f"(objects alone, on the object region), context (3D cache)"
           + (f"\nleft out of the simulation (given by the first frame, the caption and "
              f"the band of rows it may roll in): {', '.join(left_out)}" if left_out else ""),
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
