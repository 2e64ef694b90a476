"""The comparison of methods and ablations against the world's ground truth.

  python -m experiments.evaluate --config=configs/evaluate.py --workdir=workdir/evaluate

Writes results.jsonl (one row per case and method, resumed on a rerun), table.md, table.json,
metrics.png and gallery/index.html (logic in composed_vi.lab.evaluation).
"""

from absl import flags
from ml_collections import config_flags

from composed_vi.lab import cli, evaluation

_CONFIG = config_flags.DEFINE_config_file("config", "configs/evaluate.py", "Evaluation config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (resumed if it holds a run).",
                               required=True)


def main(argv):
  del argv
  evaluation.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
