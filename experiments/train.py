"""Alias of the launcher for tiny-backbone training.

  python -m experiments.train --config=configs/train_tiny.py:i2v --workdir=workdir/train/i2v
  (the same as python -m experiments.main --config=configs/train_tiny.py:i2v --workdir=...)
"""

from experiments import alias

if __name__ == "__main__":
  alias.run(None)
