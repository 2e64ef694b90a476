"""Long videos: segments chained with the previous segment's last frame and the 3D context, the
camera panning right then back left; the background error when it returns
(composed_vi.lab.long_video).

  python -m experiments.long_video --config=configs/long_video.py --workdir=workdir/long_video

Writes long_video.json (per scene, variant and segment; means with 95% bootstrap intervals),
long_video.md (a table) and the first scene's GIFs to the workdir.
"""

from absl import flags
from ml_collections import config_flags

from composed_vi.lab import cli, long_video

_CONFIG = config_flags.DEFINE_config_file("config", "configs/long_video.py", "Experiment config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir/long_video", "Output folder.")


def main(argv):
  del argv
  result = long_video.run(_CONFIG.value, _WORKDIR.value)
  print(long_video.markdown(result))


if __name__ == "__main__":
  cli.run(main)
