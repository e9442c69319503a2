"""What a task attempt prints and logs, kept bounded (no sockets here).

While an attempt runs, ``sys.stdout`` and ``sys.stderr`` are replaced by one
:class:`TaskLog` (so the two streams interleave in the order they were written), and the
records of the job's own loggers (any logger outside ``pymapreduce``) are formatted into
it as well, instead of reaching the worker daemon's log. The log keeps its first
``HEAD`` and last ``TAIL`` bytes and counts what it left out between them, so a task that
prints a line per record costs its worker and the broker at most ``HEAD + TAIL`` bytes.
The text travels with the attempt's DONE or FAILED report (``log``).

Writes that bypass Python's ``sys.stdout`` (a subprocess the task starts, a C library
writing to file descriptor 1 or 2) can be kept too in a worker daemon's processes
(:class:`FdCapture`; on unless ``PYMAPREDUCE_CAPTURE_FDS=0``, docs/logs.md): there
descriptors 1 and 2 point at one file (one per job: a new one when a task of another job
begins), the daemon's own stdout and stderr move to copies of the descriptors, and what
the file gained during an attempt is read into that attempt's log when it ends (one
``lseek`` a task; the heartbeat thread also reads it every 50 ms, so the file holds
little). What such a writer sends while no attempt runs (a process a task left behind)
goes to the daemon's stderr.

An embedded cluster (``Job.run`` without an address) passes the user's own stdout and
stderr to its workers as file descriptors named in ``ECHO_ENV``; a worker then also
echoes each write there, so ``print()`` in ``map`` reaches the user's terminal as the
task runs.
"""

from __future__ import annotations

import codecs
import io
import linecache
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..shipping import SOURCES_ATTR

HEAD = 32 * 1024  # bytes kept from the start of an attempt's log
TAIL = 32 * 1024  # ... and from its end
ECHO_ENV = "PYMAPREDUCE_ECHO_FDS"  # "OUT,ERR": descriptors task output is echoed to
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

    def parts(self) -> tuple[bytes, int, bytes]:
        """``(head, bytes left out, tail)``."""
        tail, dropped = self.tail, self.dropped
        over = len(tail) - self.tail_limit
        if over > 0:
            tail, dropped = tail[over:], dropped + over
        return bytes(self.head), dropped, bytes(tail)

    def getvalue(self) -> bytes:
        """The kept bytes, with a line saying how many were left out (if any)."""
        head, dropped, tail = self.parts()
        if not dropped:
            return head + tail
        return head + TRUNCATED.format(n=dropped).encode() + tail


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


FD_TRIM = 16 << 20  # bytes the descriptors' file may hold before it is emptied mid-task
FD_KEEP = 128 * 1024  # of more than twice this written at once, the first and last kept
OLD_QUIET = 60.0  # seconds an earlier job's file is kept open after its last write
OLD_FILES = 16  # earlier jobs' files kept open at most
FD_RESTART = 64 << 20  # a file's (sparse) length past which its job gets a new one
_PUNCH = 0x03  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_fallocate: Any = None  # libc's fallocate, looked up at the first punch (False: none)


def _punch(fd: int, length: int) -> bool:
    """Free the first ``length`` bytes of a file without moving its end (a hole: reads as
    zeros, holds no disk). A writer appending at the same moment loses nothing, where
    ``ftruncate`` to 0 would cut what it wrote between the read and the cut. False where
    the file system or the C library cannot."""
    global _fallocate
    if _fallocate is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _fallocate = libc.fallocate
            _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
                                   ctypes.c_longlong)
            _fallocate.restype = ctypes.c_int
        except (OSError, AttributeError):
            _fallocate = False
    if not _fallocate or length <= 0:
        return bool(_fallocate) or length <= 0
    return _fallocate(fd, _PUNCH, 0, length) == 0


class FdCapture:
    """Descriptors 1 and 2 of this process pointed at one file (see the module).

    Made once, in a worker daemon's process before anything else keeps ``sys.stdout``:
    ``sys.stdout``/``sys.stderr`` (and the logging handlers that wrote to them) then write
    to copies of the old descriptors, so the daemon's own output still goes where it went.
    The file is opened for appending (a writer's bytes go after all others'), read from
    ``offset`` on, and what was read is let go at an attempt's end, or when it passes
    FD_TRIM while an attempt runs: punched out as a hole (:func:`_punch`), so the offsets
    stay and a writer appending meanwhile loses nothing; where holes cannot be made, the
    file is cut to 0 as before (bytes written between the read and the cut are lost). A
    writer that reopens the file with ``O_TRUNC`` (a shell's ``>/dev/stderr``) leaves it
    shorter than ``offset``: it is read again from 0. Past ``restart_at`` bytes of length
    (a hole still counts against a file-size limit) the job gets a new file at an
    attempt's end (:meth:`rotate`).

    A task may close any descriptor, and its next ``open`` may get that number: this
    class keeps its own descriptors at 10 or above and checks a file's identity (device
    and inode) before it reads, punches or closes one; a descriptor that is no longer its
    file raises :class:`CaptureLost` and is never touched again."""

    def __init__(self, maker: Any) -> None:
        """``maker()``: a new file's ``(fd, path)``, opened for appending (a worker's are
        named in its job directories' root, so that its supervisor can read what it wrote
        last if it dies: ``isolation.last_words``)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        self._maker = maker
        self.fd, self.path, self.ident = self._new_file()
        self.daemon_out = _high(os.dup(1))  # (not inherited)
        self.daemon_err = _high(os.dup(2))
        old = (sys.stdout, sys.stderr)
        self.out = open(self.daemon_out, "w", buffering=1, encoding="utf-8",
                        errors="backslashreplace", closefd=False)
        self.err = open(self.daemon_err, "w", buffering=1, encoding="utf-8",
                        errors="backslashreplace", closefd=False)
        _point_std_at(self.fd)
        _rebind(old, (self.out, self.err))
        self.offset = 0  # bytes of the file read so far
        self.freed = 0  # ... and let go of (punched out)
        self.restart_at = _restart_at()
        self.lock = threading.Lock()  # the heartbeat thread reads the file too
        self.outbox: list[str] = []  # for the daemon's stderr, written without the lock
        self.outbox_bytes = 0
        self._decode = _decoder()
        # earlier jobs' files, which processes their tasks left running may still write
        # to: [fd, bytes read, when last written, path, identity], drained to the
        # daemon's stderr
        self.old: list[list] = []

    def _new_file(self) -> tuple[int, str, tuple]:
        fd, path = self._maker()
        try:
            fd = _high(fd)
            st = os.fstat(fd)
        except OSError:
            for undo in (lambda: os.close(fd), lambda: os.unlink(path)):
                try:
                    undo()
                except OSError:
                    pass
            raise
        return fd, path, (st.st_dev, st.st_ino)

    def rotate(self) -> None:
        """Descriptors 1 and 2 get a new file (call with ``lock`` held): a task of another
        job begins, so a process an earlier job's task left running (it holds the old
        file) never writes into this job's logs; or the file is long (``restart_at``).
        What the old file holds unread goes to the daemon's stderr, and later writes to
        it too (:meth:`prune_old`)."""
        fd, path, ident = self._new_file()
        try:
            unread = _joined(*self.read())
            self.empty()  # (a dead process's last words are what it wrote after this)
            _point_std_at(fd)
        except OSError:
            _let_go([fd, 0, 0.0, path, ident])  # (not made ours: 1 and 2 stay on the last)
            raise
        self.old.append([self.fd, self.offset, time.monotonic(), self.path, self.ident])
        self.fd, self.path, self.ident, self.offset, self.freed = fd, path, ident, 0, 0
        self._decode = _decoder()
        self.to_daemon(unread)
        self.prune_old(time.monotonic())

    def prune_old(self, now: float) -> None:
        """Drain the earlier jobs' files to the daemon's stderr (their last 2 * FD_KEEP
        bytes each time); close those written to by no one for OLD_QUIET seconds, and the
        oldest past OLD_FILES (call with ``lock``). One that is no longer its file (a task
        closed the descriptor) is forgotten, its descriptor not touched."""
        keep = []
        for entry in self.old:
            fd, done, _, _, ident = entry
            try:
                _check(fd, ident)
            except CaptureLost:
                _let_go(entry, close=False)
                continue
            end = os.lseek(fd, 0, os.SEEK_END)
            if end < done:  # cut by a writer (O_TRUNC): all of it is new
                done = 0
            if end > done:
                text = _pread(fd, max(done, end - 2 * FD_KEEP), end)
                self.to_daemon(text.decode("utf-8", "replace"))
                if _punch(fd, end):
                    entry[1] = end
                else:
                    os.ftruncate(fd, 0)
                    entry[1] = 0
                entry[2] = now
            if now - entry[2] > OLD_QUIET:
                _let_go(entry)
            else:
                keep.append(entry)
        while len(keep) > OLD_FILES:
            _let_go(keep.pop(0))
        self.old = keep

    def pending(self) -> bool:
        """Whether the file holds bytes not read yet (one system call); a file a writer
        cut (shorter than ``offset``) does, and so does a descriptor that became another
        file (:meth:`read` finds out)."""
        return os.lseek(self.fd, 0, os.SEEK_END) != self.offset

    def read(self) -> tuple[str, int, str]:
        """What was written since the last read, as ``(text, skipped, tail)`` (call with
        ``lock`` held): all of it as ``text``, or, past ``2 * FD_KEEP`` bytes, its first
        and last FD_KEEP bytes with the count of those between (a log keeps a head and a
        tail: reading and decoding a flood whole would only slow the task)."""
        _check(self.fd, self.ident)
        end = os.lseek(self.fd, 0, os.SEEK_END)
        if end < self.offset:  # a writer cut the file (O_TRUNC): what it holds is new
            self.offset = self.freed = 0
        start, self.offset = self.offset, end
        if end - start <= 2 * FD_KEEP:
            return self._decode(_pread(self.fd, start, end)), 0, ""
        head = self._decode(_pread(self.fd, start, start + FD_KEEP), True)
        return head, end - start - 2 * FD_KEEP, _pread(self.fd, end - FD_KEEP, end).decode(
            "utf-8", "replace")

    def cut_text(self) -> str:
        """A character the last read ended inside of (the attempt is over: it ends as a
        replacement character, not in the next attempt's log)."""
        text = self._decode(b"", True)
        self._decode = _decoder()
        return text

    def empty(self) -> None:
        """Let the bytes read so far go (call with ``lock`` held): punched out, the
        offsets kept (:func:`_punch`), or, where no hole can be made, the file cut to 0."""
        _check(self.fd, self.ident)
        if not _punch(self.fd, self.offset):
            os.ftruncate(self.fd, 0)
            self.offset = 0
        self.freed = self.offset

    def to_daemon(self, text: str) -> None:
        """Output written while no attempt ran, for the daemon's own stderr: kept until
        :meth:`send_out` (the main thread, once it has let the lock go: that stderr may
        block, and the heartbeat thread must never wait behind it for the lock). At most
        OUTBOX_MAX characters wait; past that, what comes is counted and left out."""
        if text:
            if self.outbox_bytes + len(text) > OUTBOX_MAX:
                text = TRUNCATED.format(n=len(text)).replace("attempt's", "process's")
                if self.outbox and self.outbox[-1] == text:
                    return
            self.outbox.append(text)
            self.outbox_bytes += len(text)

    def send_out(self) -> None:
        """Write what :meth:`to_daemon` kept to the daemon's stderr (the main thread,
        without the lock)."""
        while self.outbox:
            text = self.outbox.pop(0)
            self.outbox_bytes -= len(text)
            try:
                self.err.write(text)
                self.err.flush()
            except (OSError, ValueError):
                pass

    def give_back(self) -> None:
        """Descriptors 1 and 2 are the daemon's own again (the capture ends)."""
        os.dup2(self.daemon_out, 1)
        os.dup2(self.daemon_err, 2)

    def close(self) -> None:
        """The process ends: what is left goes to the daemon's stderr, and descriptors 1
        and 2 are the daemon's own again."""
        with self.lock:
            try:
                self.to_daemon(_joined(*self.read()))
                self.prune_old(time.monotonic())
            finally:
                self.give_back()
                _let_go([self.fd, 0, 0.0, self.path, self.ident])
                for entry in self.old:  # (their writers, if any are left, write to no name)
                    _let_go(entry)
                self.old = []
        self.send_out()


class CaptureLost(OSError):
    """A capture descriptor no longer refers to the capture's file (a task closed it, and
    maybe opened something else under its number)."""


OUTBOX_MAX = 1 << 20  # characters waiting for the daemon's stderr, at most
FD_FLOOR = 10  # the capture's own descriptors are kept at or above this number


def _high(fd: int) -> int:
    """``fd`` moved to a number of at least FD_FLOOR, close-on-exec (the low numbers are
    where a task's own files land, and 0, 1 and 2 are what it may close or replace)."""
    if fd >= FD_FLOOR:
        os.set_inheritable(fd, False)
        return fd
    import fcntl

    try:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FD_FLOOR)
    finally:
        os.close(fd)
    return new


def _point_std_at(fd: int) -> None:
    """Descriptors 1 and 2 onto ``fd``'s file, inherited by what the task starts."""
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.set_inheritable(1, True)
    os.set_inheritable(2, True)


def _check(fd: int, ident: tuple | None) -> None:
    """Raise CaptureLost unless ``fd`` is the file of identity ``ident``."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise CaptureLost(f"the capture file's descriptor {fd} was closed: {exc}") from None
    if (st.st_dev, st.st_ino) != ident:
        raise CaptureLost(f"descriptor {fd} is no longer the capture file (a task closed "
                          "it and opened another file)")


def _restart_at() -> int:
    """The length a capture file may reach before the job gets a new one: FD_RESTART, or
    a quarter of the process's file-size limit (a hole counts towards it)."""
    import resource

    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (OSError, ValueError):
        return FD_RESTART
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return FD_RESTART
    return max(1 << 16, min(FD_RESTART, soft // 4))


def _decoder() -> Any:
    """A UTF-8 decoder that keeps a character cut between two reads whole."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode


def _let_go(entry: list, close: bool = True) -> None:
    """Close an earlier job's file (if its descriptor still is that file), and remove it
    if it has a name."""
    if close:
        try:
            _check(entry[0], entry[4])
            os.close(entry[0])
        except OSError:
            pass
    if entry[3]:
        try:
            os.unlink(entry[3])
        except OSError:
            pass


def _pread(fd: int, start: int, end: int) -> bytes:
    chunks = []
    while start < end:
        data = os.pread(fd, min(end - start, 1 << 20), start)
        if not data:
            break
        start += len(data)
        chunks.append(data)
    return b"".join(chunks)


def _joined(text: str, skipped: int, tail: str) -> str:
    return text if not skipped else text + TRUNCATED.format(n=skipped) + tail


def _rebind(old: tuple, new: tuple) -> None:
    """``sys.stdout``/``sys.stderr`` and every logging handler that wrote to ``old``
    (streams) now write to ``new``; faulthandler too, if it is on."""
    swap = {id(o): n for o, n in zip(old, new)}
    loggers = [logging.getLogger(), *(one for one in logging.Logger.manager.loggerDict.values()
                                      if isinstance(one, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in swap:
                handler.setStream(swap[id(handler.stream)])
    sys.stdout, sys.stderr = new
    sys.__stdout__, sys.__stderr__ = new
    import faulthandler

    if faulthandler.is_enabled():  # (a crash's traceback for the operator, not the file)
        faulthandler.enable(new[1])


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

    def __init__(self, fds: Any = None) -> None:
        """``fds``: a file maker (FdCapture) to keep what is written to descriptors 1 and
        2 as well, only in a process of its own (a worker daemon's), as it moves the
        process's descriptors; if that cannot be set up (no file), it is left off."""
        self.fds: FdCapture | None = None
        if fds is not None:
            try:
                self.fds = FdCapture(fds)
            except OSError as exc:
                logging.getLogger("pymapreduce.worker").warning(
                    "output written to file descriptors 1 and 2 is not captured: %s", exc)
        self.echo_out, self.echo_err = _echo_streams()
        self.log = TaskLog()
        self.out = _Stream(self.log, self.echo_out, sys.stdout, 1 if self.fds else None)
        self.err = _Stream(self.log, self.echo_err, sys.stderr, 2 if self.fds else None)
        self.handler = _JobRecords(self.err, self)
        self.only_ours = _OnlyOurs(self)
        self.active = False  # an attempt runs: its records are its own, not the daemon's
        self._saved: tuple[Any, Any] = (sys.stdout, sys.stderr)
        self._seen: tuple = ()  # the root logger's handlers when last looked at
        self._owner: Any = None  # the job of the last attempt (FdCapture's file is its)
        self.fd_log = TaskLog()  # the running attempt's descriptor output (under the lock)
        self._broken_note = ""  # why the capture ended, for the main thread to log
        if self.fds is not None:  # (a task's forked child prints to the descriptors)
            os.register_at_fork(after_in_child=self._forked)
        # begin/end are moving descriptors and streams: a stop waits (stop_task)
        self.held = False
        self.deferred: BaseException | None = None

    def begin(self, owner: Any = None) -> TaskLog:
        """An attempt starts: what it prints or logs goes to the returned log until
        ``end`` (a fresh one, or the last attempt's if nothing was written to it).
        ``owner``: its job; a task of another job than the last one's gets descriptors of
        its own (FdCapture.rotate). A signal meant to stop the task (:meth:`stop_task`)
        that comes while this runs takes effect at its end, with nothing half done; one
        that raises at its very end (after the hold) gets the streams put back (callers
        call :meth:`end` in a ``finally`` too: it may run twice)."""
        try:
            self.held = True
            try:
                if owner != self._owner:
                    fds = self.fds
                    if fds is not None and self._owner is not None:
                        try:
                            with fds.lock:
                                fds.rotate()
                        except OSError as exc:  # (no new file: never the last job's file)
                            self._fds_broken(exc)
                        else:
                            fds.send_out()
                    self._owner = owner
                log = self.log
                if log.head or log.dropped:  # (the last attempt's: an untouched one is reused)
                    log = self.log = TaskLog()
                    self.out.log = self.err.log = log
                root = logging.root  # (what getLogger() returns, without its call)
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
            finally:
                self.held = False
            if self.deferred is not None:  # a stop came meanwhile: the attempt ends at once
                self._deliver()
            return log
        except BaseException:
            self.end()
            raise

    def end(self) -> None:
        """The attempt is over: what its descriptors received goes into its log (and the
        echo), whatever it left in ``sys.stdout``/``sys.stderr`` is put back (its choice
        must not outlive it), and a stop that came meanwhile is raised."""
        self.held = True
        try:
            fds = self.fds
            # (nothing to take when nothing is unread and nothing was read: in that order,
            # as the heartbeat's read moves the offset from unread to read; the other
            # order missed a read between the two looks, and the attempt its output)
            if fds is not None:
                try:
                    fd_log = None
                    if fds.pending() or fds.offset != fds.freed:
                        with fds.lock:  # (the heartbeat may be reading it: wait for it)
                            if fds.pending():
                                self._from_fds(*fds.read())
                            if fds.offset > fds.freed:  # (read by the heartbeat or here)
                                self._from_fds(fds.cut_text())
                                if fds.offset > fds.restart_at:  # (a hole counts as length)
                                    fds.rotate()
                                else:
                                    fds.empty()
                            self.active = False  # (what comes after is not the attempt's)
                            fd_log = self._fd_log()
                except OSError as exc:
                    fd_log = self._fd_log()
                    self._fds_broken(exc)
                if fd_log is not None:  # (after the prints: where among them, not known)
                    head, dropped, tail = fd_log.parts()
                    text = head.decode("utf-8", "replace")
                    tail_text = tail.decode("utf-8", "replace")
                    self._from_log(self.log, text, dropped, tail_text)
                    self._echo_fds(_joined(text, dropped, tail_text))
            self.active = False
            if self.log.head:  # (nothing written, nothing to flush)
                self.out.flush()
                self.err.flush()
            sys.stdout, sys.stderr = self._saved
        finally:
            self.held = False
        if self.deferred is not None:
            self._deliver()

    def _forked(self) -> None:
        """In a process a task forked (``multiprocessing``'s fork start): its
        ``sys.stdout`` and ``sys.stderr`` were the attempt's in-memory streams, which no
        one reads in the child; they write to descriptors 1 and 2 instead, which the
        capture reads into the attempt's log."""
        if self.active and self.fds is not None:
            sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace",
                              closefd=False)
            sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace",
                              closefd=False)
            self.active = False

    def stop_task(self, exc: BaseException) -> None:
        """Raise ``exc`` in the task (a signal handler's: the broker abandoned it, the
        worker drains), or, while :meth:`begin` or :meth:`end` is moving descriptors and
        streams, once they are done."""
        if self.held:
            self.deferred = exc
            return
        raise exc

    def _deliver(self) -> None:
        exc, self.deferred = self.deferred, None
        if exc is not None:
            raise exc

    def _fd_log(self) -> TaskLog | None:
        """The attempt's descriptor output read so far (call with the lock; None: none),
        and a new log for the next attempt's in its place."""
        fd_log = self.fd_log
        if not (fd_log.head or fd_log.dropped):
            return None
        self.fd_log = TaskLog()
        return fd_log

    def poll_fds(self) -> None:
        """What descriptors 1 and 2 received so far (the heartbeat thread, every 50 ms):
        into the running attempt's descriptor log, or, with none running, the daemon's
        stderr; what was read is let go past FD_TRIM. Never raises (the heartbeat thread
        must go on beating)."""
        fds = self.fds
        if fds is None:
            if self._broken_note and threading.current_thread() is threading.main_thread():
                self._fds_broken(CaptureLost(""))  # (logs what the heartbeat noted)
            return
        try:
            self._poll(fds)
        except Exception as exc:  # (the heartbeat thread must go on)
            self._fds_broken(exc)

    def _fds_broken(self, exc: Exception) -> None:
        """The capture's file failed (a task closed its descriptor, say): capture of
        descriptors 1 and 2 stops for this process, saying so (from the main thread: the
        heartbeat's notes it for the next), and they are the daemon's own again; prints
        are still kept."""
        fds = self.fds
        if fds is not None:
            self.fds = None
            try:
                fds.give_back()
            except OSError:
                pass
            self.out.fd = self.err.fd = None
            self._broken_note = str(exc)
        if threading.current_thread() is threading.main_thread() and self._broken_note:
            note, self._broken_note = self._broken_note, ""
            logging.getLogger("pymapreduce.worker").warning(
                "output written to file descriptors 1 and 2 is no longer captured: %s", note)

    def _poll(self, fds: FdCapture) -> None:
        """Read the file, from the heartbeat thread or the idle main thread. Only the main
        thread writes to a stream (the daemon's stderr), which may block: a heartbeat
        never waits on whoever reads those; and only the main thread writes to the
        attempt's log (the heartbeat's reads go to ``fd_log``, under the lock)."""
        main = threading.current_thread() is threading.main_thread()
        # (the main thread polls only while no task runs: no stop signal raises then)
        if fds.old:  # (also while a task runs: a left-behind writer fills no disk)
            with fds.lock:
                fds.prune_old(time.monotonic())
        if fds.pending():
            with fds.lock:
                if self.active:
                    self._from_fds(*fds.read())
                    if fds.offset - fds.freed > FD_TRIM:
                        fds.empty()
                elif main:
                    fds.to_daemon(_joined(*fds.read()))
                    fds.empty()
        if main:
            fds.send_out()

    def _from_fds(self, text: str, skipped: int = 0, tail: str = "") -> None:
        """Into the attempt's descriptor log (call with the lock held)."""
        self._from_log(self.fd_log, text, skipped, tail)

    @staticmethod
    def _from_log(log: TaskLog, text: str, skipped: int, tail: str) -> None:
        """``text``, ``skipped`` bytes left out, then ``tail``, into ``log``."""
        if text:
            log.write(text)
        if skipped:  # (the head is full by now: the bytes between are left out)
            log.dropped += skipped
        if tail:
            log.write(tail)

    def _echo_fds(self, text: str) -> None:
        echo = self.echo_err  # (which of the two descriptors wrote it is not known)
        if echo is not None:
            try:
                echo.write(text)
                echo.flush()
            except (OSError, ValueError):
                self.echo_err = self.err.echo = None

    def close(self) -> None:
        """The worker process ends (FdCapture.close)."""
        if self.fds is not None:
            try:
                self.fds.close()
            except OSError:  # (its file was closed under it: nothing left to read)
                pass
            self.fds = None

    @contextmanager
    def attempt(self) -> Iterator[TaskLog]:
        """While the block runs, what the task prints or logs goes to the yielded log."""
        try:
            yield self.begin()
        finally:
            self.end()


class _Stream(_Utf8Text):
    """One of the task's standard streams: into the shared log, echoed to its own stream.

    ``fileno()`` is the descriptor the stream's output goes to: with FdCapture, 1 or 2
    (code that hands ``sys.stdout`` to a subprocess has that output kept), else the
    daemon's own stream's (that output is not kept); ``buffer`` takes bytes."""

    def __init__(self, log: TaskLog, echo: Any, real: Any, fd: int | None = None) -> None:
        super().__init__()
        self.log = log
        self.echo = echo
        self.real = real
        self.fd = fd
        self.buffer = _Bytes(self)

    @property
    def errors(self) -> str:
        return "replace"

    def fileno(self) -> int:
        return self.real.fileno() if self.fd is None else self.fd

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
