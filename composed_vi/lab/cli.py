"""Command-line plumbing shared by the ``experiments/`` entry points.

User errors (a misspelt ``--config.`` field, a value of the wrong type, a missing flag, a
:class:`ConfigError` from validation, a workdir held by another live run, checkpoints none of
which is intact) are printed as one ``error: ...`` line and exit with code 2, never with a
traceback. The other exit codes a run can end with, each after one line:

- 3: a NaN or inf in the particles, an expert's output or the diagnostics
  (:class:`composed_vi.faults.NonFiniteError`: the level, ``t`` and the expert are named; the
  newest checkpoint is the last good one);
- 74 (``EX_IOERR``): the file system refused a write (full, over quota, read-only;
  :class:`composed_vi.io.StorageError`); nothing half-written is left under a final name;
- 75 (``EX_TEMPFAIL``): preempted by SIGTERM / SIGINT after a checkpoint; rerun to resume
  (:mod:`composed_vi.lab.preemption`).

Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import re
import sys

from absl import app, flags

from composed_vi import faults, io
from composed_vi.errors import ConfigError
from composed_vi.lab import checkpoint, preemption

EXIT_USER_ERROR = 2
EXIT_NUMERICAL = 3
EXIT_STORAGE = 74


def user_error(message: str, code: int = EXIT_USER_ERROR) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _clean(e: BaseException) -> str:
  text = str(e.args[0]) if e.args else str(e)
  return re.sub(r"\s+", " ", text.replace("\\n", " ").replace("\\'", "'")).strip(" '\"")


def parse_flags(argv):
  """absl's parser, with config errors reported as user errors (the field named)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    user_error(_clean(e))
  except (AttributeError, KeyError) as e:
    # ml_collections: an override of a field the config does not have.
    hint = re.search(r"Did you mean \W*(\w+)", str(e))
    hint = f" (did you mean {hint.group(1)!r}?)" if hint else ""
    user_error(f"config: unknown field {_unknown_field(e, argv)!r}{hint}")
  except (TypeError, ValueError) as e:
    user_error(f"config: {_clean(e)}")


def _unknown_field(e: BaseException, argv) -> str:
  """The dotted override path (``config.problem.dimm``) whose last name the error reports."""
  m = re.search(r"instead of \W*(\w+)", str(e)) or re.search(r"(\w+)", str(e))
  name = m.group(1) if m else ""
  for arg in argv:
    path = arg.split("=")[0].removeprefix("--")
    if path.startswith("config.") and (path == name or path.split(".")[-1] == name
                                       or f".{name}." in path):
      return path
  return name


def quiet_libraries(record) -> bool:
  """Drops the INFO chatter of orbax (a line per file it renames); keeps its warnings."""
  import logging as pylogging

  return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


def no_library_tracebacks(record) -> bool:
  """Drops orbax's error records that carry a traceback from the terminal (a failed checkpoint
  write logs one per thread, each with TensorStore's whole spec): the run's own one-line error
  says what failed; the run's log.txt keeps them."""
  if not record.exc_info:
    return True
  if "orbax" in record.pathname:
    return False
  # asyncio's "Task exception was never retrieved" for orbax's cancelled serialisation tasks
  return not (record.name == "asyncio" and "orbax" in record.getMessage())


def run(main) -> None:
  """``app.run(main)`` with :func:`parse_flags`; ConfigError from ``main`` is a user error."""
  def wrapped(argv):
    from absl import logging

    checkpoint.quiet_closed_loop_callbacks()
    handler = logging.get_absl_handler()
    for f in (quiet_libraries, no_library_tracebacks):
      if f not in handler.filters:
        handler.addFilter(f)
    try:
      return main(argv)
    except ConfigError as e:
      user_error(str(e))
    except faults.NonFiniteError as e:
      user_error(str(e), EXIT_NUMERICAL)
    except io.StorageError as e:
      user_error(str(e), EXIT_STORAGE)
    except preemption.PreemptedError as e:
      print(str(e), file=sys.stderr)
      sys.exit(preemption.EXIT_PREEMPTED)

  app.run(wrapped, flags_parser=parse_flags)
