"""Waking a daemon's loop the moment a signal arrives.

A loop that waits in ``zmq.Poller.poll(timeout)`` or ``time.sleep`` notices a SIGTERM only
when its wait ends: Python runs the handler at once, but then resumes the wait (PEP 475).
That cost every embedded cluster up to a tenth of a second at exit, twice (broker and
worker supervisor). :class:`SignalWakeup` is a pipe that the interpreter's C-level signal
handler writes a byte to (``signal.set_wakeup_fd``); a loop that polls its read end
alongside its sockets wakes as soon as any handled signal arrives.
"""

from __future__ import annotations

import os
import select
import signal
import threading


class SignalWakeup:
    """A readable file descriptor while a signal is pending (main thread only; elsewhere,
    or where the platform refuses, ``fd`` is None and waiting simply times out)."""

    def __init__(self, enable: bool = True) -> None:
        self.fd: int | None = None
        self._write: int | None = None
        self._previous = -1
        if not enable or threading.current_thread() is not threading.main_thread():
            return
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        try:
            self._previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except (ValueError, OSError):
            os.close(read)
            os.close(write)
            return
        self.fd, self._write = read, write

    def drain(self) -> None:
        """Empty the pipe (the signals' handlers have run or will run)."""
        if self.fd is None:
            return
        try:
            while os.read(self.fd, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or until a signal arrives."""
        if self.fd is None:
            select.select([], [], [], seconds)
            return
        if select.select([self.fd], [], [], seconds)[0]:
            self.drain()

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            signal.set_wakeup_fd(self._previous)
        except (ValueError, OSError):
            pass
        os.close(self.fd)
        os.close(self._write)  # type: ignore[arg-type]
        self.fd = self._write = None
