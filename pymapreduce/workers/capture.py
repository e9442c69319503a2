"""What a task attempt prints and logs, kept bounded (no sockets here).

While an attempt runs, ``sys.stdout`` and ``sys.stderr`` are replaced by one
:class:`TaskLog` (so the two streams interleave in the order they were written), and the
records of the job's own loggers (any logger outside ``pymapreduce``) are formatted into
it as well, instead of reaching the worker daemon's log. The log keeps its first
``HEAD`` and last ``TAIL`` bytes and counts what it left out between them, so a task that
prints a line per record costs its worker and the broker at most ``HEAD + TAIL`` bytes.
The text travels with the attempt's DONE or FAILED report (``log``).

Writes that bypass Python's ``sys.stdout`` (a C library writing to file descriptor 1, a
subprocess) are not captured: they go where the worker daemon's output goes.

An embedded cluster (``Job.run`` without an address) passes the user's own stdout and
stderr to its workers as file descriptors named in ``ECHO_ENV``; a worker then also
echoes each write there, so ``print()`` in ``map`` reaches the user's terminal as the
task runs.
"""

from __future__ import annotations

import io
import linecache
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HEAD = 32 * 1024  # bytes kept from the start of an attempt's log
TAIL = 32 * 1024  # ... and from its end
ECHO_ENV = "PYMAPREDUCE_ECHO_FDS"  # "OUT,ERR": descriptors task output is echoed to
SOURCES_ATTR = "_pymapreduce_sources"  # a shipped job's {filename: source text}
TRUNCATED = "\n[... {n} bytes of this attempt's output left out ...]\n"


class _Utf8Text(io.TextIOBase):
    """A writable UTF-8 text stream that is not a terminal (what task code may ask of
    ``sys.stdout``)."""

    @property
    def encoding(self) -> str:  # (code that asks a stream for its encoding)
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


class TaskLog(_Utf8Text):
    """A text stream that keeps its first HEAD and last TAIL bytes (UTF-8) and counts the
    bytes left out between them."""

    def __init__(self, head: int = HEAD, tail: int = TAIL) -> None:
        super().__init__()
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def write(self, text: Any) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = text.encode("utf-8", "replace")
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            over = len(self.tail) - self.tail_limit
            if over > self.tail_limit:  # trimmed in bulk: amortised O(1) per byte
                del self.tail[:over]
                self.dropped += over
        return len(text)

    def getvalue(self) -> bytes:
        """The kept bytes, with a line saying how many were left out (if any)."""
        tail, dropped = self.tail, self.dropped
        over = len(tail) - self.tail_limit
        if over > 0:
            tail, dropped = tail[over:], dropped + over
        if not dropped:
            return bytes(self.head + tail)
        return bytes(self.head) + TRUNCATED.format(n=dropped).encode() + bytes(tail)


class _JobRecords(logging.Handler):
    """Formats the job's log records into the attempt's stderr (so into its log, and
    echoed where its stderr is), while an attempt runs."""

    def __init__(self, log: Any, capture: Capture) -> None:
        super().__init__(logging.NOTSET)
        self.log = log
        self.capture = capture
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not self.capture.active or _is_ours(record):
            return
        try:
            self.log.write(self.format(record) + "\n")
        except Exception:  # a record that cannot be formatted must not fail the task
            self.handleError(record)


def _is_ours(record: logging.LogRecord) -> bool:
    return record.name == "pymapreduce" or record.name.startswith("pymapreduce.")


class _OnlyOurs(logging.Filter):
    """Keeps the job's records out of the daemon's own log handlers during a task."""

    def __init__(self, capture: Capture) -> None:
        super().__init__()
        self.capture = capture

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.capture.active or _is_ours(record)


def _echo_streams() -> tuple[Any, Any]:
    """The user's stdout and stderr an embedded cluster passed on (None, None: none)."""
    spec = os.environ.get(ECHO_ENV, "")
    streams: list[Any] = []
    for part in spec.split(",")[:2] if spec else ():
        try:
            streams.append(open(int(part), "w", encoding="utf-8", errors="replace",
                                buffering=1, closefd=False))
        except (ValueError, OSError):
            streams.append(None)
    while len(streams) < 2:
        streams.append(None)
    return streams[0], streams[1]


class Capture:
    """Captures the output of task attempts in one worker process (see the module).

    The streams and the logging handler are made once and stay installed; an attempt
    only points them at its own log (``begin``) and puts ``sys.stdout``/``sys.stderr``
    back after it (``end``): a few microseconds per task, where making and installing
    them per attempt cost a third of a no-op task's time in the worker."""

    def __init__(self) -> None:
        self.echo_out, self.echo_err = _echo_streams()
        self.log = TaskLog()
        self.out = _Stream(self.log, self.echo_out, sys.stdout)
        self.err = _Stream(self.log, self.echo_err, sys.stderr)
        self.handler = _JobRecords(self.err, self)
        self.only_ours = _OnlyOurs(self)
        self.active = False  # an attempt runs: its records are its own, not the daemon's
        self._saved: tuple[Any, Any] = (sys.stdout, sys.stderr)
        self._seen: tuple = ()  # the root logger's handlers when last looked at

    def begin(self) -> TaskLog:
        """An attempt starts: what it prints or logs goes to the returned log until
        ``end`` (a fresh one, or the last attempt's if nothing was written to it)."""
        log = self.log
        if log.head or log.dropped:  # (the last attempt's: an untouched one is reused)
            log = self.log = TaskLog()
            self.out.log = self.err.log = log
        root = logging.getLogger()
        if tuple(root.handlers) != self._seen:  # (changed by a task, or the first time)
            if self.handler not in root.handlers:
                root.addHandler(self.handler)
            for h in root.handlers:
                if h is not self.handler and self.only_ours not in h.filters:
                    h.addFilter(self.only_ours)
            self._seen = tuple(root.handlers)
        self._saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.out, self.err
        self.active = True
        return log

    def end(self) -> None:
        """The attempt is over: flush its echo, and put back whatever it left in
        ``sys.stdout``/``sys.stderr`` (its choice must not outlive it)."""
        self.active = False
        if self.log.head:  # (nothing written, nothing to flush)
            self.out.flush()
            self.err.flush()
        sys.stdout, sys.stderr = self._saved

    @contextmanager
    def attempt(self) -> Iterator[TaskLog]:
        """While the block runs, what the task prints or logs goes to the yielded log."""
        log = self.begin()
        try:
            yield log
        finally:
            self.end()


class _Stream(_Utf8Text):
    """One of the task's standard streams: into the shared log, echoed to its own stream.

    ``fileno()`` is the daemon's own stream's (code that hands ``sys.stdout`` to a
    subprocess keeps working; that output is not captured); ``buffer`` takes bytes."""

    def __init__(self, log: TaskLog, echo: Any, real: Any) -> None:
        super().__init__()
        self.log = log
        self.echo = echo
        self.real = real
        self.buffer = _Bytes(self)

    @property
    def errors(self) -> str:
        return "replace"

    def fileno(self) -> int:
        return self.real.fileno()

    def write(self, text: Any) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.echo is not None:
            try:
                self.echo.write(text)
            except (OSError, ValueError):
                self.echo = None  # the user's terminal is gone: keep capturing
        return self.log.write(text)

    def flush(self) -> None:
        if self.echo is not None:
            try:
                self.echo.flush()
            except (OSError, ValueError):
                self.echo = None


class _Bytes(io.RawIOBase):
    """``sys.stdout.buffer`` of a task: bytes written are decoded (bad UTF-8 replaced)."""

    def __init__(self, text: _Stream) -> None:
        super().__init__()
        self.text = text

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.text.write(bytes(view).decode("utf-8", "replace"))
        return view.nbytes

    def flush(self) -> None:
        self.text.flush()


def attempt_log(log: TaskLog | None, tb: str = "") -> bytes:
    """What an attempt's report carries as its log: what it printed and logged, then (for
    a failed attempt) the traceback, so the log alone shows how the attempt ended."""
    text = log.getvalue() if log is not None else b""
    if tb:
        text += b"\n[the attempt failed]\n" + tb.encode("utf-8", "replace")
    return text


# what register_sources put into linecache, and what each entry replaced (None: nothing),
# so the next job's tracebacks show their files' own lines, not another job's text
_registered: dict[str, Any] = {}
MAX_SOURCE = 512 << 10  # characters of one shipped file's text (client/sources.py's caps)
MAX_SOURCES = 1 << 20  # ... of all of a job's
MAX_SOURCE_FILES = 64


def register_sources(job: Any) -> None:
    """Put the source text shipped with ``job`` (``client/sources.py``) into linecache,
    so a traceback of its code shows the user's lines under the user's file names even
    where those files do not exist (or differ). Entries without a modification time are
    never dropped by ``linecache.checkcache``; the worker registers a job's sources when
    its task follows another job's, and what the previous job registered is taken out
    first (entries it replaced put back), so one job's text (even a forged one, naming a
    standard-library file) never shows in another job's tracebacks, and linecache does not
    grow with every job a worker runs. Only ``str`` names and texts within the client's
    caps are taken; anything else is left out."""
    for filename, previous in _registered.items():
        if previous is None:
            linecache.cache.pop(filename, None)
        else:
            linecache.cache[filename] = previous
    _registered.clear()
    try:
        sources = getattr(job, SOURCES_ATTR, None)
        if type(sources) is not dict:
            return
        items = list(sources.items())[:MAX_SOURCE_FILES]
    except Exception:  # (a job's own __getattr__ that raises): no sources
        return
    total = 0
    for filename, text in items:
        if type(filename) is not str or type(text) is not str or len(text) > MAX_SOURCE \
                or total + len(text) > MAX_SOURCES:
            continue
        total += len(text)
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        if filename not in _registered:
            _registered[filename] = linecache.cache.get(filename)
        linecache.cache[filename] = (len(text), None, lines, filename)
