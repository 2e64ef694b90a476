"""Exports a training run's checkpoint to a backbone folder (to evaluate a run mid-way).

  python -m experiments.export_backbone --workdir=workdir/train2/i2v --out=workdir/bb/i2v
  python -m experiments.export_backbone --workdir=workdir/train2/i2v --step=500 --out=...
"""

from absl import app, flags

from composed_vi.lab import training

_WORKDIR = flags.DEFINE_string("workdir", None, "the training run's workdir", required=True)
_OUT = flags.DEFINE_string("out", None, "the backbone folder to write", required=True)
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: the newest)")


def main(argv):
  del argv
  print(training.export_checkpoint(_WORKDIR.value, _OUT.value, _STEP.value))


if __name__ == "__main__":
  app.run(main)
