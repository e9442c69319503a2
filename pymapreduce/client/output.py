"""Writing a job's output as ``part-NNNNN`` JSON-lines files and a ``_SUCCESS`` marker.

Each line is ``json.dumps([key, value], ensure_ascii=False, default=repr)`` and a newline.
The lines are made a column at a time (see :func:`encode_lines`), not a ``json.dumps``
per record, which is what the writer spent its time on: a column of str, int or float
is encoded by one C function mapped over it, and the bytes are the same.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from json.encoder import encode_basestring  # (what ensure_ascii=False encodes a str with)
from typing import Any

from .. import speedups
from ..errors import ConfigError

PART = re.compile(r"part-\d{5,}")
# Records encoded and written at a time: large writes (about 1.6 MiB for 100-byte
# records), and a few MiB held for them whatever the size of a partition.
CHUNK_RECORDS = 1 << 14
# The one encoder of everything else, made once (json.dumps with options makes one a call)
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=repr)


class OutputExists(ConfigError, FileExistsError):
    """The output directory already holds files and overwriting was not asked for."""


def check_output_dir(directory: str | os.PathLike, *, overwrite: bool) -> str:
    """Make sure a job's output can be written to ``directory`` before the job runs.

    A path that is a file, under a file, or that cannot be created or written raises
    :class:`~pymapreduce.ConfigError` naming it; an existing directory that is not empty
    raises :class:`OutputExists` unless ``overwrite`` (as Hadoop and Spark refuse to write
    into an existing output). The directory is created if missing, and a probe file is
    written into it and removed, so a permission problem shows now, not after the job.
    Returns the path as a str.
    """
    path = os.fspath(directory)
    if not path:
        raise ConfigError("the output directory is an empty path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"output {path!r} is a file, not a directory")
    if os.path.isdir(path) and not overwrite:
        entries = sorted(os.listdir(path))
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise OutputExists(
                f"output directory {path!r} already exists and is not empty ({shown}): "
                "choose a new directory, or overwrite its part files (--overwrite, or "
                "overwrite=True in Python)")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pymapreduce-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write the output directory {path!r}: "
                          f"{exc.strerror or exc}") from None
    return path


def write_output(directory: str | os.PathLike, parts: Iterable[tuple[list, list]]) -> list[str]:
    """Write one file per partition, each under a temporary name renamed when complete,
    so a reader never sees a half-written file; ``_SUCCESS`` comes last.

    Output of an earlier run in the same directory is replaced: its ``_SUCCESS`` goes
    first (so nobody takes the mix for a finished output) and its extra parts at the end.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, "_SUCCESS")
    if os.path.exists(marker):
        os.unlink(marker)
    old = {name for name in os.listdir(directory) if PART.fullmatch(name)}
    written = []
    for i, (keys, values) in enumerate(parts):
        final = os.path.join(directory, f"part-{i:05d}")
        tmp = os.path.join(directory, f".part-{i:05d}.tmp")
        with open(tmp, "wb") as f:
            for start in range(0, len(keys), CHUNK_RECORDS):
                end = start + CHUNK_RECORDS
                f.write(encode_lines_utf8(keys[start:end], values[start:end]))
        del keys, values  # (not held while the next partition is fetched and decoded)
        os.replace(tmp, final)
        written.append(final)
        old.discard(os.path.basename(final))
    for name in old:
        os.unlink(os.path.join(directory, name))
    with open(marker, "w"):
        pass
    return written


_lifting = threading.Lock()  # (whole_ints: the limit is the process's, not a thread's)
_lifted = [0, 0]  # whole_ints blocks open in any thread; the limit they found in place


@contextlib.contextmanager
def whole_ints() -> Iterator[None]:
    """Python's limit on turning an int into text (4300 digits: ``int.__repr__`` and
    ``json.dumps`` raise ValueError past it) lifted for a while, so that a job's big ints
    are written in full: JSON has no limit on an int's digits, and a result's ints come
    from the job's own code (one read from a peer is at most 64 KiB, about 158,000 digits,
    0.3 s to write: ``patterns/safe_types.py``). The limit is the interpreter's: blocks
    open at once in several threads (clients writing outputs side by side) lift it once,
    and the last to end puts back the limit the first one found, never the lifted one."""
    if not hasattr(sys, "set_int_max_str_digits"):  # (a Python without the limit)
        yield
        return
    with _lifting:
        if not _lifted[0]:
            _lifted[1] = sys.get_int_max_str_digits()
            sys.set_int_max_str_digits(0)
        _lifted[0] += 1
    try:
        yield
    finally:
        with _lifting:
            _lifted[0] -= 1
            if not _lifted[0]:
                sys.set_int_max_str_digits(_lifted[1])


def encode_lines_utf8(keys: Sequence, values: Sequence) -> bytes:
    """:func:`encode_lines` in UTF-8, as a part file holds it: written in one pass in C
    (``speedups.json_lines``) when every item is an exact str, int of 64 bits, float, bool
    or None (a 100-byte record's line in about 25 ns, where the columns' Python path
    takes 350), else encoded by :func:`encode_lines` (and a lone surrogate's
    UnicodeEncodeError raised, as a file written as text raises it)."""
    fast = speedups.json_lines
    if fast is not None and (out := fast(keys, values)) is not None:
        return out
    return encode_lines(keys, values).encode("utf-8")


def encode_lines(keys: Sequence, values: Sequence) -> str:
    """The JSON lines of the pairs ``zip(keys, values)``: the same text as a
    ``json.dumps([k, v], ensure_ascii=False, default=repr) + "\\n"`` per pair, made by
    encoding each column on its own (a pair's JSON is its two items' JSON, in brackets,
    ", " between them); an int of any size is written in full (:func:`whole_ints`)."""
    try:
        return _encode_lines(keys, values)
    except ValueError:  # (an int past the digits limit; else it raises again)
        with whole_ints():
            return _encode_lines(keys, values)


def _encode_lines(keys: Sequence, values: Sequence) -> str:
    encoded_keys, qk = _column_text(keys)
    encoded_values, qv = _column_text(values)
    n = min(len(encoded_keys), len(encoded_values))
    if not n:
        return ""
    # One join of the items and the separators between them, laid out by slice
    # assignments (C loops): a third of the time of a format per line. A column of plain
    # text comes as it is, its quotes in the separators (qk, qv).
    pieces = [qk + ", " + qv] * (4 * n)
    pieces[0::4] = encoded_keys[:n]
    pieces[2::4] = encoded_values[:n]
    pieces[3::4] = [qv + "]\n[" + qk] * n
    pieces[-1] = qv + "]\n"
    return "[" + qk + "".join(pieces)


# The UTF-8 bytes a JSON string holds as they are (ensure_ascii=False): all but the
# quote, the backslash and the control characters below 0x20 (the bytes of a multi-byte
# character are all 0x80 or more)
_PLAIN_BYTES = bytes(b for b in range(0x20, 0x100) if b not in b'"\\')


def _column_text(column: Sequence) -> tuple[Sequence, str]:
    """Each item's JSON text and ``""``; or, for a column of exact ``str`` none of which
    needs an escape, the column itself and ``'"'``: its JSON is each item in quotes, and
    checking the whole column at once, in C, is a tenth of the cost of escaping each
    item (a record's value in a sort's part file)."""
    if type(column) is list and column and type(column[0]) is str and set(
            map(type, column)) == {str}:
        joined = "".join(column)
        try:
            raw = joined.encode("utf-8")
        except UnicodeEncodeError:  # (lone surrogates: escaped, and failing, as before)
            raw = b"\\"
        if not raw.translate(None, _PLAIN_BYTES):
            return column, '"'
        return list(map(encode_basestring, column)), ""  # (its types are known: all str)
    return _encode_column(column), ""


def _float(x: float) -> str:
    return float.__repr__(x) if math.isfinite(x) else _ENCODER.encode(x)  # NaN, Infinity


def _bool(x: bool) -> str:
    return "true" if x else "false"


def _null(x: None) -> str:
    return "null"


# Exact types whose JSON one small function gives (json.dumps writes int and float
# subclasses through int.__repr__ and float.__repr__, and str subclasses as str: those go
# through the encoder, as does everything else)
_FAST: dict[type, Callable[[Any], str]] = {
    str: encode_basestring, int: int.__repr__, float: _float, bool: _bool, type(None): _null}


def _encode_column(column: Sequence) -> list[str]:
    """Each item's JSON text."""
    types = set(map(type, column))
    if not types <= _FAST.keys():
        return list(map(_ENCODER.encode, column))
    if len(types) != 1:  # (mixed, or none)
        fast = _FAST
        return [fast[type(x)](x) for x in column]
    t = types.pop()
    if t is float and all(map(math.isfinite, column)):
        return list(map(float.__repr__, column))
    return list(map(_FAST[t], column))
