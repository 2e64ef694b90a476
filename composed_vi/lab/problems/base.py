"""A sampling problem: the composed target, and what the launcher does with its samples.

Every input a user can hand in (arrays in files, weights, masks, checkpoint folders) is validated
by the problem's builder, before any compute or output, with errors naming the config field.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from composed_vi.composition import ComposedTarget
from composed_vi.errors import fail


@dataclasses.dataclass
class Problem:
  target: ComposedTarget
  exact: Any = None  # a GaussianMixture with the exact composed distribution, when known
  decode: Any = None  # optional samples -> videos (written to videos.npz)
  report: Any = None  # optional (samples, workdir) -> metrics: media and pages of the run
  expert_names: tuple = ()  # the target's experts, in order (named in numerical-fault errors)


def load_array(field: str, path: str, kind: str):
  """``np.load`` of a user's file, refused by ``field`` if missing or unreadable."""
  if not os.path.isfile(path):
    fail(field, f"an existing {kind} file", path)
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
    fail(field, f"a readable {kind} file", f"{path} ({type(e).__name__}: {e})")
  return data
