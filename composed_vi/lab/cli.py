"""Command-line plumbing shared by the ``experiments/`` entry points.

User errors (a misspelt ``--config.`` field, a value of the wrong type, a missing flag, a
:class:`ConfigError` from validation) are printed as one ``error: ...`` line and exit with code
2, never with a traceback; other exceptions are bugs and keep theirs.
"""

from __future__ import annotations

import re
import sys

from absl import app, flags

from composed_vi.errors import ConfigError

EXIT_USER_ERROR = 2


def user_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


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


def run(main) -> None:
  """``app.run(main)`` with :func:`parse_flags`; ConfigError from ``main`` is a user error."""
  def wrapped(argv):
    from absl import logging

    handler = logging.get_absl_handler()
    if quiet_libraries not in handler.filters:
      handler.addFilter(quiet_libraries)
    try:
      return main(argv)
    except ConfigError as e:
      user_error(str(e))

  app.run(wrapped, flags_parser=parse_flags)
