"""The sink's store: task outputs in memory up to a budget, on disk beyond it.

With a state directory, every committed output is also written to a file whose CRC-32 is
journaled with the commit (zlib.crc32 checks 256 MiB in about 0.04 s here, a fraction of
reading it). A file is checked against its CRC when a restarted broker adopts it and
whenever it is mapped to be sent, so a damaged file is an error naming it, never a wrong
answer.

A blob served from a file is memory-mapped, read-only, and every reply that carries it
while one is still queued shares that one mapping: a client that sends a thousand FETCHes
of a spilled output and reads none costs the broker one mapping of the file (page cache the
kernel may reclaim), not a thousand copies of it (the broker's queue to a peer is bounded
in messages, not bytes). The mapping goes when its last reply has been sent (pyzmq holds
the buffer until then); the next read maps, and checks, the file again. Many distinct
outputs held at once are mapped too, up to a cap that follows the process's limits; past
it, a bounded amount is copied and then a client's FETCH is refused (see COPY_BUDGET).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import shutil
import sys
import tempfile
import weakref
import zlib
from collections.abc import Callable
from typing import Any

from ..errors import OutputDamaged, PyMapReduceError
from ..patterns import allocator, owned
from ..spill.budget import DIR_PREFIX as SPILL_PREFIX  # (one prefix: both are swept)

log = logging.getLogger("pymapreduce.broker")
CHUNK = 1 << 20  # bytes read at a time when checking a file
# Files smaller than this are read into bytes: the socket copies a frame this small anyway
# (pyzmq's zero-copy threshold), so a mapping would save nothing and cost two syscalls.
MAP_MIN = 64 * 1024
# Before Python 3.13 every mmap object holds a dup of its file descriptor (3.13's
# trackfd=False holds none). Each file mapping is also one of the kernel's per-process
# mappings (vm.max_map_count, 65,530 by default). So the store maps at most a quarter of
# that many files at once and, where each holds a descriptor, half the open-files limit
# (the broker raises it to the hard limit at start: fdlimit.py), leaving the rest to
# connections. Past that cap, files are read into anonymous memory, still shared by every
# reply, up to COPY_BUDGET bytes of such copies held at once; past that, a client's FETCH
# is refused (StoreBusy) rather than copied: what unread replies cost the broker is
# bounded, not by how many distinct outputs a client asks for.
TRACKS_FD = sys.version_info < (3, 13)
MAP_OPTIONS: dict[str, Any] = {} if TRACKS_FD else {"trackfd": False}
MAX_MAP_COUNT = "/proc/sys/vm/max_map_count"
COPY_BUDGET = 64 << 20


class StoreBusy(PyMapReduceError):
    """Too many distinct file-backed outputs are held by unsent replies to map or copy
    another one for a client now; asking again once they drain succeeds."""


def map_cap() -> int:
    """How many files the store may hold mapped at once in this process (see above)."""
    try:
        with open(MAX_MAP_COUNT) as f:
            cap = int(f.read()) // 4
    except (OSError, ValueError):
        cap = 65530 // 4  # (Linux's default; elsewhere a descriptor is the limit)
    if TRACKS_FD:
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft != resource.RLIM_INFINITY:
                cap = min(cap, soft // 2)
        except (ImportError, OSError, ValueError):
            cap = min(cap, 256)
    return max(cap, 16)


def file_crc(path: str) -> tuple[int, int]:
    """(CRC-32, size) of a file, read in chunks (OSError if it cannot be read)."""
    crc = size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return crc, size


def _crc_of(f: Any) -> int:
    """CRC-32 of an open file from its current position, read a chunk at a time."""
    crc = 0
    chunk = bytearray(CHUNK)
    while n := f.readinto(chunk):
        crc = zlib.crc32(memoryview(chunk)[:n], crc)
    return crc


def write_file(path: str, buf: Any, fsync: bool) -> None:
    """Write ``buf`` to ``path`` (its directory created); with ``fsync``, the file and its
    directory entry are on disk when this returns. A failed write leaves no new file.

    The bytes go to a temporary name first, then replace ``path``: a file that is mapped
    (an earlier output under that name, still being sent) is never truncated under its
    mapping, which would kill the broker with SIGBUS."""
    tmp = written = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(buf)
            f.flush()
            # renamed before the fsync, so that the fsync names the file it makes durable;
            # its commit row, written after this returns, is what makes it count
            os.replace(tmp, path)
            written = path
            if fsync:
                os.fsync(f.fileno())
        if fsync:  # the new name must survive a power loss too, not just the bytes
            fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError:
        try:
            os.unlink(written)
        except OSError:
            pass
        raise


def _job_of(key: Any) -> Any:
    """The job a store key belongs to: its first item (None for a key of no job)."""
    return key[0] if type(key) is tuple and key else None


class Store:
    """Keyed byte blobs. Blobs are kept as received (zero-copy buffers) until the memory
    budget is reached; later blobs go to files in ``spill_dir``.

    A blob put with a ``path`` (a broker with a state directory) is always written to that
    file, and also kept in memory while the budget allows: the file is what survives a
    restart, the memory copy what serves the reduce tasks fast. When that file cannot be
    written (a full disk), the blob is kept anyway, in memory or the spill directory: the
    job goes on, only that output is not durable (``put`` says so by returning None).

    ``on_damage(key, message)`` is called when a file read back does not match its CRC,
    before :class:`OutputDamaged` is raised (the broker fails the job it belongs to)."""

    def __init__(self, budget: int, spill_dir: str | None = None, fsync: bool = False) -> None:
        self.budget = budget
        self.fsync = fsync  # fsync durable files (and their directory) as they are written
        self.on_damage: Callable[[Any, str], None] | None = None
        self._sums: dict[Any, int] = {}  # key -> CRC-32 of its file (durable files only)
        # key -> the mapping of its file while a reply (or anything else) still holds it
        self._maps: weakref.WeakValueDictionary[Any, mmap.mmap] = \
            weakref.WeakValueDictionary()
        self._file_maps: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()  # (max_maps)
        self._copies: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()  # (COPY_BUDGET)
        self.max_maps = map_cap()  # (the broker raised its open-files limit before this)
        self._full_since = False  # a durable write failed; logged once until one succeeds
        self._spill_root = spill_dir
        self._dir: str | None = None
        self._owner: int | None = None  # the lock on the spill directory (owned.py)
        self._mem: dict[Any, Any] = {}
        self._released: list[Any] = []  # keys sent on, to leave memory at settle()
        self._trim_due = False  # released frames may still have been in ZeroMQ's hands
        self._files: dict[Any, str] = {}
        # job -> its keys (a key is a tuple that begins with its job's id): what a job's
        # end frees is found at once, not by going over every job's keys (a broker keeping
        # many finished jobs' outputs for their TTL paid for all of them at each job's end)
        self._by_job: dict[Any, set] = {}
        self.memory_bytes = 0
        self.spilled_bytes = 0
        self._seq = 0

    def put(self, key: Any, blob: Any, path: str | None = None) -> int | None:
        """Keep ``blob`` (bytes, memoryview or zmq.Frame) under ``key``, replacing any old
        one; with ``path``, also write it to that file. Returns the file's CRC-32 when it
        was written (durable), None otherwise. Never raises for a full disk: the blob is
        then kept in memory, over the budget if it must."""
        if key in self._mem or key in self._files:
            self.discard(key)
        self._index(key)
        buf = blob.buffer if hasattr(blob, "buffer") else blob
        size = len(buf)
        crc = None
        if path is not None:
            try:
                write_file(path, buf, self.fsync)
            except OSError as exc:
                self._write_failed(path, exc)
            else:
                crc = self._sums[key] = zlib.crc32(buf)
                self._files[key] = path
                self.spilled_bytes += size
                if self._full_since:
                    self._full_since = False
                    log.warning("output files are written to the state directory again")
        if self.memory_bytes + size <= self.budget:
            self._mem[key] = blob
            self.memory_bytes += size
            return crc
        if crc is not None:
            return crc
        try:
            spill = os.path.join(self._spill_path(), f"{self._seq:08d}.bin")
            self._seq += 1
            write_file(spill, buf, False)
        except OSError as exc:  # no room anywhere: memory, beyond the budget
            log.warning("cannot spill an output to disk (%s): kept in memory", exc)
            self._mem[key] = blob
            self.memory_bytes += size
            return crc
        self._files[key] = spill
        self.spilled_bytes += size
        return crc

    def release(self, keys: Any) -> None:
        """Let the memory copies of ``keys`` go once they have been sent where they are
        needed (a reduce task's segments, dispatched): done by the next :meth:`settle`,
        which the broker calls once the messages carrying them are handed to ZeroMQ, so
        that no write delays them. A released key is then served from a file if it is
        asked for again (a retried or backup attempt)."""
        self._released.extend(keys)

    def settle(self) -> None:
        """Carry out :meth:`release`: a key with a durable file only drops its memory copy;
        one without is written to the spill directory first. Blobs under MAP_MIN stay (a
        file each would cost more than they hold), and so does a blob no file can be
        written for (a full disk): nothing is lost either way. The memory is freed when
        the last reply still sending it has gone (pyzmq holds the frame until then)."""
        if not self._released:  # (called after every dispatch: nothing to do, mostly)
            if self._trim_due:  # what ZeroMQ has sent since: its pages go too
                self._trim_due = False
                allocator.trim()
            return
        keys, self._released = self._released, []
        self._trim_due = True
        for key in keys:
            blob = self._mem.get(key)
            if blob is None:  # (discarded since, or released twice)
                continue
            buf = blob.buffer if hasattr(blob, "buffer") else blob
            size = len(buf)
            if size < MAP_MIN:
                continue
            if key not in self._files:
                try:
                    path = os.path.join(self._spill_path(), f"{self._seq:08d}.bin")
                    self._seq += 1
                    write_file(path, buf, False)
                except OSError as exc:
                    log.warning("cannot spill a sent output to disk (%s): kept in memory", exc)
                    break
                self._files[key] = path
                self.spilled_bytes += size
            del self._mem[key]
            self.memory_bytes -= size
        # the frames already sent are freed now, perhaps into ZeroMQ's I/O thread's arena,
        # where they would stay resident (patterns/allocator.py)
        allocator.trim()

    def _write_failed(self, path: str, exc: OSError) -> None:
        if not self._full_since:
            self._full_since = True
            why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc
            log.error("cannot write output file %s (%s): outputs are kept in memory and not "
                      "journaled until it can (such tasks run again after a restart)", path,
                      why)

    def adopt(self, key: Any, path: str, crc: int | None = None) -> None:
        """Serve ``key`` from an existing file (a restarted broker's committed outputs),
        after checking it against ``crc``; :class:`OutputDamaged` if it does not match or
        cannot be read."""
        self.discard(key)
        size = self._check(key, path, crc)
        self._index(key)
        self._files[key] = path
        if crc is not None:
            self._sums[key] = crc
        self.spilled_bytes += size

    def _check(self, key: Any, path: str, crc: int | None) -> int:
        """The size of ``path`` if it matches ``crc`` (None: only that it can be read)."""
        try:
            actual, size = file_crc(path)
        except FileNotFoundError:
            raise OutputDamaged(f"output file {path} is missing from the state directory",
                                path=path) from None
        except OSError as exc:
            raise OutputDamaged(f"output file {path} cannot be read: {exc.strerror or exc}",
                                path=path) from None
        if crc is not None and actual != crc:
            raise OutputDamaged(f"output file {path} is damaged: its CRC-32 is {actual:08x}, "
                                f"{crc:08x} was journaled with it ({size} bytes)", path=path)
        return size

    def get(self, key: Any, refusable: bool = False) -> Any:
        """The blob under ``key`` (KeyError if none): the buffer kept in memory, or a
        read-only view of its file's mapping, shared by every caller while any holds one.

        A file is checked against its CRC when it is mapped, not again while the mapping
        is shared (a thousand queued replies cost one check): :class:`OutputDamaged`
        (after ``on_damage``) if it does not match or cannot be read. ``refusable`` (a
        client's FETCH): :class:`StoreBusy` instead of a copy beyond COPY_BUDGET; without
        it (a worker's task inputs, read as they are sent) the copy is made."""
        if key in self._mem:
            return self._mem[key]
        mapped = self._maps.get(key)
        if mapped is not None:
            return memoryview(mapped).toreadonly()
        path = self._files[key]
        crc = self._sums.get(key)
        try:
            blob, actual = self._load(path, crc is not None, refusable)
        except OSError as exc:
            if crc is None:
                raise
            self._damaged(key, OutputDamaged(
                f"output file {path} cannot be read: {exc.strerror or exc}", path=path))
        if crc is not None and actual != crc:
            self._damaged(key, OutputDamaged(
                f"output file {path} is damaged: it no longer matches the CRC-32 "
                f"recorded when it was written", path=path))
        if not isinstance(blob, mmap.mmap):
            return blob
        self._maps[key] = blob
        return memoryview(blob).toreadonly()

    def _load(self, path: str, check: bool, refusable: bool = False) -> tuple[Any, int | None]:
        """(blob, CRC-32 if ``check``) of the file at ``path``: bytes when small, else a
        mapping of the file, or past ``max_maps`` an anonymous copy (see COPY_BUDGET)."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < MAP_MIN:
                data = f.read()
                return data, zlib.crc32(data) if check else None
            if len(self._file_maps) < self.max_maps:
                # The CRC is taken with read(), not through the mapping, so a file the disk
                # cannot read is an OSError here rather than a SIGBUS in ZeroMQ's I/O thread.
                crc = _crc_of(f) if check else None
                try:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ, **MAP_OPTIONS)
                except OSError as exc:  # no descriptor or mapping left after all: a copy
                    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                        raise
                    f.seek(0)
                else:
                    self._file_maps.add(mapped)
                    return mapped, crc
            held = sum(len(c) for c in self._copies)
            if refusable and held + size > COPY_BUDGET:
                raise StoreBusy(
                    f"the broker holds {len(self._file_maps)} outputs mapped and "
                    f"{held >> 20} MiB of copies for replies not sent yet (to clients that "
                    "do not read theirs): fetch this output again later")
            anon = mmap.mmap(-1, size)
            f.readinto(anon)
            self._copies.add(anon)
            return anon, zlib.crc32(anon) if check else None

    def _damaged(self, key: Any, exc: OutputDamaged) -> None:
        log.error("%s", exc)
        if self.on_damage is not None:
            self.on_damage(key, str(exc))
        raise exc

    def __contains__(self, key: Any) -> bool:
        return key in self._mem or key in self._files

    def _index(self, key: Any) -> None:
        job = _job_of(key)
        keys = self._by_job.get(job)
        if keys is None:
            keys = self._by_job[job] = set()
        keys.add(key)

    def discard(self, key: Any) -> None:
        job = _job_of(key)
        keys = self._by_job.get(job)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_job[job]
        blob = self._mem.pop(key, None)
        if blob is not None:
            self.memory_bytes -= len(blob.buffer if hasattr(blob, "buffer") else blob)
        path = self._files.pop(key, None)
        self._sums.pop(key, None)
        # replies still queued keep their mapping; an unlinked file lives until unmapped
        self._maps.pop(key, None)
        if path is not None:
            try:
                self.spilled_bytes -= os.path.getsize(path)
                os.unlink(path)
            except FileNotFoundError:
                pass

    def discard_job(self, job: Any, predicate: Callable[[Any], bool] | None = None) -> None:
        """Drop every blob of ``job`` (keys that begin with its id), or those of its keys
        that satisfy ``predicate``."""
        for key in list(self._by_job.get(job, ())):
            if predicate is None or predicate(key):
                self.discard(key)

    def close(self) -> None:
        self._mem.clear()
        self._files.clear()
        self._by_job.clear()
        self._sums.clear()
        self._maps.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None

    def _spill_path(self) -> str:
        if self._dir is None:
            if self._spill_root:
                os.makedirs(self._spill_root, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=self._spill_root)
            # held while this broker runs: killed, its next start (or a worker daemon's
            # on this host) removes the directory (patterns/owned.py)
            self._owner = owned.claim(self._dir)
        return self._dir
