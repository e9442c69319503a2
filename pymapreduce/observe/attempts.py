"""A job's part of the event log (:class:`_JobLog`) and its attempt table: stored as
batches, bounded, closed (see events.py, which mixes :class:`AttemptTable` in).

A job's attempt table is its dispatch batches (the broker's tasks of one message and the
identifiers of their attempts, as they came), its commit batches (the tuples the commit
path noted) and the rare failed, killed or abandoned attempts by identifier; readers
join them (``reading.join_attempts``). Full, it lets its oldest rows go, except the
attempts the broker still runs, which the broker's own tasks say: those are set aside,
once, and looked at again only as often as they cost no dispatch more than a bounded
share (see :meth:`AttemptTable._drop_attempts`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from itertools import chain
from operator import attrgetter
from typing import Any

from ..patterns.protocol import JOB_RUNNING
from ..patterns.wire import duration

_KIND, _INDEX = attrgetter("kind"), attrgetter("index")  # a broker Task's (they never change)
_RUNNING = attrgetter("running")  # a broker Task's attempts running now
ABANDONED = "abandoned"  # an attempt's outcome: stopped where it ran (events.py)


def _running_in(tasks: tuple, attempts: tuple) -> list[int]:
    """The positions of those of ``attempts`` (of ``tasks``, one each) the broker still
    runs: its own state, not the log's (what a full attempt table keeps). The attempts
    of a job that ended were abandoned, though its tasks still name them."""
    if not any(map(_RUNNING, tasks)):  # the usual case, in C: none runs any attempt now
        return []
    return [i for i, (task, attempt) in enumerate(zip(tasks, attempts))
            if attempt in task.running and task.job.state == JOB_RUNNING]


def _holder(log: _JobLog, attempt: int) -> str | None:
    """The worker ``attempt`` was handed to, from its dispatch batch; None if the table
    has no row of it. (A failing attempt is mostly a recent one; a straggler's row may be
    set aside.)"""
    for batch in chain(reversed(log.batches), reversed(log.held)):
        if attempt in batch[4]:
            return batch[2]
    return None


class _JobLog:
    __slots__ = ("id", "job", "events", "count", "batches", "rows", "ends", "closed", "bytes",
                 "tenant", "started", "trimmed", "flow", "held", "held_rows", "held_seq",
                 "recheck", "lost", "rows_lost", "step", "step_out")

    def __init__(self, job: Any, per_job: int, tenant: str) -> None:
        self.id = job.id
        self.job = job  # (its tasks say which attempts still run, when rows must go)
        self.events: deque[tuple] = deque()  # entries; at most per_job events in all
        self.count = 0  # events in them
        # the attempt table, as stored: dispatch batches (seq, time, worker, step,
        # (attempt identifiers...), backup, (their tasks...)) oldest first, ``rows``
        # attempts in all; commit batches (seq, time, (the noted commits)); and attempt
        # identifier ->
        # [end, outcome, note, run secs] of the failed, killed and abandoned ones
        self.batches: deque[tuple] = deque()
        self.rows = 0  # (those of ``held`` too)
        # dispatch batches cut to the attempts the broker still ran when the table was
        # full (stragglers), oldest first and older than every one of ``batches``: set
        # aside so that no dispatch goes over them again, looked at once more when the
        # log's sequence number reaches ``recheck``; ``held_seq``: the sequence number at
        # which all of them were last seen running (a commit of one of them came after)
        self.held: list[tuple] = []
        self.held_rows = 0
        self.held_seq = 0
        self.recheck = 0
        self.ends: deque[tuple] = deque()
        self.closed: dict[int, list] = {}
        self.bytes = 0
        self.tenant = tenant
        self.started = False
        self.trimmed = 0  # events dropped from its ring (full, or over the byte budget)
        self.lost = 0  # the sequence number of the newest of them
        # the sequence number of the newest event its attempt table dropped (rows over
        # its cap or the cap of all jobs', with their commits): a reader before it missed it
        self.rows_lost = 0
        # kind -> [records in, bytes in, bytes out] of its committed tasks
        self.flow = {"map": [0, 0, 0], "reduce": [0, 0, 0]}
        # kind -> bytes out of the committed tasks of step ``step`` alone (the one its job
        # is on: the last phase's are what the job wrote as its result, see result_bytes)
        self.step = 0
        self.step_out = {"map": 0, "reduce": 0}


class AttemptTable:
    """The attempt table's upkeep, a mixin of :class:`~pymapreduce.observe.events.EventLog`
    (whose lock, jobs and bounds it uses)."""

    lock: threading.Lock
    _jobs: OrderedDict
    _rows: int
    attempts_per_job: int
    seq: int
    _rows_lost: int  # the newest event any attempt table dropped (reads of all jobs)

    def _drop_attempts(self, log: _JobLog, n: int) -> int:
        """The attempt table is full: its ``n`` oldest rows go, except those the broker
        still runs (a straggler stays on the timeline while it runs). Returns how many went.

        The rows kept for their running attempts are set aside (``log.held``), so the next
        dispatches do not go over them again: each drop looks at the rows it takes, not at
        every straggler there is. The set-aside rows are looked at again
        (:meth:`_recheck`) by the first drop once as many events as they are rows have
        been recorded since they were last looked at (rows set aside when none were, by
        the next drop: they cost what taking them cost). So their upkeep is a bounded
        share of each event whatever their number, and a row whose attempt ended goes
        once due. They are at most twice the attempts that still ran when they were last
        looked at (which the broker bounds), and a full table: those, and what was set
        aside since, out of the table then and the fewer events since.

        The commit batches older than every dispatch batch left go with them, except
        those after the set-aside rows were last seen running (a commit of one of them,
        which its row still needs)."""
        gone = self._recheck(log) if log.held and self.seq >= log.recheck else 0
        batches = log.batches
        closed = log.closed
        held = log.held
        newest = 0  # (of the events taken out of what reads serve: set-aside rows too)
        while gone < n and batches:
            batch = batches.popleft()
            attempts, tasks = batch[4], batch[6]
            take = min(n - gone, len(attempts))
            newest = batch[0] - (len(attempts) - take)  # (a batch's events are numbered
            # one after the other, to its own)
            if take < len(attempts):  # cut: the rest stays (its last events' numbers)
                batches.appendleft((*batch[:4], attempts[take:], batch[5], tasks[take:]))
            dropped, of = attempts[:take], tasks[:take]
            running = _running_in(of, dropped)
            if running:
                if not held:  # (seen running now; looked at again by the next drop)
                    log.held_seq, log.recheck = self.seq, self.seq + 1
                held.append((*batch[:4], tuple(dropped[i] for i in running), batch[5],
                             tuple(of[i] for i in running)))
                log.held_rows += len(running)
            gone += take - len(running)
            if closed:
                still = {dropped[i] for i in running}
                for attempt in dropped:
                    if attempt not in still:
                        closed.pop(attempt, None)
        oldest = batches[0][0] if batches else None  # the oldest dispatch batch left
        pinned = log.held_seq if held else None
        ends = log.ends
        while ends and (oldest is None or ends[0][0] < oldest) and (
                pinned is None or ends[0][0] <= pinned):
            newest = max(newest, ends.popleft()[0])  # (an attempt is committed after
            # it is dispatched)
        self._lost_rows(log, newest)
        log.rows -= gone
        self._rows -= gone
        return gone

    def _drop_table(self, log: _JobLog) -> None:
        """The whole attempt table of a job that no longer runs goes (the global cap
        takes the oldest jobs' rows first: an ended job's go together, in C, where a batch
        at a time would go over them in Python at every dispatch until all had gone)."""
        self._rows -= log.rows
        self._lost_rows(log, max(log.batches[-1][0] if log.batches else 0,
                                 log.ends[-1][0] if log.ends else 0))
        log.rows = log.held_rows = 0
        log.batches.clear()
        log.held.clear()
        log.ends.clear()
        log.closed.clear()

    def _lost_rows(self, log: _JobLog, newest: int) -> None:
        """Events up to ``newest`` left ``log``'s attempt table: a read of the job, its
        client's jobs or all jobs from before it is told it missed some."""
        if newest > log.rows_lost:
            log.rows_lost = newest
        if newest > self._rows_lost:
            self._rows_lost = newest

    def _recheck(self, log: _JobLog) -> int:
        """Look at the set-aside rows again: those whose attempts the broker no longer runs
        go (with their notes); the others are seen running now. Returns how many went."""
        closed = log.closed
        kept: list[tuple] = []
        gone = 0
        for batch in log.held:
            attempts, tasks = batch[4], batch[6]
            running = _running_in(tasks, attempts)
            if len(running) == len(attempts):
                kept.append(batch)
                continue
            gone += len(attempts) - len(running)
            still = {attempts[i] for i in running}
            for attempt in attempts:
                if attempt not in still:
                    closed.pop(attempt, None)
            if running:
                kept.append((*batch[:4], tuple(attempts[i] for i in running), batch[5],
                             tuple(tasks[i] for i in running)))
        log.held = kept
        log.held_rows -= gone
        log.held_seq = self.seq
        log.recheck = self.seq + max(1, log.held_rows)
        return gone

    def _end_attempt(self, job: Any, task: Any, attempt: int, outcome: str,
                     note: str = "", log: _JobLog | None = None) -> str:
        """Close an attempt's row; returns the worker it ran on ("" if unknown)."""
        log = log or self._jobs.get(job.id)
        if log is None:
            return ""
        worker = _holder(log, attempt)
        if worker is not None:
            row = log.closed.setdefault(attempt, [None, None, "", None])
            if row[0] is None:
                row[0], row[1], row[2] = time.time(), outcome, note[:200]
        return worker or ""

    # -- when attempts ran (the timeline from task start) ---------------------------------
    def ran(self, task: Any, attempt: int, secs: float | None) -> None:
        """A failed attempt's run time, as its worker measured it (FAILED's ``secs``), kept
        with its end for :meth:`timeline`. (A committed attempt's comes from its ``done``
        event, which carries it already: nothing is added per task.)"""
        if task is None or secs is None:
            return
        with self.lock:
            log = self._jobs.get(task.job.id)
            # (the broker checked that the reporter holds this attempt; the bound holds
            # whatever a caller passes: a row's note goes when its row goes)
            if log is not None and (attempt in log.closed or len(log.closed) <
                                    self.attempts_per_job + (self.attempts_per_job >> 3)):
                log.closed.setdefault(attempt, [None, None, "", None])[3] = secs

    def ran_abandoned(self, job_id: str, attempt: int, secs: Any, worker: str) -> None:
        """The run time of an attempt already abandoned, from a report that crossed its
        ABANDON (a DONE or FAILED from ``worker``, which the broker no longer counts;
        ``secs`` as it came). A stopped attempt is not reported, so this is the only run
        time an abandoned one can have. Kept on its abandoned row only, and only when
        ``worker`` is the one the attempt was handed to (its dispatch batch says), as if
        the attempt had ended when the report came, as a committed or failed one is
        placed from when its report came."""
        secs = duration(secs)
        if secs is None:
            return
        now = time.time()
        with self.lock:
            log = self._jobs.get(job_id)
            row = log.closed.get(attempt) if log is not None else None
            if row is not None and row[1] == ABANDONED and row[3] is None and \
                    _holder(log, attempt) == worker:
                # (the row ends when the broker abandoned it: run_start takes the run time
                # back from there, so the time the report took after it is taken off)
                row[3] = secs - (now - row[0])
