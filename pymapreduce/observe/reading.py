"""The event log's reading side: events after a cursor, a job's attempt table and
timeline, its flow of records and bytes, the counters a scrape copies.

Readers run on any thread (the HTTP server's, the metrics collector's) and take the log's
lock only to copy what they need; they turn the compact stored form into JSON-ready
dicts afterwards. Batch entries (the frequent ``dispatched`` and ``done`` events of many
attempts in one entry, see events.py) are expanded here into one event per attempt, and
the attempt table is joined here from the batches it is stored as.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from heapq import merge
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from .timeline import place

SMALL = 160  # about what an event without texts costs in memory (bytes)
NOTE = 9  # the items of a noted commit (events.py)
# a commit batch packed in C (events.py, speedups.pack_notes): (PACKED, job, kind, its
# workers' names, rows), a row of ROW per commit (index, attempt identifier, secs,
# records, bytes, bytes out, the place of its worker in the names, with INT_SECS)
PACKED = object()
ROW = struct.Struct("=qQdqqqH")
INT_SECS = 0x8000  # (or'ed with a row's place of its worker: its secs an int)
# a run of a DONE's reports noted as the broker received them, NOTE items: (REPORTS,
# worker, results, first, count, blobs, None, None, None): the commits of reports first
# to first + count of the list ``results`` ([job, kind, index, attempt, {records, bytes,
# secs}, ...] each), their outputs ``blobs[first:first + count]`` (events.py)
REPORTS = object()
_SEQ = itemgetter(0)
ENDED_BADLY = ("failed", "killed")  # the events of a job's page's failures
ATTEMPT_MASK = (1 << 12) - 1  # tasks.ATTEMPT_BITS: the attempt's number (the rest is random)
# the fields of the frequent events, served in this order (see expand())
SCHEMAS = {"dispatched": ("kind", "index", "attempt", "worker", "backup", "step"),
           "done": ("kind", "index", "attempt", "worker", "secs", "records", "bytes",
                    "bytes_out")}


def as_dict(event: tuple) -> dict:
    """One event as served: ``(seq, t, type, job, fields)`` -> a JSON-ready dict
    (``fields`` a dict, or a tuple in the order of its type's ``SCHEMAS``)."""
    seq, t, etype, job, fields = event
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
    """A ring entry ``(seq, time, type, job, fields, size, extra, n)`` as the events
    ``(seq, time, type, job, fields)`` it holds. The frequent events are stored a batch to
    an entry, as the broker loop had them: ``fields`` is then a tuple, ``seq`` the last
    one's number. A ``dispatched`` batch holds the attempts' identifiers and ``extra`` is
    ``(worker, step, backup, kind, indexes)`` (``kind`` a tuple when they are of both
    kinds); a ``done`` batch
    holds ``(job, kind, index, attempt identifier, worker, secs, records, bytes, bytes
    out)`` per attempt, flat (see :func:`notes`). Served, an attempt is its number, not its identifier (the rest of
    it is random)."""
    seq, t, etype, job, fields, _, extra, _ = entry
    if type(fields) is not tuple:
        return [entry[:5]]
    if etype == "dispatched":
        first = seq - len(fields) + 1
        worker, step, backup, kinds, indexes = extra
        if type(kinds) is str:
            kinds = repeat(kinds)
        return [(first + i, t, etype, job, (kind, index, attempt & ATTEMPT_MASK, worker,
                                            backup, step))
                for i, (kind, index, attempt) in enumerate(zip(kinds, indexes, fields))]
    first = seq - len(fields) // NOTE + 1
    return [(first + i, t, etype, job, (f[1], f[2], f[3] & ATTEMPT_MASK, *f[4:]))
            for i, f in enumerate(notes(fields))]


def flat(items: tuple) -> tuple:
    """A commit batch's items as stored flat (NOTE to an attempt), also of one stored
    packed (expanded here, when read)."""
    if items[0] is not PACKED:
        return items
    _, job, kind, workers, rows = items
    out: list = []
    for index, attempt, secs, records, nbytes, sent, at in ROW.iter_unpack(rows):
        if at & INT_SECS:  # (noted as an int: read as one)
            secs, at = int(secs), at & ~INT_SECS
        out += (job, kind, index, attempt, workers[at], secs, records, nbytes, sent)
    return tuple(out)


def noted_commits(noted: list) -> tuple:
    """What the commit path noted, as NOTE items a commit (see events.py), its runs of
    reports (REPORTS) read."""
    if not any(x is REPORTS for x in noted[::NOTE]):
        return tuple(noted)
    out: list = []
    for i in range(0, len(noted), NOTE):
        if noted[i] is not REPORTS:
            out += noted[i:i + NOTE]
            continue
        _, worker, results, first, count, blobs = noted[i:i + 6]
        for k in range(first, first + count):
            job, kind, index, attempt, stats = results[k][:5]
            out += (job, kind, index, attempt, worker, stats["secs"] or 0,
                    stats["records"], stats["bytes"], len(blobs[k]))
    return tuple(out)


def commits_in(items: tuple) -> int:
    """The attempts a commit batch's items hold (see :func:`flat`)."""
    return len(items[4]) // ROW.size if items[0] is PACKED else len(items) // NOTE


def notes(items: tuple) -> list[tuple]:
    """A commit batch's attempts, each a tuple ``(job, kind, index, attempt identifier,
    worker, secs, records, bytes, bytes out)``, from its items as stored (flat, NOTE to an
    attempt: see events.py)."""
    return [items[i:i + NOTE] for i in range(0, len(items), NOTE)]


def _newest(items: Any, cursor: int, source: int, job: str | None) -> Iterator[tuple]:
    """Those of ``items`` (a ring, or batches: in the order of their sequence numbers, the
    first field) whose sequence number is past ``cursor``, the newest first, each as
    ``(seq, source, job, item)``: taken one at a time, as a merge of them asks."""
    for item in reversed(items):
        if item[0] <= cursor:
            return
        yield item[0], source, job, item


# what a ``_newest`` item is: a ring entry, a dispatch batch, a commit batch
RING, SENT, ENDS = 0, 1, 2


def _count(merged: tuple) -> int:
    """The events a merged item holds (see ``_newest``)."""
    source, item = merged[1], merged[3]
    if source == RING:
        return item[7]
    return len(item[4]) if source == SENT else commits_in(item[2])


def _sent_entry(job: str, batch: tuple) -> tuple:
    """A dispatch batch ``(seq, time, worker, step, attempts, backup, tasks)`` as the ring
    entry of its events (see :func:`expand`)."""
    seq, t, worker, step, attempts, backup, tasks = batch
    kinds = [task.kind for task in tasks]
    kind: Any = kinds[0] if kinds.count(kinds[0]) == len(kinds) else tuple(kinds)
    return (seq, t, "dispatched", job, tuple(attempts), 0,
            (worker, step, backup, kind, tuple(task.index for task in tasks)), len(attempts))


def _done_entry(job: str, batch: tuple) -> tuple:
    """A commit batch ``(seq, time, items)`` as the ring entry of its events."""
    seq, t, items = batch
    items = flat(items)
    return (seq, t, "done", job, items, 0, None, len(items) // NOTE)


def join_attempts(batches: list[tuple], ends: list[tuple], closed: dict) -> list[tuple]:
    """The attempt table from how it is stored (see events.py): dispatch batches
    ``(time, worker, step, (attempt identifiers...), backup, (their tasks...))``, commit
    batches ``(seq, time, (noted commits...))`` and the failed, killed or abandoned attempts
    ``{attempt: (end, outcome, note, run secs)}``. Rows are ``(kind, index, number,
    worker, backup, step, start, end, outcome, note, run secs)``, oldest first; an attempt
    ends at whichever came first, its commit or its other end."""
    committed: dict[int, tuple] = {}
    for _, t, items in ends:
        items = flat(items)
        for attempt, secs in zip(items[3::NOTE], items[5::NOTE]):
            if attempt not in committed:
                committed[attempt] = (t, secs)
    rows = []
    for start, worker, step, attempts, backup, tasks in batches:
        for task, attempt in zip(tasks, attempts):
            kind, index = task.kind, task.index
            end, outcome, note, secs = closed.get(attempt) or (None, None, "", None)
            done = committed.get(attempt)
            if done is not None and (end is None or done[0] <= end):
                end, outcome, note, secs = done[0], "done", "", done[1]
            rows.append((kind, index, attempt & ATTEMPT_MASK, worker, backup, step, start,
                         end, outcome or "running", note, secs))
    return rows


class Reading:
    """The reading methods of :class:`~pymapreduce.observe.events.EventLog` (a mixin: the
    state they read is the log's own)."""

    lock: threading.Lock
    _pending: list
    _writer: int
    _jobs: dict
    _global: Any
    _global_lost: int
    _rows_lost: int
    _tenant_lost: dict
    counts: dict
    durations: list
    duration_sum: float

    def _flush(self) -> None:  # (EventLog's)
        raise NotImplementedError

    def _current(self, job: str) -> Any:
        """With ``lock`` held: a job's log (None if it has none), what was noted recorded
        first when this is the thread that notes (its reads see its own commits)."""
        if self._pending and threading.get_ident() == self._writer:
            self._flush()
        return self._jobs.get(job)

    def failures(self, job: str, limit: int) -> list[dict]:
        """A job's newest ``limit`` failed and killed attempts, oldest first: read from its
        ring alone, which holds its infrequent events, not its attempts' (a job's page
        asks for them: reading them out of :meth:`since` went over every attempt)."""
        with self.lock:
            log = self._current(job)
            if log is None:
                return []
            picked = [entry for entry in log.events if entry[2] in ENDED_BADLY]
        return [as_dict(event) for entry in picked[-limit:] for event in expand(entry)]

    def since(self, cursor: int, job: str | None = None, limit: int = 1000,
              tenant: str | None = None) -> list[dict]:
        """Events after sequence number ``cursor`` (of one job, or all, or all of one
        client's, ``tenant``), oldest first.

        The rings hold the infrequent events; the frequent ones (attempts dispatched and
        committed) are read from the attempt tables' batches, which are them (see
        events.py), and merged in by sequence number. Read so, a job's events are at most
        its newest ``per_job`` (all jobs': ``global_events``), as if one ring held them."""
        return self.since_gap(cursor, job, limit, tenant)[0]

    def since_gap(self, cursor: int, job: str | None = None, limit: int = 1000,
                  tenant: str | None = None) -> tuple[list[dict], bool]:
        """:meth:`since`, and whether events after ``cursor`` were left out because the
        log keeps no more than its cap of them, or its rings no longer held them (a reader
        that fell that far behind).
        ``tenant`` (with no ``job``): the events of that client's jobs only, read from
        their own rings and tables, to the cap of all jobs' (``global_events``): not the
        newest events of every client's, which others' may fill, picked from."""
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            if job is not None:
                log = self._jobs.get(job)
                if log is None:
                    return [], False
                rings, logs, cap = [log.events], [log], self.per_job
                lost = max(log.lost, log.rows_lost)
            elif tenant is not None:  # (one look per job held, as for all jobs)
                logs = [one for one in self._jobs.values() if one.tenant == tenant]
                rings, cap = [one.events for one in logs], self.global_events
                # (and of its jobs the broker forgot)
                lost = max([self._tenant_lost.get(tenant, 0),
                            *(max(one.lost, one.rows_lost) for one in logs)])
            else:
                rings, logs, cap = [self._global], self._jobs.values(), self.global_events
                lost = max(self._global_lost, self._rows_lost)
            # the newest first, merged from the rings and each table's batches, to the cap:
            # what is read is about what may be served, however many rows the tables hold
            # (one look per job at its newest batches, for the jobs that have none past
            # the cursor)
            sources = [_newest(ring, cursor, RING, None) for ring in rings
                       if ring and ring[-1][0] > cursor]
            for one in logs:
                if one.batches and one.batches[-1][0] > cursor:
                    sources.append(_newest(one.batches, cursor, SENT, one.id))
                if one.ends and one.ends[-1][0] > cursor:
                    sources.append(_newest(one.ends, cursor, ENDS, one.id))
            # (a ring or an attempt table dropped an event past the cursor: the reader
            # missed it, whatever the cap leaves out)
            picked, count, gap = [], 0, lost > cursor
            for item in merge(*sources, key=_SEQ, reverse=True):
                # (an item's events are numbered one after the other, to its own: of one
                # the cursor is inside, only those past it count)
                count += min(_count(item), item[0] - cursor)
                if picked and count > cap:
                    gap = True  # (older ones past the cursor: not read)
                    break
                picked.append(item)
        # (after the lock: a batch's tasks never change their kind and index)
        kept = [item[3] if item[1] == RING else _sent_entry(item[2], item[3])
                if item[1] == SENT else _done_entry(item[2], item[3]) for item in picked]
        out = []
        for entry in reversed(kept):
            for event in expand(entry):
                if event[0] > cursor:
                    out.append(event)
                    if len(out) == limit:
                        return [as_dict(e) for e in out], gap
        return [as_dict(e) for e in out], gap

    def _table(self, job: str) -> list[tuple]:
        """A job's attempt table as rows (see :func:`join_attempts`)."""
        with self.lock:
            log = self._current(job)
            if log is None:
                return []
            # copies: joined after the lock is let go
            batches = [b[1:] for b in chain(log.held, log.batches)]  # (oldest first)
            ends = list(log.ends)
            closed = {k: tuple(v) for k, v in log.closed.items()}
        return join_attempts(batches, ends, closed)

    def attempts(self, job: str) -> list[dict]:
        """A job's attempt table, for its timeline (copies, oldest first): the rows of
        :meth:`timeline` without when each began to run."""
        return [{k: v for k, v in row.items() if k not in ("run", "run_from")}
                for row in self.timeline(job)]

    def timeline(self, job: str) -> list[dict]:
        """:meth:`attempts`, each with ``run``: when its worker began to run it, or None,
        and ``run_from``: what placed it (``"report"``; ``"hand-out"``: it ended with no
        run time, as an abandoned attempt mostly does, and is placed from its hand-out;
        None while it runs; see observe/timeline.py)."""
        return place(self._table(job))

    def flow(self, job: str) -> dict:
        """Records and bytes in, bytes out, of a job's committed tasks, per kind (map
        outputs are the shuffle; reduce inputs its records, reduce outputs the result)."""
        with self.lock:
            log = self._current(job)
            flow = {k: list(v) for k, v in log.flow.items()} if log is not None else {}
        return {k: {"records_in": v[0], "bytes_in": v[1], "bytes_out": v[2]}
                for k, v in flow.items()}

    def result_bytes(self, job: Any) -> int:
        """What ``job`` (a broker ``JobState``) wrote as its result so far: the bytes out
        of its last phase (its reduce tasks', or its map tasks' in a map-only job) of its
        last step (the one it is on; a step before it wrote what the next one read). Not
        the map outputs of a job with reduce tasks: those are its shuffle."""
        with self.lock:
            log = self._current(job.id)
            if log is None or log.step != job.step:  # (a step with no commit yet)
                return 0
            return log.step_out["map" if job.map_only else "reduce"]

    def tenant_of(self, job: str) -> str | None:
        with self.lock:
            log = self._current(job)
            return log.tenant if log is not None else None

    def totals(self) -> tuple[dict, list, float]:
        """Copies of the counters and the job-duration histogram, for a scrape."""
        with self.lock:
            if self._pending and threading.get_ident() == self._writer:
                self._flush()
            return dict(self.counts), list(self.durations), self.duration_sum
