"""Sorted runs on disk and streams of encoded pairs: what spilling tasks write and merge.

- A **run** is one spill: a file of msgpack items ``k0, v0, k1, v1...`` in key order, cut
  into sections (one per partition on the map side, one in all on the reduce side) whose
  byte offsets and pair counts stay in memory. Reading a section back decodes one item at
  a time through a bounded buffer (:data:`READ_SIZE`).
- **Key order.** Runs of keys of one plain type (all str, all int...) sort as Python sorts
  them. Keys of mixed types (an int and a str; None; tuples of such) sort by a
  type-tagged key (:func:`tagged`): numbers, then str, bytes, tuples (item by item), other
  types by their type's name; each type in its own order. Keys of one type that does not
  compare (a class without ``__lt__``) are BadOutput, named.
- A **segment** (a map task's output partition, ``[keys, values(, flag)]``) is read as a
  stream of pairs by two cursors into the same bytes, one over the keys and one over the
  values (:func:`segment_pairs`), so a partition of any size is never decoded whole.
- Merges (:func:`merge`) take streams of ``(key, stream, value)`` triples, zipped in C
  from the decoders: keys of one plain type merge by plain tuple comparison, ties broken
  by the stream's number (so by run, or map task, order) and never by the values.
- :class:`ColumnsWriter` builds a task's output in today's format, ``[keys, values]``
  (plus a flag), from a stream of pairs, through two files read back as one bytes.
"""

from __future__ import annotations

import heapq
import os
import shutil
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import islice, repeat
from operator import itemgetter
from typing import Any

import msgpack

from .. import speedups
from ..errors import BadOutput, ValueNeedsPickle, result_needs_pickle
from ..patterns.records import _Decoding, _pack
from .budget import TaskFiles

READ_SIZE = 256 * 1024  # bytes a run reader or segment cursor buffers
CHUNK_PAIRS = 4096  # pairs packed per msgpack call when writing a run
MAX_FANIN = 32  # runs merged at once; more are first merged into fewer (bounded buffers)
PLAIN_TYPES = frozenset({str, int, float, bytes})
_NUMBER, _STR, _BYTES, _TUPLE = 1, 2, 3, 4
_FIRST, _THIRD = itemgetter(0), itemgetter(2)
_RANKS = {bool: _NUMBER, int: _NUMBER, float: _NUMBER, str: _STR, bytes: _BYTES}


def tagged(key: Any) -> Any:
    """``key``'s place in the order of mixed-type keys: ``(rank, key)``, None first,
    tuples item by item, types without a rank after the rest by type name."""
    t = type(key)
    rank = _RANKS.get(t)
    if rank is not None:
        return (rank, key)
    if t is tuple:
        return (_TUPLE, tuple(map(tagged, key)))
    if key is None:
        return (0,)
    return (9, t.__module__, t.__qualname__, key)


def order_of(types: set) -> Any:
    """The sort key for keys of ``types``: None (plain) for one plain type, else tagged."""
    return None if len(types) == 1 and next(iter(types)) in PLAIN_TYPES else tagged


def sort_keys(keys: list, order: Any, job: Any) -> None:
    """Sort ``keys`` in place by ``order``; BadOutput naming the types if they do not
    compare (a task that spills must sort its keys)."""
    try:
        if order is None and (fast := speedups.sort_strs) is not None and \
                (ordered := fast(keys)) is not None:
            keys[:] = ordered  # (all exact str: by prefixes in C, as sorted() orders them)
        else:
            keys.sort(key=order)
    except TypeError as exc:
        kinds = sorted({type(k).__name__ for k in keys})
        raise BadOutput(f"{type(job).__name__}: a task over its memory budget sorts its keys "
                        f"to spill them, and these do not compare ({', '.join(kinds)}): "
                        f"{exc}") from None


def _items(chunk: list, triples: bool = False) -> bytes:
    """A chunk of pairs (or ``(key, stream, value)`` triples) as consecutive msgpack items
    ``k, v, k, v...`` (a list's encoding without its header: one C call for a chunk)."""
    if triples:
        flat = [x for t in chunk for x in (t[0], t[2])]
    else:
        flat = [x for pair in chunk for x in pair]
    data = _pack(flat, True, 0)
    n = len(flat)
    return data[1 if n < 16 else 3 if n < 65536 else 5:]


class Run:
    """One spilled run: a file and its sections, ``[(offset, pairs)]``."""

    __slots__ = ("path", "sections", "types")

    def __init__(self, path: str, sections: list, types: set) -> None:
        self.path = path
        self.sections = sections
        self.types = types  # the key types it holds (chooses the merge order)

    def triples(self, section: int, stream: int) -> Iterator[tuple]:
        """The section's pairs as ``(key, stream, value)`` triples, decoded through a
        bounded buffer and zipped in C: merged without a key function, ties between
        streams are broken by ``stream``, never by the values."""
        offset, count = self.sections[section]
        f = open(self.path, "rb")  # (closed with the unpacker, when the merge drops it)
        f.seek(offset)
        items = islice(_unpacker(f), 2 * count)
        return zip(items, repeat(stream), items)


def write_run(files: TaskFiles, sections: Iterable[Iterable[tuple]], types: set,
              triples: bool = False) -> Run:
    """Write ``sections`` (each an iterable of ``(key, value)`` in order, or of triples
    from :func:`merge`) as one run."""
    path = files.new_path("run")
    spans = []
    with open(path, "wb") as f:
        for items in sections:
            offset = f.tell()
            count = 0
            items = iter(items)
            while chunk := list(islice(items, CHUNK_PAIRS)):
                f.write(_items(chunk, triples))
                count += len(chunk)
            spans.append((offset, count))
    return Run(path, spans, types)


def _unpacker(f: Any) -> msgpack.Unpacker:
    """An Unpacker over a file-like object, decoding extensions as workers do (pickles
    allowed: runs and segments come from this worker or from other workers)."""
    decoding = _Decoding(True, 0)
    return msgpack.Unpacker(f, ext_hook=partial(decoding.ext, 0), raw=False,
                            strict_map_key=False, read_size=READ_SIZE,
                            max_buffer_size=2**31 - 1)


def merge(streams: list, key: Any) -> Iterator[tuple]:
    """k-way merge of sorted streams of ``(key, stream, value)`` triples; ties keep the
    streams' order. ``key``: None to compare ``(key, stream)`` as they are (C tuple
    comparisons, the common case), else a function of the triple (:func:`triple_key`),
    with ``heapq.merge``'s own tie-break by stream."""
    if len(streams) == 1:
        return iter(streams[0])
    if key is None:
        return heapq.merge(*streams)
    return heapq.merge(*streams, key=key)


def triple_key(order: Any, value_key: Any = None) -> Any:
    """The merge key of a triple: None for plain keys without ``value_key``, else the key
    in ``order``, then ``value_key`` of the value."""
    if value_key is None:
        return None if order is None else (lambda t: order(t[0]))
    if order is None:
        return lambda t: (t[0], value_key(t[2]))
    return lambda t: (order(t[0]), value_key(t[2]))


def fan_in(files: TaskFiles, runs: list, key: Any) -> list:
    """``runs`` (one section each) merged in passes until at most MAX_FANIN are left, so a
    merge holds a bounded number of open files and read buffers."""
    while len(runs) > MAX_FANIN:
        merged = []
        for i in range(0, len(runs), MAX_FANIN):
            group = runs[i:i + MAX_FANIN]
            if len(group) == 1:
                merged.append(group[0])
                continue
            types = set().union(*(r.types for r in group))
            streams = [r.triples(0, j) for j, r in enumerate(group)]
            merged.append(write_run(files, [merge(streams, key)], types, triples=True))
            for r in group:
                os.unlink(r.path)
        runs = merged
    return runs


class _View:
    """A file-like reader over a buffer (a received frame), copying READ_SIZE at a time."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: Any) -> None:
        self.buf = memoryview(buf).cast("B")
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n < 0 else self.pos + n
        chunk = bytes(self.buf[self.pos:end])
        self.pos += len(chunk)
        return chunk


def segment_header(blob: Any) -> tuple[int, int]:
    """``(items, pairs)`` of a segment: 2 for ``[keys, values]``, 3 with a flag."""
    unpacker = _unpacker(_View(blob))
    items = unpacker.read_array_header()
    return items, unpacker.read_array_header()


def _segment_head(cursor: msgpack.Unpacker) -> tuple[int, int]:
    """``(items, pairs)`` read off a segment's headers, past which ``cursor`` then is at
    its first key; ValueError when it is not a segment."""
    try:
        items = cursor.read_array_header()
    except msgpack.UnexpectedTypeError:
        raise ValueError("a map output segment that is not an array") from None
    if items not in (2, 3):
        raise ValueError(f"a map output segment of {items} items, not 2 or 3")
    return items, cursor.read_array_header()


def _segment_cursors(blob: Any, find_big: bool = False,
                     trusted: bool = False) -> tuple[Any, Any, int, set]:
    """Two cursors into a segment: over its ``n`` keys (an iterator) and its ``n`` values
    (the Unpacker). A third cursor first walks the values to the end of the bytes, so a
    truncated or forged segment (fewer values than keys, bytes after the last item) fails
    here instead of giving fewer pairs. ``find_big``: also the indexes of the keys whose
    values are lists of more than CHUNK_PAIRS items, found by their headers (walked an
    item at a time: a hot key's list is never buffered whole)."""
    keys = _unpacker(_View(blob))
    items, n = _segment_head(keys)
    values = _unpacker(_View(blob))
    values.read_array_header()
    values.read_array_header()
    for _ in range(n):
        values.skip()
    if values.read_array_header() != n:
        raise ValueError("a map output segment with fewer values than keys")
    if trusted:  # (this task's own output: not walked again to check it)
        return islice(keys, n), values, n, set()
    start = values.tell()
    view = memoryview(blob).cast("B")
    probe = _unpacker(_View(view[start:]))
    big = set()
    for i in range(n):
        count = _list_length(view, start + probe.tell()) if find_big else None
        if count is not None and count > CHUNK_PAIRS:
            probe.read_array_header()
            for _ in range(count):
                probe.skip()
            big.add(i)
        else:
            probe.skip()
    if items == 3:
        probe.skip()  # (the flag)
    if start + probe.tell() != len(view):
        raise ValueError("a map output segment with bytes after its last item")
    return islice(keys, n), values, n, big


def _list_length(view: memoryview, pos: int) -> int | None:
    """The length of the msgpack array at ``pos``, read off its header; None if none."""
    if pos >= len(view):
        return None
    b = view[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC:
        return int.from_bytes(view[pos + 1:pos + 3], "big")
    if b == 0xDD:
        return int.from_bytes(view[pos + 1:pos + 5], "big")
    return None


def segment_pairs(blob: Any) -> Iterator[tuple]:
    """A segment's ``(key, value)`` pairs, in order, decoded one item at a time through
    bounded buffers (zipped in C)."""
    keys, values, n, _ = _segment_cursors(blob)
    return zip(keys, islice(values, n))


def segment_chunks(blob: Any) -> Iterator[tuple]:
    """A segment of values lists as ``(key, list)`` pairs, a key whose list holds more
    than CHUNK_PAIRS values given in several lists of CHUNK_PAIRS, so that one hot key's
    values are never decoded at once."""
    keys, values, n, big = _segment_cursors(blob, find_big=True)
    if not big:
        yield from zip(keys, islice(values, n))
        return
    for i, key in enumerate(keys):
        if i not in big:
            yield key, values.unpack()
            continue
        left = values.read_array_header()
        while left:
            step = min(left, CHUNK_PAIRS)
            yield key, [values.unpack() for _ in range(step)]
            left -= step


def segment_triples(blob: Any, stream: int) -> Iterator[tuple]:
    """A segment's pairs as ``(key, stream, value)`` triples, for :func:`merge`."""
    keys, values, n, _ = _segment_cursors(blob)
    return zip(keys, repeat(stream), islice(values, n))


def file_segment_triples(path: str, stream: int) -> tuple[Iterator[tuple], Any]:
    """:func:`segment_triples` of a segment spooled to a file (a reduce task under a
    budget writes the segments it reads from a sink to its directory): two cursors read
    it READ_SIZE at a time, so a merge of many holds a few buffers each, not the bytes.
    Returns the triples and the segment's flag. A truncated or forged segment fails
    here, as in :func:`_segment_cursors`."""
    size = os.path.getsize(path)
    cursors = []
    for _ in range(3):
        f = open(path, "rb")  # noqa: SIM115 - read while the merge runs; gone with it
        cursors.append(_unpacker(f))
    keys, values, probe = cursors
    items, n = _segment_head(keys)
    for cursor in (values, probe):
        cursor.read_array_header()
        cursor.read_array_header()
        for _ in range(n):
            cursor.skip()
        if cursor.read_array_header() != n:
            raise ValueError("a map output segment with fewer values than keys")
    for _ in range(n):
        probe.skip()
    flag = probe.unpack() if items == 3 else None
    if probe.tell() != size:
        raise ValueError("a map output segment with bytes after its last item")
    return zip(islice(keys, n), repeat(stream), islice(values, n)), flag


def column_chunks(blob: Any, size: int) -> tuple[int, Iterator[tuple[list, list]]]:
    """The pairs of a ``[keys, values]`` encoding as ``(keys, values)`` lists of at most
    ``size`` pairs, decoded as they are taken (two cursors into the bytes), so a task that
    writes a large output does not hold it decoded whole; returns the pair count too.
    ``blob`` is the task's own output, so it is not walked to check it first."""
    keys, values, n, _ = _segment_cursors(blob, trusted=True)

    def chunks() -> Iterator[tuple[list, list]]:
        for start in range(0, n, size):
            count = min(size, n - start)
            yield list(islice(keys, count)), list(islice(values, count))
    return n, chunks()


def segment_flag(blob: Any) -> Any:
    """The third item of a 3-item segment (None for 2 items), read by skipping the rest."""
    cursor = _unpacker(_View(blob))
    if cursor.read_array_header() != 3:
        return None
    cursor.skip()
    cursor.skip()
    return cursor.unpack()


class ColumnsWriter:
    """Builds ``[keys, values]`` (or ``[keys, values, flag]``) from pairs written one
    chunk at a time, without holding them: keys and values go to two files, joined at
    :meth:`finish` into the bytes of one encoding. ``safe``: a value that would need
    pickling raises ValueNeedsPickle naming its key (results for a client that refuses
    pickles)."""

    def __init__(self, files: TaskFiles, flag: Any = None, safe: bool = False) -> None:
        self.files = files
        self.flag = flag
        self.safe = safe
        self.count = 0
        self.chunk: list = []
        self.kpath = files.new_path("keys")
        self.vpath = files.new_path("values")
        self.kf = open(self.kpath, "wb")
        self.vf = open(self.vpath, "wb")

    def add(self, key: Any, value: Any) -> None:
        self.chunk.append((key, value))
        if len(self.chunk) >= CHUNK_PAIRS:
            self._flush()

    def extend(self, pairs: Iterable[tuple], triples: bool = False) -> None:
        """Add ``(key, value)`` pairs, or the ``(key, stream, value)`` triples of a
        :func:`merge`."""
        self._flush()
        pairs = iter(pairs)
        while chunk := list(islice(pairs, CHUNK_PAIRS)):
            if triples:
                self._write(list(map(_FIRST, chunk)), list(map(_THIRD, chunk)))
            else:
                self._write([k for k, _ in chunk], [v for _, v in chunk])

    def _flush(self) -> None:
        chunk, self.chunk = self.chunk, []
        if chunk:
            self._write([k for k, _ in chunk], [v for _, v in chunk])

    def _write(self, keys: list, values: list) -> None:
        allow = not self.safe
        try:
            kdata, vdata = _pack(keys, allow, 0), _pack(values, allow, 0)
        except ValueNeedsPickle as exc:
            for k, v in zip(keys, values):  # the error path only: find whom to blame
                try:
                    _pack([k, v], False, 0)
                except ValueNeedsPickle as pair_error:
                    raise result_needs_pickle(k, pair_error) from None
            raise exc
        n = len(keys)
        cut = 1 if n < 16 else 3 if n < 65536 else 5
        self.kf.write(kdata[cut:])
        self.vf.write(vdata[cut:])
        self.count += n

    def finish(self) -> bytes:
        """The encoded columns (``b""`` for no pairs, as an empty partition is sent);
        the files are removed."""
        self._flush()
        self.kf.close()
        self.vf.close()
        try:
            if not self.count:
                return b""
            n = self.count
            path = self.files.new_path("output")
            with open(path, "w+b") as out:
                out.write(_array_header(3 if self.flag is not None else 2))
                for header, part in ((_array_header(n), self.kpath), (_array_header(n), self.vpath)):
                    out.write(header)
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                    os.unlink(part)
                if self.flag is not None:
                    out.write(_pack(self.flag, True, 0))
                out.seek(0)
                data = out.read()  # (one bytes of the file's size: no second copy)
            os.unlink(path)
            return data
        finally:
            for path in (self.kpath, self.vpath):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


def _array_header(n: int) -> bytes:
    """msgpack's header of an array of ``n`` items."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")
