"""Evaluation cases: world scenes assembled from listed seeds (a split of the evaluation).

A *case* is one world scene built from listed seeds: a background (floor and wall textures,
light), a camera path of a given kind from a start pose, and an object simulation. Cases are
the product ``backgrounds x cameras x simulations`` of a split (``configs/evaluate.py``).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np

from composed_vi.errors import check_choice, fail
from composed_vi.world import dataset, scene


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark case: a scene assembled from three listed seeds and a camera kind."""

  split: str
  background_seed: int
  camera_kind: str
  camera_seed: int
  objects_seed: int

  @property
  def name(self) -> str:
    return (f"{self.split}-bg{self.background_seed}-{self.camera_kind}-cam{self.camera_seed}"
            f"-sim{self.objects_seed}")


def cases(split_config, split: str) -> list[Case]:
  """The cases of a split: ``backgrounds x cameras x simulations`` in that order.

  ``split_config`` has tuples ``backgrounds`` and ``simulations`` (seeds) and ``cameras``
  (camera kinds); the camera start pose is drawn from the seed ``camera_seed_base + i`` for
  the ``i``-th (background, camera) pair, so every case has its own start pose.
  """
  out = []
  for field in ("backgrounds", "cameras", "simulations"):
    if not len(split_config[field]):
      fail(f"splits.{split}.{field}", "a non-empty list", split_config[field])
  for kind in split_config.cameras:
    check_choice(f"splits.{split}.cameras", kind, scene.CAMERA_KINDS)
  pairs = list(itertools.product(split_config.backgrounds, split_config.cameras))
  for (bg, kind), sim in itertools.product(pairs, split_config.simulations):
    out.append(Case(split, int(bg), str(kind),
                     int(split_config.camera_seed_base + pairs.index((bg, kind))), int(sim)))
  return out


def case_scene(case: Case, scene_config) -> scene.Scene:
  """The world scene of a case (deterministic)."""
  cam_config = dataclasses.replace(scene_config, camera_kinds=(case.camera_kind,))
  # The simulation seed also decides which rolling object (if any) is left out of the
  # simulation control, as scene.sample_scene does with its key.
  objects_key = jax.random.key(case.objects_seed)
  objects = scene.choose_unsimulated(jax.random.fold_in(objects_key, 7),
                                     scene.sample_objects(objects_key, scene_config),
                                     scene_config.unsimulated_probability)
  return scene.Scene(scene.sample_camera(jax.random.key(case.camera_seed), cam_config),
                     objects, scene.sample_background(jax.random.key(case.background_seed)))


def case_example(case: Case, scene_config) -> dataset.Example:
  """The world example of a case (numpy arrays; deterministic)."""
  return dataset.to_numpy(dataset.example_from_scene(case_scene(case, scene_config),
                                                     scene_config))


def case_absent_video(case: Case, scene_config) -> np.ndarray:
  """The case's video without its unsimulated objects
  (:func:`composed_vi.world.dataset.video_without_unsimulated`), numpy."""
  return np.asarray(dataset.video_without_unsimulated(case_scene(case, scene_config),
                                                      scene_config))
