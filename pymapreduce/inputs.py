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
MAX_AUTO_SPLIT_BYTES = 64 * MIB
# Text inputs default to two splits per worker slot: every split repeats the work for each
# distinct key it holds (combine, partition, encode, merge), and on real text most keys
# recur in every split; two per slot still lets the load balance.
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
    that there are about two splits per worker slot, between 64 KiB and 64 MiB.
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


@dataclass(frozen=True)
class FileSplit:
    """A byte range ``[start, end)`` of one file (``end == -1``: the whole file, gzip)."""

    path: str
    start: int
    end: int

    def describe(self) -> list:
        return [self.path, self.start, self.end]


def plan_file_splits(text: TextInput, slots: int) -> tuple[list[FileSplit], int]:
    """Cut the files into splits; returns the splits and the total input bytes."""
    files = text.files()
    sizes = {}
    for path in files:
        try:
            sizes[path] = os.path.getsize(path)
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc}") from exc
    total = sum(sizes.values())
    size = text.split_bytes
    if size is None:
        size = total // max(1, FILE_SPLITS_PER_SLOT * slots) + 1
        size = min(MAX_AUTO_SPLIT_BYTES, max(MIN_SPLIT_BYTES, size))
    splits: list[FileSplit] = []
    for path in files:
        n = sizes[path]
        if path.endswith(".gz"):
            splits.append(FileSplit(path, 0, -1))
            continue
        # equal pieces near the asked size: no sliver of a split at the end of a file
        count = max(1, round(n / size))
        step = -(-n // count) if n else 1
        for start in range(0, max(n, 1), step):
            splits.append(FileSplit(path, start, min(n, start + step)))
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
    """The ``(byte_offset, line)`` records whose line starts in ``[start, end)``.

    The file is opened at once (a missing file raises InputError here) and then read a
    block at a time, so a map task's input occupies a megabyte, not the whole split.
    """
    try:
        if end == -1:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                return LineReader(iter([f.read()]), 0, encoding)
        f = open(path, "rb")  # noqa: SIM115 - closed by LineReader
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the line in progress belongs to the previous split
    except OSError as exc:
        raise InputError(f"cannot read split {path}[{start}:{end}]: {exc}") from exc
    return LineReader(_blocks(f, end), f.tell(), encoding)


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

    The records of a block are built as two lists and zipped, so no Python code runs per
    line on the way to ``map``: on ASCII text that made reading three times cheaper than a
    generator yielding each line. ``count`` is the number of records handed out so far
    (block by block).
    """

    def __init__(self, blocks: Iterator[bytes], base: int, encoding: str) -> None:
        self._blocks = blocks
        self._base = base
        self._encoding = encoding
        self.count = 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return itertools.chain.from_iterable(self._zipped())

    def _zipped(self) -> Iterator:
        offset = self._base
        for data in self._blocks:
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
