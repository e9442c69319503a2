"""The broker's history: the facts of finished jobs, kept after their results are gone.

A finished job stays in the broker's job table (``/api/jobs``, ``pymapreduce status``)
until its client releases it or its result TTL passes; then it is forgotten with its
outputs and events. Its *facts* (id, name, owner, state, times, task and record counts,
bytes, the error message) go on in the history: the newest ``keep`` finished jobs, in
memory, and with ``--state-dir`` in a ``history`` table of the broker's journal, so a
restarted broker shows what ran before it (``/api/history``).

Never job code, never keys or values of the data: a row holds names, numbers and the
error message the job's own code raised (as ``/api/jobs`` shows it).

The broker loop writes (:meth:`History.record`, once per finished job); the HTTP threads
read (:meth:`History.page`, :meth:`History.get`) under a lock held only to append or to
copy a slice. The table is written by the broker loop alone, in the journal's own
transactions (a finished job's row goes with its end); the HTTP threads never touch
SQLite.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import zlib
from collections import deque
from typing import Any

import msgpack

from ..patterns import protocol as P

log = logging.getLogger("pymapreduce.broker")

KEEP = 5000  # finished jobs remembered (memory and journal); a row is ~400 bytes
MAX_PAGE = 500  # rows in one /api/history answer
MAX_TEXT = 1000  # characters of an error message kept
SCHEMA = ("CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, "
          "row BLOB NOT NULL, crc INTEGER NOT NULL)")
INSERT = "INSERT OR REPLACE INTO history (seq, id, row, crc) VALUES (?, ?, ?, ?)"
PRUNE = "DELETE FROM history WHERE seq <= ?"  # (all but the newest ``keep``)
# a row's fields and their types, checked when a journal's rows are read back (a damaged
# or foreign row is skipped, never served)
FIELDS = {"id": str, "name": str, "owner": str, "state": str, "submitted": (int, float),
          "ended": (int, float), "secs": (int, float), "steps": int, "maps": list,
          "reduces": list, "records": int, "bytes": int, "bytes_out": int, "backups": int,
          "skipped": int, "recovered": int}


def owner_of(tenant: str) -> str:
    """Who submitted a job, as served: its client's public key (``key ...``) on a broker
    with keys; "" without keys (a connection's id means nothing to a reader)."""
    return tenant[:100] if tenant.startswith("key ") else ""


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def facts(job: Any, out: int, now: float) -> dict:
    """The history row of a finished ``job`` (a ``tasks.JobState``; ``now``: monotonic,
    the clock of its ``submitted``/``finished``; ``out``: the bytes it wrote as its result,
    ``EventLog.result_bytes``: not its map outputs, the shuffle, unless it is map-only)."""
    wall = time.time()
    ended = wall - max(0.0, now - job.finished) if job.finished is not None else wall
    secs = max(0.0, (job.finished if job.finished is not None else now) - job.submitted)
    error = job.error if isinstance(job.error, dict) else None
    return {
        "id": job.id, "name": str(job.name)[:200], "owner": owner_of(job.tenant),
        "state": job.state, "submitted": round(ended - secs, 3), "ended": round(ended, 3),
        "secs": round(secs, 3), "steps": max(1, len(job.steps)),
        "maps": [job.done_maps, len(job.maps)],
        "reduces": [job.done_reduces, 0 if job.map_only else job.reducers],
        "records": _int(job.records), "bytes": _int(job.bytes_in),
        "bytes_out": _int(out),
        "backups": job.backups, "skipped": len(job.skipped), "recovered": job.recovered,
        "error": {"message": str(error.get("message", ""))[:MAX_TEXT],
                  "task": str(error.get("task", ""))[:40]} if error else None,
    }


def _valid(row: Any) -> bool:
    if not isinstance(row, dict):
        return False
    for name, kind in FIELDS.items():
        if not isinstance(row.get(name), kind) or isinstance(row.get(name), bool):
            return False
    error = row.get("error")
    return error is None or (isinstance(error, dict) and isinstance(error.get("message"), str))


class History:
    """The newest ``keep`` finished jobs' facts; journaled when ``journal`` is given."""

    def __init__(self, journal: Any = None, keep: int = KEEP) -> None:
        self.lock = threading.Lock()
        self.keep = keep
        self._rows: deque[dict] = deque(maxlen=keep)  # oldest first, each with its "seq"
        self._ids: set[str] = set()
        self._seq = 0
        self._journal: Any = None
        if journal is not None:
            self._open(journal)

    def _open(self, journal: Any) -> None:
        """Create the table if need be and load its newest rows (skipping damaged ones)."""
        db = journal.db
        try:
            db.execute(SCHEMA)
            rows = db.execute("SELECT seq, CAST(row AS BLOB), crc FROM history ORDER BY seq DESC "
                              "LIMIT ?", (self.keep,)).fetchall()
            last = db.execute("SELECT max(seq) FROM history").fetchone()[0]
        except sqlite3.Error as exc:  # history is not worth refusing to start for
            log.error("the journal's history table cannot be used (%s): finished jobs are "
                      "remembered in memory only", exc)
            return
        self._journal = journal
        self._seq = last if type(last) is int else 0  # (damaged rows' numbers too)
        bad = 0
        for seq, blob, crc in reversed(rows):
            try:
                row = msgpack.unpackb(blob, raw=False) if zlib.crc32(blob) == crc else None
            except Exception:
                row = None
            if type(seq) is not int or not _valid(row) or row["id"] in self._ids:
                bad += 1
                continue
            row["seq"] = seq
            self._rows.append(row)
            self._ids.add(row["id"])
        if bad:
            log.error("%d rows of the journal's history table are damaged: not shown", bad)

    # -- the broker loop -----------------------------------------------------------------
    def record(self, job: Any, out: int, now: float) -> None:
        """Remember a finished job (once per id: a job recovered after a restart keeps the
        row written when it ended); ``out``: the bytes it wrote as its result."""
        if job.state not in P.JOB_TERMINAL or job.id in self._ids:
            return
        row = facts(job, out, now)
        self._seq += 1
        row["seq"] = self._seq
        if self._journal is not None:
            blob = msgpack.packb(row)
            # into the journal's next transaction (end_job flushes it at once), not one of
            # its own: a job's end costs no extra commit, nor an fsync with --fsync commit;
            # a journal that refuses the write keeps it pending and tries again
            self._journal._pending.extend((
                (INSERT, (self._seq, row["id"], blob, zlib.crc32(blob))),
                (PRUNE, (self._seq - self.keep,))))
        with self.lock:
            if len(self._rows) == self._rows.maxlen:
                self._ids.discard(self._rows[0]["id"])
            self._rows.append(row)
            self._ids.add(row["id"])

    # -- the HTTP threads ----------------------------------------------------------------
    def page(self, limit: int = 100, before: int | None = None,
             owner: str | None = None) -> dict:
        """The newest finished jobs (newest first), at most ``limit``, those older than
        sequence number ``before`` if given; ``next``: the cursor of the next page (None
        at the end)."""
        limit = max(1, min(limit, MAX_PAGE))
        with self.lock:
            rows = list(self._rows)
        out = []
        for row in reversed(rows):
            if before is not None and row["seq"] >= before:
                continue
            if owner is not None and row["owner"] != owner:
                continue
            out.append(row)
            if len(out) > limit:
                break
        more = len(out) > limit
        out = out[:limit]
        return {"jobs": out, "next": out[-1]["seq"] if more else None, "total": len(rows),
                "keep": self.keep}

    def get(self, job_id: str) -> dict | None:
        """The row of a finished job, by id (None if not in the history)."""
        with self.lock:
            if job_id not in self._ids:
                return None
            for row in reversed(self._rows):
                if row["id"] == job_id:
                    return row
        return None
