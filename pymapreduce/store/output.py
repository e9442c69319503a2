"""Part files written by the tasks that make them, straight to the output location (a
directory the workers share, or a URL), and committed once per partition.

The protocol (Hadoop's FileOutputCommitter, with the broker as the arbiter):

1. A reduce task (or a map task of a map-only job) of the last step writes its output,
   encoded as ``client/output.py`` encodes it, under a name of its own attempt:
   ``OUT/_temporary/<job>/<attempt>/part-NNNNN`` (:func:`write_attempt`). A killed
   attempt leaves at most a partial file there, never under a final name.
2. Its DONE carries a commit record (the attempt, records, bytes) as the partition's
   output (after the data when the client keeps results, instead of it when not). The
   broker commits the first attempt to report, as for every task: a backup or retried
   attempt that loses is never committed, so its file is never promoted.
3. When the job has succeeded, the client that waits on it (``JobHandle.wait``) renames
   each committed attempt's file to ``part-NNNNN`` (a rename on a file system, a
   server-side copy on an object store: no data passes through the client), removes
   part files of an earlier run beyond this one's, deletes ``_temporary/<job>`` and
   writes ``_SUCCESS`` last (``commit.py``).

The broker never touches the output: it has no credentials and needs none.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from typing import Any

import msgpack

from ..client.output import CHUNK_RECORDS, encode_lines_utf8
from ..spill.runs import column_chunks
from . import localfs
from .urls import check_url, filesystem, is_url, local_path, redact

log = logging.getLogger("pymapreduce.worker")

TEMPORARY = "_temporary"  # where attempts write (a name readers skip, as Hadoop's)
SUCCESS = "_SUCCESS"
RECORD_FIELDS = ("attempt", "records", "bytes")


def safe_job(job_id: str) -> str:
    """A job id as one path component (ids are printable text a client chose)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", job_id)[:200].lstrip(".") or "job"  # (not "..")


def part_name(part: int) -> str:
    return f"part-{part:05d}"


def job_temporary(job_id: str) -> str:
    """The job's directory of attempts, relative to the output root: ``_temporary/`` and
    one path component unique to the exact id, its :func:`safe_job` (cut short) and a
    hash of the id, so that two ids ``safe_job`` maps alike (``a/b``, ``a_b``) never
    share one (their clean-ups would delete each other's files). Whatever writes, commits
    or removes a job's attempts finds them here."""
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{TEMPORARY}/{safe_job(job_id)[:100]}-{digest}"


def temp_name(job_id: str, attempt: int, part: int) -> str:
    """Where ``attempt`` writes partition ``part``, relative to the output root."""
    return f"{job_temporary(job_id)}/{attempt:x}/{part_name(part)}"


class Location:
    """An output root, local (a path the workers share) or a URL, with the few file
    operations the commit needs; names are relative to the root, ``/``-separated. Below
    a local root no symbolic link is followed (``localfs.py``: OutputLinkRefused)."""

    def __init__(self, url: str, storage: dict | None = None) -> None:
        self.url = url
        self.local = not is_url(url)
        self.storage = storage or {}
        if self.local:
            self.root = local_path(url)
            self.fs = None
        else:
            self.fs, root = filesystem(check_url(url), self.storage)
            self.root = root.rstrip("/")

    def path(self, name: str) -> str:
        if self.local:
            return os.path.join(self.root, *name.split("/"))
        return f"{self.root}/{name}"

    def shown(self, name: str = "") -> str:
        """A name as a user reads it in a message."""
        where = self.root if self.local else redact(self.url).rstrip("/")
        return f"{where}/{name}" if name else where

    def write_lines(self, name: str, keys: list, values: list) -> int:
        """Write the pairs as JSON lines under ``name`` (made complete, then closed);
        returns the bytes written."""
        return self.write_chunks(name, ((keys[i:i + CHUNK_RECORDS], values[i:i + CHUNK_RECORDS])
                                        for i in range(0, len(keys), CHUNK_RECORDS)))

    def write_chunks(self, name: str, chunks: Any) -> int:
        """:meth:`write_lines` of pairs given as ``(keys, values)`` chunks."""
        return self.write_bytes(name, (encode_lines_utf8(keys, values)
                                       for keys, values in chunks))

    def write_bytes(self, name: str, pieces: Any) -> int:
        """Write the bytes of ``pieces`` (an iterable of bytes) under ``name``, made
        complete, then closed; returns the bytes written."""
        path = self.path(name)
        if self.local:
            fd = localfs.create(self.root, name)
            try:
                with open(fd, "wb") as f:
                    for piece in pieces:
                        f.write(piece)
                    f.flush()
                    return os.fstat(fd).st_size
            except OSError as exc:
                if exc.filename is not None:
                    raise
                # (a write to a full disk names no file: the error says which)
                raise OSError(exc.errno, f"{exc.strerror or exc}: {path}") from exc
        size = 0
        with self.fs.open(path, "wb") as f:  # an object appears whole when it is closed
            for piece in pieces:
                f.write(piece)
                size += len(piece)
        return size

    def exists(self, name: str) -> bool:
        if self.local:
            return localfs.lstat(self.root, name) is not None
        return self.fs.exists(self.path(name))

    def size(self, name: str) -> int:
        if self.local:
            st = localfs.lstat(self.root, name)
            if st is None:
                raise FileNotFoundError(errno.ENOENT, "No such file", self.path(name))
            return st.st_size
        return int(self.fs.size(self.path(name)) or 0)

    def rename(self, src: str, dst: str) -> None:
        """``src`` to ``dst``, replacing it: atomic on a file system; on an object store
        a server-side copy, then the source deleted (readers wait for ``_SUCCESS``)."""
        if self.local:
            localfs.rename(self.root, src, dst)
        else:
            self.fs.mv(self.path(src), self.path(dst))

    def touch(self, name: str) -> None:
        """An empty file (an empty partition, ``_SUCCESS``)."""
        if self.local:
            os.close(localfs.create(self.root, name))
        else:
            self.fs.pipe_file(self.path(name), b"")

    def remove(self, name: str) -> None:
        """Delete ``name`` if it is there."""
        if self.local:
            localfs.unlink(self.root, name)
            return
        try:
            self.fs.rm_file(self.path(name))
        except FileNotFoundError:
            pass

    def remove_tree(self, name: str) -> None:
        """Delete ``name`` and everything below it, if there."""
        if self.local:
            localfs.remove_tree(self.root, name)
            return
        path = self.path(name)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def remove_empty(self, name: str) -> bool:
        """Delete the directory ``name`` if it is empty (local only; on an object store a
        "directory" goes with its last object): whether it went."""
        if not self.local:
            return False
        try:
            localfs.rmdir(self.root, name)
        except OSError:
            return False
        return True

    def names(self) -> list[str]:
        """The names directly under the root."""
        if self.local:
            return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(
                self.root, detail=False))
        except FileNotFoundError:
            return []

    def refresh(self) -> None:
        """Forget listings cached by the filesystem (workers wrote since)."""
        if self.fs is not None:
            self.fs.invalidate_cache()


def write_attempt(spec: dict, job_id: str, part: int, attempt: int, blob: Any) -> bytes:
    """Write an attempt's output partition (``blob``: its packed ``[keys, values]``, or
    the ``(keys, values)`` columns themselves) as its part file under the attempt's
    temporary name; returns what the task reports as the partition's output: the commit
    record, after the data when the client keeps results (``[keys, values, record]``),
    else alone (``[[], [], record]``)."""
    from ..rangesort import EncodedLines  # (a worker's module: not a client's import)

    if type(blob) is tuple:
        return _write_columns(spec, job_id, part, attempt, *blob)
    if type(blob) is EncodedLines:  # (a plain sort's reduce, from its runs' bytes)
        keeps = spec.get("results") is not False
        if keeps and blob.packed is None:
            raise ValueError("a task's output is its part file's lines, but its client "
                             "keeps results")
        written = Location(spec["url"], spec.get("storage")).write_bytes(
            temp_name(job_id, attempt, part), [blob.data])
        record = msgpack.packb({"attempt": attempt, "records": blob.records,
                                "bytes": written})
        if not keeps or not blob.records:
            return msgpack.packb([[], []]).replace(b"\x92", b"\x93", 1) + record
        if bytes(blob.packed[:1]) != b"\x92":
            raise ValueError("a task's output is not two columns")
        return b"\x93" + blob.packed[1:] + record
    data = memoryview(blob).cast("B")  # (no copy: the task's output is large)
    # decoded a chunk at a time as it is written: never the whole partition at once
    count, chunks = column_chunks(data, CHUNK_RECORDS) if len(data) else (0, iter(()))
    written = Location(spec["url"], spec.get("storage")).write_chunks(
        temp_name(job_id, attempt, part), chunks)
    record = msgpack.packb({"attempt": attempt, "records": count, "bytes": written})
    if spec.get("results") is False or not data:
        return msgpack.packb([[], []]).replace(b"\x92", b"\x93", 1) + record
    if bytes(data[:1]) != b"\x92":  # (pack() of two columns starts with a fixarray of 2)
        raise ValueError("a task's output is not two columns")
    return b"\x93" + bytes(data[1:]) + record


def discard_attempt(spec: dict, job_id: str, part: int, attempt: int) -> None:
    """Remove what an attempt stopped by the broker (its job cancelled, a backup that
    lost) wrote of its part file, and the directories left empty above it, up to
    ``_temporary`` (best effort: its job's client may have removed them already)."""
    try:
        loc = Location(spec["url"], spec.get("storage"))
        name = temp_name(job_id, attempt, part)
        loc.remove(name)
        parts = name.split("/")
        for depth in (3, 2, 1):  # the attempt's, the job's, _temporary (if empty)
            if not loc.remove_empty("/".join(parts[:depth])):
                break
    except Exception as exc:  # (a store out of reach: the worker must go on, not crash)
        log.warning("could not remove the file of stopped attempt %d of %s, partition %d: "
                    "%s: %.200s", attempt, job_id, part, type(exc).__name__, exc)


def _write_columns(spec: dict, job_id: str, part: int, attempt: int, keys: list,
                   values: list) -> bytes:
    """:func:`write_attempt` of columns in hand (a plain sort's reduce, rangesort.py): the
    lines are encoded from them, not from their packed bytes decoded again, and they are
    packed only if the client keeps results (the task checked that no value needs a
    pickle)."""
    written = Location(spec["url"], spec.get("storage")).write_lines(
        temp_name(job_id, attempt, part), keys, values)
    record = msgpack.packb({"attempt": attempt, "records": len(keys), "bytes": written})
    if spec.get("results") is False or not keys:
        return msgpack.packb([[], []]).replace(b"\x92", b"\x93", 1) + record
    from ..patterns.records import pack

    return b"\x93" + pack([keys, values])[1:] + record
