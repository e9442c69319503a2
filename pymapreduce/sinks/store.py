"""A sink's segments on disk: one append-only file per (job, step, partition), merged as
mappers push (Magnet's and Celeborn's push-merge), with an index beside it.

A PUT appends a map task's segment for one partition to that partition's ``.data`` file,
then a fixed-size record to its ``.idx`` file: map index, attempt, offset, length and the
segment's CRC-32. A reducer's GET names the (map, attempt) pairs it wants, in map order;
each is read back with one ``pread`` and checked against its CRC, so a damaged disk is a
lost segment (its map runs again), never a wrong answer. Nothing is held in memory but the
index. With a state directory the files outlive the process: a restarted sink reads its
indexes back, keeping only records whose bytes are whole in their data file (a record is
written after its data, so a sink killed between the two loses that segment only, and the
mapper, which had no answer yet, sends it again).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import tempfile
import zlib
from collections import OrderedDict
from typing import Any

from ..patterns import owned
from ..patterns.security import private_dir

log = logging.getLogger("pymapreduce.sink")

RECORD = struct.Struct("<IQQQI")  # map, attempt, offset, length, crc32
OPEN_FILES = 128  # partition files kept open for appending at once
ROOT_PREFIX = "pymapreduce-sink-"  # a sink's temporary directory (mkdtemp)
JOB_FILE = "job"  # in a job's directory: the job's id (directory names are hashed)


def _job_dir(job: str) -> str:
    """A job's directory name: job ids come from clients, so they are hashed, not used."""
    return hashlib.sha256(job.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class SegmentStore:
    """Segments by ``(job, step, part)`` and ``(map, attempt)``; see the module's doc.

    ``root``: the state directory (kept across restarts), or None for a temporary
    directory removed by :meth:`close`."""

    def __init__(self, root: str | None) -> None:
        self.durable = root is not None
        self._owner: int | None = None
        self.sweeping = None  # the sweep's thread, if one was started
        if root is None:  # (and the ones of sinks killed on this host: patterns/owned.py)
            # on a thread of its own, as the broker's: anyone may plant entries with the
            # prefix, which must not hold the sink's start (a new root is claimed before
            # the sweep could take it for a dead sink's: owned.claim)
            tmp = tempfile.gettempdir()
            self.sweeping = owned.in_background([lambda: owned.sweep(tmp, ROOT_PREFIX)])
            root = tempfile.mkdtemp(prefix=ROOT_PREFIX)
            self._owner = owned.claim(root)
        self.root = root
        # (a state directory the operator named: the shuffle's segments, every job's data)
        private_dir(self.root, "sink state directory", "the shuffle's data of every job")
        # (job, step, part) -> {(map, attempt): (offset, length, crc)}
        self.index: dict[tuple[str, int, int], dict[tuple[int, int], tuple[int, int, int]]] = {}
        self.sizes: dict[tuple[str, int, int], int] = {}  # bytes in each data file
        self._open: OrderedDict[tuple[str, int, int], tuple[Any, Any]] = OrderedDict()
        self.bytes_in = self.bytes_out = 0  # for the operator (and the benchmarks)
        self.segments_in = 0
        if self.durable:
            self._load()

    # -- paths ---------------------------------------------------------------------------
    def _dir(self, job: str, step: int) -> str:
        return os.path.join(self.root, _job_dir(job), f"s{step}")

    def _paths(self, key: tuple[str, int, int]) -> tuple[str, str]:
        base = os.path.join(self._dir(key[0], key[1]), f"p{key[2]}")
        return base + ".data", base + ".idx"

    # -- writing -------------------------------------------------------------------------
    def put(self, job: str, step: int, map_index: int, attempt: int, part: int,
            blob: Any) -> None:
        """Append one segment (OSError when the disk refuses it: nothing is indexed)."""
        key = (job, step, part)
        data, idx = self._files(key)
        offset = data.seek(0, os.SEEK_END)  # (a failed earlier write may have left bytes)
        view = memoryview(blob)
        crc = zlib.crc32(view)
        data.write(view)
        data.flush()
        idx.write(RECORD.pack(map_index, attempt, offset, len(view), crc))
        idx.flush()
        self.sizes[key] = offset + len(view)
        self.index.setdefault(key, {})[(map_index, attempt)] = (offset, len(view), crc)
        self.bytes_in += len(view)
        self.segments_in += 1

    def _files(self, key: tuple[str, int, int]) -> tuple[Any, Any]:
        files = self._open.get(key)
        if files is not None:
            self._open.move_to_end(key)
            return files
        directory = self._dir(key[0], key[1])
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(os.path.dirname(directory), JOB_FILE), "w",
                      encoding="utf-8", errors="surrogateescape") as f:
                f.write(key[0])
        data_path, idx_path = self._paths(key)
        data = open(data_path, "ab")  # noqa: SIM115 (kept open across PUTs)
        idx = open(idx_path, "ab")  # noqa: SIM115
        self._open[key] = files = (data, idx)
        while len(self._open) > OPEN_FILES:
            _, (d, i) = self._open.popitem(last=False)
            d.close()
            i.close()
        return files

    # -- reading -------------------------------------------------------------------------
    def get(self, job: str, step: int, part: int, map_index: int, attempt: int) -> bytes | None:
        """One segment's bytes, or None when this sink does not hold it whole."""
        key = (job, step, part)
        entry = self.index.get(key, {}).get((map_index, attempt))
        if entry is None:
            return None
        offset, length, crc = entry
        if key in self._open:
            self._open[key][0].flush()
        try:
            fd = os.open(self._paths(key)[0], os.O_RDONLY)
            try:
                blob = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("segment %s map %d of %s unreadable: %s", key, map_index, job, exc)
            return None
        if len(blob) != length or zlib.crc32(blob) != crc:
            log.error("segment of %s step %d part %d map %d is damaged (CRC-32 mismatch): "
                      "its map task runs again", job, step, part, map_index)
            del self.index[key][(map_index, attempt)]
            return None
        self.bytes_out += length
        return blob

    # -- forgetting ----------------------------------------------------------------------
    def drop(self, job: str) -> None:
        """Forget a job's segments, on disk too."""
        for key in [k for k in self._open if k[0] == job]:
            d, i = self._open.pop(key)
            d.close()
            i.close()
        for key in [k for k in self.index if k[0] == job]:
            del self.index[key]
            self.sizes.pop(key, None)
        shutil.rmtree(os.path.join(self.root, _job_dir(job)), ignore_errors=True)

    def held(self, job: str) -> tuple[int, int]:
        """(segments, bytes) this sink holds of ``job``."""
        entries = [e for k, idx in self.index.items() if k[0] == job for e in idx.values()]
        return len(entries), sum(e[1] for e in entries)

    def jobs(self) -> set[str]:
        return {k[0] for k in self.index}

    def close(self) -> None:
        for d, i in self._open.values():
            d.close()
            i.close()
        self._open.clear()
        if not self.durable:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None

    # -- a restart -----------------------------------------------------------------------
    def _load(self) -> None:
        """Read back the indexes of a state directory (see the module's doc)."""
        kept = 0
        for name in os.listdir(self.root):
            jdir = os.path.join(self.root, name)
            try:
                with open(os.path.join(jdir, JOB_FILE), encoding="utf-8",
                          errors="surrogateescape") as f:
                    job = f.read()
            except OSError:
                continue
            if _job_dir(job) != name:
                continue
            for sname in os.listdir(jdir):
                if not (sname.startswith("s") and sname[1:].isdigit()):
                    continue
                step = int(sname[1:])
                for fname in os.listdir(os.path.join(jdir, sname)):
                    if fname.startswith("p") and fname.endswith(".idx") and fname[1:-4].isdigit():
                        kept += self._load_part((job, step, int(fname[1:-4])))
        if kept:
            log.info("sink state %s: %d segment(s) of %d job(s) kept", self.root, kept,
                     len(self.jobs()))

    def _load_part(self, key: tuple[str, int, int]) -> int:
        data_path, idx_path = self._paths(key)
        try:
            size = os.path.getsize(data_path)
            with open(idx_path, "rb") as f:
                raw = f.read()
        except OSError:
            return 0
        whole = len(raw) - len(raw) % RECORD.size
        if whole != len(raw):  # a record cut short (killed mid-write): appends realign
            try:
                os.truncate(idx_path, whole)
            except OSError:
                return 0
        entries: dict[tuple[int, int], tuple[int, int, int]] = {}
        for pos in range(0, whole, RECORD.size):
            m, a, offset, length, crc = RECORD.unpack_from(raw, pos)
            if offset + length <= size:
                entries[(m, a)] = (offset, length, crc)
        if entries:
            self.index[key] = entries
            self.sizes[key] = size
        return len(entries)
