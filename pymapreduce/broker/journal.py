"""The broker's journal: what a restarted broker needs to carry on where it stopped.

``pymapreduce broker --state-dir DIR`` keeps, in ``DIR/journal.sqlite``, every accepted job
(its code blob, input splits and options), every committed task (its statistics, which
output partitions it wrote and their files' CRC-32) and every job's end; committed task
outputs live as files under ``DIR/outputs/<job seq>/``. A task's output files are written
before its commit row, so a row always names complete files; files without a row are
simply written again by the task's next attempt. Each accepted job has its directory from
the start, so a journal that lost jobs (truncated, or a power loss) is noticed: their
directories are there and the journal does not know them.

Writes are grouped: the broker calls :meth:`Journal.flush` once per turn of its loop, so
a busy broker commits one SQLite transaction for many task commits. A job's acceptance
is committed before the client hears ACCEPTED. What a crash can lose depends on
``fsync`` (``--fsync``): see :data:`FSYNC_POLICIES`.

Integrity: the journal is opened with SQLite's ``quick_check`` and every row carries a
CRC-32 of its contents (SQLite does not checksum its pages), so a damaged journal is a
:class:`StateError` naming the file, and a damaged row fails its job with a message,
never a silently empty or wrong broker. Rows are read back leniently (any msgpack), so
nothing a job or a worker reported can stop a broker from restarting.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import ConfigError, StateError
from ..patterns.security import private_dir

log = logging.getLogger("pymapreduce.broker")

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
    ended REAL,
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS commits (
    seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    idx INTEGER NOT NULL,
    stats BLOB NOT NULL,
    parts BLOB NOT NULL,
    sums BLOB,
    crc INTEGER,
    PRIMARY KEY (seq, step, kind, idx)
);
"""
VERSION = 2  # 2: CRC-32 per row and per output file (a version 1 journal is upgraded)
UPGRADE_1 = ("ALTER TABLE jobs ADD COLUMN crc INTEGER",
             "ALTER TABLE commits ADD COLUMN sums BLOB",
             "ALTER TABLE commits ADD COLUMN crc INTEGER")
FSYNC_POLICIES = {
    # SQLite synchronous=NORMAL, output files not fsynced: a killed broker loses nothing,
    # a power loss may lose the last seconds of commits and accepted jobs
    "never": "NORMAL",
    # synchronous=FULL and every output file (and its directory) fsynced before its
    # commit row: a power loss loses nothing the broker acknowledged
    "commit": "FULL",
}
MIN_FREE = 1 << 20  # bytes a new job must leave free on the state directory's disk
RETRY_AFTER = 1.0  # seconds between attempts to write a journal that refused a write
TERMINAL = ("succeeded", "failed", "cancelled")
DROPPED = ".dropped"  # a released job's directory, renamed before its rows are deleted
# A finished job's row keeps one empty split per split: the code and input bytes go, and
# its CRC-32 is recomputed over what stays (by the SQL functions of Journal._functions:
# SET expressions see the row as it was, so a row already damaged stays damaged).
FINISH = ("UPDATE jobs SET state=?, error=?, ended=?, code=X'', splits=pmr_hollow(splits), "
          "crc=pmr_recrc(id, options, code, splits, crc) WHERE seq=?")
RECLAIM_PAGES = 256  # free pages (of 4 KiB) worth returning to the file system at once
WAL_LIMIT = 16 << 20  # bytes the write-ahead log is truncated to after a checkpoint


def _blob(value: Any) -> bytes:
    """Bytes of a zmq.Frame, memoryview or bytes."""
    if hasattr(value, "bytes"):
        return value.bytes
    return bytes(value)


def _crc(*parts: Any) -> int:
    crc = 0
    for part in parts:
        if isinstance(part, str):
            part = part.encode("utf-8", "surrogatepass")
        elif isinstance(part, int):
            part = str(part).encode()
        crc = zlib.crc32(part or b"", crc)
    return crc


def _unpack(data: Any) -> Any:
    """Read back what we packed: any key type (a counter may be named by an int)."""
    return msgpack.unpackb(data, strict_map_key=False, raw=False)


def _hollow(splits: Any) -> Any:
    """A finished job's splits: as many, each empty (as they were if they cannot be read)."""
    try:
        count = len(_unpack(splits))
    except Exception:
        return splits
    return msgpack.packb([["mem", b""]] * count)


def _recrc(job_id: Any, options: Any, code: Any, splits: Any, crc: Any) -> Any:
    """The CRC-32 of a job row once hollowed; a row that did not match keeps its CRC (and
    stays damaged), a row written before checksums keeps none."""
    if crc is None or crc != _crc(job_id, options, code, splits):
        return crc
    return _crc(job_id, options, b"", _hollow(splits))


@dataclass
class SavedJob:
    """A job as the journal holds it, for a broker that restarts.

    ``damage`` is set when the job's row cannot be trusted (it is then restored as failed,
    with that message); ``damaged_commits`` counts its commit rows that could not be."""

    seq: int
    id: str
    options: dict
    code: bytes
    splits: list
    state: str
    error: dict | None
    ended: float | None
    commits: list = field(default_factory=list)  # [(step, kind, index, stats, parts, sums)]
    damage: str = ""
    damaged_commits: int = 0


class Journal:
    """The SQLite journal and the output files of one state directory."""

    def __init__(self, state_dir: str, fsync: str = "never") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.fsync = fsync
        self.dir = os.path.abspath(state_dir)
        self.outputs = os.path.join(self.dir, "outputs")
        self.path = os.path.join(self.dir, "journal.sqlite")
        self._lock_dir(state_dir)
        self._pending: list[tuple[str, tuple]] = []  # statements of the next transaction
        self._gone: list[str] = []  # directories to delete once their rows are
        self.failing = ""  # why the last write failed ("" once writes succeed again)
        self._retry_at = 0.0
        self._freed = False  # rows were hollowed or deleted since the last _reclaim
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot use state directory {state_dir!r}: {exc}") from exc
        try:
            self._open()
        except StateError:
            self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise self._refusal(exc) from exc

    def _lock_dir(self, state_dir: str) -> None:
        try:
            private_dir(self.dir, "state directory", "every journaled job's code, "
                        "in-memory inputs and outputs")
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
                              f"(pid {holder}): stop that broker first, or give this one "
                              "another --state-dir") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()

    def _open(self) -> None:
        db = self.db
        db.create_function("pmr_hollow", 1, _hollow, deterministic=True)
        db.create_function("pmr_recrc", 5, _recrc, deterministic=True)
        # pages freed by finished and released jobs go back to the file system (before the
        # first table is made: a journal made before this is converted by _compact)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={FSYNC_POLICIES[self.fsync]}")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        problems = [r[0] for r in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(map(str, problems[:3])))
        row = None
        if db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
            row = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        db.executescript(SCHEMA)  # (creates what is missing; commits by itself)
        db.execute("BEGIN")
        if row is not None and row[0] == 1:
            for statement in UPGRADE_1:
                db.execute(statement)
        elif row is not None and row[0] != VERSION:
            db.execute("ROLLBACK")
            raise ConfigError(f"state directory {self.dir!r} was written by journal version "
                              f"{row[0]}; this broker reads version {VERSION}")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (VERSION,))
        db.execute("INSERT OR IGNORE INTO meta VALUES ('incarnation', 0)")
        db.execute("UPDATE meta SET value = value + 1 WHERE key='incarnation'")
        self.incarnation = db.execute(
            "SELECT value FROM meta WHERE key='incarnation'").fetchone()[0]
        db.execute("COMMIT")
        self._compact()

    def _compact(self) -> None:
        """Convert a journal without incremental auto-vacuum (made by an older broker) and
        hollow the rows of jobs it finished with their code and inputs still in them: one
        VACUUM, once. A disk too full for it leaves the journal as it was."""
        db = self.db
        try:
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                db.execute("UPDATE jobs SET code=X'', splits=pmr_hollow(splits), "
                           "crc=pmr_recrc(id, options, code, splits, crc) "
                           "WHERE state IN (?, ?, ?) AND length(code) > 0", TERMINAL)
                db.execute("VACUUM")
            else:
                self._reclaim()
        except sqlite3.Error as exc:
            log.warning("cannot compact the journal %s (%s): it keeps its size", self.path,
                        exc)

    def _reclaim(self) -> None:
        """Return the journal's free pages to the file system once there are enough of
        them (a finished job's inputs, a released job's rows)."""
        self._freed = False
        if self.db.execute("PRAGMA freelist_count").fetchone()[0] >= RECLAIM_PAGES:
            # (run to its end: execute() would take one step, one page)
            self.db.executescript("PRAGMA incremental_vacuum")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _refusal(self, exc: Exception) -> StateError:
        """The error a broker refuses to start with, naming the file and what to do."""
        text = str(exc)
        if "full" in text or getattr(exc, "errno", None) == 28:
            return StateError(f"cannot write the journal {self.path}: the disk is full "
                              f"({text}); free space on it and start the broker again")
        if isinstance(exc, sqlite3.OperationalError):
            return StateError(f"cannot use the journal {self.path}: {text}")
        return StateError(
            f"the journal {self.path} is damaged ({text}), so the jobs it held cannot be "
            f"trusted. Move the state directory {self.dir} away (keep it to inspect or "
            "restore it) and start the broker on an empty one; its jobs must be submitted "
            "again")

    # -- writing -------------------------------------------------------------------------
    def flush(self) -> bool:
        """Commit what was journaled since the last flush (one transaction). Never raises:
        a journal that refuses the write (a full disk) keeps the rows and tries again
        later; returns whether everything is written."""
        if not self._pending:
            return True
        now = time.monotonic()
        if self.failing and now < self._retry_at:
            return False
        try:
            self._write([])
        except (OSError, sqlite3.Error) as exc:
            self._retry_at = now + RETRY_AFTER
            if not self.failing:
                log.error("cannot write the journal %s (%s): the broker goes on, but what "
                          "happens until it can is lost if it stops; new jobs are refused",
                          self.path, exc)
            self.failing = str(exc)
            return False
        return True

    def _write(self, extra: list[tuple[str, tuple]]) -> int | None:
        """Run the pending statements and ``extra`` in one transaction; the last row id.
        On failure nothing is written and the pending statements stay pending."""
        try:
            self.db.execute("BEGIN")
            cur = None
            for sql, params in (*self._pending, *extra):
                cur = self.db.execute(sql, params)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        self._pending.clear()
        if self._freed:
            try:
                self._reclaim()
            except sqlite3.Error as exc:  # (the rows are written: only space is not freed)
                log.warning("cannot shrink the journal %s: %s", self.path, exc)
        if self.failing:
            log.warning("the journal %s is written again", self.path)
            self.failing = ""
        for path in self._gone:  # their rows are gone for good: now the files may go
            shutil.rmtree(path, ignore_errors=True)
        self._gone.clear()
        return cur.lastrowid if cur is not None else None

    def add_job(self, job_id: str, options: dict, code: Any, splits: list) -> int:
        """Journal an accepted job, durably at once (with anything pending); returns its
        sequence number (names its output directory). :class:`StateError` if the journal
        cannot be written: the job must then be refused."""
        saved = [["mem", _blob(s[1])] if s[0] == "mem" else s for s in splits]
        options_b, code_b, splits_b = msgpack.packb(options), _blob(code), msgpack.packb(saved)
        crc = _crc(job_id, options_b, code_b, splits_b)
        need = len(options_b) + len(code_b) + len(splits_b) + MIN_FREE
        try:  # SQLite may still find room in its WAL: a full disk must refuse new work
            st = os.statvfs(self.dir)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = need
        if free < need:
            raise StateError(
                f"the job cannot be accepted: the disk of the broker's state directory "
                f"{self.dir} is full ({free} bytes free, the job needs {need}); submit it "
                "again once there is room")
        try:
            seq = self._write([(
                "INSERT INTO jobs (id, options, code, splits, state, crc) "
                "VALUES (?, ?, ?, ?, 'running', ?)", (job_id, options_b, code_b, splits_b, crc))])
        except (OSError, sqlite3.Error) as exc:
            full = "full" in str(exc) or getattr(exc, "errno", None) == 28
            raise StateError(
                f"the job cannot be accepted: the broker cannot write its state directory "
                f"{self.dir} ({'the disk is full' if full else exc}); submit it again once "
                "there is room") from None
        try:  # made after its row is committed: a directory the journal does not know
            os.makedirs(self.job_dir(seq), exist_ok=True)  # means the journal lost a job
            if self.fsync == "commit":  # (its files are fsynced, and so is their name)
                fd = os.open(self.outputs, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError:
            pass  # (made again when its first output is written)
        return seq

    def commit(self, seq: int, step: int, kind: str, index: int, stats: dict,
               parts: list[int], sums: list | None = None) -> None:
        """Journal a committed task; ``sums``: the CRC-32 of each of its output files, in
        order. A commit whose files could not all be written (None among ``sums``) is not
        journaled: after a restart the task runs again."""
        if sums is not None and None in sums:
            return
        stats_b, parts_b = msgpack.packb(stats), msgpack.packb(parts)
        sums_b = msgpack.packb(sums) if sums is not None else None
        crc = _crc(seq, step, kind, index, stats_b, parts_b, sums_b)
        self._pending.append(("INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (seq, step, kind, index, stats_b, parts_b, sums_b, crc)))

    def finish(self, seq: int, state: str, error: dict | None, ended: float) -> None:
        """A job ended (``ended``: the wall-clock time it did). Its code and in-memory
        inputs are cleared from its row (a restarted broker needs only how many splits it
        had, to replay its commits), so finished jobs kept for their results or until
        their result TTL do not fill the disk; the freed pages are returned to the file
        system by :meth:`_reclaim`."""
        self._pending.append((FINISH, (state, msgpack.packb(error) if error else None, ended,
                                       seq)))
        self._freed = True

    def drop(self, seq: int) -> None:
        """Forget a job; its files go once that is committed (its directory is renamed at
        once, so a restart before then completes the drop)."""
        self._pending.append(("DELETE FROM commits WHERE seq=?", (seq,)))
        self._pending.append(("DELETE FROM jobs WHERE seq=?", (seq,)))
        self._freed = True
        gone = self.job_dir(seq) + DROPPED
        try:
            os.replace(self.job_dir(seq), gone)
        except OSError:
            gone = self.job_dir(seq)
        self._gone.append(gone)

    def job_dir(self, seq: int) -> str:
        return os.path.join(self.outputs, str(seq))

    def output_path(self, seq: int, name: str) -> str:
        """Where a committed output blob of job ``seq`` lives (the writer creates it)."""
        return os.path.join(self.outputs, str(seq), name)

    # -- reading, at start-up ------------------------------------------------------------
    def load(self) -> list[SavedJob]:
        """Every journaled job with its commits, in submission order. A row that cannot be
        trusted marks its job (see :class:`SavedJob`); a journal that lost jobs whose
        directories exist is a :class:`StateError`."""
        jobs: dict[int, SavedJob] = {}
        for row in self.db.execute("SELECT seq, id, options, code, splits, state, error, "
                                   "ended, crc FROM jobs ORDER BY seq"):
            job = self._job(row)
            jobs[job.seq] = job
        bad_rows = []
        for rowid, *row in self.db.execute(
                "SELECT rowid, seq, step, kind, idx, stats, parts, sums, crc FROM commits "
                "ORDER BY seq, step, kind, idx"):
            seq = row[0]
            commit = self._commit(row)
            if seq in jobs and commit is not None:
                jobs[seq].commits.append(commit)
            elif commit is None:
                bad_rows.append(rowid)
                if seq in jobs:
                    jobs[seq].damaged_commits += 1
                log.error("a commit row in %s is damaged (job seq %r): ignored", self.path, seq)
        if bad_rows:  # never read again: the task's next commit writes a sound row
            self._pending.extend(("DELETE FROM commits WHERE rowid=?", (r,)) for r in bad_rows)
        self._check_dirs(jobs)
        return list(jobs.values())

    def _job(self, row: tuple) -> SavedJob:
        seq, job_id, options, code, splits, state, error, ended, crc = row
        try:
            if crc is not None and crc != _crc(job_id, options, code, splits):
                raise ValueError("its CRC-32 does not match")
            job = SavedJob(seq, job_id, _unpack(options), bytes(code), _unpack(splits),
                           state, _unpack(error) if error else None, ended)
            if not isinstance(job.options, dict) or not isinstance(job.splits, list) or \
                    state not in (*TERMINAL, "running") or not isinstance(job_id, str):
                raise ValueError("a field has the wrong type")
            if job.error is not None and not isinstance(job.error, dict):
                job.error = {"message": str(job.error)}
            return job
        except Exception as exc:  # whatever the row holds, the broker starts
            why = (f"its row in the journal {self.path} is damaged ({exc}), so it cannot "
                   "be carried on: submit it again")
            log.error("job seq %s: %s", seq, why)
            return SavedJob(seq, str(job_id), {"name": "", "reducers": 1, "map_only": True},
                            b"", [], "failed", {"message": why}, None, damage=why)

    def _commit(self, row: tuple) -> tuple | None:
        seq, step, kind, index, stats, parts, sums, crc = row
        try:
            if crc is not None and crc != _crc(seq, step, kind, index, stats, parts, sums):
                return None
            commit = (step, kind, index, _unpack(stats), _unpack(parts),
                      _unpack(sums) if sums is not None else None)
        except Exception:
            return None
        if type(step) is not int or type(index) is not int or not isinstance(kind, str) \
                or not isinstance(commit[3], dict) or not isinstance(commit[4], list):
            return None
        return commit

    def _check_dirs(self, jobs: dict[int, SavedJob]) -> None:
        """Finish interrupted drops; refuse a journal that lost jobs it had accepted."""
        lost = []
        for name in sorted(os.listdir(self.outputs)):
            path = os.path.join(self.outputs, name)
            if name.endswith(DROPPED) and name[: -len(DROPPED)].isdigit():
                seq = int(name[: -len(DROPPED)])
                if seq in jobs:  # released, but the broker stopped before it was written
                    del jobs[seq]
                    self.drop(seq)
                self._gone.append(path)
            elif name.isdigit() and int(name) not in jobs:
                lost.append(path)
        if lost:
            raise StateError(
                f"the journal {self.path} has lost jobs it had accepted: it does not know "
                f"{', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''} (the journal was "
                "truncated or damaged, or the machine lost power with --fsync never). Move "
                f"the state directory {self.dir} away and start on an empty one, or, to "
                "start with the jobs it still holds, delete those directories (their jobs "
                "are lost and must be submitted again)")

    def close(self) -> None:
        try:
            if getattr(self, "db", None) is not None:
                self._retry_at = 0.0  # a last try, whatever the back-off
                self.flush()
                self.db.close()
        finally:
            self._lock.close()  # releases the lock
