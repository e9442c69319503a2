"""The broker's event log: job and task events, bounded, and the attempt table.

The ledger calls one method here per thing that happens (a job submitted, attempts
dispatched, done, failed, lost with its worker, abandoned, a record skipped...); each is
recorded with the broker's wall-clock time and a sequence number (the cursor a reader
resumes from). Memory is bounded whatever peers do: the attempt table of a job keeps at
most ``attempts_per_job`` rows (and an eighth; and the attempts the broker still runs,
which it bounds: set aside, and looked at again once as many events as they are rows
have been recorded, see attempts.py), the rings of the other events a fixed number of
events each (the job's, and the global one of all), error texts and tracebacks are cut,
and past ``max_bytes`` in all the oldest jobs' events go first. A job's records are
freed when the broker forgets the job.

Recording is on the broker loop's path of every task, so the two events every attempt
has are recorded in batches, and no call is made per attempt: the attempts of one TASKS
message with one call (``dispatched``, given the message's tasks and their attempts'
identifiers, kept as an array of 64-bit ints), the attempts committed in one turn of the
loop together (the commit path adds NOTE items to the flat list ``noted``: a commit's, as
:meth:`EventLog.done` does, or a run of a DONE's reports as received, REPORTS in
reading.py; ``flush`` records them, packed in C by ``speedups.pack_notes`` into bytes,
50 a commit). Each batch is stored once, as a batch of the job's attempt table, and is
no ring entry: readers take these events from the tables and merge them with the rings
by sequence number (reading.py, which expands a packed batch when read). A batch holds
names, numbers and bytes (the dispatch batch's tasks aside), which the garbage
collector stops tracking the first time it sees it, where a list, or an object per
attempt, would be gone over at every collection for as long as it is kept. The attempt
table is the job's dispatch batches plus its commit batches, joined by attempt
identifier when read (the rare failures, kills and abandons are kept by identifier).
What that costs per task, against a broker started with ``--no-events``, is in
benchmarks/RESULTS.md (``bench_event_cost.py``, ``bench_observe_steps.py``,
``bench_broker_cpu.py``).

Events carry names, numbers, error texts and input positions only: never job code, never
a key or value of the data (an input position's ``key`` is left out).

The broker loop writes; readers (the HTTP thread, the metrics collector) read under the
same lock, held only to append or to copy a slice, so neither side waits for long.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import OrderedDict, deque
from itertools import chain
from typing import Any

from ..errors import line_offset
from ..patterns.protocol import JOB_RUNNING
from ..speedups import UINT64, pack_notes
from .attempts import _KIND, ABANDONED, AttemptTable, _holder, _JobLog
from .reading import ATTEMPT_MASK, NOTE, PACKED, REPORTS, SMALL, Reading, noted_commits, notes

MAX_ERROR = 1000  # characters of an error message kept in an event
MAX_TRACEBACK = 8000  # ... of a traceback (its end: where it raised)
MAX_TENANTS_LOST = 4096  # clients whose forgotten jobs' newest events are remembered
POSITION_FIELDS = ("split", "path", "ordinal", "record", "partition")
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, float("inf"))
# attempts' outcomes (and ABANDONED, from attempts.py)
RUNNING, DONE, FAILED, KILLED = "running", "done", "failed", "killed"
MAP, REDUCE = "map", "reduce"  # a task's kinds (broker/tasks.py)
# a noted commit is NOTE (reading.py) consecutive items of a flat list or tuple: (job,
# kind, index, attempt, worker, secs, records, bytes, bytes out); a column is a slice


def safe_position(position: Any) -> dict:
    """An input position without data values: the split, file, ordinal, offset... (a
    reduce task's ``key`` is the user's data, so it never leaves the broker this way)."""
    if not isinstance(position, dict):
        return {}
    safe = {k: position[k] for k in POSITION_FIELDS if k in position
            and (type(position[k]) in (int, float) or isinstance(position[k], str))}
    offset = line_offset(position.get("key"), safe.get("path"))
    if "path" in safe and offset is not None:
        safe["offset"] = offset  # a file's record: its key is its byte offset (and path)
    return safe


def _size(fields: dict) -> int:
    """About what an event with these fields costs in memory (its texts dominate, also
    those in a list or a map: a worker's tags, an abandon's tasks, an input position)."""
    size = SMALL
    for v in fields.values():
        if isinstance(v, str):
            size += len(v)
        elif isinstance(v, (list, tuple, dict)):
            size += sum(len(x) + 50 for x in (v.values() if isinstance(v, dict) else v)
                        if isinstance(x, str))
    return size


def _events_in(entry: tuple) -> int:
    return entry[7]


class EventLog(AttemptTable, Reading):
    """Bounded rings of events, per job and global, plus counters the metrics read."""

    enabled = True

    def __init__(self, *, per_job: int = 2000, global_events: int = 10_000,
                 attempts_per_job: int = 5000, max_attempts: int = 200_000,
                 max_bytes: int = 64 << 20) -> None:
        self.lock = threading.Lock()
        self.seq = 0
        self.per_job = per_job
        self.attempts_per_job = attempts_per_job
        self.max_attempts = max_attempts  # attempt rows of all jobs (~100 bytes each)
        self._rows = 0
        self.max_bytes = max_bytes
        # the global ring: entries of at most global_events events in all (bounded by
        # events, not entries: a batch entry holds many, and every event kept costs the
        # garbage collector's passes too)
        self._global: deque[tuple] = deque()
        self._global_count = 0
        self._global_lost = 0  # the sequence number of the newest entry it dropped
        self._rows_lost = 0  # ... and of the newest event an attempt table dropped
        # client (tenant) -> the newest event of a job of its the broker forgot (with its
        # ring and table: no longer read for that client); at most MAX_TENANTS_LOST
        self._tenant_lost: dict[str, int] = {}
        self.global_events = global_events
        self._jobs: OrderedDict[str, _JobLog] = OrderedDict()
        # the jobs whose rings hold events, oldest first: what trimming takes from, found
        # at once (a scan of every job's ring per event cost O(jobs) once over budget)
        self._holding: OrderedDict[str, _JobLog] = OrderedDict()
        self._bytes = 0
        # monotonically increasing totals (Prometheus counters), by name and label
        self.counts: dict[tuple, float] = {}
        self.durations = [0] * len(DURATION_BUCKETS)  # finished jobs' seconds, by bucket
        self.duration_sum = 0.0
        # commits noted by the broker loop (see done()), not yet recorded, NOTE items
        # each; the same list for the log's life (the commit path holds it as ``noted``)
        self._pending: list = []
        self.noted: list | None = self._pending if self.enabled else None
        self._writer = threading.get_ident()  # the broker loop's thread, which flushes

    # -- writing (the broker loop) -------------------------------------------------------
    def _count(self, name: str, label: str = "", n: float = 1) -> None:
        key = (name, label)
        self.counts[key] = self.counts.get(key, 0) + n

    def _emit(self, job: str | None, etype: str, /, **fields: Any) -> None:
        """Record one (infrequent) event; the caller holds ``lock``."""
        self.seq += 1
        size = _size(fields)
        self._push(self._jobs.get(job) if job is not None else None,
                   (self.seq, time.time(), etype, job, fields, size, None, 1))

    def _push(self, log: _JobLog | None, entry: tuple) -> None:
        """Append an entry to the global ring and its job's, dropping the oldest entries of
        a ring past its count of events; the caller holds ``lock``. An entry is ``(seq,
        time, type, job, fields, size, extra, n)``: its last sequence number, ..., what it
        costs in memory and the events it holds (see reading.expand)."""
        size, n = entry[5], entry[7]
        ring = self._global
        ring.append(entry)
        self._bytes += size
        self._global_count += n
        while self._global_count > self.global_events and len(ring) > 1:
            gone = ring.popleft()
            self._bytes -= gone[5]
            self._global_count -= gone[7]
            self._global_lost = gone[0]
        if log is not None:
            ring = log.events
            if not ring:
                self._holding[log.id] = log
            ring.append(entry)
            log.bytes += size
            self._bytes += size
            log.count += n
            while log.count > self.per_job and len(ring) > 1:
                gone = ring.popleft()
                k = gone[7]
                log.bytes -= gone[5]
                self._bytes -= gone[5]
                log.count -= k
                log.trimmed += k
                log.lost = gone[0]
        if self._bytes > self.max_bytes:
            while self._bytes > self.max_bytes and self._trim_oldest():
                pass

    def _trim_oldest(self) -> bool:
        """Over the byte budget: the oldest events of the job that has held events longest
        go (a job whose ring was emptied counts from its next event; then the global's)."""
        for log in self._holding.values():
            entry = log.events.popleft()
            k = entry[7]
            log.bytes -= entry[5]
            self._bytes -= entry[5]
            log.count -= k
            log.trimmed += k
            log.lost = entry[0]
            if not log.events:
                del self._holding[log.id]
            return True
        if self._global:
            entry = self._global.popleft()
            self._bytes -= entry[5]
            self._global_count -= entry[7]
            self._global_lost = entry[0]
            return True
        return False

    def job_submitted(self, job: Any, recovered: bool = False) -> None:
        """A job accepted (``recovered``: reloaded from the journal by a restarted
        broker, in whatever state it was)."""
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            if job.id not in self._jobs:
                self._jobs[job.id] = _JobLog(job, self.per_job, job.tenant)
            if not recovered:
                self._count("jobs_submitted")
            self._emit(job.id, "job-recovered" if recovered else "job-submitted",
                       name=job.name, maps=len(job.maps), reducers=job.reducers,
                       steps=max(1, len(job.steps)), state=job.state)

    def dispatched(self, job: Any, tasks: list, attempts: list, worker: str,
                   backup: bool = False, maps: int | None = None) -> None:
        """Attempts of ``job`` handed to ``worker`` in one message: ``tasks`` (the broker's
        Task objects, whose kind and index never change; a list is kept as it is, so
        its caller must not change it after) and the identifier of each one's new
        attempt, in ``attempts``; ``backup``: they are backup attempts (another attempt
        of each still runs); ``maps``: how many of the tasks are map tasks, when the caller counted
        them (the dispatcher does, as it goes over them: a pass here that reads each
        task's kind cost more than the rest of the call).

        One call per message, not per attempt (a message carries tens of them at full
        rate), nothing built per attempt in Python, and no ring entry: the message is
        kept once, as a batch of the job's attempt table (the attempt identifiers as a
        tuple of ints, which the collector stops tracking at its first pass, and the
        tasks, freed with the job), and :meth:`since` reads its events from there. The
        lock, the clock and the job's log are dealt with once."""
        n = len(attempts)
        if not n:
            return
        step = job.step + 1
        now = time.time()
        # (the identifiers as an array of uint64: 8 bytes each in one object, which the
        # collector never goes over, where a tuple keeps an int object for each)
        attempts = attempts if type(attempts) is array else array(UINT64, attempts)
        if type(tasks) is not list:  # (the dispatcher's is: kept as it is)
            tasks = list(tasks)
        # the broker loop's thread, which notes commits (an attempt is dispatched before
        # it commits): its reads record them first, and no other thread's read does
        self._writer = threading.get_ident()
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            log = self._jobs.get(job.id)
            if log is not None and not log.started:
                log.started = True
                self._emit(job.id, "job-started")
            if maps is None:
                maps = list(map(_KIND, tasks)).count(MAP)
            for kind, k in ((MAP, maps), (REDUCE, n - maps)):
                if k:
                    self._count("attempts", kind, k)
                    if backup:
                        self._count("backups", kind, k)
            self.seq += n
            # (no ring entry: the batch is the events, read from the attempt table)
            if log is not None:
                log.batches.append((self.seq, now, worker, step, attempts, backup, tasks))
                log.rows += n
                self._rows += n
                # past the cap by an eighth, back to it: rows go in batches, not one per
                # attempt dispatched
                if log.rows > self.attempts_per_job + (self.attempts_per_job >> 3):
                    self._drop_attempts(log, log.rows - self.attempts_per_job)
                if self._rows > self.max_attempts:  # the oldest jobs' rows go first
                    for other in self._jobs.values():  # (one whose rows all still run
                        if not other.rows:             # holds none back: the next goes)
                            continue
                        if other.job.state != JOB_RUNNING:  # nothing of it runs: all go
                            self._drop_table(other)          # at once, not a batch a time
                        else:
                            self._drop_attempts(other, min(other.rows,
                                                           self._rows - self.max_attempts))
                        if self._rows <= self.max_attempts:
                            break

    def done(self, key: tuple, stats: dict, secs: Any, blobs: list, worker: str = "") -> None:
        """An attempt committed on ``worker``: its key ``(job, kind, index, attempt)``, its
        seconds (as its worker measured), records and bytes read (``stats``, as the broker
        checked them: counts are ints), and ``blobs``, its outputs (only their sizes are
        kept).

        It only notes the attempt, as the event it will be: its NOTE items added to a
        flat list (no object is kept per attempt: each one is one more for the garbage
        collector to count and go over); :meth:`flush` records the noted ones together,
        under one lock and one clock reading (the broker loop calls it once a turn, and
        every other event flushes first, so the order of events is kept). The broker's
        commit path does the same without the call (broker/commits.py: one call per task
        is a cost the log cannot afford there): the items it adds to ``noted`` are
        these."""
        try:  # (checked statistics have both counts: subscripts cost less than get())
            records, nbytes = stats["records"], stats["bytes"]
        except KeyError:
            records, nbytes = stats.get("records", 0), stats.get("bytes", 0)
        job, kind, index, attempt = key
        self._pending += (job, kind, index, attempt, worker, secs or 0, records, nbytes,
                          len(blobs[0]) if len(blobs) == 1 else sum(map(len, blobs)))

    def flush(self) -> None:
        """Record the commits noted (the broker loop's thread only)."""
        if self._pending:
            self._writer = threading.get_ident()
            with self.lock:
                self._flush()

    def _flush(self) -> None:
        """``flush`` with ``lock`` held: one commit batch per run of one job's attempts of
        one kind among the noted ones, and the job's flow and the totals summed. The usual
        notes are packed in C (``speedups.pack_notes``): a batch is then the run's rows
        as bytes, 50 a commit, with its worker names once (reading.flat reads them), not
        nine objects a commit for as long as the table keeps it; otherwise (no C loops,
        or a note of another kind) a batch is its notes' items as one flat tuple, and the
        usual turn's is checked and summed on a column's slice."""
        now = time.time()
        pending = self._pending  # (the same list for the log's life: the commit path
        runs = pack_notes(pending, REPORTS) if pack_notes is not None else None  # holds it)
        if runs is not None:
            pending.clear()
            for job_id, kind, n, records, nbytes, out, workers, rows in runs:
                self._add_done(job_id, kind, (PACKED, job_id, kind, workers, rows), now,
                               n, records, nbytes, out)
            return
        pending = noted_commits(pending)
        self._pending.clear()
        job_id, kind = pending[0], pending[1]
        n = len(pending) // NOTE
        # the usual turn commits attempts of one kind of one job (``count`` compares by
        # identity first: a job's identifier is one string, a kind one of two)
        if pending[::NOTE].count(job_id) == n and pending[1::NOTE].count(kind) == n:
            self._add_flat(job_id, kind, pending, now)
            return
        start = 0
        for i in range(0, len(pending), NOTE):  # runs of one job and one kind
            if pending[i] != job_id or pending[i + 1] != kind:
                self._add_flat(job_id, kind, pending[start:i], now)
                job_id, kind, start = pending[i], pending[i + 1], i
        self._add_flat(job_id, kind, pending[start:], now)

    def _add_flat(self, job_id: str, kind: str, fields: tuple, now: float) -> None:
        """Committed attempts of one job, all of ``kind``, as their notes' items (flat):
        summed, and those noted without their worker given the one their attempt was
        sent to."""
        log = self._jobs.get(job_id)
        if log is not None and not all(fields[4::NOTE]):  # (rare) noted without its
            fields = tuple(chain.from_iterable(  # worker: the one its attempt was sent to
                f if f[4] else (*f[:4], _holder(log, f[3]) or "", *f[5:])
                for f in notes(fields)))
        self._add_done(job_id, kind, fields, now, len(fields) // NOTE, sum(fields[6::NOTE]),
                       sum(fields[7::NOTE]), sum(fields[8::NOTE]))

    def _add_done(self, job_id: str, kind: str, items: tuple, now: float, n: int,
                  records: int, nbytes: int, out: int) -> None:
        """``n`` committed attempts of one job, all of ``kind`` (``items``: as reading.flat
        reads them), which read ``records`` and ``nbytes`` and wrote ``out`` bytes: their
        batch and sums."""
        log = self._jobs.get(job_id)
        if log is not None:
            flow = log.flow[kind]
            flow[0] += records
            flow[1] += nbytes
            flow[2] += out
            log.step_out[kind] += out
        counts = self.counts
        key = ("tasks_done", kind)
        counts[key] = counts.get(key, 0) + n
        key = ("records", kind)
        counts[key] = counts.get(key, 0) + records
        self.seq += n
        if log is not None:  # (the batch is the events: no ring entry, see dispatched)
            log.ends.append((self.seq, now, items))

    def restore_flow(self, job_id: str, flow: dict, step_out: dict | None = None) -> None:
        """A job a restarted broker recovered: the records and bytes its journaled commits
        read and wrote (``{kind: (records, bytes in, bytes out)}``), so that its flow
        counts what was done before the restart too; ``step_out``: ``{kind: bytes out}``
        of the commits of the step the job is on."""
        with self.lock:
            log = self._jobs.get(job_id)
            if log is None:
                return
            for kind, sums in flow.items():
                into = log.flow.get(kind)
                if into is not None:
                    for i in range(3):
                        into[i] += sums[i]
            log.step = log.job.step
            for kind, out in (step_out or {}).items():
                if kind in log.step_out:
                    log.step_out[kind] += out

    def failed(self, task: Any, attempt: int, error: str, tb: str, position: Any,
               lost: bool, counted: bool) -> None:
        """An attempt failed (``lost``: its worker was lost, the attempt killed with it;
        not ``counted``: lost through no fault of its own, simply queued again)."""
        job = task.job
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            worker = self._end_attempt(job, task, attempt, KILLED if lost else FAILED,
                                       str(error)[:200])
            if lost:
                error = f"its worker {worker or '(unknown)'} was lost: {error}"
            self._count("attempts_lost" if lost else "attempts_failed", task.kind)
            self._emit(job.id, "killed" if lost else "failed", task=task.name,
                       kind=task.kind, index=task.index, attempt=attempt & ATTEMPT_MASK,
                       worker=worker, error=str(error)[:MAX_ERROR],
                       traceback=str(tb)[-MAX_TRACEBACK:], position=safe_position(position),
                       failures=task.failures + counted, counted=counted)

    def retried(self, task: Any) -> None:
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            self._count("retries", task.kind)
            self._emit(task.job.id, "retried", task=task.name, kind=task.kind,
                       index=task.index, failures=task.failures)

    def abandoned(self, job: Any, keys: list, why: str) -> None:
        """Attempts stopped where they run (their job ended, or a backup race was lost)."""
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            for key in keys:
                tasks = job.tasks(key.kind) if key.kind in ("map", "reduce") else []
                if isinstance(key.index, int) and 0 <= key.index < len(tasks):
                    self._end_attempt(job, tasks[key.index], key.attempt, ABANDONED, why)
                self._count("attempts_abandoned", str(key.kind))
            self._emit(job.id, "abandoned", attempts=len(keys), reason=why,
                       tasks=[f"{k.kind}-{k.index}" for k in keys[:20]])

    def skipped(self, task: Any, ordinal: int, position: Any) -> None:
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            self._count("skipped_records")
            self._emit(task.job.id, "skipped", task=task.name, record=ordinal,
                       position=safe_position(position))

    def phase(self, job: Any) -> None:
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            log = self._jobs.get(job.id)
            if log is not None and log.step != job.step:  # (its last step's commits are
                log.step, log.step_out = job.step, {"map": 0, "reduce": 0}  # counted above)
            self._emit(job.id, "phase", phase=job.phase, step=job.step + 1,
                       maps=len(job.maps), reduces=len(job.reduces))

    def job_ended(self, job: Any, now: float) -> None:
        """Succeeded, failed or cancelled: its running attempts are closed as abandoned
        by ``abandoned``; the duration goes into the histogram."""
        secs = max(0.0, now - job.submitted)
        error = job.error or {}
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            self._count("jobs_ended", job.state)
            self.duration_sum += secs
            for i, bound in enumerate(DURATION_BUCKETS):
                if secs <= bound:
                    self.durations[i] += 1
            self._emit(job.id, f"job-{job.state}", secs=round(secs, 6),
                       error=str(error.get("message", ""))[:MAX_ERROR],
                       task=str(error.get("task", ""))[:40])

    def job_released(self, job: Any) -> None:
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            self._emit(job.id, "job-released")

    def job_dropped(self, job_id: str) -> None:
        """The broker forgot a job: its ring and attempt table are freed."""
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            log = self._jobs.pop(job_id, None)
            self._holding.pop(job_id, None)
            if log is not None:
                self._bytes -= log.bytes
                self._rows -= log.rows
                # (its ring's events are the global ring's too; its table's are gone)
                rows = max(log.batches[-1][0] if log.batches else 0,
                           log.ends[-1][0] if log.ends else 0)
                self._rows_lost = max(self._rows_lost, rows)
                # a read of its client's jobs no longer finds any of them
                newest = max(rows, log.events[-1][0] if log.events else 0)
                lost = self._tenant_lost
                if newest > lost.get(log.tenant, 0):
                    lost.pop(log.tenant, None)  # (the newest last: the oldest go first)
                    lost[log.tenant] = newest
                    if len(lost) > MAX_TENANTS_LOST:
                        del lost[next(iter(lost))]

    def worker_joined(self, name: str, tags: Any) -> None:
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            self._count("workers_joined")
            self._emit(None, "worker-joined", worker=name, tags=sorted(tags))

    def worker_lost(self, name: str, reason: str, lost: int) -> None:
        with self.lock:
            if self._pending:  # what was noted happened first
                self._flush()
            self._count("workers_lost")
            self._emit(None, "worker-lost", worker=name, reason=str(reason)[:200],
                       attempts=lost)


class NullEventLog(EventLog):
    """The event log of a broker started with ``--no-events``: it records nothing, and
    its readers find nothing."""

    enabled = False  # (and ``noted`` is None: the commit path notes nothing)

    def _ignore(self, *args: Any, **kwargs: Any) -> None:
        return None

    job_submitted = dispatched = done = failed = retried = abandoned = skipped = _ignore
    phase = job_ended = job_released = job_dropped = worker_joined = worker_lost = ran = _ignore
    ran_abandoned = restore_flow = _ignore

