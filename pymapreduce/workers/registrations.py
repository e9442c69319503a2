"""What the worker daemon says of its processes' registration with the broker.

Each worker process registers on its own (READY, answered by WELCOME), and again when a
broker asks it to (a restarted broker, or one that took it for dead). The daemon's ready
line comes before any of that; its supervisor then says in one line when its processes
have registered (``2 of 2 processes registered with ADDR``), once for all of them: not
once per process, per task or per heartbeat.

The processes tell the supervisor through a page of memory shared across the forks
(created before the first), a byte per process slot, written by that slot's process
only (and by the supervisor between a process's death and its replacement's fork): bit 0
says whether it is registered now (cleared when it sends READY, set at WELCOME), the
other bits count its WELCOMEs modulo 128, so a registration lost and regained between
two of the supervisor's looks (every 0.1 s) is still seen. A one-byte store cannot be
read half-written.

The supervisor's :meth:`Registrations.step` turns what it reads into lines. Registrations
seen since the last line make a round; the round is said when every process is registered
and each of them registered in it (all registered at start, all again after a broker
restart: one line), or when the last line counted fewer than all; otherwise (one process
restarted, or asked alone to register again) ``SETTLE`` seconds after the round began,
with the count registered then. So at most one line per ``SETTLE`` comes of anything but
every process registering.
"""

from __future__ import annotations

import mmap

from ..patterns import config as timing

# a round of registrations that does not include every process is said this long after
# its first one (the broker's liveness: a process not registered by then warns itself)
SETTLE = timing.LIVENESS


class Registrations:
    """The shared page of ``processes`` slots and the supervisor's reading of it.

    Create it before forking any child; a child calls :meth:`mark` for its slot, the
    supervisor :meth:`gone` for a dead child's slot (before forking its replacement) and
    :meth:`step` from its loop.
    """

    def __init__(self, processes: int, address: str) -> None:
        self.processes = processes
        self.address = address
        self._page = mmap.mmap(-1, max(1, processes))  # anonymous and shared across fork
        self._seen = [0] * processes  # each slot's count of WELCOMEs at the last look
        self._round: set[int] = set()  # slots registered since the last line
        self._began = 0.0  # when the round's first registration was seen
        self._said = 0  # processes registered, as the last line counted them

    # -- in a worker process -------------------------------------------------------------
    def mark(self, slot: int, registered: bool) -> None:
        """Slot ``slot``'s process sent READY (False) or was welcomed (True)."""
        value = self._page[slot]
        if registered:
            self._page[slot] = ((((value >> 1) + 1) & 0x7F) << 1) | 1
        else:
            self._page[slot] = value & ~1

    # -- in the supervisor ---------------------------------------------------------------
    def gone(self, slot: int) -> None:
        """Slot ``slot``'s process died: it is registered no more (its count is kept, so
        its replacement's first WELCOME is a registration)."""
        self._page[slot] &= ~1

    def step(self, now: float) -> str | None:
        """The line to log now, if any (see the module's docstring)."""
        page, seen, round_ = self._page, self._seen, self._round
        registered = 0
        for slot in range(self.processes):
            value = page[slot]
            registered += value & 1
            if value >> 1 != seen[slot]:
                seen[slot] = value >> 1
                if not round_:
                    self._began = now
                round_.add(slot)
        if not round_:
            return None
        everyone = registered == self.processes
        if not (everyone and (len(round_) == self.processes or self._said < registered)
                or now - self._began >= SETTLE):
            return None
        round_.clear()
        self._said = registered
        noun = "process" if self.processes == 1 else "processes"
        return f"{registered} of {self.processes} {noun} registered with {self.address}"

    def close(self) -> None:
        self._page.close()
