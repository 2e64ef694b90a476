"""Runs the exact-target study (see composed_vi.exact_study).

  python -m experiments.exact_targets --config=configs/exact_targets.py --workdir=/tmp/exact
"""

from absl import app, flags
from ml_collections import config_flags

from composed_vi import exact_study

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)


def main(argv):
  del argv
  summary = exact_study.run(_CONFIG.value, _WORKDIR.value)
  print(exact_study.markdown_table(_CONFIG.value, summary["results"]))


if __name__ == "__main__":
  app.run(main)
