"""Shares of a loop's time: how a daemon's single loop bounds what peers' requests cost it.

A daemon's loop does everyone's work in one thread, and what a request costs to answer is
not what it costs to send: a job's page or its event history takes the loop milliseconds
to build, and a peer can ask for it thousands of times a second. Counting requests does
not bound that; counting the time their answers take does. A :class:`TimeBucket` holds
seconds of the loop's time for one kind of work: it is refilled at ``share`` of the time
that passes, up to ``burst`` seconds, and work goes ahead while it holds time, charged
afterwards what it took (the last piece may take it below empty; what follows then waits
until it is refilled past that). :class:`PeerShares` keeps a bucket per peer and one for
all peers together, so that one peer's volume costs the others, and the loop's own work,
no more than its share; when all together have spent theirs, the peers that have spent
little of their own still go ahead, and those that have spent it wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any


class TimeBucket:
    """Seconds of a loop's time that one kind of work may take (see the module's text)."""

    __slots__ = ("share", "burst", "level", "filled", "clock")

    def __init__(self, share: float, burst: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.share, self.burst, self.clock = share, burst, clock
        self.level = burst
        self.filled = clock()

    def fill(self) -> float:
        """Refill for the time since the last fill; returns the clock's reading."""
        t = self.clock()
        self.level = min(self.burst, self.level + (t - self.filled) * self.share)
        self.filled = t
        return t

    def ready(self) -> bool:
        """Whether work may go ahead now (the bucket holds time)."""
        self.fill()
        return self.level > 0

    def charge(self, seconds: float) -> None:
        self.level -= seconds


class PeerShares:
    """A :class:`TimeBucket` per peer (``share`` and ``burst`` each) and one for all of them
    together (``total_share``, ``total_burst``). A peer whose bucket is full holds no
    state: the buckets of peers that have been quiet long enough are forgotten past
    ``max_peers`` of them."""

    def __init__(self, share: float, burst: float, total_share: float, total_burst: float,
                 clock: Callable[[], float] = time.perf_counter,
                 max_peers: int = 1024) -> None:
        self.share, self.burst, self.clock = share, burst, clock
        self.total = TimeBucket(total_share, total_burst, clock)
        self.peers: dict[Hashable, TimeBucket] = {}
        self.max_peers = max_peers

    def ready(self, peer: Hashable) -> bool:
        """Whether ``peer``'s request may be answered now: its bucket holds time, and so
        does the total, unless ``peer`` has used little of its own lately (at most half
        its burst): others spending the total must not lock out a peer that asks now
        and then, while they wait for it to refill."""
        bucket = self.peers.get(peer)
        if bucket is not None and not bucket.ready():
            return False
        return self.total.ready() or bucket is None or bucket.level >= bucket.burst / 2

    def charge(self, peer: Hashable, seconds: float) -> None:
        """Charge what answering ``peer`` took to its bucket and to the total."""
        self.total.charge(seconds)
        bucket = self.peers.get(peer)
        if bucket is None:
            if len(self.peers) >= self.max_peers:
                self._forget_full()
            bucket = self.peers[peer] = TimeBucket(self.share, self.burst, self.clock)
        bucket.charge(seconds)

    def timed(self, peer: Hashable, work: Callable[[], Any]) -> Any:
        """Run ``work`` for ``peer`` and charge it what it took."""
        t = self.clock()
        try:
            return work()
        finally:
            self.charge(peer, self.clock() - t)

    def _forget_full(self) -> None:
        """Forget the buckets that have refilled to full (their peers owe nothing)."""
        for peer in [p for p, b in self.peers.items() if (b.fill(), b.level)[1] >= b.burst]:
            del self.peers[peer]
