"""The older per-experiment mains, kept as aliases: the launcher with a default config file."""

import sys

from composed_vi.lab import cli
from experiments import main


def run(default_config: str | None) -> None:
  """Runs ``experiments.main`` with ``--config=default_config`` unless one is given."""
  if default_config and not any(a == "--config" or a.startswith("--config=")
                                for a in sys.argv[1:]):
    sys.argv.insert(1, f"--config={default_config}")
  cli.run(main.main)
