"""The task table: jobs, their map and reduce tasks, and the allowed state changes.

Pure bookkeeping, no sockets: the broker daemon feeds it events and sends what it says.
"""

from __future__ import annotations

import os
import time
from collections import deque
from types import MappingProxyType
from typing import Any

from ..errors import PyMapReduceError
from ..patterns import protocol as P
from ..patterns.wire import ATTEMPT_NUMBER_BITS
from .submission import file_ranges

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"

# Which state may follow which. RUNNING -> PENDING: the worker died or the attempt
# failed with attempts left; RUNNING -> FAILED: attempts exhausted or job ended.
TRANSITIONS = {
    PENDING: frozenset({RUNNING, FAILED}),
    RUNNING: frozenset({DONE, PENDING, FAILED, RUNNING}),
    DONE: frozenset(),
    FAILED: frozenset(),
}

MAP, REDUCE = "map", "reduce"
ATTEMPT_BITS = ATTEMPT_NUMBER_BITS  # an attempt identifier: random bits, then its number
ATTEMPT_MASK = (1 << ATTEMPT_BITS) - 1
ATTEMPT_RANDOM_BITS = 50  # (msgpack carries it as one 8-byte int)
INT64 = (1 << 63) - 1


class _RandomBits:
    """ATTEMPT_RANDOM_BITS random bits per call, from the system's random source read 4 KiB
    at a time: as unpredictable as ``secrets.randbits`` (one system call each), at a
    tenth of its cost per attempt handed out."""

    def __init__(self) -> None:
        self._pool: list[int] = []

    def __call__(self) -> int:
        if not self._pool:
            raw = os.urandom(8 * 512)
            self._pool = [int.from_bytes(raw[i:i + 8], "little") >> (64 - ATTEMPT_RANDOM_BITS)
                          for i in range(0, len(raw), 8)]
        return self._pool.pop()


_random_bits = _RandomBits()


def _split_bytes(split: Any) -> int | None:
    """Bytes of a map split of byte ranges (JobState.split_bytes); the broker holds its
    ranges packed, as it sends them (submission.py)."""
    if type(split) is not list or len(split) < 2 or split[0] != "files":
        return None
    total = 0
    for r in file_ranges(split):
        if (type(r) is not list or len(r) != 3 or type(r[1]) is not int
                or type(r[2]) is not int or not 0 <= r[1] <= r[2]):
            return None
        total += r[2] - r[1]
    return total


def _saturated(total: int) -> int:
    """Totals of many reports stay within what msgpack (and the journal) can carry."""
    return max(-INT64, min(INT64, total))


NOTHING: frozenset = frozenset()
NONE: Any = MappingProxyType({})  # an empty mapping no one can add to by mistake


class IllegalTransition(PyMapReduceError):
    """A task was asked to move to a state its current state does not allow."""


class Task:
    """One map or reduce task; ``attempt`` counts the attempts handed out so far."""

    __slots__ = ("job", "kind", "index", "state", "attempt", "running", "failures", "started",
                 "avoid", "bad", "skip", "hopeless")

    def __init__(self, job: JobState, kind: str, index: int) -> None:
        self.job = job
        self.kind = kind
        self.index = index
        self.state = PENDING
        self.attempt = 0  # attempts handed out so far
        self.running: dict[int, bytes] = {}  # attempt -> worker route
        self.failures = 0
        self.started = 0.0  # when the first running attempt started
        # (shared empty ones until a failure adds to them: a job's tasks are made by the
        # ten thousand at its submission, and most never fail)
        self.avoid: set[bytes] | frozenset = NOTHING  # workers on which an attempt failed
        self.bad: dict[int, int] = NONE  # record ordinal -> failed attempts on it
        self.skip: dict[int, dict] = NONE  # record ordinal -> where it is: left out
        self.hopeless = 0  # failures its worker said no retry can mend

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"

    def avoid_worker(self, route: bytes) -> None:
        """An attempt failed on this worker: its next attempt goes elsewhere if it can."""
        if self.avoid is NOTHING:
            self.avoid = set()
        self.avoid.add(route)

    def move(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.job.id} {self.name}: {self.state} -> {state}")
        self.state = state

    def start(self, worker: bytes) -> int:
        """Hand a new attempt to ``worker``; returns its attempt identifier.

        The identifier's low ATTEMPT_BITS count the task's attempts (for people reading
        logs); the rest are random, so no one can name an attempt without having been
        handed it (the data plane of a broker without keys knows no senders)."""
        if not self.running:
            self.started = time.monotonic()
        if RUNNING not in TRANSITIONS[self.state]:  # (move(), without its call)
            self.move(RUNNING)
        self.state = RUNNING
        self.attempt += 1
        attempt = (_random_bits() << ATTEMPT_BITS) | (self.attempt & ATTEMPT_MASK)
        self.running[attempt] = worker
        self.job.active += 1
        self.job.dispatched = True
        return attempt

    def end(self, attempt: int) -> bytes | None:
        """An attempt is over (failed, lost); returns the worker it ran on."""
        route = self.running.pop(attempt, None)
        if route is not None:
            self.job.active -= 1
        return route

    def end_all(self) -> None:
        self.job.active -= len(self.running)
        self.running.clear()


class JobState:
    """A submitted job: its code and splits (opaque bytes), tasks, outputs and progress."""

    def __init__(
        self,
        job_id: str,
        name: str,
        code: Any,
        splits: list,
        reducers: int,
        map_only: bool,
        owner: bytes | None,
        now: float,
        *,
        options: dict | None = None,
    ) -> None:
        self.id = job_id
        self.options = options or {}
        # a multi-step job: [{"reducers", "map_only"}] per step; the outputs of one step
        # are the map inputs of the next (splits ["step", k, part]), inside the cluster
        self.steps: list[dict] = list(self.options.get("steps") or [])
        self.step = 0
        self.priority = float(self.options.get("priority", 1) or 1)
        self.requires = frozenset(self.options.get("requires") or ())
        self.active = 0  # attempts running (or queued on a worker) now: its slots in use
        self.served = 0.0  # seconds of work handed out, as the fair share counts them
        self.task_secs: float | None = None  # moving mean of its tasks' run times
        self.dispatched = False  # a task has been handed out: running, no longer queued
        self.waiting = ""  # why no task can be handed out, when none can
        # a restarted broker waits for the sinks its step uses (sinkplan.expect_sinks):
        # its tasks are not handed out meanwhile (a worker could not reach them)
        self.sinks_expected = False
        self.held = 0  # bytes of code and inputs it holds (its client's limit counts them)
        self.tenant = str(self.options.get("tenant", ""))  # the client it belongs to
        self.seq = 0  # the journal's number for this job (0: not journaled)
        self.recovered = 0  # tasks whose commit a restarted broker read from its journal
        self.released = False  # finished, and its client released its outputs
        self.name = name
        self.code = code
        self.splits = splits  # per map task: ["mem", blob] or ["files", [[path, start, end]...]]
        self.reducers = reducers
        self.map_only = map_only
        self.state = P.JOB_RUNNING
        self.phase = MAP
        self.maps = [Task(self, MAP, i) for i in range(len(splits))]
        self.reduces: list[Task] = []
        self.pending: deque[Task] = deque(self.maps)
        self.done_maps = 0
        self.done_reduces = 0
        self.map_parts: list[list[int]] = [[] for _ in range(reducers)]  # r -> map indexes
        self.counters: dict[str, int] = {}
        self.records = 0
        self.bytes_in = 0
        # running map attempts' input read so far, from their heartbeats (map index ->
        # (attempt, records, bytes)): counted in the job's progress until the task commits
        self.reading: dict[int, tuple[int, int, int]] = {}
        # (splits, each one's bytes, their sum): split_bytes(), input_bytes()
        self._split_sizes: tuple | None = None
        self.watchers: set[bytes] = {owner} if owner else set()
        self.error: dict | None = None
        self.submitted = now
        self.finished: float | None = None
        self.dirty = False
        self.last_event = 0.0
        self.backups = 0  # second attempts started for stragglers
        self.skipped: list[dict] = []  # bad records left out of committed map tasks
        self.skips = 0  # records given up on so far (committed or not)
        self.durations = {MAP: [0.0, 0], REDUCE: [0.0, 0]}  # kind -> [total s, count]
        self.fetch_waiters: list[tuple] = []  # FETCHes waiting for their partition
        self._sink_step()

    def _sink_step(self) -> None:
        """Sink bookkeeping of the current step (broker/sinkplan.py)."""
        self.sinks: list[str] | None = None  # partition r -> sinks[r % n]; [] the broker
        self.map_attempts: dict[int, int] = {}  # committed map -> its attempt (at the sink)
        self.redone: set[int] = set()  # committed maps running again (a sink was lost)
        self.blocked: set[int] = set()  # reduce tasks waiting for maps that run again
        self.lost_reports = 0  # reducers' reports of missing segments
        if not hasattr(self, "reruns"):
            self.reruns = 0  # map tasks run again for lost segments, over the job

    def rerun_maps(self, maps: set[int], lost: set[int], whole: bool = True) -> None:
        """Lineage: committed ``maps`` run again to rebuild partitions ``lost``, whose
        reduce tasks (if the reduce phase began) wait for them. ``whole``: every segment
        of those partitions is gone (their sink was lost), not only the maps'.

        ``map_parts[r]`` holds each map at most once: a map that commits again is added
        only to the partitions it is missing from (those emptied here), so a partition
        lost twice while its maps run again never counts a map twice."""
        for r in lost:
            self.map_parts[r] = [] if whole else [
                m for m in self.map_parts[r] if m not in maps]
        for m in sorted(maps):
            task = self.maps[m]
            task.state = PENDING  # (the one way back from DONE: its output was lost)
            task.end_all()
            self.done_maps -= 1
            self.pending.append(task)
            # (its old attempt's segments for partitions not lost are still at live
            # sinks, and reduce tasks of those partitions may be handed out meanwhile)
            self.reruns += 1
        self.redone |= maps
        if self.reduces:
            for r in lost:
                task = self.reduces[r]
                if task.state == DONE:
                    continue
                task.end_all()
                task.state = PENDING
                if task in self.pending:
                    self.pending.remove(task)
                self.blocked.add(r)
            if self.done_maps < len(self.maps):
                self.phase = MAP
            else:
                self._unblock()
        self.dirty = True

    def _unblock(self) -> None:
        """The maps that ran again have all committed: the waiting reduce tasks go."""
        self.phase = REDUCE
        for r in sorted(self.blocked):
            task = self.reduces[r]
            if self.map_parts[r]:
                self.map_parts[r].sort()
                self.pending.append(task)
            else:
                task.state = DONE
                self.done_reduces += 1
        self.blocked.clear()
        self.redone.clear()
        if self.done_reduces == len(self.reduces):
            self._step_done()

    # -- progress ------------------------------------------------------------------------
    def tasks(self, kind: str) -> list[Task]:
        return self.maps if kind == MAP else self.reduces

    @property
    def output_parts(self) -> int:
        """How many output partitions a client fetches: map tasks (map-only) or reducers
        (0 until a multi-step job reaches its last step)."""
        if not self.last_step:
            return 0
        return len(self.maps) if self.map_only else self.reducers

    def part_done(self, part: int) -> bool:
        """Whether output partition ``part`` is committed (and so can be fetched)."""
        if not self.last_step:
            return False
        if self.map_only:
            return self.maps[part].state == DONE
        return bool(self.reduces) and self.reduces[part].state == DONE

    def commit(self, task: Task, stats: dict, nonempty_parts: list[int],
               restored: bool = False) -> None:
        """Record a committed task; after the last map, queue the reduce tasks.

        ``nonempty_parts`` lists the partitions this map task wrote something to.
        ``restored``: the commit comes from the journal of a restarted broker.
        """
        if restored:
            task.state = DONE  # it never ran in this broker's lifetime
            self.recovered += 1
        else:
            if DONE not in TRANSITIONS[task.state]:  # (move(), without its call)
                task.move(DONE)
            task.state = DONE
            spent = self.durations[task.kind]
            spent[0] += time.monotonic() - task.started
            spent[1] += 1
        self.active -= len(task.running)  # (end_all(), without its call)
        task.running.clear()
        # (a map run again to rebuild a lost sink's segments was counted at its first
        # commit: its counters, records and skipped records are not added twice)
        if not self.redone or task.kind != MAP or task.index not in self.redone:
            skipped, counters = stats.get("skipped"), stats.get("counters")
            if skipped:
                self.skipped.extend(skipped)
            if counters:
                for name, n in counters.items():
                    self.counters[name] = _saturated(self.counters.get(name, 0) + n)
            if task.kind == MAP:  # (the job's input; a reduce task's is in its flow)
                records = self.records + stats.get("records", 0)
                self.records = records if -INT64 <= records <= INT64 else _saturated(records)
                nbytes = self.bytes_in + stats.get("bytes", 0)
                self.bytes_in = nbytes if -INT64 <= nbytes <= INT64 else _saturated(nbytes)
        self.dirty = True
        if task.kind == REDUCE:
            self.done_reduces += 1
            if self.done_reduces == len(self.reduces):
                self._step_done()
            return
        self.done_maps += 1
        if self.reading:
            self.reading.pop(task.index, None)
        if not self.map_only:
            redone = task.index in self.redone
            for r in nonempty_parts:  # (a re-run adds itself only where it is missing)
                if not redone or task.index not in self.map_parts[r]:
                    self.map_parts[r].append(task.index)
        if self.done_maps < len(self.maps):
            return
        if self.map_only:
            self._step_done()
            return
        if self.reduces:  # maps ran again after the reduce phase began (a sink was lost)
            self._unblock()
            return
        self.phase = REDUCE
        # (a reduce task's cost is not its maps': unknown again, so the first ones go
        # out as a new job's do, at most 2 a worker, until one commits)
        self.task_secs = None
        self.redone.clear()
        self.reduces = [Task(self, REDUCE, r) for r in range(self.reducers)]
        for r, t in enumerate(self.reduces):
            if self.map_parts[r]:
                self.map_parts[r].sort()  # map-task order: reduce sees values in input order
                self.pending.append(t)
            else:  # nothing was mapped to this partition: its output is empty
                t.state = DONE
                self.done_reduces += 1
        if self.done_reduces == len(self.reduces):
            self._step_done()

    def read_progress(self, task: Task, attempt: int, records: int, nbytes: int) -> None:
        """A running attempt of map ``task`` has read ``records`` and ``nbytes`` of its
        split so far (checked by the caller: it is the holder's, and they are counts). One
        attempt per task is counted, the one furthest on, so that a backup does not count
        the split twice; the bytes never exceed the split's, as its commit will count them.
        A map run again for a lost sink counts nothing: its first commit counted it."""
        if self.redone and task.index in self.redone:
            return
        size = self.split_bytes(task.index)
        if size is not None and nbytes > size:
            nbytes = size
        got = self.reading.get(task.index)
        if got is not None and got[0] != attempt and got[0] in task.running and (
                got[2], got[1]) >= (nbytes, records):
            return
        self.reading[task.index] = (attempt, records, nbytes)

    def split_bytes(self, index: int) -> int | None:
        """Bytes of map ``index``'s split as a file split names them (None: not a split
        of byte ranges, or one read whole); worked out once a step, as a heartbeat asks
        it each time (a split of many small files names thousands of ranges)."""
        sizes = self._sizes()[0]
        return sizes[index] if 0 <= index < len(sizes) else None

    def input_bytes(self) -> int | None:
        """The bytes of this step's map splits when every one is a split of byte ranges
        (None otherwise), worked out once."""
        return self._sizes()[1]

    def _sizes(self) -> tuple[list, int | None]:
        known = self._split_sizes
        if known is None or known[0] is not self.splits:
            sizes = [_split_bytes(s) for s in self.splits]
            known = self._split_sizes = (self.splits, sizes,
                                         None if None in sizes else sum(sizes))
        return known[1], known[2]

    def read_so_far(self) -> tuple[int, int]:
        """Records and bytes read: of the committed tasks, and of the running map attempts
        that said so in their heartbeats (those still running)."""
        records, nbytes = self.records, self.bytes_in
        if self.reading:
            maps = self.maps
            for index, (attempt, r, b) in list(self.reading.items()):
                task = maps[index] if index < len(maps) else None
                if task is None or task.state != RUNNING or attempt not in task.running:
                    del self.reading[index]  # (ended, or another step's)
                    continue
                records += r
                nbytes += b
        return _saturated(records), _saturated(nbytes)

    @property
    def last_step(self) -> bool:
        return self.step >= len(self.steps) - 1

    def _step_done(self) -> None:
        """The current step is done: the job succeeds, or its outputs feed the next step."""
        if self.last_step:
            self.finish(P.JOB_SUCCEEDED)
            return
        if self.map_only:
            inputs = list(range(len(self.maps)))
        else:
            inputs = [r for r in range(self.reducers) if self.map_parts[r]]
        self.step += 1
        spec = self.steps[self.step]
        self.reducers = int(spec["reducers"])
        self.map_only = bool(spec["map_only"])
        self.splits = [["step", self.step - 1, p] for p in inputs]
        self.phase = MAP
        self.task_secs = None  # (nor is a step's the step's before)
        self.maps = [Task(self, MAP, i) for i in range(len(self.splits))]
        self.reduces = []
        self.pending = deque(self.maps)
        self.done_maps = self.done_reduces = 0
        self.map_parts = [[] for _ in range(self.reducers)]
        self._sink_step()
        if not self.maps:  # the last step produced nothing: so does every later one
            self.step = len(self.steps) - 1
            spec = self.steps[self.step]
            self.reducers = int(spec["reducers"])
            self.map_only = bool(spec["map_only"])
            self.reduces = [Task(self, REDUCE, r) for r in range(self.reducers)]
            for t in self.reduces:
                t.state = DONE
            self.finish(P.JOB_SUCCEEDED)

    def mean_duration(self, kind: str) -> float | None:
        """Mean seconds of this job's committed tasks of ``kind`` (None before the first)."""
        total, count = self.durations[kind]
        return total / count if count else None

    def finish(self, state: str, error: dict | None = None) -> None:
        if self.state in P.JOB_TERMINAL:
            return
        self.state = state
        self.error = error
        self.phase = "done"
        self.finished = time.monotonic()
        self.pending.clear()
        self.reading.clear()  # its attempts still out there count for nothing now
        self.dirty = True

    def status(self, now: float) -> dict:
        end = self.finished if self.finished is not None else now
        records, nbytes = self.read_so_far()
        state = self.state
        if state == P.JOB_RUNNING and not self.dispatched:
            state = P.JOB_QUEUED
        status = {
            "job_id": self.id,
            "name": self.name,
            "state": state,
            "priority": self.priority,
            "requires": sorted(self.requires),
            "phase": self.phase,
            "maps": [self.done_maps, len(self.maps)],
            "reduces": [self.done_reduces, 0 if self.map_only else self.reducers],
            "parts": self.output_parts,
            "map_only": bool(self.steps[-1]["map_only"]) if self.steps else self.map_only,
            "emits": bool(self.options.get("emits")),  # the result: a list of pairs
            "counters": dict(self.counters),
            "backups": self.backups,
            "recovered": self.recovered,
            "reruns": self.reruns,
            "skipped": self.skipped[:1000],
            "records": records,
            "bytes": nbytes,
            "elapsed": round(end - self.submitted, 6),
            "step": [self.step + 1, max(1, len(self.steps))],
        }
        if self.error:
            status["error"] = self.error
        if self.released:
            status["released"] = True
        if self.options.get("output"):  # where the reducers write (no credentials)
            status["output"] = self.options["output"]
        if self.waiting and state in (P.JOB_RUNNING, P.JOB_QUEUED):
            status["waiting"] = self.waiting
        return status
