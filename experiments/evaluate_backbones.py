"""Alias of the launcher for the backbone study (config default configs/evaluate_backbones.py).

  python -m experiments.evaluate_backbones --workdir=workdir/backbones
  (the same as python -m experiments.main --config=configs/evaluate_backbones.py --workdir=...)
"""

from experiments import alias

if __name__ == "__main__":
  alias.run("configs/evaluate_backbones.py")
