"""Each tiny backbone alone, against the world's ground truth (RESULTS.md's backbone table).

For held-out scenes (seeds the training data never used) every backbone samples videos from
its own control alone (the ``ode`` sampler: velocity Euler steps), and the study measures the
first-frame error, the object track error in pixels, the background and object errors, and
camera following (:func:`composed_vi.world.metrics.camera_following`: moving-camera scenes
only). A backbone follows its control when its error on that control is far below the
text-only backbone's (for the camera: its score far above the text-only backbone's, which
is about 0).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from composed_vi import io
from composed_vi.errors import check_choice, check_positive_int, fail
from composed_vi.lab import runner
from composed_vi.sampling import sample
from composed_vi.world import backbones as tb
from composed_vi.world import dataset, demo, scene
from composed_vi.world import metrics as world_metrics

METRICS = ("first_frame_l1", "track_error_px", "background_l1", "object_l1", "camera_following")


def run_config(config, workdir: str) -> dict:
  """The study of ``configs/evaluate_backbones.py``: validates the config (before any compute
  or output), measures, writes ``backbones.json`` / ``backbones.md``; returns the table."""
  num_scenes = check_positive_int("num_scenes", config.num_scenes)
  num_particles = check_positive_int("num_particles", config.num_particles)
  num_levels = check_positive_int("num_levels", config.num_levels)
  if not isinstance(config.seed, int) or isinstance(config.seed, bool):
    fail("seed", "an integer", config.seed)
  folders = dict(config.backbones)
  if not folders:
    fail("backbones", f"a mapping of backbone kinds {list(tb.KINDS)} to folders", folders)
  for kind, folder in folders.items():
    check_choice("backbones", kind, tb.KINDS)
    if not os.path.isdir(folder):
      fail(f"backbones.{kind}", "a trained tiny backbone folder", folder)
  pins = config.get("output_pin", (True,))
  pins = (pins,) if isinstance(pins, bool) else tuple(pins)
  if not pins or any(not isinstance(p, bool) for p in pins):
    fail("output_pin", "True, False or a tuple of them", config.get("output_pin"))
  world_config = demo.scene_config(config)
  workdir = runner.check_workdir(workdir)
  table = run(folders, num_scenes=num_scenes, num_particles=num_particles,
              num_levels=num_levels, seed=config.seed, world_config=world_config,
              output_pin=pins)
  write(workdir, table)
  print(markdown(table))
  return table


def run(backbones: dict, num_scenes: int = 8, num_particles: int = 2, num_levels: int = 24,
        seed: int = 10_000, world_config=None, output_pin=(True,)) -> dict:
  """``{kind: {metric: mean}}`` (and the ground truth's) for ``backbones`` ``{kind: folder}``.

  ``output_pin``: the settings of :attr:`TinySpec.output_pin` to measure; a backbone that has
  a pin (i2v, sim2v, cam2v) gets one row per setting, ``"<kind> (no pin)"`` for False.
  """
  wcfg = world_config or scene.SceneConfig()
  loaded = {}
  for k, path in backbones.items():
    spec, params = tb.load(path)
    for pin in output_pin:
      name = k if pin or k == "t2v" else f"{k} (no pin)"
      loaded.setdefault(name, (dataclasses.replace(spec, output_pin=pin), params))
  fns = {k: tb.model_fn(spec) for k, (spec, _) in loaded.items()}
  results = {k: {m: [] for m in METRICS} for k in loaded}
  floor = {m: [] for m in METRICS}
  for s in range(num_scenes):
    sampled = scene.sample_scene(jax.random.key(seed + s), wcfg)
    ex, rev = (dataset.to_numpy(dataset.example_from_scene(sc, wcfg))
               for sc in (sampled, scene.reverse_camera(sampled)))

    def measure(video, m, ex=ex, rev=rev):
      if m == "camera_following":
        return world_metrics.camera_following(video, ex, rev)
      return getattr(world_metrics, m)(video, ex)

    for m in METRICS:
      floor[m].append(measure(ex.video, m))
    for k, (spec, params) in loaded.items():
      e = tb.expert(spec, params, ex, fn=fns[k])
      x, _ = sample(jax.random.key(s), e, num_particles, "ode", num_levels=num_levels)
      for video in np.asarray(x):
        for m in METRICS:
          results[k][m].append(measure(video, m))
  table = {k: {m: float(np.nanmean(v)) for m, v in r.items()} for k, r in results.items()}
  table["ground truth"] = {m: float(np.nanmean(v)) for m, v in floor.items()}
  return table


def markdown(table: dict) -> str:
  lines = ["| backbone | first-frame L1 | object track error (px) | background L1 | object L1 "
           "| camera following |", "|---|---|---|---|---|---|"]
  for k, r in table.items():
    lines.append(f"| {k} | " + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |")
  return "\n".join(lines) + "\n"


def write(workdir: str, table: dict) -> None:
  io.write_json(os.path.join(workdir, "backbones.json"), table)
  io.write_text(os.path.join(workdir, "backbones.md"), markdown(table))
