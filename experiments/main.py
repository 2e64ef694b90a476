"""The launcher: every experiment from an ml_collections config.

  python -m experiments.main --config=configs/<name>.py --workdir=W [--config.key=value]

The config's ``experiment`` picks what runs (composed_vi.lab.launcher.EXPERIMENTS): sampling
(``world_demo``, ``gmm_product``, ``wan_compose``), the exact-target study, tiny-backbone
training, the evaluation, long videos and the backbone study. Several processes (one per host)
join JAX's distributed runtime through the flags below or the JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID variables (JAX_DISTRIBUTED=auto on TPU pods and SLURM).
User errors are reported in one line, without a traceback, exit code 2.
"""

from absl import app, flags
from ml_collections import config_flags

from composed_vi import distributed
from composed_vi.lab import cli, launcher

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (resumed if it holds a run).",
                               required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  launcher.launch(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
