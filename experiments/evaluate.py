"""Alias of the launcher for the evaluation (the config's default is configs/evaluate.py).

  python -m experiments.evaluate --config=configs/evaluate.py --workdir=workdir/evaluate
  (the same as python -m experiments.main --config=configs/evaluate.py --workdir=...)
"""

from experiments import alias

if __name__ == "__main__":
  alias.run("configs/evaluate.py")
