"""Reading a text split: the ``(byte_offset, line)`` records whose line starts in a byte
range, a block of whole lines at a time, with every line bounded in length.

A line belongs to the split its first byte lies in (Hadoop's rule), so every line is read
exactly once whatever the cut points. Keys are the line's byte offset in its file, values
the line without its newline (and a trailing ``\\r``), decoded with the input's encoding,
invalid bytes replaced; a UTF-8 file's byte-order mark is left out of its first line.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import itertools
import lzma
import os
import zlib
from collections.abc import Iterator
from typing import Any

from .errors import BadRecord, InputDamaged, InputError, LineTooLong, holding_value
from .store.urls import is_url, object_size, open_url

MIB = 1024 * 1024
# The longest line a worker will gather. A line is held whole, as bytes and again as text
# (up to 4 bytes a character), before ``map`` sees it; without a bound, a file with no
# newline (a binary file, a one-line JSON dump) made each worker hold all of it: 2.9 GB
# per process for a 200 MB line. 64 MiB is far beyond real line-oriented text (a JSON-lines
# record of a few MB is already rare) and keeps a worker's worst case to a few hundred MB;
# read_text(max_line_bytes=) raises or lowers it per input.
MAX_LINE_BYTES = 64 * MIB
DEFAULT_ENCODING = "utf-8"
FileRange = tuple  # (path, start, end): bytes [start, end) of a file; end -1: all of it

READ_BLOCK = 1 * MIB  # a split is read and cut into lines a block at a time


def read_file_split(path: str, start: int, end: int, encoding: str = DEFAULT_ENCODING,
                    max_line_bytes: int = MAX_LINE_BYTES) -> LineReader:
    """The ``(byte_offset, line)`` records whose line starts in ``[start, end)`` of a file."""
    return read_split([(path, start, end)], encoding, max_line_bytes)


def read_split(ranges: list[FileRange], encoding: str = DEFAULT_ENCODING,
               max_line_bytes: int = MAX_LINE_BYTES, with_path: bool = False,
               fmt: str = "text", columns: list | None = None,
               header: str = "given", storage: dict | None = None,
               block: int = READ_BLOCK) -> LineReader:
    """The records of a split's byte ranges, in order (a missing file: InputError here;
    a missing object of a URL: when it is opened). ``header``: a CSV input's first line
    of each file (see ``TextInput.header``); ``storage``: fsspec options for URLs;
    ``block``: bytes read at a time (a reader that takes only the first records, the
    sampler of ``sampling.py``, reads and decodes less with smaller blocks)."""
    for path, _, _ in ranges:
        if not is_url(path) and not os.path.isfile(path):
            raise InputError(f"cannot read input {path!r}: no such file")
    return LineReader(ranges, encoding, max_line_bytes, with_path, fmt, columns, header,
                      storage, block)


def input_size(path: str, storage: dict | None = None) -> int:
    """The size in bytes of an input file or object (a URL: from its store)."""
    return object_size(path, storage) if is_url(path) else os.path.getsize(path)


def read_whole(path: str, storage: dict | None = None) -> bytes:
    """An input file or object, whole, as it is stored (read_files())."""
    try:
        if is_url(path):
            with open_url(path, storage) as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputError(f"cannot read input {path!r}: {exc}") from exc


class Unparsed:
    """The value of a line its format cannot read, in a job that may skip bad records
    (a reader's ``lenient``): it keeps the line's place among the records, so its ordinal
    is the same on every attempt, and ``error`` is raised when the line is read, not
    skipped (workers/runner.py's ``Numbered``)."""

    __slots__ = ("error",)

    def __init__(self, error: BadRecord) -> None:
        self.error = error


def _unreadable(bad: BadRecord, lenient: bool) -> Unparsed:
    """A line its format cannot read: ``bad`` raised, or with ``lenient`` the line's value."""
    if not lenient:
        raise bad from None  # (its message says what the parser said)
    return Unparsed(bad)


def _parser(fmt: str, columns: list | None, header: str = "given"):
    """How a block's lines become values for a line format (None: plain text).

    ``jsonl``: each non-blank line is a JSON value. ``csv``: each line is a CSV row (a
    field may not hold a newline), a dict of the header's ``columns`` (a list without
    them); with columns, the line at offset 0 of each file, the header, is left out
    (unless ``header`` is ``"none"``; with ``"file"`` it must name the same columns), and
    a row with more fields than columns is an error (its extra fields would be lost).
    Such an error is a :class:`BadRecord`, raised at once, or with ``lenient`` (a job that
    may skip bad records) kept as the line's value (:class:`Unparsed`); a header line's
    is raised at once whatever ``lenient`` says (it is no record to skip)."""
    if fmt == "text":
        return None
    if fmt == "jsonl":
        import json

        def parse_json(path, offsets, lines, lenient=False):
            keep_offsets, values = [], []
            for offset, line in zip(offsets, lines):
                if line.strip():
                    try:
                        values.append(json.loads(line))
                    except (ValueError, RecursionError) as exc:  # (nested past its depth)
                        values.append(_unreadable(BadRecord(
                            f"{path}: {line_at(path, offset)} is not JSON: {exc}"),
                            lenient))
                    keep_offsets.append(offset)
            return keep_offsets, values
        return parse_json
    if fmt == "csv":
        import csv

        def parse_csv(path, offsets, lines, lenient=False):
            keep_offsets, values = [], []
            for offset, line in zip(offsets, lines):
                try:  # one line at a time: a row never swallows the next line
                    row = next(csv.reader([line], strict=True), [])
                except csv.Error as exc:
                    # (a file's header is no record to skip)
                    values.append(_unreadable(BadRecord(
                        f"{path}: {line_at(path, offset)} is not a CSV row: {exc}"),
                        lenient and not (columns and offset == 0 and header != "none")))
                    keep_offsets.append(offset)
                    continue
                if columns and offset == 0 and header != "none":
                    if header == "file" and list(row) != list(columns):
                        # (the line may be a row of data, in a file without a header: its
                        # owner reads it in the failure's position, errors.holding_value)
                        what = (f"{path}: its CSV header {{}} differs from the first file's "
                                f"{columns} (read_csv reads every file with the first one's "
                                "columns: read such files with header=False and "
                                "with_path=True, rows as lists, or in separate jobs)")
                        raise holding_value(BadRecord(what.format(row)),
                                            what.format(f"(of {len(row)} fields)"), row,
                                            "its fields")
                    continue  # a file's header
                if not row:
                    continue  # a blank line
                if columns and len(row) > len(columns):
                    values.append(_unreadable(BadRecord(
                        f"{path}: {line_at(path, offset)} has {len(row)} CSV fields, "
                        f"more than the {len(columns)} columns {columns}"), lenient))
                else:
                    values.append(dict(zip(columns, row)) if columns else row)
                keep_offsets.append(offset)
            return keep_offsets, values
        return parse_csv
    raise InputError(f"unknown input format {fmt!r}")


def _open_zstd(path: str, mode: str = "rb"):
    """A ``.zst`` file's decompressed bytes, read as they are decompressed. zstandard's own
    reader ends quietly where a truncated file ends (its data lost without a word, where
    gzip, bz2 and lzma raise EOFError): this one raises EOFError when the file ends inside
    a frame. Concatenated frames are read one after the other, as the ``zstd`` tool does."""
    if mode != "rb":
        raise ValueError(f"a .zst input is read only, in mode 'rb' (not {mode!r})")
    return io.BufferedReader(_ZstdFrames(path), buffer_size=READ_CHUNK)


READ_CHUNK = 1 << 17  # compressed bytes read at a time from a .zst file


class _ZstdFrames(io.RawIOBase):
    """The raw reader of :func:`_open_zstd`."""

    def __init__(self, path: str) -> None:
        import zstandard  # (only for .zst inputs)

        super().__init__()
        self._zstd = zstandard.ZstdDecompressor()
        self._file = open(path, "rb")
        self._frame = self._zstd.decompressobj()
        self._fed = False  # bytes of the current frame were given to it
        self._out = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out and not self._done:
            chunk = self._file.read(READ_CHUNK)
            if not chunk:
                if self._fed and not self._frame.eof:
                    raise EOFError("the compressed file ended before the end of its "
                                   "last zstd frame (it is truncated)")
                self._done = True
                break
            out = []
            while chunk:
                self._fed = True
                out.append(self._frame.decompress(chunk))
                if not self._frame.eof:
                    break
                chunk = self._frame.unused_data  # the next frame's bytes, if any
                self._frame = self._zstd.decompressobj()
                self._fed = False
            self._out = b"".join(out)
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


# Compressed inputs, by extension: each is read whole, decompressed as it is read (a
# compressed stream cannot be cut at a byte offset), so each file is one split.
DECOMPRESS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".lzma": lzma.open,
              ".zst": _open_zstd}


def compressed(path: str) -> bool:
    """Whether ``path`` is read through a decompressor (by its extension)."""
    return os.path.splitext(path)[1].lower() in DECOMPRESS


def line_at(path: str, offset: int) -> str:
    """A line of an input named by its byte offset, in words: ``the line at byte 1234``;
    of a compressed file, an offset in its decompressed text, which it says (the
    compressed file has no line at that byte)."""
    if compressed(path):
        return f"the line at byte {offset} of its decompressed text"
    return f"the line at byte {offset}"


class _Closing:
    """A decompressing reader over an object of a store: closing it closes both (a
    decompressor leaves the file object it was given open)."""

    def __init__(self, f, raw) -> None:
        self.f, self.raw = f, raw

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.f.close()
        finally:
            self.raw.close()


def _open_url_range(path: str, start: int, end: int, storage: dict | None):
    """A file object for ``_open_range`` on a URL: the whole object through its
    decompressor (``end`` -1), else the object read ahead from ``start``."""
    if end == -1:
        raw = open_url(path, storage)
        opener = DECOMPRESS.get(os.path.splitext(path)[1].lower())
        return raw if opener is None else _Closing(opener(raw, "rb"), raw)
    return open_url(path, storage, 0, end - start + 1)


def _open_range(path: str, start: int, end: int, limit: int,
                storage: dict | None = None,
                block: int = READ_BLOCK) -> tuple[Iterator[bytes], int]:
    """Blocks of the lines that start in ``[start, end)``, and the offset of the first;
    ``end`` -1: the whole file (a ``.gz`` file, decompressed as it is read). A URL is
    read through fsspec (``storage``: its options), with the same cut rules."""
    try:
        if is_url(path):
            f = _open_url_range(path, start, end, storage)
            if end == -1:
                return _blocks(f, path, 0, None, limit, block), 0
        elif end == -1:
            opener = DECOMPRESS.get(os.path.splitext(path)[1].lower(), open)
            f = opener(path, "rb")
            return _blocks(f, path, 0, None, limit, block), 0
        else:
            f = open(path, "rb")  # noqa: SIM115 - closed by _blocks
        offset = _after_line_in_progress(f, path, start, end, block) if start > 0 else 0
    except OSError as exc:
        raise InputError(f"cannot read split {path}[{start}:{end}]: {exc}") from exc
    return _blocks(f, path, offset, end, limit, block), offset


def _after_line_in_progress(f, path: str, start: int, end: int,
                            block_size: int = READ_BLOCK) -> int:
    """The offset of the first line that starts in ``[start, end)`` (``end`` if none does):
    the line in progress at ``start`` belongs to the split before, and is skipped a block
    at a time, never held whole (it may be huge; the split that owns it reports that)."""
    pos = start - 1  # a newline here means a line starts exactly at start
    f.seek(pos)
    while pos < end - 1:
        block = _read(f, path, min(block_size, end - 1 - pos))
        if not block:
            break
        i = block.find(b"\n")
        if i >= 0:
            f.seek(pos + i + 1)
            return pos + i + 1
        pos += len(block)
    return end


def _read(f, path: str, size: int) -> bytes:
    try:
        return f.read(size)
    except Exception as exc:
        if compressed(path) and damaged(exc):
            raise InputDamaged(f"cannot read input {path!r}: its compressed bytes are "
                               f"damaged ({type(exc).__name__}: {exc}); no retry can read "
                               "it: compress it again from its source") from exc
        if isinstance(exc, (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)):
            # a vanished or unreadable file (bz2 and zstandard raise OSError/ValueError)
            raise InputError(f"cannot read input {path!r}: {type(exc).__name__}: "
                             f"{exc}") from exc
        raise


def damaged(exc: BaseException) -> bool:
    """Whether a decompressor's error says its input's bytes are damaged (truncated or
    corrupt), the same on every read: not an I/O error of the file (an OSError with an
    errno: a network mount that failed for now, a file gone), which a retry may mend."""
    if isinstance(exc, (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)):
        return True  # (EOFError: the stream ended before its end-of-stream marker)
    if type(exc) is OSError and exc.errno is None and exc.args == ("Invalid data stream",):
        return True  # bz2's decompressor
    cls = type(exc)
    return cls.__name__ == "ZstdError" and cls.__module__.startswith("zstandard")


def _too_long(path: str, at: int, limit: int) -> LineTooLong:
    return LineTooLong(f"{path}: {line_at(path, at)} is longer than {limit} bytes, the "
                      "input's limit (is it a text file? read_text(max_line_bytes=) raises "
                      "the limit)")


def _blocks(f, path: str, offset: int, end: int | None, limit: int,
            block_size: int = READ_BLOCK) -> Iterator[bytes]:
    """Blocks of whole lines from ``offset`` (the file's position): the last line that
    starts before ``end`` (None: the end of the file) is read to its end.

    A line in progress is kept as a list of pieces and joined once, when its newline comes
    (joining block by block cost time quadratic in the line's length). A block is at most
    ``limit`` bytes, so only a line that spans blocks can exceed the limit, and that is
    checked as its pieces arrive: memory stays near ``limit`` whatever the file holds.
    """
    size = max(1, min(block_size, limit))
    with f:
        pos = offset  # the file position of the next read
        pending: list = []  # the pieces of the line in progress
        held = 0  # their length
        while end is None or pos < end:
            block = _read(f, path, size if end is None else min(size, end - pos))
            if not block:
                break
            cut = block.rfind(b"\n") + 1
            if not cut:  # no newline: the line in progress goes on
                pending.append(block)
                held += len(block)
                pos += len(block)
                if held > limit:
                    raise _too_long(path, pos - held, limit)
                continue
            if pending:
                if held + block.find(b"\n") > limit:
                    raise _too_long(path, pos - held, limit)
                pending.append(memoryview(block)[:cut])
                data = b"".join(pending)
            else:
                data = block if cut == len(block) else block[:cut]
            pos += len(block)
            pending = [block[cut:]] if cut < len(block) else []
            held = len(block) - cut
            yield data
        while pending:  # the last line starts before end: finish it (past end if need be)
            block = _read(f, path, size)
            i = block.find(b"\n")
            if held + (len(block) if i < 0 else i) > limit:
                raise _too_long(path, pos - held, limit)
            if not block or i >= 0:
                pending.append(block[: i + 1] if i >= 0 else b"")
                yield b"".join(pending)
                return
            pending.append(block)
            held += len(block)
            pos += len(block)


class LineReader:
    """Iterates over ``(byte_offset, line)`` records (``((path, byte_offset), line)`` with
    ``with_path``), a block of lines at a time.

    The file is read in 1 MiB blocks of whole lines; the records of a block are built as two
    lists and zipped, so no Python code runs per line on the way to ``map``: on ASCII text
    that made reading three times cheaper than a generator yielding each line. ``count``
    is the number of records handed out so far (block by block), ``path`` the file being
    read, ``error`` what stopped the reading (an unreadable file, a line over the limit):
    a failure of the input, not of the record ``map`` saw last.
    """

    def __init__(self, ranges: list[FileRange], encoding: str,
                 max_line_bytes: int = MAX_LINE_BYTES, with_path: bool = False,
                 fmt: str = "text", columns: list | None = None,
                 header: str = "given", storage: dict | None = None,
                 block: int = READ_BLOCK) -> None:
        self._ranges = ranges
        self._block = block
        self._storage = storage  # fsspec options of URL inputs
        self._with_path = with_path  # keys are (path, offset): records know their file
        self._parse = _parser(fmt, columns, header)  # None: the line is the value
        self._encoding = encoding
        # a UTF-8 file may open with a byte-order mark (Excel's "CSV UTF-8", Notepad):
        # it is not text, and is left out of the file's first line, as Hadoop's
        # LineRecordReader does (else a CSV header's first column is "\ufeffname" and a
        # JSON line does not parse)
        self._utf8 = codecs.lookup(encoding).name == "utf-8"
        self._limit = max_line_bytes
        self.count = 0
        # bytes of the split read so far, of ranges cut at byte offsets (a compressed file
        # read whole counts none: its decompressed bytes are not the split's): with
        # ``count``, a running task's progress, sent with its heartbeats (workers/worker.py)
        self.read = 0
        self.size = 0  # the split's bytes, as its task's statistics count them (runner.py)
        self.skipped = 0  # records its task leaves out (bad ones): not counted as read
        self.path = ""
        self.error: Exception | None = None
        # a job that may skip bad records: a line its format cannot read is an
        # Unparsed value, raised when read and skipped by ordinal (workers/runner.py)
        self.lenient = False

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return itertools.chain.from_iterable(self._zipped())

    def _zipped(self) -> Iterator:
        try:
            for path, start, end in self._ranges:
                self.path = path
                blocks, offset = _open_range(path, start, end, self._limit, self._storage,
                                             self._block)
                sized = end >= 0
                for data in blocks:
                    offsets, lines = _block_lines(data, offset, self._encoding)
                    if offset == 0 and self._utf8 and lines and lines[0][:1] == "\ufeff":
                        lines[0] = lines[0][1:]  # (its offsets are counted already)
                    if self._parse is not None:
                        offsets, lines = self._parse(path, offsets, lines, self.lenient)
                    self.count += len(lines)
                    offset += len(data)
                    if sized:
                        self.read += len(data)
                    if self._with_path:
                        yield zip(zip(itertools.repeat(path), offsets), lines)
                    else:
                        yield zip(offsets, lines)
        except Exception as exc:
            self.error = exc
            raise


# The offset of the line after one of ``n`` bytes and its newline, as a C callable, so that
# a block's offsets are summed by itertools.accumulate with no Python code per line.
_NEXT_LINE = (1).__add__


def _block_lines(data: bytes, base: int, encoding: str) -> tuple[Iterator[int], list[str]]:
    """The start offsets (an iterator, at least as long as the lines) and texts (without
    newline or a trailing ``\\r``) of a block's lines.

    The offsets are summed as the records are taken, not held in a list: most maps never
    look at them, and a list of a block's offsets cost a sixth of the reading."""
    if not data:
        return iter(()), []
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
    # (``sizes`` is read lazily from the lines as split: before a \r is taken off below)
    offsets = itertools.accumulate(map(_NEXT_LINE, sizes), initial=base)
    if data.endswith(b"\n"):  # the empty piece after the last newline is not a line
        lines.pop()  # (so ``offsets`` has one more, never read: zip stops at the lines)
    if b"\r" in data:
        lines = [x[:-1] if x.endswith("\r") else x for x in lines]
    return offsets, lines
