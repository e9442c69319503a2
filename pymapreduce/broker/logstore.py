"""Task logs: what each attempt printed and logged, kept per job, bounded (no sockets).

A worker sends an attempt's log with its DONE or FAILED report (``workers/capture.py``
bounds it to its first and last 32 KiB, ``patterns/wire.MAX_LOG`` on the wire). The broker
keeps the logs that are not empty, per job, until the job is dropped (released by its
client, expired after the result TTL, or pushed out by newer finished jobs), and serves
them to the job's owner (``LOGS``; ``client_api.on_logs``). The text is never
interpreted: bytes in, bytes out.

Bounds: JOB_LOG_BYTES per job and TOTAL_LOG_BYTES in all. Past a job's cap its oldest
logs of successful attempts go first, then its oldest logs of failed ones (those say
why a job failed); past the total, the job holding the most loses its oldest in that
order. Each entry is also counted ENTRY_OVERHEAD bytes, so many small logs are bounded
too. What was left out is counted and shown with the rest. Logs are held in memory only:
a broker restarted on its ``--state-dir`` carries on its jobs without their earlier logs.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, NamedTuple

from ..patterns.wire import log_bytes
from .tasks import ATTEMPT_MASK

JOB_LOG_BYTES = 4 << 20  # bytes of logs kept per job
TOTAL_LOG_BYTES = 64 << 20  # ... for all jobs
ENTRY_OVERHEAD = 256  # bytes an entry is counted besides its text (its fields, the tables)
DONE, FAILED = "done", "failed"


class LogEntry(NamedTuple):
    """One attempt's log."""

    task: str  # "map-3", "reduce-0"
    attempt: int  # the attempt's number (1, 2, ...), as the broker's logs say it
    worker: str  # the worker process's name (host:pid)
    state: str  # DONE or FAILED
    step: int  # the job's step (1-based; 1 for a one-step job)
    text: bytes

    def wire(self) -> dict:
        return {"task": self.task, "attempt": self.attempt, "worker": self.worker,
                "state": self.state, "step": self.step, "log": self.text}


class JobLogs:
    """One job's logs: entries by arrival, and which to leave out first."""

    __slots__ = ("entries", "order", "size", "dropped", "seq")

    def __init__(self) -> None:
        self.entries: dict[int, LogEntry] = {}  # arrival number -> entry (in order)
        self.order: dict[str, deque[int]] = {DONE: deque(), FAILED: deque()}
        self.size = 0
        self.dropped = 0  # logs left out to stay within the caps
        self.seq = 0

    def add(self, entry: LogEntry) -> int:
        self.seq += 1
        self.entries[self.seq] = entry
        self.order[entry.state].append(self.seq)
        cost = len(entry.text) + ENTRY_OVERHEAD
        self.size += cost
        return cost

    def evict(self) -> int:
        """Leave out the oldest log of a successful attempt (else of a failed one);
        returns the bytes freed (0: none left)."""
        for state in (DONE, FAILED):
            if self.order[state]:
                entry = self.entries.pop(self.order[state].popleft())
                cost = len(entry.text) + ENTRY_OVERHEAD
                self.size -= cost
                self.dropped += 1
                return cost
        return 0


class LogStore:
    """Every job's task logs, within ``job_cap`` bytes per job and ``total_cap`` in all."""

    def __init__(self, job_cap: int = JOB_LOG_BYTES, total_cap: int = TOTAL_LOG_BYTES) -> None:
        self.job_cap = job_cap
        self.total_cap = total_cap
        self.jobs: dict[str, JobLogs] = {}
        self.size = 0
        # (-size, job id) of each job at each change of its size: the biggest job is found
        # in log time, not by a scan of every job (10,000 finished jobs' logs made each
        # report past the total cost the broker 0.75 ms); entries whose size is no longer
        # the job's are stale and skipped
        self._sizes: list[tuple[int, str]] = []

    def keep(self, task: Any, attempt: int, worker: str, state: str, log: Any) -> None:
        """Keep the log an attempt's report carried. ``task``: the broker's Task whose
        attempt it is (None: a stale attempt, whose log is not kept); ``log``: as the
        report carried it (anything but bytes is no log)."""
        text = log_bytes(log)
        if task is None or not text:
            return
        job = task.job
        entry = LogEntry(task.name, attempt & ATTEMPT_MASK, worker[:200], state,
                         job.step + 1, text)
        logs = self.jobs.get(job.id)
        if logs is None:
            logs = self.jobs[job.id] = JobLogs()
        self.size += logs.add(entry)
        while logs.size > self.job_cap:
            self.size -= logs.evict()
        self._note(job.id, logs)
        while self.size > self.total_cap:
            biggest = self._biggest()
            freed = self.jobs[biggest].evict() if biggest is not None else 0
            if not freed:
                break
            self.size -= freed
            self._note(biggest, self.jobs[biggest])

    def _note(self, job_id: str, logs: JobLogs) -> None:
        heapq.heappush(self._sizes, (-logs.size, job_id))
        if len(self._sizes) > 4 * len(self.jobs) + 64:  # mostly stale: rebuilt
            self._sizes = [(-j.size, i) for i, j in self.jobs.items()]
            heapq.heapify(self._sizes)

    def _biggest(self) -> str | None:
        """The id of the job holding the most logs (None: no job holds any)."""
        while self._sizes:
            size, job_id = self._sizes[0]
            logs = self.jobs.get(job_id)
            if logs is not None and logs.size == -size:
                return job_id
            heapq.heappop(self._sizes)
        return None

    def read(self, job_id: str, task: str | None = None) -> tuple[list[dict], int]:
        """A job's logs in the order they arrived (only ``task``'s, when given), and how
        many of its logs were left out to stay within the caps."""
        logs = self.jobs.get(job_id)
        if logs is None:
            return [], 0
        entries = [e.wire() for e in logs.entries.values() if task is None or e.task == task]
        return entries, logs.dropped

    def drop(self, job_id: str) -> None:
        """The job is gone: so are its logs."""
        logs = self.jobs.pop(job_id, None)
        if logs is not None:
            self.size -= logs.size
