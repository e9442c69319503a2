"""The supervisor's heartbeats on behalf of its worker processes.

A worker process beats from a thread of its own, but that thread needs the GIL, and user
code that holds it in one long C call (``sum(range(10**9))``, a regex on a huge string, a
C extension) silences it for as long as the call lasts: the broker then took a busy
worker for dead and re-ran its task, which did the same, until the job failed. The
supervisor runs no user code, so it vouches for its children instead: every heartbeat
interval it sends ``HEARTBEAT {"worker": <child's identity>}`` for each child that is
alive and not stopped.

What is vouched for is what the kernel says: a child whose ``/proc/PID/stat`` state is
running (R), sleeping (S) or in disk wait (D). A stopped or traced child (T, t: ``kill
-STOP``, a debugger), a zombie or a vanished one is not, so a frozen process still falls
silent and is purged after ``--liveness``; a whole frozen daemon beats for nobody. Without
``/proc`` (not Linux) nothing is vouched for and liveness rests on each process's own
heartbeat thread, as before.

The beat interval is the broker's: the children learn it from ``WELCOME`` and write it to
a page of memory shared with the supervisor (created before the first fork).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import uuid

import zmq

from ..patterns import config as timing
from ..patterns import protocol as P
from ..patterns.message import Message
from ..patterns.security import PeerKeys
from ..patterns.sockets import make_socket

log = logging.getLogger("pymapreduce.worker")

VOUCHED_STATES = frozenset("RSD")  # running, sleeping, disk wait: alive and not frozen
_INTERVAL = struct.Struct("d")


def process_state(pid: int) -> str:
    """The one-letter state of process ``pid`` from ``/proc`` ('' if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    # "pid (comm) state ...": comm may hold spaces and parentheses, so look after the last ')'
    end = stat.rfind(b")")
    return chr(stat[end + 2]) if 0 <= end < len(stat) - 2 else ""


class Voucher:
    """Beats for live children from the supervisor's own socket (same key, same broker).

    Create it before forking any child (the interval page must be shared), call
    :meth:`open` once the children are started, then :meth:`beat` from the supervisor's
    loop.
    """

    def __init__(self, connect: str, keys: PeerKeys | None = None) -> None:
        self.connect = connect
        self.keys = keys
        self.enabled = os.path.isdir("/proc/self")
        self._page = mmap.mmap(-1, _INTERVAL.size)  # anonymous and shared across fork
        _INTERVAL.pack_into(self._page, 0, timing.HEARTBEAT_INTERVAL)
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._last = 0.0
        self.sent = 0
        # its connection's identity: each child names it in READY, and the broker takes
        # beats for a child from its own sockets and this one only (and the same key)
        self.identity = b"s" + uuid.uuid4().bytes

    @property
    def interval(self) -> float:
        """Seconds between beats: the broker's heartbeat interval, as the children heard it."""
        value = _INTERVAL.unpack_from(self._page, 0)[0]
        return value if 0 < value <= timing.HEARTBEAT_INTERVAL else timing.HEARTBEAT_INTERVAL

    def learned(self, heartbeat: float) -> None:
        """Called in a child when the broker welcomes it: beat as often as it expects."""
        _INTERVAL.pack_into(self._page, 0, heartbeat)

    def open(self) -> None:
        """Connect the supervisor's socket (after the first fork: children start clean;
        later forks copy the context's descriptors, which the children never touch)."""
        if not self.enabled or self._sock is not None:
            return
        self._ctx = zmq.Context()
        sock = make_socket(self._ctx, zmq.DEALER, identity=self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # a beat is worth nothing later: never queue one
        if self.keys is not None:
            self.keys.apply(sock)
        sock.connect(self.connect)
        self._sock = sock

    def beat(self, now: float, children: dict[int, bytes]) -> None:
        """Every interval, vouch for each child (pid -> identity) that is alive and not
        stopped; the broker's answers are read and dropped (each child hears its own)."""
        sock = self._sock
        if sock is None:
            return
        while sock.poll(0, zmq.POLLIN):
            sock.recv_multipart()
        if now - self._last < self.interval:
            return
        self._last = now
        for pid, identity in list(children.items()):
            if process_state(pid) not in VOUCHED_STATES:
                continue
            try:
                sock.send_multipart(Message(P.HEARTBEAT, {"worker": identity}).encode(),
                                    zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:  # not connected (yet, or the broker is away): nothing to do
                return

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
