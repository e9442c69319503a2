"""How a ``pymapreduce`` command that fails tells its user why.

pymapreduce's own errors (``PyMapReduceError``) are said in one line by ``main()``. What
is left comes here and is sorted three ways:

- an error in the user's own code (a job file that raises when loaded, a job whose
  constructor raises): the traceback of the user's frames only, as Python would show it
  without pymapreduce in between, then one line;
- bad input that is not ours to word (a file that cannot be read, a value that does not
  parse, a module that cannot be imported, a job class that needs constructor arguments):
  one line;
- anything else is a bug in pymapreduce: the whole traceback, and a line that says so.

``--debug`` (or ``PYMAPREDUCE_DEBUG=1``) adds the whole traceback to every case.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from types import TracebackType

EXIT_INTERNAL = 70  # a bug in pymapreduce (BSD's EX_SOFTWARE)
DEBUG_ENV = "PYMAPREDUCE_DEBUG"

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_STDLIB = tuple(os.path.abspath(p) for p in {sysconfig.get_paths()["stdlib"],
                                             sysconfig.get_paths()["platstdlib"]})


def debug_from_env() -> bool:
    """Whether ``PYMAPREDUCE_DEBUG`` asks for tracebacks (set, and not 0/false/no)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _user_frame(filename: str) -> bool:
    """A frame of the user's code: not pymapreduce's, not Python's own."""
    if filename.startswith("<"):  # <frozen importlib._bootstrap> and the like
        return False
    path = os.path.abspath(filename)
    parts = path.split(os.sep)
    return not (path.startswith(_PACKAGE + os.sep) or path.startswith(_STDLIB)
                or "site-packages" in parts or "dist-packages" in parts)


def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(tb))


# pymapreduce's own run-time dependencies (pyproject.toml): module -> package to install
DEPENDENCIES = {"zmq": "pyzmq", "cloudpickle": "cloudpickle", "msgpack": "msgpack",
                "zstandard": "zstandard", "tqdm": "tqdm",
                "prometheus_client": "prometheus-client"}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    package = DEPENDENCIES.get((getattr(exc, "name", None) or "").partition(".")[0])
    if isinstance(exc, ModuleNotFoundError) and package:
        # (a daemon started by a service account's Python, or a virtualenv not activated)
        return (f"{exc}: pymapreduce needs the package {package!r}, which this Python "
                f"does not have: install it there ({sys.executable} -m pip install "
                f"{package}; or pip install -e . in pymapreduce's checkout, for every "
                "dependency)")
    if isinstance(exc, ModuleNotFoundError):
        return (f"{exc} (a job given as module:Class must be importable: run from the "
                "directory that holds it, set PYTHONPATH, or give FILE.py:Class)")
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _constructor_needs_arguments(exc: BaseException, frames: list) -> bool:
    """A TypeError raised calling a class with missing arguments, in pymapreduce's code
    (the call, not the constructor's body, raised it)."""
    return (isinstance(exc, TypeError) and bool(frames)
            and not _user_frame(frames[-1].filename)
            and "__init__()" in str(exc) and "argument" in str(exc))


def report_error(exc: BaseException, *, debug: bool = False) -> int:
    """Say on stderr why the command failed; returns its exit code."""
    from .cli import EXIT_JOB_FAILED, EXIT_USAGE  # (cli imports this module)

    frames = _frames(exc.__traceback__)
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if any(_user_frame(f.filename) for f in frames) or isinstance(exc, SyntaxError):
        if not debug:  # the user's frames, as `python job.py` would show them
            shown = [f for f in frames if _user_frame(f.filename)]
            if shown:
                sys.stderr.write("Traceback (most recent call last), in your code:\n")
                sys.stderr.write("".join(traceback.format_list(shown)))
            sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        print(f"pymapreduce: error: your code raised {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EXIT_JOB_FAILED
    if _constructor_needs_arguments(exc, frames):
        print(f"pymapreduce: error: cannot make the job: {exc} (see `pymapreduce run "
              "--help`)", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, (OSError, ValueError, ImportError)):
        print(f"pymapreduce: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if not debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"pymapreduce: internal error: {_one_line(exc)} -- a bug in pymapreduce; please "
          "report it with the traceback above", file=sys.stderr)
    return EXIT_INTERNAL
