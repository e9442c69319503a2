"""The broker's journal: what a restarted broker needs to carry on where it stopped.

``pymapreduce broker --state-dir DIR`` keeps, in ``DIR/journal.sqlite``, every accepted job
(its code blob, input splits and options), every committed task (its statistics and which
output partitions it wrote) and every job's end; committed task outputs live as files
under ``DIR/outputs/<job seq>/``. A task's output files are written before its commit
row, so a row always names complete files; files without a row are simply written again
by the task's next attempt.

Writes are grouped: the broker calls :meth:`Journal.flush` once per turn of its loop, so
a busy broker commits one SQLite transaction for many task commits. A job's acceptance
is flushed before the client hears ACCEPTED. The journal survives the broker process
being killed (the files and the WAL are in the kernel's page cache); it does not promise
to survive the machine losing power (``synchronous=NORMAL``, no fsync per commit).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    options BLOB NOT NULL,
    code BLOB NOT NULL,
    splits BLOB NOT NULL,
    state TEXT NOT NULL,
    error BLOB,
    ended REAL
);
CREATE TABLE IF NOT EXISTS commits (
    seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    idx INTEGER NOT NULL,
    stats BLOB NOT NULL,
    parts BLOB NOT NULL,
    PRIMARY KEY (seq, step, kind, idx)
);
"""
VERSION = 1


def _blob(value: Any) -> bytes:
    """Bytes of a zmq.Frame, memoryview or bytes."""
    if hasattr(value, "bytes"):
        return value.bytes
    return bytes(value)


@dataclass
class SavedJob:
    """A job as the journal holds it, for a broker that restarts."""

    seq: int
    id: str
    options: dict
    code: bytes
    splits: list
    state: str
    error: dict | None
    ended: float | None
    commits: list = field(default_factory=list)  # [(step, kind, index, stats, parts)]


class Journal:
    """The SQLite journal and the output files of one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.abspath(state_dir)
        self.outputs = os.path.join(self.dir, "outputs")
        try:
            os.makedirs(self.outputs, exist_ok=True)
            self._lock = open(os.path.join(self.dir, "lock"), "a+")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot use state directory {state_dir!r}: {exc}") from exc
        try:  # two brokers on one journal would corrupt each other's jobs
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise ConfigError(f"state directory {state_dir!r} is in use by another broker "
                              f"(pid {holder})") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        try:
            self.db = sqlite3.connect(os.path.join(self.dir, "journal.sqlite"),
                                      isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot use state directory {state_dir!r}: {exc}") from exc
        row = self.db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if row is not None and row[0] != VERSION:
            raise ConfigError(f"state directory {state_dir!r} was written by journal version "
                              f"{row[0]}; this broker reads version {VERSION}")
        self._open = False
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (VERSION,))
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('incarnation', 0)")
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key='incarnation'")
        self.incarnation = self.db.execute(
            "SELECT value FROM meta WHERE key='incarnation'").fetchone()[0]
        self.flush()

    # -- writing -------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._open:
            self.db.execute("BEGIN")
            self._open = True

    def flush(self) -> None:
        """Commit what was journaled since the last flush (one transaction)."""
        if self._open:
            self.db.execute("COMMIT")
            self._open = False

    def add_job(self, job_id: str, options: dict, code: Any, splits: list) -> int:
        """Journal an accepted job; returns its sequence number (names its output files)."""
        saved = [["mem", _blob(s[1])] if s[0] == "mem" else s for s in splits]
        self._begin()
        cur = self.db.execute(
            "INSERT INTO jobs (id, options, code, splits, state) VALUES (?, ?, ?, ?, 'running')",
            (job_id, msgpack.packb(options), _blob(code), msgpack.packb(saved)))
        return cur.lastrowid

    def commit(self, seq: int, step: int, kind: str, index: int, stats: dict,
               parts: list[int]) -> None:
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?, ?)",
                        (seq, step, kind, index, msgpack.packb(stats), msgpack.packb(parts)))

    def finish(self, seq: int, state: str, error: dict | None, ended: float) -> None:
        """A job ended (``ended``: the wall-clock time it did)."""
        self._begin()
        self.db.execute("UPDATE jobs SET state=?, error=?, ended=? WHERE seq=?",
                        (state, msgpack.packb(error) if error else None, ended, seq))

    def drop(self, seq: int) -> None:
        """Forget a job and delete its files."""
        self._begin()
        self.db.execute("DELETE FROM commits WHERE seq=?", (seq,))
        self.db.execute("DELETE FROM jobs WHERE seq=?", (seq,))
        shutil.rmtree(self.job_dir(seq), ignore_errors=True)

    def job_dir(self, seq: int) -> str:
        return os.path.join(self.outputs, str(seq))

    def output_path(self, seq: int, name: str) -> str:
        """Where a committed output blob of job ``seq`` lives; creates the job's directory."""
        path = os.path.join(self.outputs, str(seq), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    # -- reading, at start-up ------------------------------------------------------------
    def load(self) -> list[SavedJob]:
        """Every journaled job with its commits, in submission order."""
        jobs: dict[int, SavedJob] = {}
        for seq, job_id, options, code, splits, state, error, ended in self.db.execute(
                "SELECT seq, id, options, code, splits, state, error, ended FROM jobs "
                "ORDER BY seq"):
            jobs[seq] = SavedJob(seq, job_id, msgpack.unpackb(options), code,
                                 msgpack.unpackb(splits), state,
                                 msgpack.unpackb(error) if error else None, ended)
        for seq, step, kind, index, stats, parts in self.db.execute(
                "SELECT seq, step, kind, idx, stats, parts FROM commits "
                "ORDER BY seq, step, kind, idx"):
            if seq in jobs:
                jobs[seq].commits.append((step, kind, index, msgpack.unpackb(stats),
                                          msgpack.unpackb(parts)))
        known = {str(seq) for seq in jobs}
        for name in os.listdir(self.outputs):  # outputs of jobs dropped before a crash
            if name not in known:
                shutil.rmtree(os.path.join(self.outputs, name), ignore_errors=True)
        return list(jobs.values())

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()
            self._lock.close()  # releases the lock
