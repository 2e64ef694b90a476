"""Track error with and without the unsimulated band, on an evaluation's gallery samples.

  python -m experiments.diagnose_tracks --workdir=workdir/test6_final

For each gallery case of the run and each method whose samples are there, the mean over the
saved particles (the first seed) of the track error as the evaluation reports it and with the
band's pixels outside the simulated objects' region left out of the colour matching
(composed_vi.world.metrics.outside_simulated_band): where the two differ, the image backbone
painted a copy of a simulated object in the band. A diagnosis: it chooses nothing.
"""

import json
import os

import ml_collections
import numpy as np
from absl import flags

from composed_vi.errors import fail
from composed_vi.lab import cli
from composed_vi.lab.evaluation import splits
from composed_vi.world import demo
from composed_vi.world import metrics as wm

_WORKDIR = flags.DEFINE_string("workdir", None, "Evaluation workdir (config.json, gallery/).",
                               required=True)


def main(argv):
  del argv
  path = os.path.join(_WORKDIR.value, "config.json")
  if not os.path.isfile(path) or not os.path.isdir(os.path.join(_WORKDIR.value, "gallery")):
    fail("workdir", "an evaluation workdir holding config.json and gallery/", _WORKDIR.value)
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  cases = {c.name: c for c in splits.cases(config.splits[config.split], config.split)}
  scene_config = demo.scene_config(config)
  print("| case | method | track error (px) | band left out (px) |\n|---|---|---|---|")
  gallery = os.path.join(_WORKDIR.value, "gallery")
  for name in sorted(n for n in os.listdir(gallery) if n in cases):
    example = splits.case_example(cases[name], scene_config)
    outside = wm.outside_simulated_band(example)
    for file in sorted(os.listdir(os.path.join(gallery, name))):
      if not file.endswith(".npz"):
        continue
      samples = np.load(os.path.join(gallery, name, file))["samples"]
      full = np.mean([wm.track_error_px(x, example) for x in samples])
      left = np.mean([wm.track_error_px(x, example, exclude=outside) for x in samples])
      print(f"| {name} | {file[:-4]} | {full:.2f} | {left:.2f} |")


if __name__ == "__main__":
  cli.run(main)
