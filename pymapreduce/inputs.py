"""Job inputs: in-memory records and text files cut into splits.

In-memory records are cut into chunks by the client. Text files are only *named* by the
client: it cuts them into byte ranges from their sizes alone, and each worker reads its
own range (``lines.py``: a line belongs to the split its first byte lies in, and a line
longer than the input's ``max_line_bytes`` fails its task instead of filling memory).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .lines import (  # noqa: F401 - the readers are part of this module's interface
    DEFAULT_ENCODING,
    MAX_LINE_BYTES,
    MIB,
    FileRange,
    LineReader,
    compressed,
    read_file_split,
    read_split,
)
from .store.urls import check_storage_options, is_url, list_url, local_path, url_typo

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
    encoding: str = DEFAULT_ENCODING
    max_line_bytes: int = MAX_LINE_BYTES
    with_path: bool = False
    fmt: str = "text"  # text, jsonl, csv, or files (read_files: each file whole)
    columns: tuple = ()  # a CSV input's column names
    # a CSV input's first line of each file: "given" (a header, skipped: columns= named
    # the columns), "file" (the header the columns were read from: every file's must be
    # the same), "none" (header=False: the first line is a row)
    header: str = "given"
    # fsspec options of URL inputs (no credentials: check_storage_options refused them)
    storage: dict = field(default_factory=dict, hash=False)

    def read_options(self) -> dict:
        """How workers must read these files, beyond their byte ranges: the settings that
        differ from the defaults (so a default input's splits look as they always did)."""
        options: dict = {}
        if codecs.lookup(self.encoding).name != codecs.lookup(DEFAULT_ENCODING).name:
            options["encoding"] = self.encoding
        if self.max_line_bytes != MAX_LINE_BYTES:
            options["max_line_bytes"] = self.max_line_bytes
        if self.with_path:
            options["with_path"] = 1
        if self.fmt != "text":
            options["format"] = self.fmt
        if self.columns:
            options["columns"] = list(self.columns)
            if self.header != "given":  # (without it a worker skips each file's first line)
                options["header"] = self.header
        if self.storage and any(is_url(p) for p in self.patterns):
            options["storage"] = self.storage
        return options

    def files(self) -> list[str]:
        """Absolute paths of the matching files (URLs of the matching objects), each
        pattern's sorted, in the order of the patterns; InputError if a pattern matches
        none. A file that two patterns name is read twice, as Hadoop, Spark and mrjob
        read it."""
        return [path for path, _ in self.listing()]

    def sized_files(self) -> dict[str, int | None]:
        """``{path or URL: size}`` of the distinct matching files, in order (see
        :meth:`listing`)."""
        return dict(self.listing())

    def listing(self) -> list[tuple[str, int | None]]:
        """``(path or URL, size)`` of the matching files, in order (a file named twice is
        there twice): the sizes of objects come from their store's listing (None for
        local files: ``os.path.getsize`` reads them when the splits are cut)."""
        found: list[tuple[str, int | None]] = []
        for pattern in self.patterns:
            if is_url(pattern):
                found.extend(list_url(pattern, self.storage))
                continue
            found.extend((path, None) for path in self._local_files(local_path(pattern)))
        return found

    @staticmethod
    def _local_files(pattern: str) -> list[str]:
        """The local files a path, a directory or a glob names (absolute, sorted)."""
        path = os.path.expanduser(pattern)
        if os.path.isdir(path):  # a directory: the files in it, and below it
            matches = _files_below(path)
            if not matches:
                raise InputError(f"input directory {pattern!r} holds no file"
                                 f"{_skipped_names(path)}")
            return matches
        matches = sorted(glob.glob(path, recursive=True))
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise InputError(f"input path {pattern!r} matches no file{url_typo(pattern)}")
        return [os.path.abspath(m) for m in matches]


def _skipped_names(directory: str) -> str:
    """What a directory that yields no file holds all the same, as the end of the error:
    files under names that start with ``.`` or ``_``, which :func:`_files_below` skips."""
    skipped = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        skipped.extend(os.path.relpath(os.path.join(root, n), directory) for n in sorted(names))
        if len(skipped) > 3:
            break
    if not skipped:
        return ""
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    return (f" to read: names starting with '.' or '_' are skipped ({shown}); give a "
            "file's own path to read it")


def _files_below(directory: str) -> list[str]:
    """The files in ``directory`` and its subdirectories, sorted, absolute; names starting
    with ``.`` or ``_`` are left out (``_SUCCESS`` markers, hidden files), as Hadoop does."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found.extend(os.path.abspath(os.path.join(root, n)) for n in sorted(names)
                     if not n.startswith((".", "_")))
    return found


def read_text(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    split_bytes: int | None = None,
    encoding: str = DEFAULT_ENCODING,
    max_line_bytes: int = MAX_LINE_BYTES,
    with_path: bool = False,
    storage_options: dict | None = None,
) -> TextInput:
    """Name text files (paths or globs) as a job's input, without reading them.

    ``split_bytes`` is the size of one map task's byte range; by default it is chosen so
    that there are about two splits per worker slot, between 64 KiB and 8 MiB (short tasks:
    a job behind a big one waits little; see docs/scheduling.md).
    A directory means the files in it and below it (not those whose names start with
    ``.`` or ``_``). Compressed files, by extension (``.gz``, ``.bz2``, ``.xz``, ``.lzma``,
    ``.zst``), are decompressed as they are read, each file one split (a compressed stream
    cannot be cut); plain files are cut into several. Workers must see the same paths.
    ``encoding``: how the files' bytes become text (invalid bytes are replaced); it must
    write ``"\n"`` as the byte 0x0A, as UTF-8, Latin-1, the cp125x and most others do
    (UTF-16 and UTF-32 do not, and are refused). A UTF-8 file's byte-order mark (as
    Excel and Notepad write) is not part of its first line (``utf-8-sig`` is UTF-8). ``max_line_bytes``: a longer line fails
    its task with an error naming the file and the line's offset (default 64 MiB).
    ``with_path``: each record's key is ``(path, byte_offset)`` instead of the offset, so
    ``map`` knows which file a line came from (an inverted index, grep with file names, a
    join of two files), as Hadoop's ``mapreduce.map.input.file``.
    A path may be a URL that fsspec knows (``s3://bucket/logs/*.gz``, ``gs://``,
    ``https://``...): objects are listed here, their splits cut from their sizes, and
    each worker reads its byte ranges straight from the store (``pip install
    'pymapreduce[s3]'``). ``storage_options``: fsspec's options for those URLs
    (``{"endpoint_url": ...}``), sent with the job, so never credentials: those come
    from where the client and workers run (docs/store.md).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    patterns = tuple(os.fspath(p) for p in paths)
    if not patterns:
        raise InputError("read_text() needs at least one path")
    if split_bytes is not None and split_bytes < 1:
        raise InputError(f"split_bytes must be positive, got {split_bytes}")
    encoding, max_line_bytes = check_read_options(encoding, max_line_bytes)
    storage = check_storage_options(storage_options)
    return TextInput(patterns, split_bytes, encoding, max_line_bytes, bool(with_path),
                     storage=storage)


def check_read_options(encoding: object, max_line_bytes: object) -> tuple[str, int]:
    """Validate how files are to be read (on the client, and again on the worker, which
    gets them from the broker); InputError names the bad setting."""
    if type(max_line_bytes) is not int or max_line_bytes < 1:
        raise InputError(f"max_line_bytes must be a positive int, got {max_line_bytes!r:.80}")
    if not isinstance(encoding, str):
        raise InputError(f"encoding must be a str, got {type(encoding).__name__}")
    try:
        if codecs.lookup(encoding).name == "utf-8-sig":
            # UTF-8 whose files may open with a byte-order mark: every UTF-8 file's
            # mark is left out anyway (lines.py), and utf-8-sig would encode one into
            # every line whose bytes are counted for its offset
            encoding = DEFAULT_ENCODING
        ascii_newline = "a\n".encode(encoding) == b"a\n"
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r:.80}") from None
    except UnicodeError:
        ascii_newline = False
    if not ascii_newline:  # lines are found by their b"\n" bytes, before decoding
        raise InputError(f"encoding {encoding!r} does not write a newline as the byte 0x0A "
                         "(UTF-16 and UTF-32 cannot be cut into lines as bytes); convert "
                         "the files to UTF-8")
    return encoding, max_line_bytes




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
    listing = text.listing()
    files = [path for path, _ in listing]  # (a file named twice is read twice)
    sizes = dict(listing)
    for path, size in sizes.items():
        if size is not None:  # (an object's size, from its store's listing)
            continue
        try:
            sizes[path] = os.path.getsize(path)
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc}") from exc
    # an object whose size is unknown, or whose server reads no byte range (some HTTP
    # servers), has size -1: it is read whole, one split, as a compressed file is
    whole = {p for p in sizes if compressed(p) or sizes[p] < 0}
    for p in whole:
        sizes[p] = max(0, sizes[p])
    total = sum(sizes[p] for p in files)
    if text.fmt == "files":
        return _whole_file_splits(files, sizes, text.split_bytes, slots), total
    plain = [p for p in files if p not in whole and sizes[p]]
    plain_total = sum(sizes[p] for p in plain)
    size = _split_size(text.split_bytes, total, slots)
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
    splits.extend(FileSplit(((p, 0, -1),)) for p in files if p in whole)
    if not splits:  # only empty files: one empty split, so the job still runs
        splits.append(FileSplit(((files[0], 0, 0),)))
    return splits, total


def _split_size(split_bytes: int | None, total: int, slots: int) -> int:
    """Bytes of one split: as asked, else about FILE_SPLITS_PER_SLOT splits per slot, within
    MIN_SPLIT_BYTES and MAX_AUTO_SPLIT_BYTES."""
    if split_bytes:
        return split_bytes
    size = total // max(1, FILE_SPLITS_PER_SLOT * slots) + 1
    return min(MAX_AUTO_SPLIT_BYTES, max(MIN_SPLIT_BYTES, size))


def _whole_file_splits(files: list[str], sizes: dict, split_bytes: int | None,
                       slots: int) -> list[FileSplit]:
    """read_files(): each file whole, small files grouped into one split until it holds
    about ``split_bytes`` (a big file is a split of its own)."""
    size = _split_size(split_bytes, sum(sizes[p] for p in files), slots)
    splits: list[FileSplit] = []
    group: list = []
    held = 0
    for path in files:
        if group and held + sizes[path] > size:
            splits.append(FileSplit(tuple(group)))
            group, held = [], 0
        group.append((path, 0, -1))
        held += sizes[path]
    if group:
        splits.append(FileSplit(tuple(group)))
    return splits


def read_jsonl(paths: str | os.PathLike | Iterable[str | os.PathLike], **options: Any) -> TextInput:
    """JSON Lines files: one record per non-blank line, ``(byte_offset, value)`` (or
    ``((path, offset), value)`` with ``with_path=True``), split like :func:`read_text`
    (whose other options it takes). A line that is not JSON fails its task naming the file
    and the line's offset."""
    return dataclasses.replace(read_text(paths, **options), fmt="jsonl")


def read_csv(paths: str | os.PathLike | Iterable[str | os.PathLike], header: bool = True,
             columns: Iterable[str] | None = None, **options: Any) -> TextInput:
    """CSV files: one record per row, ``(byte_offset, row)``, split like
    :func:`read_text` (whose other options it takes). With ``header`` (the default), each
    file's first line is a header and rows are dicts of its columns: the first file's
    header is read here, on the client, and every other file must have the same one (a
    file whose header differs fails its task naming both, rather than have its rows
    mislabelled: read such files with ``header=False`` and ``with_path=True``, rows as
    lists, or in separate jobs). ``columns=``
    names the columns instead (each file's first line is then skipped as a header, or,
    with ``header=False``, read as a row); with neither, rows are lists. A row with more
    fields than there are columns fails its task (its extra fields would be lost); a
    shorter row's dict lacks the missing columns. A field may not hold a newline (each
    line is a row)."""
    text = read_text(paths, **options)
    names: tuple = tuple(columns) if columns is not None else ()
    mode = "given" if header else "none"
    if header and not names:
        mode = "file"
        first = text.files()[0]
        # read as a worker reads it: a compressed file's header is its decompressed line
        reader = read_split([(first, 0, -1)], text.encoding, text.max_line_bytes,
                            storage=text.storage)
        try:
            line = next((line for offset, line in reader), "")
        except InputError as exc:
            raise InputError(f"cannot read the header of {first!r}: {exc}") from exc
        names = tuple(next(csv.reader([line]), []))
        if not names:
            raise InputError(f"{first!r} has no header line (read_csv(header=False))")
    return dataclasses.replace(text, fmt="csv", columns=names, header=mode)


def read_files(paths: str | os.PathLike | Iterable[str | os.PathLike],
               split_bytes: int | None = None,
               storage_options: dict | None = None) -> TextInput:
    """Whole files: one record ``(path, bytes)`` per file (as they are on disk; nothing is
    decompressed), a task per file or per group of small files (about ``split_bytes``).
    Paths may be URLs, as for :func:`read_text`."""
    return dataclasses.replace(read_text(paths, split_bytes,
                                         storage_options=storage_options), fmt="files")


_READERS = {"text": "read_text", "jsonl": "read_jsonl", "csv": "read_csv",
            "files": "read_files"}


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
        if isinstance(item, TextInput):
            raise InputError(
                f"input record {position} is a {_READERS.get(item.fmt, 'read_text')}(...) "
                "input: a job takes one input, not a list of them; give one reader every "
                "path (read_csv(['users.csv', 'orders.csv']), with header=False and "
                "with_path=True for files with different headers) and tell the files "
                "apart by the path in the key (with_path=True)")
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
