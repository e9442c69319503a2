"""A mapper that is a command (``mapper_cmd``) or has one before it
(``mapper_pre_filter``), as mrjob's local runner and Hadoop Streaming run them: the map
task's input lines go to the command's stdin, and its stdout lines are the mapper's output
(``mapper_cmd``) or the Python mapper's input (``mapper_pre_filter``)."""

from __future__ import annotations

import subprocess

from ...errors import holding_value

STDERR_SHOWN = 2000  # characters of a failed command's stderr kept in the error
STDERR_VALUE = 190  # ... of its end in the failure's position (its owner's)


class CommandFailed(RuntimeError):
    """A mapper's command exited with a non-zero status."""


def command_args(command: str) -> list[str]:
    """A ``mapper_cmd`` as mrjob runs it: split like a shell line, run without a shell."""
    from mrjob.util import shlex_split

    return shlex_split(command)


def pre_filter_args(pre_filter: str) -> list[str]:
    """A ``mapper_pre_filter`` as mrjob runs it: in ``sh``, its output piped on (so, as in
    mrjob, its exit status does not fail the task: ``grep`` finding nothing is no error)."""
    return ["sh", "-c", pre_filter]


def run_lines(args: list[str], data: bytes, check: bool) -> list[bytes]:
    """The lines (without newlines) ``args`` writes when fed ``data``."""
    done = subprocess.run(args, input=data, capture_output=True)
    # a pre-filter's status does not count (as in mrjob's `pre_filter | mapper` pipeline),
    # but one killed by a signal wrote only part of its output: never take that for all
    if done.returncode < 0 or check and done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace")[-STDERR_SHOWN:]
        # the command is the job's code, and what it wrote (data, often) is a task's log:
        # the job's owner reads the end of it in the failure's position and all of it in
        # the task's log; events, the dashboard and the daemons' logs show the status
        # only (errors.holding_value, docs/observability.md)
        raise holding_value(
            CommandFailed(f"mapper command {args!r} exited with status {done.returncode}: "
                          f"{err}"),
            f"mapper command exited with status {done.returncode} (its stderr: the "
            "failure's position and the task's log)", err[-STDERR_VALUE:],
            "the command's stderr")
    lines = done.stdout.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines
