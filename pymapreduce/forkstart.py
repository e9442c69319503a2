"""Starting an embedded cluster's daemons by forking this process instead of executing
a new Python.

A daemon started with ``python -m pymapreduce broker`` pays for a Python start-up and
for importing pymapreduce, ZeroMQ and msgpack again, about 0.15 s of CPU per daemon that
lies on the critical path of ``Job.run`` (docs/ARCHITECTURE.md, "Start-up and exit").
A process forked from the client already has all of that: the child runs the same
command line through :func:`pymapreduce.cli.main` (so a forked broker or worker daemon is
the very daemon the command starts, with its signals, parent watch and logging), with
its standard streams set as :class:`subprocess.Popen` would set them, and ends with
``os._exit``, never returning into the caller's code.

Forking is only safe when no other thread can hold a lock the child will need, so
:func:`choose_start_method` picks it only on Linux and only while this process runs no other
Python thread (a notebook's kernel, or a program with threads of its own, starts its
daemons as new processes, as before). The child inherits the caller's open files and
memory (copy-on-write; ``gc.freeze`` keeps the child's collector from touching, and so
copying, the caller's objects); it never uses the caller's ZeroMQ context, sockets or
threads, which do not exist in it.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Sequence
from typing import IO, NoReturn

START_ENV = "PYMAPREDUCE_START_METHOD"  # "fork" or "spawn": overrides the choice
METHODS = ("fork", "spawn")
# In a forked child: the caller's objects that the child replaced (its sys streams, its
# loggers' handlers), kept referenced so that none is finalized there (a stream's close
# could flush the caller's buffers, or write to a notebook's socket, from the child)
_KEPT: list = []


def choose_start_method(requested: str | None = None) -> str:
    """``"fork"`` or ``"spawn"``: ``requested`` if given, else ``$PYMAPREDUCE_START_METHOD``,
    else fork on Linux when this process runs no other Python thread."""
    method = requested or os.environ.get(START_ENV) or None
    if method is not None:
        if method not in METHODS:
            from .errors import ConfigError

            raise ConfigError(f"start_method must be one of {METHODS}, got {method!r}")
        if method == "fork" and not hasattr(os, "fork"):
            return "spawn"
        return method
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "spawn"  # (macOS: system frameworks are not safe across fork)
    return "fork" if threading.active_count() == 1 else "spawn"


def preload(role: str) -> None:
    """Import here what a forked daemon of ``role`` runs ("cli": the command line every
    daemon parses and the daemons' commands; "worker": the supervisor and worker; "sink": the sink daemon), so
    that the child need not import it after the fork. The broker's own modules are left
    to the broker child, which imports them while this process imports the worker's:
    on two cores the two imports overlap instead of adding up."""
    if role == "cli":
        from . import cli, cli_daemons  # noqa: F401
    elif role == "worker":
        from .workers import supervisor  # noqa: F401
    elif role == "sink":
        from .sinks import daemon  # noqa: F401


def wait_pid(pid: int, timeout: float | None) -> int | None:
    """Wait until the child ``pid`` exits (at most ``timeout`` seconds) and reap it; its
    wait status, or None if it still runs. Wakes the moment it exits (a pidfd where Linux
    has one) instead of polling as ``Popen.wait(timeout)`` does (up to 50 ms late)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = _pidfd(pid)
    try:
        delay = 0.0005
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if fd is not None:
                select.select([fd], [], [], left)
            else:
                time.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 2, 0.01)
    finally:
        if fd is not None:
            os.close(fd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def wait_popen(proc, timeout: float | None) -> bool:
    """``proc.wait(timeout)`` for a :class:`subprocess.Popen` or :class:`ForkedProcess`
    without Popen's polling delay; True once it has exited."""
    if proc.returncode is not None:
        return True
    if isinstance(proc, ForkedProcess):
        return proc.wait_for(timeout)
    fd = _pidfd(proc.pid)
    if fd is not None:
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
    try:
        proc.wait(timeout=0 if fd is not None else timeout)
    except Exception:  # subprocess.TimeoutExpired
        return False
    return True


class ForkedProcess:
    """A forked daemon, with the part of :class:`subprocess.Popen`'s interface that
    :class:`~pymapreduce.local.LocalCluster` and its callers use."""

    def __init__(self, pid: int, args: Sequence[str], stdin: IO[bytes] | None,
                 stdout: IO[bytes] | None) -> None:
        self.pid = pid
        self.args = list(args)  # the daemon's command line (its /proc cmdline is ours)
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = None
        self.returncode: int | None = None

    def _reaped(self, status: int) -> int:
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler of the caller)
                self.returncode = 0
                return 0
            if pid:
                self._reaped(status)
        return self.returncode

    def wait_for(self, timeout: float | None) -> bool:
        if self.returncode is not None:
            return True
        try:
            status = wait_pid(self.pid, timeout)
        except ChildProcessError:
            self.returncode = 0
            return True
        if status is None:
            return False
        self._reaped(status)
        return True

    def wait(self, timeout: float | None = None) -> int:
        if not self.wait_for(timeout):
            import subprocess

            raise subprocess.TimeoutExpired(self.args, timeout)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_daemon(argv: Sequence[str], *, name: str, stdin_pipe: bool = False,
                stdout_pipe: bool = False, env: dict[str, str] | None = None,
                pass_fds: Sequence[int] = ()) -> ForkedProcess:
    """Fork a child that runs ``pymapreduce ARGV`` in a session of its own. Its stdin is a
    pipe from us (``stdin_pipe``) or /dev/null; its stdout a pipe to us (``stdout_pipe``)
    or /dev/null; its stderr ours; of our other descriptors it keeps ``pass_fds`` only
    (as Popen's ``close_fds``: a pipe of ours it held open would never see its end).
    ``env``: variables set in the child only. ``name``: its name in ``ps``/``top``
    (/proc/PID/comm)."""
    stdin_r = stdin_w = stdout_r = stdout_w = -1
    for stream in (sys.stdout, sys.stderr):  # not written twice, by the child too
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        if stdin_pipe:
            stdin_r, stdin_w = os.pipe()
        if stdout_pipe:
            stdout_r, stdout_w = os.pipe()
        with warnings.catch_warnings():  # (3.12+ warns of C threads: ZeroMQ's, BLAS's;
            warnings.simplefilter("ignore", DeprecationWarning)  # the child uses none)
            pid = os.fork()
    except BaseException:
        for fd in (stdin_r, stdin_w, stdout_r, stdout_w):
            if fd >= 0:
                os.close(fd)
        raise
    if pid == 0:
        for fd in (stdin_w, stdout_r):  # the parent's ends
            if fd >= 0:
                os.close(fd)
        _run_child(list(argv), name, stdin_r, stdout_w, env or {}, tuple(pass_fds))
    for fd in (stdin_r, stdout_w):  # the child's ends
        if fd >= 0:
            os.close(fd)
    return ForkedProcess(pid, ["pymapreduce", *argv],
                         os.fdopen(stdin_w, "wb") if stdin_w >= 0 else None,
                         os.fdopen(stdout_r, "rb") if stdout_r >= 0 else None)


def _run_child(argv: list[str], name: str, stdin_fd: int, stdout_fd: int,
               env: dict[str, str], pass_fds: tuple[int, ...]) -> NoReturn:
    code = 1
    try:
        os.setsid()  # Ctrl-C reaches the caller, which stops its daemons in order
        _reset_signals()
        _set_streams(stdin_fd, stdout_fd)
        _reset_logging()
        _close_inherited(pass_fds)
        os.environ.update(env)
        gc.freeze()  # the caller's objects stay out of this process's collections
        _set_name(name)
        from .cli import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # (a closed or broken stream: nothing more to say)
                pass
        os._exit(code)


def _reset_signals() -> None:
    """The dispositions a new Python process would have: the caller's Python handlers and
    its wakeup descriptor (an event loop's self-pipe) are not this daemon's."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())  # (a mask of the caller's would hide SIGTERM)
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT
                          else signal.SIG_DFL)


def _set_streams(stdin_fd: int, stdout_fd: int) -> None:
    """fds 0 and 1 as Popen would set them (a pipe or /dev/null), and ``sys`` streams of
    our own on 0, 1 and 2: the caller's may be a notebook's objects, or hold its buffers."""
    null = -1
    if stdin_fd < 0 or stdout_fd < 0:
        null = os.open(os.devnull, os.O_RDWR)
    for fd, target in ((stdin_fd, 0), (stdout_fd, 1)):
        source = fd if fd >= 0 else null
        if source != target:
            os.dup2(source, target)
        if fd > 2:
            os.close(fd)
    if null > 2:
        os.close(null)
    _KEPT.append((sys.stdin, sys.stdout, sys.stderr))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True,
                                  errors="backslashreplace")


def _reset_logging() -> None:
    """Loggers as in a new process: the daemon configures its own, and a job's loggers
    log in its tasks as in a plain script, not into the caller's handlers."""
    logging.disable(logging.NOTSET)
    for logger in [logging.root, *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            _KEPT.append(logger.handlers)
            logger.handlers = []
            logger.setLevel(logging.WARNING if logger is logging.root else logging.NOTSET)
            logger.propagate = True
            logger.disabled = False


def _close_inherited(keep: tuple[int, ...]) -> None:
    """Close every descriptor but 0, 1, 2 and ``keep``: the caller's files, sockets and
    pipes (ZeroMQ's included) are not the daemon's. The Python objects that own them are
    never finalized here (``_KEPT``, ``gc.freeze``, ``os._exit``), so no number is closed
    twice once the daemon reuses it."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, min(os.sysconf("SC_OPEN_MAX"), 65536)))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:  # (the listing's own descriptor, already gone)
                pass
    import faulthandler

    if faulthandler.is_enabled():  # (it wrote to a descriptor of the caller's)
        faulthandler.enable(sys.stderr)


def _set_name(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass
