"""The programs' shared entry point (train.py, eval.py, describe.py, python -m trainer.checkpoint): flags parsed
and every error a user can fix printed as one line, without a traceback.

  if __name__ == '__main__':
    define_flags()
    cli.run(main)

A mistake in the input (a config field, a value, a data file, a workdir, a checkpoint) ends the program with
`<program>: error: <message>` on stderr and exit code 2 (BAD_INPUT); a run that stops on its own terms (a
diverged loss, a checkpoint that could not be written) with exit code 1 (exceptions listed in `halts`). The
message names the field, file or row and the fix; the traceback is printed only with `--verbosity=1` (or
more) or the environment variable TJ_TRACEBACK=1, for reporting a bug. Anything else (a bug, a device
failure) keeps its full traceback. Without --verbosity the libraries' routine log lines are dropped.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

BAD_INPUT = 2  # the exit code of a mistake in the input, as argparse and absl use for bad flags
HALTED = 1  # a run that stopped itself: the loss diverged, a checkpoint could not be saved

# Exceptions that carry a message for the user: config and data errors are ValueErrors in this codebase
# (ConfigError, SourceError, ConfigMismatchError, MeshConfigError, ...); a missing workdir, checkpoint or
# file is a FileNotFoundError; NotADirectoryError / PermissionError name the path.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def program_name() -> str:
  return Path(sys.argv[0]).name if sys.argv and sys.argv[0] not in ('', '-c') else 'python'


def wants_traceback() -> bool:
  """--verbosity=1 (or more) or TJ_TRACEBACK=1: print the full traceback of a user error as well."""
  if os.environ.get('TJ_TRACEBACK', '') not in ('', '0'):
    return True
  verbosity = flags.FLAGS['verbosity']
  return verbosity.present and verbosity.value >= 1


def fail(message: str, code: int = BAD_INPUT, *, traced: bool = False) -> NoReturn:
  """Ends the program with `<program>: error: <message>` on stderr; `traced`: an exception's traceback was
  left out, and the line says how to see it."""
  hint = ' (--verbosity=1 shows the traceback)' if traced and not wants_traceback() else ''
  print(f'{program_name()}: error: {message}{hint}', file=sys.stderr, flush=True)
  sys.exit(code)


def run(main: Callable[[list[str]], Any], *, halts: tuple[type[BaseException], ...] = ()) -> None:
  """absl's app.run(main) with one-line errors for flags, config overrides and the USER_ERRORS that `main`
  raises (exit 2), and for `halts` (exit 1)."""

  def guarded(argv: list[str]) -> Any:
    if not flags.FLAGS['verbosity'].present:
      quiet_libraries()
    try:
      return main(argv)
    except halts as e:  # pylint: disable=catching-non-exception
      if wants_traceback():
        traceback.print_exc()
      fail(str(e), HALTED, traced=True)
    except USER_ERRORS as e:
      if wants_traceback():
        traceback.print_exc()
      fail(_one_line(e), traced=True)

  app.run(guarded, flags_parser=parse_flags)


# Libraries that log routine work through absl (orbax: every read-only open and save decision; TFDS: dataset
# loading; grain: its workers), and the level from which their records are kept by default. orbax's errors go
# too: a failed save or restore reaches the user as our one-line error (trainer/checkpoint.py), where orbax
# logs each of its threads' tracebacks (a full disk: ~200 lines).
_NOISY_LIBRARIES = {'/orbax/': logging.CRITICAL, '/tensorflow_datasets/': logging.ERROR, '/grain/': logging.ERROR,
                    '/etils/': logging.ERROR}


class _LibraryNoise(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return all(record.levelno >= level or part not in record.pathname for part, level in _NOISY_LIBRARIES.items())


def quiet_libraries() -> None:
  """Our warnings stay, the libraries' routine lines go: absl at WARNING, and the filter above on every handler
  of the root logger (absl's included). --verbosity=0 (or more) keeps everything."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  for handler in logging.getLogger().handlers:
    if not any(isinstance(f, _LibraryNoise) for f in handler.filters):
      handler.addFilter(_LibraryNoise())


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with a config file that fails to load and an override of a config field that does
  not exist (`--config.train.num_stepz=3`) reported in one line with the close matches."""
  try:
    rest = flags.FLAGS(list(argv))
  except flags.Error as e:
    message = _last_line(str(e))
    unknown = re.match(r"Unknown command line flag '(\w+)\.", message)
    if unknown and isinstance(flags.FLAGS[unknown.group(1)] if unknown.group(1) in flags.FLAGS else None,
                              config_flags.config_flags._ConfigFlag):  # pylint: disable=protected-access
      message += f': an override of a --{unknown.group(1)} field needs --{unknown.group(1)} configs/<name>.py first'
    fail(message)
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a field the config does not have
    fail(_unknown_override(argv, _one_line(e)))
  for name in flags.FLAGS:  # ml_collections defers a config file's load error to the first read of the flag
    if isinstance(flags.FLAGS[name], config_flags.config_flags._ConfigFlag):  # pylint: disable=protected-access
      try:
        value = getattr(flags.FLAGS, name)
        if value is not None:
          value.keys()  # a config that failed to load holds the error, raised on first attribute access
      except OSError as e:
        fail(f'--{name}: ' + _last_line(str(e)))
  return rest


def _one_line(error: BaseException) -> str:
  """The exception's message: a KeyError's repr quotes undone; an OSError as '<file>: <reason>'."""
  if error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(...)) of ml_collections
    return _one_line(error.args[0])
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  if isinstance(error, OSError) and error.filename and error.strerror:
    return f'{error.filename}: {error.strerror}'
  return str(error) or type(error).__name__


def _last_line(message: str) -> str:
  """The error at the end of a message that quotes a traceback or a chain of attempts (ml_collections' config
  loading), without the exception's type name."""
  lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
  if len(lines) <= 1:
    return message.strip()
  return re.sub(r'^(\w+\.)*\w+(Error|Exception): ', '', lines[-1])


def _unknown_override(argv: Sequence[str], message: str) -> str:
  """'--config.train.num_stepz=3: no field 'num_stepz' there; did you mean "num_steps" instead of "num_stepz"?'
  from ml_collections' two-line message ("'<key>'" then its suggestion) and the override that names the key."""
  first, _, suggestion = message.partition('\n')
  key = first.strip().strip("'")
  arg = next((a for a in argv[1:] if a.startswith('--') and re.search(rf'\.{re.escape(key)}(=|\.|$)', a)), None)
  where = arg.partition('=')[0] if arg else 'a --config override'
  return f'{where}: the config has no field {key!r}' + (f'; {suggestion.strip()}' if suggestion.strip() else '')
