"""Sink daemons as the broker sees them: who they are, which partitions each job step
sends to which, and what a lost sink costs (no sockets; docs/sinks.md).

A mixin of :class:`~pymapreduce.broker.ledger.Ledger`. With no sink registered the broker
is the sink (its own store, today's path). Once sinks are registered, a job step's map
tasks are told, at its first dispatch, the list of sink addresses: partition ``r`` goes to
``sinks[r % len(sinks)]``. Mappers push their segments there and report only which
partitions they wrote; reducers are handed the (map, attempt) pairs to read from their
partition's sink. No shuffle byte passes through the broker.

A sink that falls silent for the liveness period (or says BYE) is lost with what it held.
Lineage, as the MapReduce paper re-runs a dead worker's maps: its partitions are handed to
live sinks, the committed map tasks that wrote to them run again, running maps of the step
are stopped and re-queued (they may be pushing to it), and the reduce tasks of its
partitions wait for the maps again. A reducer that finds segments missing (a sink that
restarted without its state, a damaged file) names the maps, and those run again too.
Without any live sink, the step falls back to the broker's own store.
"""

from __future__ import annotations

import logging
from typing import Any

from ..patterns import protocol as P
from ..patterns.sockets import check_endpoint
from ..patterns.wire import AttemptKey
from .reports import peer_name
from .tasks import DONE, MAP, PENDING, REDUCE, RUNNING, JobState

log = logging.getLogger("pymapreduce.broker")

MAX_SINKS = 1024
EXPECTED = b"\x00expected:"  # the route of a sink a restarted broker waits for
LOST_REPORTS = 8  # "segments missing" reports a reduce task gets re-run maps for, uncounted


class SinkState:
    """One registered sink daemon."""

    __slots__ = ("route", "address", "name", "durable", "last_seen", "carried", "key")

    def __init__(self, route: bytes, address: str, name: str, durable: bool,
                 now: float, key: str = "") -> None:
        self.key = key  # its CURVE public key (z85), on a broker with keys
        self.route = route
        self.address = address
        self.name = name
        self.durable = durable
        self.last_seen = now
        self.carried = {"in": 0, "out": 0, "segments": 0}  # as its heartbeats say


class Sinks:
    """Sink registration, partition assignment and sink loss; mixed into the Ledger."""

    sinks: dict[bytes, SinkState]

    # -- membership ----------------------------------------------------------------------
    def sink_joined(self, peer: bytes, body: dict, now: float, key: str = "") -> None:
        """SINK: a sink (re-)registers with the address workers reach it at (``key``: the
        CURVE key it was authenticated with, which workers are told)."""
        address = body.get("address")
        if not isinstance(address, str) or len(address) > 300:
            raise ValueError("a SINK names its address")
        check_endpoint(address)
        durable = bool(body.get("durable"))
        name = str(body.get("name", ""))[:200] or peer_name(peer)
        held = body.get("jobs")
        held = {j for j in held[:10000] if isinstance(j, str)} if isinstance(held, list) else set()
        empty = None  # an awaited sink this one replaces without its segments
        for other in list(self.sinks.values()):
            if other.route.startswith(EXPECTED) and other.address == address:
                # a sink a restarted broker waited for: back with the segments of its jobs
                # (the same process, or one that kept its state), or without them
                del self.sinks[other.route]
                if not any(j.id in held for j in self.jobs.values()
                           if j.state == P.JOB_RUNNING and j.sinks and address in j.sinks):
                    empty = other
                continue
            if other.route != peer and other.address == address:
                # the same address under another identity: a sink that restarted without
                # its state (the old one is lost once silent for the liveness period, and
                # this one is then taken), or a second sink misconfigured (or hostile):
                # refused, so two cannot take turns and re-run maps at every heartbeat
                raise ValueError(f"a sink is registered at {address} already; another "
                                 "is taken there once it has been silent for the broker's "
                                 "liveness period")
        old = self.sinks.get(peer)
        if old is not None and old.key != key:  # another key on a gone sink's identity
            self.lose_sink(old, "its identity re-registered under another key")
            old = None
        if old is not None and old.address != address:
            self.lose_sink(old, "it re-registered at another address")
            old = None
        if old is None and len(self.sinks) >= MAX_SINKS:
            raise ValueError(f"this broker takes at most {MAX_SINKS} sinks")
        self.sinks[peer] = SinkState(peer, address, name, durable, now, key)
        if empty is not None:  # (its maps run again now, to this sink, not when reducers
            # find them missing)
            self.lose_sink(empty, "it came back without the segments of its jobs")
        if old is None:
            self.news(peer_name(peer), "sink %s joined at %s%s", name, address,
                      " (with a state directory)" if durable else "")
        steps = [self._step_of(j) for j in self.jobs.values()
                 if j.state == P.JOB_RUNNING and j.sinks and address in j.sinks]
        if steps:  # (a sink that restarted with its state serves its steps again)
            self._send(peer, P.ASSIGN, {"steps": steps})
        self._sinks_settled()

    def sink_beat(self, peer: bytes, key: str, now: float, body: Any = None) -> bool:
        """A HEARTBEAT from ``peer``: True if it is a registered sink, under its key (whose
        counts of bytes in and out it carries are kept for listings)."""
        sink = self.sinks.get(peer)
        if sink is None or sink.key != key:
            return False
        sink.last_seen = now
        if isinstance(body, dict):
            for name in sink.carried:
                value = body.get(name)
                if type(value) is int and 0 <= value < (1 << 62):
                    sink.carried[name] = value
        return True

    def sink_left(self, peer: bytes, key: str = "") -> bool:
        """BYE from ``peer``: True if it was a sink (its segments are gone with it)."""
        sink = self.sinks.get(peer)
        if sink is None or sink.key != key:
            return False
        self.lose_sink(sink, "it left")
        return True

    def tick_sinks(self, now: float) -> None:
        for sink in [s for s in self.sinks.values() if now - s.last_seen > self.config.liveness]:
            self.lose_sink(sink, f"silent for {now - sink.last_seen:.1f}s")

    # -- assignment ----------------------------------------------------------------------
    def assign_sinks(self, job: JobState) -> None:
        """Fix where the partitions of ``job``'s current step go, at its first map
        dispatch: the registered sinks (none: the broker's own store)."""
        addresses = sorted(s.address for s in self.sinks.values()
                           if not s.route.startswith(EXPECTED))
        job.sinks = addresses
        by_route = {s.address: s.route for s in self.sinks.values()}
        for address in addresses:
            self._send(by_route[address], P.ASSIGN, {"steps": [self._step_of(job)]})

    @staticmethod
    def _step_of(job: JobState) -> list:
        """An ASSIGN entry: the job step, and how many partitions it has (a sink takes no
        PUT for a partition beyond them)."""
        return [job.id, job.step, job.reducers]

    def _tell(self, job: JobState, command: str, body: dict) -> None:
        """Send to every connected sink that serves ``job``'s step."""
        for sink in self.sinks.values():
            if sink.address in (job.sinks or ()) and not sink.route.startswith(EXPECTED):
                self._send(sink.route, command, body)

    def sunk_parts(self, job: JobState, stats: dict) -> list[int] | None:
        """The partitions a map task of a sink step says it pushed (None: malformed)."""
        parts = stats.pop("sunk", None)
        if not isinstance(parts, list) or any(
                type(p) is not int or not 0 <= p < job.reducers for p in parts):
            return None
        if any(a >= b for a, b in zip(parts, parts[1:])):
            return None
        return parts

    def reduce_split(self, job: JobState, part: int) -> list:
        """A reduce task's split in a sink step: its sink, the segments to read, and (on
        a broker with keys) the sink's public key."""
        address = job.sinks[part % len(job.sinks)]
        split = ["sink", address, job.step,
                 [[m, job.map_attempts[m]] for m in job.map_parts[part]]]
        if self.secured:
            split.append(self.sink_key(address))
        return split

    def sink_key(self, address: str) -> str:
        """The public key of the sink registered at ``address`` ("" if none is now)."""
        for sink in self.sinks.values():
            if sink.address == address and not sink.route.startswith(EXPECTED):
                return sink.key
        return ""

    def forget_at_sinks(self, job: JobState) -> None:
        """A job ended: its segments may go from every sink that took them."""
        self._tell(job, P.DROP, {"jobs": [job.id]})

    # -- a restarted broker --------------------------------------------------------------
    def restore_sink_commit(self, job: JobState, index: int, sink: Any) -> bool:
        """A journaled map commit whose segments are at sinks: ``[attempt, sinks]``.
        False when malformed (the map runs again)."""
        if (not isinstance(sink, list) or len(sink) != 2 or type(sink[0]) is not int
                or not isinstance(sink[1], list) or not sink[1]
                or not all(isinstance(a, str) for a in sink[1])):
            return False
        job.sinks = list(sink[1])  # (the journal's last word on where the step goes)
        job.map_attempts[index] = sink[0]
        return True

    def expect_sinks(self, now: float) -> None:
        """After recovery: wait a liveness period for the sinks the recovered steps use
        (they register again on their own); one that does not come back is lost."""
        for job in self.jobs.values():
            if job.state != P.JOB_RUNNING or not job.sinks:
                continue
            for address in job.sinks:
                route = EXPECTED + address.encode()
                if route not in self.sinks:
                    self.sinks[route] = SinkState(route, address, f"(expected) {address}",
                                                  True, now)
            job.sinks_expected = True
        self._sinks_settled()

    def _sinks_settled(self) -> None:
        """Jobs waiting for sinks a restarted broker expects: those whose step's sinks are
        all back (or were lost, and their partitions moved) go on. Until then their tasks
        are not handed out: a worker would run a map only to find that the broker cannot
        name the sink to push it to, and its failure would count against the task."""
        expected = {s.address for s in self.sinks.values() if s.route.startswith(EXPECTED)}
        for job in self.jobs.values():
            if job.sinks_expected:
                job.sinks_expected = (job.state == P.JOB_RUNNING and bool(job.sinks)
                                      and not expected.isdisjoint(job.sinks))

    # -- loss ----------------------------------------------------------------------------
    def lose_sink(self, sink: SinkState, reason: str) -> None:
        """A sink is gone with what it held: its partitions move, their maps run again."""
        self.sinks.pop(sink.route, None)
        live = sorted(s.address for s in self.sinks.values()
                      if not s.route.startswith(EXPECTED))
        affected = 0
        for job in list(self.jobs.values()):
            if job.state != P.JOB_RUNNING or not job.sinks or sink.address not in job.sinks:
                continue
            affected += 1
            old = list(job.sinks)
            lost = {r for r in range(job.reducers) if old[r % len(old)] == sink.address
                    and not (job.reduces and job.reduces[r].state == DONE)}
            if live:
                it = iter(live * len(old))
                job.sinks = [next(it) if a == sink.address else a for a in old]
                self._tell(job, P.ASSIGN, {"steps": [self._step_of(job)]})
            else:  # no sink left: the broker's own store takes the whole step
                job.sinks = []
                lost = {r for r in range(job.reducers)
                        if not (job.reduces and job.reduces[r].state == DONE)}
            self._rerun(job, lost, f"sink {sink.name} was lost ({reason})")
        self.news(peer_name(sink.route), "sink %s at %s removed (%s); %d job(s) re-run maps",
                  sink.name, sink.address, reason, affected)
        self._sinks_settled()

    def segments_lost(self, job: JobState, part: int, maps: Any) -> bool:
        """A reducer of partition ``part`` found these maps' segments missing at its sink:
        re-run them (True), or, past LOST_REPORTS reports, let the failure count (False)."""
        task = job.reduces[part] if job.reduces and 0 <= part < len(job.reduces) else None
        if task is None or not job.sinks or not isinstance(maps, list):
            return False
        named = set(job.map_parts[part])
        maps = {m for m in maps if type(m) is int and m in named}
        if not maps:
            return False
        job.lost_reports += 1
        if job.lost_reports > LOST_REPORTS * max(1, job.reducers):
            return False
        self._rerun(job, {part}, f"{len(maps)} segment(s) of partition {part} were missing",
                    only=maps)
        return True

    def _rerun(self, job: JobState, lost: set[int], why: str,
               only: set[int] | None = None) -> None:
        """Run again the committed maps that wrote to partitions ``lost`` (or ``only``
        those), stop the step's running maps (their pushes may be lost too), and make the
        reduce tasks of ``lost`` wait for the maps."""
        maps = set(only) if only is not None else {
            m for r in lost for m in job.map_parts[r]}
        maps = {m for m in maps if job.maps[m].state == DONE}
        stopped: dict[bytes, list[AttemptKey]] = {}
        if only is None:  # maps running now may be pushing to the lost sink
            for task in job.maps:
                if task.state == RUNNING:
                    for attempt, route in list(task.running.items()):
                        stopped.setdefault(route, []).append(
                            AttemptKey(job.id, MAP, task.index, attempt))
                    self._requeue_uncounted(task)
        for task in job.reduces:
            if task.index in lost and task.state in (RUNNING, PENDING):
                for attempt, route in list(task.running.items()):
                    stopped.setdefault(route, []).append(
                        AttemptKey(job.id, REDUCE, task.index, attempt))
        for route, keys in stopped.items():
            worker = self.workers.get(route)
            if worker is not None:
                worker.running.difference_update(keys)
            for key in keys:
                self._forget(key)
            self._abandon(route, job.id, keys)
            self.events.abandoned(job, keys, why)
        job.rerun_maps(maps, lost, whole=only is None)
        if maps:
            log.info("%s: %s: %d map task(s) run again", job.id, why, len(maps))
        self.events.phase(job)
        self._publish(job)

    def _requeue_uncounted(self, task: Any) -> None:
        """Stop a running map's attempts without blame and queue it again."""
        task.end_all()
        if task.state == RUNNING:
            task.move(PENDING)
            task.job.pending.appendleft(task)
