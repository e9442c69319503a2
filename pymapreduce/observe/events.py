"""The broker's event log: job and task events in bounded rings, and the attempt table.

The ledger calls one method here per thing that happens (a job submitted, an attempt
dispatched, done, failed, lost with its worker, abandoned, a record skipped...); each is
recorded with the broker's wall-clock time and a sequence number (the cursor a reader
resumes from) in the job's ring and in the global ring. Memory is bounded whatever peers
do: each ring has a fixed length, error texts and tracebacks are cut, the attempt table of
a job keeps at most ``attempts_per_job`` rows, and past ``max_bytes`` in all the oldest
jobs' events go first. A job's records are freed when the broker forgets the job.

Events carry names, numbers, error texts and input positions only: never job code, never
a key or value of the data (an input position's ``key`` is left out).

The broker loop writes; readers (the HTTP thread, the metrics collector) read under the
same lock, held only to append or to copy a slice, so neither side waits for long.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any

from ..patterns import protocol as P

ATTEMPT_MASK = (1 << 12) - 1  # tasks.ATTEMPT_BITS: the attempt's number (the rest is random)
MAX_ERROR = 1000  # characters of an error message kept in an event
MAX_TRACEBACK = 8000  # ... of a traceback (its end: where it raised)
POSITION_FIELDS = ("split", "path", "ordinal", "record", "partition")
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, float("inf"))
RUNNING, DONE, FAILED, KILLED, ABANDONED = "running", "done", "failed", "killed", "abandoned"
ROW_FIELDS = 10  # an attempt row's fields (dispatched()); ran() may add its run time


def safe_position(position: Any) -> dict:
    """An input position without data values: the split, file, ordinal, offset... (a
    reduce task's ``key`` is the user's data, so it never leaves the broker this way)."""
    if not isinstance(position, dict):
        return {}
    safe = {k: position[k] for k in POSITION_FIELDS if k in position
            and (type(position[k]) in (int, float) or isinstance(position[k], str))}
    key = position.get("key")
    if "path" in safe and isinstance(key, str) and key.isdigit():
        safe["offset"] = int(key)  # a file's record: its key is its byte offset
    return safe


SMALL = 160  # about what an event without texts costs in memory (bytes)
# the fields of the frequent events, stored as tuples in this order (dicts cost more to
# build, and the broker loop builds two events per task)
SCHEMAS = {"dispatched": ("kind", "index", "attempt", "worker", "backup", "step"),
           "done": ("kind", "index", "attempt", "worker", "secs", "records", "bytes",
                    "bytes_out")}


def _size(fields: dict) -> int:
    """About what an event with these fields costs in memory (its texts dominate)."""
    return SMALL + sum(len(v) for v in fields.values() if isinstance(v, str))


def as_dict(event: tuple) -> dict:
    """An event as served: ``(seq, t, type, job, fields, size)`` -> a JSON-ready dict."""
    seq, t, etype, job, fields, _ = event
    out = {"seq": seq, "t": round(t, 6), "type": etype}
    if job is not None:
        out["job"] = job
    if isinstance(fields, dict):
        out.update(fields)
    else:
        out.update(zip(SCHEMAS[etype], fields))
        out["task"] = f"{fields[0]}-{fields[1]}"
    return out


class _JobLog:
    __slots__ = ("id", "events", "attempts", "bytes", "tenant", "started", "trimmed", "flow")

    def __init__(self, job_id: str, per_job: int, tenant: str) -> None:
        self.id = job_id
        self.events: deque[dict] = deque(maxlen=per_job)
        self.attempts: OrderedDict[tuple, list] = OrderedDict()
        self.bytes = 0
        self.tenant = tenant
        self.started = False
        self.trimmed = 0  # events dropped from its ring (full, or over the byte budget)
        # kind -> [records in, bytes in, bytes out] of its committed tasks
        self.flow = {"map": [0, 0, 0], "reduce": [0, 0, 0]}


class EventLog:
    """Bounded rings of events, per job and global, plus counters the metrics read."""

    def __init__(self, *, per_job: int = 2000, global_events: int = 10_000,
                 attempts_per_job: int = 5000, max_attempts: int = 200_000,
                 max_bytes: int = 64 << 20) -> None:
        self.lock = threading.Lock()
        self.seq = 0
        self.per_job = per_job
        self.attempts_per_job = attempts_per_job
        self.max_attempts = max_attempts  # attempt rows of all jobs (~250 bytes each)
        self._rows = 0
        self.max_bytes = max_bytes
        self._global: deque[dict] = deque(maxlen=global_events)
        self._jobs: OrderedDict[str, _JobLog] = OrderedDict()
        # the jobs whose rings hold events, oldest first: what trimming takes from, found
        # at once (a scan of every job's ring per event cost O(jobs) once over budget)
        self._holding: OrderedDict[str, _JobLog] = OrderedDict()
        self._bytes = 0
        # monotonically increasing totals (Prometheus counters), by name and label
        self.counts: dict[tuple, float] = {}
        self.durations = [0] * len(DURATION_BUCKETS)  # finished jobs' seconds, by bucket
        self.duration_sum = 0.0

    # -- writing (the broker loop) -------------------------------------------------------
    def _count(self, name: str, label: str = "", n: float = 1) -> None:
        key = (name, label)
        self.counts[key] = self.counts.get(key, 0) + n

    def _emit(self, job: str | None, etype: str, /, **fields: Any) -> None:
        """Record one (infrequent) event; the caller holds ``lock``."""
        self.seq += 1
        size = _size(fields)
        self._push(self._jobs.get(job) if job is not None else None,
                   (self.seq, time.time(), etype, job, fields, size), size)

    def _push(self, log: _JobLog | None, event: tuple, size: int) -> None:
        """Append an event to the global ring and its job's; the caller holds ``lock``."""
        ring = self._global
        if len(ring) == ring.maxlen:
            self._bytes -= ring[0][5]
        ring.append(event)
        self._bytes += size
        if log is not None:
            ring = log.events
            if not ring:
                self._holding[log.id] = log
            elif len(ring) == ring.maxlen:
                gone = ring[0][5]
                log.bytes -= gone
                self._bytes -= gone
                log.trimmed += 1
            ring.append(event)
            log.bytes += size
            self._bytes += size
        if self._bytes > self.max_bytes:
            while self._bytes > self.max_bytes and self._trim_oldest():
                pass

    def _trim_oldest(self) -> bool:
        """Over the byte budget: the oldest events of the job that has held events longest
        go (a job whose ring was emptied counts from its next event; then the global's)."""
        for log in self._holding.values():
            gone = log.events.popleft()[5]
            log.bytes -= gone
            self._bytes -= gone
            log.trimmed += 1
            if not log.events:
                del self._holding[log.id]
            return True
        if self._global:
            self._bytes -= self._global.popleft()[5]
            return True
        return False

    def job_submitted(self, job: Any, recovered: bool = False) -> None:
        """A job accepted (``recovered``: reloaded from the journal by a restarted
        broker, in whatever state it was)."""
        with self.lock:
            if job.id not in self._jobs:
                self._jobs[job.id] = _JobLog(job.id, self.per_job, job.tenant)
            if not recovered:
                self._count("jobs_submitted")
            self._emit(job.id, "job-recovered" if recovered else "job-submitted",
                       name=job.name, maps=len(job.maps), reducers=job.reducers,
                       steps=max(1, len(job.steps)), state=job.state)

    def dispatched(self, task: Any, attempt: int, worker: str) -> None:
        """An attempt handed to ``worker`` (a backup when another attempt still runs)."""
        job = task.job
        kind, index, step = task.kind, task.index, job.step
        backup = len(task.running) > 1
        number = attempt & ATTEMPT_MASK
        now = time.time()
        counts = self.counts
        with self.lock:
            log = self._jobs.get(job.id)
            if log is not None and not log.started:
                log.started = True
                self._emit(job.id, "job-started")
            key = ("attempts", kind)
            counts[key] = counts.get(key, 0) + 1
            if backup:
                self._count("backups", kind)
            self.seq += 1
            self._push(log, (self.seq, now, "dispatched", job.id,
                             (kind, index, number, worker, backup, step + 1), SMALL), SMALL)
            if log is not None:
                log.attempts[(step, kind, index, attempt)] = [
                    step + 1, kind, index, number, worker, now, None, RUNNING, backup, ""]
                self._rows += 1
                if len(log.attempts) > self.attempts_per_job:
                    self._drop_attempt(log)
                elif self._rows > self.max_attempts:  # the oldest job's rows go first
                    self._drop_attempt(next(j for j in self._jobs.values() if j.attempts))

    def _drop_attempt(self, log: _JobLog) -> None:
        """The attempt table is full: the oldest finished row goes (the oldest if none)."""
        self._rows -= 1
        for key, row in log.attempts.items():
            if row[7] != RUNNING:
                del log.attempts[key]
                return
        log.attempts.popitem(last=False)

    def _end_attempt(self, job: Any, task: Any, attempt: int, outcome: str,
                     note: str = "", log: _JobLog | None = None) -> str:
        """Close an attempt's row; returns the worker it ran on ("" if unknown)."""
        log = log or self._jobs.get(job.id)
        row = log.attempts.get((job.step, task.kind, task.index, attempt)) if log else None
        if row is None:
            return ""
        if row[7] == RUNNING:
            row[6], row[7], row[9] = time.time(), outcome, note[:200]
        return row[4]

    def done(self, task: Any, attempt: int, stats: dict, secs: Any, blobs: list) -> None:
        """An attempt committed: its seconds (as its worker measured), records and bytes
        read, and ``blobs``, its outputs (only their sizes are kept)."""
        job = task.job
        kind = task.kind
        records = _number(stats.get("records"))
        size = _number(stats.get("bytes"))
        out = 0
        for blob in blobs:
            out += len(blob)
        counts = self.counts
        with self.lock:
            log = self._jobs.get(job.id)
            worker = self._end_attempt(job, task, attempt, DONE, "", log)
            if log is not None:
                flow = log.flow[kind]
                flow[0] += records
                flow[1] += size
                flow[2] += out
            key = ("tasks_done", kind)
            counts[key] = counts.get(key, 0) + 1
            key = ("records", kind)
            counts[key] = counts.get(key, 0) + records
            self.seq += 1
            self._push(log, (
                self.seq, time.time(), "done", job.id,
                (kind, task.index, attempt & ATTEMPT_MASK, worker, _number(secs), records,
                 size, out), SMALL), SMALL)

    def failed(self, task: Any, attempt: int, error: str, tb: str, position: Any,
               lost: bool, counted: bool) -> None:
        """An attempt failed (``lost``: its worker was lost, the attempt killed with it;
        not ``counted``: lost through no fault of its own, simply queued again)."""
        job = task.job
        with self.lock:
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
            self._count("retries", task.kind)
            self._emit(task.job.id, "retried", task=task.name, kind=task.kind,
                       index=task.index, failures=task.failures)

    def abandoned(self, job: Any, keys: list, why: str) -> None:
        """Attempts stopped where they run (their job ended, or a backup race was lost)."""
        with self.lock:
            for key in keys:
                tasks = job.tasks(key.kind) if key.kind in ("map", "reduce") else []
                if isinstance(key.index, int) and 0 <= key.index < len(tasks):
                    self._end_attempt(job, tasks[key.index], key.attempt, ABANDONED, why)
                self._count("attempts_abandoned", str(key.kind))
            self._emit(job.id, "abandoned", attempts=len(keys), reason=why,
                       tasks=[f"{k.kind}-{k.index}" for k in keys[:20]])

    def skipped(self, task: Any, ordinal: int, position: Any) -> None:
        with self.lock:
            self._count("skipped_records")
            self._emit(task.job.id, "skipped", task=task.name, record=ordinal,
                       position=safe_position(position))

    def phase(self, job: Any) -> None:
        with self.lock:
            self._emit(job.id, "phase", phase=job.phase, step=job.step + 1,
                       maps=len(job.maps), reduces=len(job.reduces))

    def job_ended(self, job: Any, now: float) -> None:
        """Succeeded, failed or cancelled: its running attempts are closed as abandoned
        by ``abandoned``; the duration goes into the histogram."""
        secs = max(0.0, now - job.submitted)
        error = job.error or {}
        with self.lock:
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
            self._emit(job.id, "job-released")

    def job_dropped(self, job_id: str) -> None:
        """The broker forgot a job: its ring and attempt table are freed."""
        with self.lock:
            log = self._jobs.pop(job_id, None)
            self._holding.pop(job_id, None)
            if log is not None:
                self._bytes -= log.bytes
                self._rows -= len(log.attempts)

    def worker_joined(self, name: str, tags: Any) -> None:
        with self.lock:
            self._count("workers_joined")
            self._emit(None, "worker-joined", worker=name, tags=sorted(tags))

    def worker_lost(self, name: str, reason: str, lost: int) -> None:
        with self.lock:
            self._count("workers_lost")
            self._emit(None, "worker-lost", worker=name, reason=str(reason)[:200],
                       attempts=lost)

    # -- reading (any thread) ------------------------------------------------------------
    def since(self, cursor: int, job: str | None = None, limit: int = 1000) -> list[dict]:
        """Events after sequence number ``cursor`` (of one job, or all), oldest first."""
        with self.lock:
            if job is not None:
                log = self._jobs.get(job)
                ring = log.events if log is not None else ()
            else:
                ring = self._global
            if not ring or ring[-1][0] <= cursor:
                return []
            out = []
            for event in reversed(ring):  # the new ones are at the end
                if event[0] <= cursor:
                    break
                out.append(event)
        out.reverse()
        return [as_dict(e) for e in out[:limit]]

    def attempts(self, job: str) -> list[dict]:
        """A job's attempt table, for its timeline (copies, oldest first)."""
        with self.lock:
            log = self._jobs.get(job)
            rows = [list(r) for r in log.attempts.values()] if log is not None else []
        return [{"step": r[0], "kind": r[1], "index": r[2], "task": f"{r[1]}-{r[2]}",
                 "attempt": r[3], "worker": r[4], "start": r[5], "end": r[6],
                 "outcome": r[7], "backup": r[8], "note": r[9]} for r in rows]

    # -- when attempts ran (the timeline from task start) ---------------------------------
    def ran(self, task: Any, attempt: int, secs: float | None) -> None:
        """A failed attempt's run time, as its worker measured it (FAILED's ``secs``), kept
        in its attempt row for :meth:`timeline`. (A committed attempt's comes from its
        ``done`` event, which carries it already: nothing is added per task.)"""
        if task is None or secs is None:
            return
        with self.lock:
            log = self._jobs.get(task.job.id)
            row = log.attempts.get((task.job.step, task.kind, task.index, attempt)) \
                if log is not None else None
            if isinstance(row, list) and len(row) == ROW_FIELDS:
                row.append(secs)

    def timeline(self, job: str) -> list[dict]:
        """:meth:`attempts`, each with ``run``: when its worker began to run it, as the
        broker's clock puts it (its end less the run time its worker reported; monotonic
        clocks of two hosts cannot be compared, durations can), clamped to between when
        it was handed out and its end (a peer's number is not trusted); None when not
        known (running, lost, abandoned, or its ``done`` event trimmed from the ring)."""
        with self.lock:
            log = self._jobs.get(job)
            if log is None:
                return []
            rows = [list(r) for r in log.attempts.values()]
            ring = list(log.events)  # (a copy: looked through after the lock is let go)
        reported: dict[tuple, list] = {}  # (kind, index, number, worker) -> [(t, secs)]
        for _, t, etype, _, fields, _ in ring:
            if etype == "done" and isinstance(fields, tuple):  # (SCHEMAS["done"])
                reported.setdefault(tuple(fields[:4]), []).append((t, fields[4]))
        out = []
        for r in rows:
            secs = r[ROW_FIELDS] if len(r) > ROW_FIELDS else None
            if r[7] == DONE:
                near = reported.get((r[1], r[2], r[3], r[4]))
                if near:  # (several only in a multi-step job: the nearest in time)
                    secs = min(near, key=lambda p: abs(p[0] - r[6]))[1]
            run = None
            if type(secs) in (int, float) and r[6] is not None:
                run = min(r[6], max(r[5], r[6] - max(0.0, secs)))
            out.append({"step": r[0], "kind": r[1], "index": r[2], "task": f"{r[1]}-{r[2]}",
                        "attempt": r[3], "worker": r[4], "start": r[5],
                        "run": None if run is None else round(run, 6), "end": r[6],
                        "outcome": r[7], "backup": r[8], "note": r[9]})
        return out

    def flow(self, job: str) -> dict:
        """Records and bytes in, bytes out, of a job's committed tasks, per kind (map
        outputs are the shuffle; reduce inputs its records, reduce outputs the result)."""
        with self.lock:
            log = self._jobs.get(job)
            flow = {k: list(v) for k, v in log.flow.items()} if log is not None else {}
        return {k: {"records_in": v[0], "bytes_in": v[1], "bytes_out": v[2]}
                for k, v in flow.items()}

    def tenant_of(self, job: str) -> str | None:
        with self.lock:
            log = self._jobs.get(job)
            return log.tenant if log is not None else None

    def totals(self) -> tuple[dict, list, float]:
        """Copies of the counters and the job-duration histogram, for a scrape."""
        with self.lock:
            return dict(self.counts), list(self.durations), self.duration_sum


def _number(value: Any) -> float | int:
    return value if type(value) in (int, float) else 0


TERMINAL_EVENTS = frozenset(f"job-{s}" for s in P.JOB_TERMINAL)
