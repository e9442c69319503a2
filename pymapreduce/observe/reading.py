"""The event log's reading side: events after a cursor, a job's attempt table and
timeline, its flow of records and bytes, the counters a scrape copies.

Readers run on any thread (the HTTP server's, the metrics collector's) and take the log's
lock only to copy what they need; they turn the compact stored form into JSON-ready
dicts afterwards. Batch entries (the frequent ``dispatched`` and ``done`` events of many
attempts in one entry, see events.py) are expanded here into one event per attempt.
"""

from __future__ import annotations

import threading
from typing import Any

from .timeline import place

ROW_FIELDS = 5  # an attempt row's fields (dispatched()); ran() may add its run time
SMALL = 160  # about what an event without texts costs in memory (bytes)
# the fields of the frequent events, stored as tuples in this order (dicts cost more to
# build, and the broker loop builds two events per task)
SCHEMAS = {"dispatched": ("kind", "index", "attempt", "worker", "backup", "step"),
           "done": ("kind", "index", "attempt", "worker", "secs", "records", "bytes",
                    "bytes_out")}


def as_dict(event: tuple) -> dict:
    """One event as served: ``(seq, t, type, job, fields, size)`` -> a JSON-ready dict
    (``fields`` a dict, or a tuple in the order of its type's ``SCHEMAS``)."""
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


def expand(entry: tuple) -> list[tuple]:
    """A ring entry as the events it holds. The frequent events are stored a batch to an
    entry (the attempts of one TASKS message, or of one job committed in one turn of the
    broker loop): ``fields`` is then a list of tuples, and ``seq`` the last one's number."""
    seq, t, etype, job, fields, size = entry
    if type(fields) is not list:
        return [entry]
    first = seq - len(fields) + 1
    return [(first + i, t, etype, job, f, SMALL) for i, f in enumerate(fields)]


class Reading:
    """The reading methods of :class:`~pymapreduce.observe.events.EventLog` (a mixin: the
    state they read is the log's own)."""

    lock: threading.Lock
    _pending: list
    _writer: int
    _jobs: dict
    _global: Any
    counts: dict
    durations: list
    duration_sum: float

    def _flush(self) -> None:  # (EventLog's)
        raise NotImplementedError

    def since(self, cursor: int, job: str | None = None, limit: int = 1000) -> list[dict]:
        """Events after sequence number ``cursor`` (of one job, or all), oldest first."""
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            if job is not None:
                log = self._jobs.get(job)
                ring = log.events if log is not None else ()
            else:
                ring = self._global
            if not ring or ring[-1][0] <= cursor:
                return []
            entries = []
            for entry in reversed(ring):  # the new ones are at the end
                if entry[0] <= cursor:
                    break
                entries.append(entry)
        out = []
        for entry in reversed(entries):
            for event in expand(entry):
                if event[0] > cursor:
                    out.append(event)
                    if len(out) == limit:
                        return [as_dict(e) for e in out]
        return [as_dict(e) for e in out]

    def attempts(self, job: str) -> list[dict]:
        """A job's attempt table, for its timeline (copies, oldest first)."""
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            log = self._jobs.get(job)
            rows = [(*r[0], *r[1:]) for r in log.attempts.values()] if log is not None else []
        # (kind, index, attempt, worker, backup, step) of its dispatch, start, end, outcome,
        # note
        return [{"step": r[5], "kind": r[0], "index": r[1], "task": f"{r[0]}-{r[1]}",
                 "attempt": r[2], "worker": r[3], "start": r[6], "end": r[7],
                 "outcome": r[8], "backup": r[4], "note": r[9]} for r in rows]

    def timeline(self, job: str) -> list[dict]:
        """:meth:`attempts`, each with ``run``: when its worker began to run it, or None
        (see observe/timeline.py)."""
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            log = self._jobs.get(job)
            if log is None:
                return []
            rows = [(*r[0], *r[1:ROW_FIELDS], r[ROW_FIELDS] if len(r) > ROW_FIELDS else None)
                    for r in log.attempts.values()]
            ring = list(log.events)  # (a copy: looked through after the lock is let go)
        return place(rows, ring)

    def flow(self, job: str) -> dict:
        """Records and bytes in, bytes out, of a job's committed tasks, per kind (map
        outputs are the shuffle; reduce inputs its records, reduce outputs the result)."""
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            log = self._jobs.get(job)
            flow = {k: list(v) for k, v in log.flow.items()} if log is not None else {}
        return {k: {"records_in": v[0], "bytes_in": v[1], "bytes_out": v[2]}
                for k, v in flow.items()}

    def tenant_of(self, job: str) -> str | None:
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            log = self._jobs.get(job)
            return log.tenant if log is not None else None

    def totals(self) -> tuple[dict, list, float]:
        """Copies of the counters and the job-duration histogram, for a scrape."""
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            return dict(self.counts), list(self.durations), self.duration_sum
