"""The one launcher's table: a config's ``experiment`` -> the callable that runs it.

Every entry is ``fn(config, workdir) -> summary``; each validates its config (a user error is a
:class:`composed_vi.errors.ConfigError` naming the field) before any compute or output.
``experiments/main.py`` parses the flags and calls :func:`launch`.
"""

from __future__ import annotations

from composed_vi.errors import fail
from composed_vi.lab import (
  backbone_study,
  evaluation,
  exact_study,
  long_video,
  runner,
  tiny_checkpoints,
  training,
)
from composed_vi.lab.problems import PROBLEMS


def _exact_targets(config, workdir: str):
  return exact_study.run(config, runner.check_workdir(workdir))


def _long_video(config, workdir: str):
  result = long_video.run(config, workdir)
  print(long_video.markdown(result))
  return result


def _ctrl_vi_paper(config, workdir: str):
  return runner.run(tiny_checkpoints.prepare(config, workdir), workdir)


def _train(config, workdir: str):
  summary = training.train(config, workdir)
  print(summary)
  return summary


#: ``config.experiment`` -> ``fn(config, workdir)``. The sampling problems (one population
#: sampled with checkpoints and resume, :mod:`composed_vi.lab.runner`) share one entry each.
EXPERIMENTS = {
    **{name: runner.run for name in PROBLEMS},
    "exact_targets": _exact_targets,
    "evaluate": evaluation.run,
    "long_video": _long_video,
    "train_tiny": _train,
    "evaluate_backbones": backbone_study.run_config,
    "ctrl_vi_paper": _ctrl_vi_paper,  # wan_ctrl_vi, after writing the tiny variant's assets
}


def launch(config, workdir: str):
  """Runs ``config`` (its ``experiment`` picks the entry of :data:`EXPERIMENTS`) into
  ``workdir``; returns what the experiment returns."""
  name = config.get("experiment") if hasattr(config, "get") else None
  if name not in EXPERIMENTS:
    fail("experiment", f"one of {sorted(EXPERIMENTS)}", name)
  return EXPERIMENTS[name](config, workdir)
