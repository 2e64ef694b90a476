"""Alias of the launcher for long videos (the config's default is configs/long_video.py).

  python -m experiments.long_video --config=configs/long_video.py --workdir=workdir/long_video
  (the same as python -m experiments.main --config=configs/long_video.py --workdir=...)
"""

from experiments import alias

if __name__ == "__main__":
  alias.run("configs/long_video.py")
