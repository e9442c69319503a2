"""Job inputs: in-memory records and text files cut into splits.

In-memory records are cut into chunks by the client. Text files are only *named* by the
client: it cuts them into byte ranges from their sizes alone, and each worker reads its
own range. A line belongs to the split its first byte lies in (Hadoop's rule), so every
line is read exactly once whatever the cut points. Keys are the line's byte offset in its
file, values the line without its newline, decoded as UTF-8.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import InputError

MIB = 1024 * 1024
MIN_SPLIT_BYTES = 64 * 1024  # small inputs with a costly map still spread over workers
# A map task reads at most this much by default, so that a task takes a short time (about
# half a second of word count on one core): a job submitted behind a big one waits at most
# about that long for its first slot, and a lost task costs little to run again. Bigger
# splits are a little faster for jobs with many distinct keys (each split repeats the work
# for every distinct key it holds: ~12% for a 256 MiB word count at 64 MiB splits), so
# read_text(split_bytes=) may raise it for a job that runs alone.
MAX_AUTO_SPLIT_BYTES = 8 * MIB
# Smaller inputs get two splits per worker slot, so the load still balances.
FILE_SPLITS_PER_SLOT = 2


@dataclass(frozen=True)
class TextInput:
    """Text files named by paths or globs; see :func:`read_text`."""

    patterns: tuple[str, ...]
    split_bytes: int | None = None
    encoding: str = "utf-8"

    def files(self) -> list[str]:
        """Absolute paths of the matching files, sorted; InputError if a pattern matches none."""
        found: list[str] = []
        for pattern in self.patterns:
            matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise InputError(f"input path {pattern!r} matches no file")
            found.extend(os.path.abspath(m) for m in matches)
        return list(dict.fromkeys(found))  # a file named twice is read once


def read_text(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    split_bytes: int | None = None,
    encoding: str = "utf-8",
) -> TextInput:
    """Name text files (paths or globs) as a job's input, without reading them.

    ``split_bytes`` is the size of one map task's byte range; by default it is chosen so
    that there are about two splits per worker slot, between 64 KiB and 8 MiB (short tasks:
    a job behind a big one waits little; see docs/scheduling.md).
    ``.gz`` files are read whole, one split each. Workers must see the same paths.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    patterns = tuple(os.fspath(p) for p in paths)
    if not patterns:
        raise InputError("read_text() needs at least one path")
    if split_bytes is not None and split_bytes < 1:
        raise InputError(f"split_bytes must be positive, got {split_bytes}")
    return TextInput(patterns, split_bytes, encoding)


FileRange = tuple  # (path, start, end): bytes [start, end) of a file; end -1: all of it


@dataclass(frozen=True)
class FileSplit:
    """One map task's input: byte ranges of one or more files, read in order."""

    ranges: tuple[FileRange, ...]

    def describe(self) -> list:
        return [list(r) for r in self.ranges]


def plan_file_splits(text: TextInput, slots: int) -> tuple[list[FileSplit], int]:
    """Cut the files into splits of equal size; returns the splits and the total bytes.

    The files are cut as if they were one stream, so a split may end inside one file and
    go on in the next (many small files make few tasks, a big file several). ``.gz``
    files cannot be cut: each is a split of its own.
    """
    files = text.files()
    sizes = {}
    for path in files:
        try:
            sizes[path] = os.path.getsize(path)
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc}") from exc
    total = sum(sizes.values())
    plain = [p for p in files if not p.endswith(".gz") and sizes[p]]
    plain_total = sum(sizes[p] for p in plain)
    size = text.split_bytes
    if size is None:
        size = total // max(1, FILE_SPLITS_PER_SLOT * slots) + 1
        size = min(MAX_AUTO_SPLIT_BYTES, max(MIN_SPLIT_BYTES, size))
    count = max(1, round(plain_total / size))
    step = -(-plain_total // count)  # equal pieces: no sliver of a split at the end
    splits: list[FileSplit] = []
    ranges: list[FileRange] = []
    room = step
    for path in plain:
        n, offset = sizes[path], 0
        while offset < n:
            take = min(n - offset, room)
            ranges.append((path, offset, offset + take))
            offset += take
            room -= take
            if room == 0:
                splits.append(FileSplit(tuple(ranges)))
                ranges, room = [], step
    if ranges:
        splits.append(FileSplit(tuple(ranges)))
    splits.extend(FileSplit(((p, 0, -1),)) for p in files if p.endswith(".gz"))
    if not splits:  # only empty files: one empty split, so the job still runs
        splits.append(FileSplit(((files[0], 0, 0),)))
    return splits, total


def normalize_records(inputs: Any) -> list[tuple[Any, Any]]:
    """In-memory inputs as a list of ``(key, value)`` pairs.

    Accepts a dict, a list of one-item dicts (the original pyMapReduce's ``File``), or
    any iterable of pairs.
    """
    if inputs is None:
        raise InputError("the job has no inputs: pass a dict, a list of pairs or read_text(...)")
    if isinstance(inputs, dict):
        return list(inputs.items())
    if isinstance(inputs, (str, bytes)):
        raise InputError(
            "inputs is a string; for files use read_text(path), for records pass pairs"
        )
    records: list[tuple[Any, Any]] = []
    try:
        iterator = iter(inputs)
    except TypeError:
        raise InputError(f"inputs of type {type(inputs).__name__} are not iterable") from None
    for position, item in enumerate(iterator):
        if isinstance(item, dict):
            records.extend(item.items())
            continue
        try:
            key, value = item
        except (TypeError, ValueError):
            raise InputError(
                f"input record {position} is {item!r:.80}, not a (key, value) pair"
            ) from None
        records.append((key, value))
    return records


def chunk(records: list, n: int) -> list[list]:
    """Cut records into ``n`` contiguous chunks of near-equal length (none empty)."""
    n = max(1, min(n, len(records)))
    q, r = divmod(len(records), n)
    out, start = [], 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        out.append(records[start:end])
        start = end
    return out


READ_BLOCK = 1 * MIB  # a split is read and cut into lines a block at a time


def read_file_split(path: str, start: int, end: int, encoding: str = "utf-8") -> LineReader:
    """The ``(byte_offset, line)`` records whose line starts in ``[start, end)`` of a file."""
    return read_split([(path, start, end)], encoding)


def read_split(ranges: list[FileRange], encoding: str = "utf-8") -> LineReader:
    """The records of a split's byte ranges, in order (a missing file: InputError here)."""
    for path, _, _ in ranges:
        if not os.path.isfile(path):
            raise InputError(f"cannot read input {path!r}: no such file")
    return LineReader(ranges, encoding)


def _open_range(path: str, start: int, end: int) -> tuple[Iterator[bytes], int]:
    """Blocks of the lines that start in ``[start, end)``, and the offset of the first."""
    try:
        if end == -1:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                return iter([f.read()]), 0
        f = open(path, "rb")  # noqa: SIM115 - closed by _blocks
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the line in progress belongs to the previous split
    except OSError as exc:
        raise InputError(f"cannot read split {path}[{start}:{end}]: {exc}") from exc
    return _blocks(f, end), f.tell()


def _blocks(f, end: int) -> Iterator[bytes]:
    """Blocks of whole lines from the file's position: the last line that starts
    before ``end`` is read to its end."""
    with f:
        remaining = end - f.tell()
        pending = b""
        while remaining > 0:
            block = f.read(min(READ_BLOCK, remaining))
            if not block:
                break
            remaining -= len(block)
            data = pending + block if pending else block
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]
            if cut:
                yield data[:cut]
        if pending:  # the last line starts before end: finish it
            yield pending + f.readline()


class LineReader:
    """Iterates over ``(byte_offset, line)`` records, a block of lines at a time.

    The file is read in 1 MiB blocks of whole lines; the records of a block are built as two
    lists and zipped, so no Python code runs per line on the way to ``map``: on ASCII text
    that made reading three times cheaper than a generator yielding each line. ``count``
    is the number of records handed out so far (block by block), ``path`` the file being
    read.
    """

    def __init__(self, ranges: list[FileRange], encoding: str) -> None:
        self._ranges = ranges
        self._encoding = encoding
        self.count = 0
        self.path = ""

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return itertools.chain.from_iterable(self._zipped())

    def _zipped(self) -> Iterator:
        for path, start, end in self._ranges:
            self.path = path
            blocks, offset = _open_range(path, start, end)
            for data in blocks:
                offsets, lines = _block_lines(data, offset, self._encoding)
                self.count += len(lines)
                offset += len(data)
                yield zip(offsets, lines)


def _block_lines(data: bytes, base: int, encoding: str) -> tuple[list[int], list[str]]:
    """The start offsets and texts (without newline or a trailing ``\\r``) of a block's lines."""
    if not data:
        return [], []
    try:
        text = data.decode(encoding)  # valid text: decode once, in C
    except UnicodeDecodeError:
        text = None
    if text is not None:
        lines = text.split("\n")
        if data.isascii():  # character counts are byte counts
            sizes = map(len, lines)
        else:  # str.isascii() is O(1): only non-ASCII lines are encoded again
            sizes = [len(x) if x.isascii() else len(x.encode(encoding)) for x in lines]
    else:  # invalid bytes somewhere: decode line by line, replacing them
        raw = data.split(b"\n")
        sizes = map(len, raw)
        lines = [x.decode(encoding, "replace") for x in raw]
    offsets = [base + i + n for i, n in enumerate(itertools.accumulate(sizes, initial=0))]
    if data.endswith(b"\n"):  # the empty piece after the last newline is not a line
        lines.pop()
        offsets.pop()
    offsets.pop()
    if b"\r" in data:
        lines = [x[:-1] if x.endswith("\r") else x for x in lines]
    return offsets, lines
