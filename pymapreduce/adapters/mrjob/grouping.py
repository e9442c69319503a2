"""How a map task's pairs are grouped as mrjob's sort groups them, and how a group's
values are sorted (``SORT_VALUES``).

mrjob groups the lines a mapper writes by their key bytes (task.py). A task with a
combiner gathers its pairs into groups, encoded key bytes -> values (line rests). When
the mapper writes with the standard library's JSON (mrjob's default), a task gathers
them by the key itself instead while every pair is a ``str`` key or a tuple of ``str``
with an ``int`` value, the pairs of a word count or a word-pair count: JSON writes
such keys and values one way each (two keys are equal exactly when their bytes are), and
reading a JSON ``int`` back gives the same ``int``, so the combiner gets the same key
(read back from its bytes, a tuple as a list) and the same values, and each key is
encoded once per task instead of once per pair. The first pair of any other kind turns
the task's groups into encoded ones, in the order they were met, and the rest of the
task goes that way (:func:`pair_keeper`, :func:`key_groups`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import is_
from typing import Any

from mrjob.protocol import _KeyCachingProtocol

from .task import CACHE_LIMIT, IMMUTABLE, _memo, _stdlib_json, json_loads

# a byte at or below the newline: a line rest holding one can sort apart from its line
_LOW = re.compile(rb"[\x00-\n]").search
BY_KEY = True  # groups by key where they can be (False: always encoded; tests compare)
# ints of fewer digits than the least limit an interpreter may set on int-to-text (its
# str_digits_check_threshold): written as digits whatever the limit; a longer one may
# not be, and goes the encoded way (which raises what mrjob raises)
_WRITABLE = 10 ** 639


def pair_encoder(write: Callable[[Any, Any], bytes]) -> Callable[[Any, Any], tuple]:
    """``(key, value) -> (key bytes, rest)``: the line ``write`` makes, cut at its first
    tab (``rest`` is None for a line without one), as mrjob's sort cuts it."""
    proto = getattr(write, "__self__", None)
    if proto is not None and type(proto).write is _KeyCachingProtocol.write:
        # JSON, repr and pickle protocols write dumps(key) TAB dumps(value): skip the join
        dumps = _memo(proto._dumps)

        def encode(k: Any, v: Any) -> tuple:
            kb = dumps(k)
            if b"\t" in kb:  # a custom _dumps that writes tabs: cut as mrjob would
                return split_line(kb + b"\t" + dumps(v))
            return kb, dumps(v)
        encode.dumps = dumps  # (combine_by_key writes a value with it)
        return encode

    def encode_line(k: Any, v: Any) -> tuple:
        return split_line(write(k, v))
    return encode_line


def pair_keeper(write: Callable[[Any, Any], bytes], groups: dict | None, out: list,
                tag: list | None) -> Callable[[Any, Any], None]:
    """``keep(key, value)``: encode a pair (as :func:`pair_encoder`) and add it to
    ``groups`` (key bytes -> values, for a combiner) or to ``out`` as ``(key bytes,
    value)``; with ``tag``, the value is ``[tag[0], rest]``. The common case, a JSON-like
    protocol with str keys and int values and no tags, runs without a further call; with
    a combiner and the standard library's JSON, ``groups`` holds the keys themselves
    while the pairs allow it (the module's docstring; ``keep.key_bytes`` encodes them)."""
    proto = getattr(write, "__self__", None)
    if tag is not None or proto is None or type(proto).write is not _KeyCachingProtocol.write:
        encode = pair_encoder(write)

        def keep(k: Any, v: Any) -> None:
            kb, rest = encode(k, v)
            value = rest if tag is None else [tag[0], rest]
            if groups is None:
                out.append((kb, value))
            else:
                values = groups.get(kb)
                if values is None:
                    groups[kb] = [value]
                else:
                    values.append(value)
        return keep
    dumps = proto._dumps
    memo = _memo(dumps)
    plain = memo.plain
    keys: dict = {}
    ints: dict = {}
    append = out.append
    by_key = BY_KEY and groups is not None and _stdlib_json(dumps, "_dumps")

    def keep_fast(k: Any, v: Any) -> None:
        nonlocal by_key
        if by_key:
            # (exact types: a str subclass may compare equal to a str and write other
            # bytes, an int subclass may write other digits)
            t = type(k)
            if type(v) is int and -_WRITABLE < v < _WRITABLE and (t is str or t is tuple and (
                    type(k[0]) is str and type(k[1]) is str if len(k) == 2
                    else _all_str(k))):
                values = groups.get(k)
                if values is None:
                    groups[k] = [v]
                else:
                    values.append(v)
                return
            by_key = False  # the first pair of another kind: encoded from here on
            encode_groups(groups, plain)
        kb = keys.get(k) if type(k) is str else None
        if kb is None:
            kb = memo(k)
            if b"\t" in kb:  # a custom _dumps that writes tabs: cut as mrjob would
                kb, vb = split_line(kb + b"\t" + dumps(v))
                add(kb, vb)
                return
            if type(k) is str:
                if len(keys) >= CACHE_LIMIT:
                    keys.clear()
                keys[k] = kb
        if type(v) is int:
            vb = ints.get(v)
            if vb is None:
                vb = dumps(v)
                if len(ints) < CACHE_LIMIT:
                    ints[v] = vb
        else:
            vb = memo(v)
        if groups is None:
            append((kb, vb))
        else:
            values = groups.get(kb)
            if values is None:
                groups[kb] = [vb]
            else:
                values.append(vb)

    def add(kb: bytes, vb: Any) -> None:
        if groups is None:
            append((kb, vb))
        else:
            groups.setdefault(kb, []).append(vb)
    keep_fast.key_bytes = plain  # (what the combiner's side encodes a key's group by)
    return keep_fast


def _all_str(key: tuple) -> bool:
    for item in key:
        if type(item) is not str:
            return False
    return True


def key_groups(groups: dict) -> bool:
    """Whether a task's ``groups`` hold keys themselves (see :func:`pair_keeper`), not
    their bytes: all of them do, or none (the first pair of another kind converts them)."""
    for k in groups:
        return type(k) is not bytes
    return False


def encode_groups(groups: dict, dumps: Callable[[Any], bytes]) -> None:
    """Turn groups by key (``int`` values) into groups by key bytes (values' bytes), in
    place and in the order they were made: what the pairs would have made encoded."""
    held = list(groups.items())
    groups.clear()
    for k, values in held:  # (keys of one encoding, if json was changed meanwhile: merged)
        groups.setdefault(dumps(k), []).extend([int.__repr__(v).encode() for v in values])


def combine_by_key(groups: dict, key_bytes: Callable[[Any], bytes], combiner: Callable,
                   sort_values: bool, read: Callable, write: Callable, out: list) -> bool:
    """Run ``combiner`` over a task's groups by key (:func:`pair_keeper`), keys in
    mrjob's order (their bytes, ``key_bytes``), adding ``(key bytes, value bytes)`` to
    ``out``: what the groups encoded would give, when the combiner reads and writes the
    standard library's JSON (else False, and nothing is run). The combiner gets each key
    as JSON reads it back (a tuple as a new list) and the values themselves (ints); a
    key it yields back unchanged is not encoded again."""
    reader, writer = getattr(read, "__self__", None), getattr(write, "__self__", None)
    if (reader is None or writer is None or type(reader).read is not _KeyCachingProtocol.read
            or type(writer).write is not _KeyCachingProtocol.write
            or not _stdlib_json(reader._loads, "_loads")
            or not _stdlib_json(writer._dumps, "_dumps")):
        return False
    encode = pair_encoder(write)
    value_bytes = encode.dumps
    append = out.append
    # (each group leaves the task's memory once combined: the combiner's output grows
    # as the groups go)
    by_bytes = dict(zip(map(key_bytes, groups), groups))
    take = groups.pop
    for kb in sorted(by_bytes):
        key = by_bytes[kb]
        values = take(key)
        if sort_values and len(values) > 1:
            sort_ints(values)
        given = key if type(key) is str else list(key)
        for k, v in combiner(given, iter(values)) or ():
            if k is given and (type(k) is str or len(k) == len(key) and all(map(is_, k, key))):
                append((kb, value_bytes(v)))
            else:
                append(encode(k, v))
    return True


def sort_lines(values: list) -> None:
    """Sort a group's values (line rests: bytes, None for a line without a tab) as
    ``SORT_VALUES`` sorts their lines (:func:`line_order`). As plain bytes when that is
    the same order: no rest is None and none holds a byte at or below the newline (a
    rest then sorts before another exactly when it does with the newline after it; JSON
    writes no such byte). Else with the line's order as the key."""
    if len(values) < 2:
        return
    try:
        joined = b"".join(values)
    except TypeError:  # (a None: a line without a tab)
        joined = b"\n"
    if _LOW(joined) is None:
        values.sort()
    else:
        values.sort(key=line_order)


def sort_ints(values: list) -> None:
    """Sort a group's ``int`` values (groups by key) as :func:`sort_lines` sorts the JSON
    they are written as: by their digits as text."""
    values.sort(key=int.__repr__)


def split_line(line: bytes) -> tuple:
    """A written line as ``(key bytes, rest)``: what mrjob's sort keys on."""
    i = line.find(b"\t")
    return (line, None) if i < 0 else (line[:i], line[i + 1:])


def join_line(kb: bytes, rest: bytes | None) -> bytes:
    return kb if rest is None else kb + b"\t" + rest


def group_decoder(read: Callable[[bytes], tuple]) -> Callable[[bytes, list], tuple]:
    """``(key bytes, [rest...]) -> (key, values iterator)`` through the reading protocol;
    a key is decoded once per group, values one at a time as the reducer asks."""
    proto = getattr(read, "__self__", None)
    if proto is not None and type(proto).read is _KeyCachingProtocol.read:
        loads = json_loads(proto._loads)

        known: dict = {}  # encodings of immutable values (counts, words) seen before
        get = known.get

        def load(b: bytes) -> Any:
            x = get(b, known)
            if x is known:
                x = loads(b)
                if type(x) in IMMUTABLE:  # a list or dict must be the reducer's own
                    if len(known) >= CACHE_LIMIT:
                        known.clear()
                    known[b] = x
            return x

        def decode(kb: bytes, rests: list) -> tuple:
            if None in rests:  # a line without a tab: let the protocol say what it says
                return generic(kb, rests)
            return load(kb), map(load, rests)
    else:
        decode = None

    def generic(kb: bytes, rests: list) -> tuple:
        key = read(join_line(kb, rests[0]))[0] if rests else None
        return key, (read(join_line(kb, r))[1] for r in rests)
    return decode or generic


def line_order(rest: bytes | None) -> bytes:
    """Where a value's line sorts among lines with the same key (``SORT_VALUES`` sorts whole
    lines, newline included: ``a`` before ``a<TAB>b``... byte for byte as mrjob's sort)."""
    return b"\n" if rest is None else b"\t" + rest + b"\n"
