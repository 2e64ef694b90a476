"""Trains one tiny world backbone by flow matching (logic in composed_vi.lab.training).

  python -m experiments.train --config=configs/train_tiny.py:i2v --workdir=workdir/train/i2v
"""

from absl import flags
from ml_collections import config_flags

from composed_vi.lab import cli, training

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (resumed if it holds a run).",
                               required=True)


def main(argv):
  del argv
  print(training.train(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  cli.run(main)
