"""Runs ``python -m experiments.main`` in a subprocess with a chosen number of CPU devices."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/gmm_product.py:smoke"


def env_for(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return env


def command(workdir, *overrides, config=SMOKE) -> list[str]:
  return [sys.executable, "-m", "experiments.main", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def launch(workdir, *overrides, devices: int = 1, config=SMOKE, timeout=600):
  return subprocess.run(command(workdir, *overrides, config=config), cwd=ROOT,
                        env=env_for(devices), capture_output=True, text=True, timeout=timeout)


def samples(workdir) -> np.ndarray:
  with np.load(os.path.join(workdir, "samples.npz")) as f:
    return f["samples"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def relative_error(x, ref) -> float:
  return float(np.max(np.abs(x - ref)) / np.max(np.abs(ref)))
