"""Paired differences between two evaluation runs of one config (e.g. two versions of the code).

  python -m experiments.compare_evaluations --new=workdir/evaluate7 --old=workdir/evaluate_prefix

Prints, per method both runs hold, ``new - old`` over their common cases with a 95% bootstrap
interval, and how many cases changed (composed_vi.lab.evaluation.report.compare_runs).
"""

import os

from absl import flags

from composed_vi.errors import fail
from composed_vi.lab import cli
from composed_vi.lab.evaluation import read_rows, report

_NEW = flags.DEFINE_string("new", None, "Evaluation workdir of the new run.", required=True)
_OLD = flags.DEFINE_string("old", None, "Evaluation workdir of the old run.", required=True)


def main(argv):
  del argv
  rows = {}
  for field, folder in (("new", _NEW.value), ("old", _OLD.value)):
    path = os.path.join(folder, "results.jsonl")
    if not os.path.isfile(path):
      fail(field, "an evaluation workdir holding results.jsonl", folder)
    rows[field] = read_rows(path)
  print(report.compare_runs(rows["new"], rows["old"]), end="")


if __name__ == "__main__":
  cli.run(main)
