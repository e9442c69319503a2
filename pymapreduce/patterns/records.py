"""Encoding of user keys and values: msgpack, safe extension types, cloudpickle last.

Types round-trip exactly: a tuple comes back a tuple (so it stays usable as a key), and so
do sets, big ints, datetimes, Decimals and the other stdlib types of ``safe_types``, each
as a msgpack extension whose decoding runs no code. Only what is left (instances of user
classes, mostly) travels as cloudpickle bytes (``EXT_PICKLE``).

Unpickling runs code chosen by whoever made the bytes, so :func:`unpack` refuses pickled
values unless asked with ``allow_pickle=True``. Workers allow it for data between workers
(they run user code by design); clients do not for results, unless the job opted in with
``Job.pickle_results``: a worker key must not be a key to the machines of the people who
submit jobs.
"""

from __future__ import annotations

import gc
import threading
from functools import partial
from sys import getsizeof
from typing import Any

import msgpack

from ..errors import PickledValueRefused, UndecodableValue, UnencodableValue, ValueNeedsPickle
from . import safe_types as S

EXT_PICKLE = 1
EXT_TUPLE = S.EXT_TUPLE  # (kept importable under its old name)

OPT_IN = ("set pickle_results = True on the Job (for a handle on a job submitted elsewhere: "
          "Client.job(job_id, pickle_results=True)), and only if you trust every worker key: "
          "unpickling a result runs code the worker chose")


# Extension values nest (a tuple in a tuple...), and each level is a nested decode that
# takes C stack: with msgpack.unpackb, 35 KiB a level (64 levels crashed a thread with 2 MiB
# of stack); with the heap-state Unpackers of _Decoding, about 1.5 KiB a level after the
# top level's 35 KiB. Bytes from a peer could nest in a few bytes a level, so both sides
# stop here, with a typed error: 32 levels decode in a thread with 96 KiB of stack (musl's
# default is 128 KiB; glibc's, 8 MiB).
# what an output of no pairs is (two empty columns: ``pack([[], []])``); the broker keeps
# none of these and serves such an output as no bytes, which a reader takes for the same
EMPTY_COLUMNS = b"\x92\x90\x90"
MAX_NESTING = 32

# A decode may build at most this many bytes of extension objects and maps per encoded
# byte (plus the floor, for small values): legitimate data stays far below (a 2-item set
# is 6 bytes encoded, 216 decoded: 36x; a word and its count in a Counter, about 10x), an
# empty deque is 6 bytes encoded and 624 decoded. Forged bytes of nothing but empty deques
# took a client to 130x their size.
MAX_EXPANSION = 64
EXPANSION_FLOOR = 1 << 20


def _encode_ext(allow_pickle: bool, depth: int, obj: Any) -> msgpack.ExtType:
    """The extension for a value msgpack cannot carry: a safe type, else a pickle."""
    t = type(obj)
    try:
        raw = S.RAW_OUT.get(t)
        if raw is not None:
            return msgpack.ExtType(raw[0], raw[1](obj))
        packed = S.PACKED_OUT.get(t)
        if packed is not None:
            if depth >= MAX_NESTING:
                raise UnencodableValue(f"values nest tuples, sets, dates... more than "
                                       f"{MAX_NESTING} levels deep")
            return msgpack.ExtType(packed[0], _pack(packed[1](obj), allow_pickle, depth + 1))
    except S.NotSafe as exc:  # e.g. a datetime with a pytz zone: pickled whole below
        why = f" ({exc})"
    else:
        why = " (msgpack and the safe extension types cannot carry it)"
    if not allow_pickle:
        raise ValueNeedsPickle(f"a {_type_name(t)} value can only travel pickled{why}; to "
                               f"send it to the client anyway, {OPT_IN}")
    import cloudpickle  # only on the user-code side; the broker never gets here

    try:
        return msgpack.ExtType(EXT_PICKLE, cloudpickle.dumps(obj))
    except Exception as exc:
        raise UnencodableValue(
            f"cannot encode a {t.__name__} value: msgpack does not support it and "
            f"cloudpickle failed: {exc}"
        ) from exc


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class _Decoding:
    """One decode: its nested unpackers and its budgets.

    Nested extension values are decoded by ``msgpack.Unpacker`` objects, one per depth,
    made when first needed and reused: an Unpacker keeps its parse stack in the object (on
    the heap), where ``msgpack.unpackb`` keeps a 1024-entry one on the C stack, about 35
    KiB per level, which killed a thread with a small stack (SIGSEGV) at a few levels.
    The top level is still ``unpackb``, which reads the bytes in place (an Unpacker would
    copy a partition of up to 1 GiB into its buffer) and costs that stack once.
    """

    __slots__ = ("allow_pickle", "exts", "fed", "left", "size", "unpackers", "pairs")

    def __init__(self, allow_pickle: bool, size: int) -> None:
        self.allow_pickle = allow_pickle
        self.exts = 0  # safe extension values decoded (the keys check needs none if 0)
        self.size = size
        # bytes of objects still allowed; only where pickles are refused (a peer trusted with
        # them can run code anyway, and a worker must not fail a job of odd but honest data)
        self.left = (MAX_EXPANSION * size + EXPANSION_FLOOR) if not allow_pickle else 1 << 62
        # made at the first extension value (most decodes have none: a task's split of
        # plain records, a partition of words and counts)
        self.unpackers: list | None = None  # by depth (index 0: the top, unpackb)
        self.fed: list | None = None  # bytes given to each, to check it read them all
        # maps are built here, not by msgpack, so their keys are checked first; only where
        # the decoder refuses pickles: a peer trusted with pickles can run code anyway
        self.pairs = None if allow_pickle else self._map

    def ext(self, depth: int, code: int, data: bytes) -> Any:
        """The ``ext_hook`` of ``depth``: one extension value, its payload decoded below."""
        packed = S.PACKED_IN.get(code)  # (the commonest first: tuples, sets)
        if packed is not None:
            depth += 1
            if self.unpackers is None:
                self.unpackers = [None] * (MAX_NESTING + 2)
                self.fed = [0] * (MAX_NESTING + 2)
            unpacker = self.unpackers[depth]
            if unpacker is None:
                unpacker = self._unpacker(depth)
            unpacker.feed(data)
            value = unpacker.unpack()  # (truncated bytes raise OutOfData: the decode fails)
            self.fed[depth] += len(data)
            if unpacker.tell() != self.fed[depth]:
                raise UndecodableValue(f"extra bytes after a value in a {len(data)}-byte "
                                       "extension payload")
            if code == S.EXT_TUPLE:  # (the commonest: sized without a call, as it is slow)
                self.left -= 40 + 8 * len(value)
                value = tuple(value)
            else:
                value = packed(value)
                self.left -= getsizeof(value)
        else:
            raw = S.RAW_IN.get(code)
            if raw is None:
                return self._other(code, data)
            value = raw(data)
            self.left -= 112 + len(data)  # (an int, a Decimal, a UUID and its int: at most)
        self.exts += 1
        # Counted: objects built by extension types and maps (their own size, not their
        # items'). Not counted: msgpack's arrays, strings and numbers, which it builds in C
        # with no hook (an empty list is 1 byte encoded, 64 decoded).
        if self.left < 0:
            self._too_big()
        return value

    def _unpacker(self, depth: int) -> msgpack.Unpacker:
        if depth > MAX_NESTING:
            raise UndecodableValue(f"extension values nested more than {MAX_NESTING} deep")
        unpacker = self.unpackers[depth] = msgpack.Unpacker(
            ext_hook=partial(self.ext, depth), object_pairs_hook=self.pairs, raw=False,
            strict_map_key=False, max_buffer_size=_MAX_BUFFER, read_size=_READ_SIZE)
        return unpacker

    def _map(self, pairs: list) -> dict:
        if len(pairs) > S.MAX_HASH_REPEATS:
            S.check_hashes([pair[0] for pair in pairs], "map")
        self.left -= 64 + 40 * len(pairs)  # (a dict's size, near enough: getsizeof is slow)
        if self.left < 0:
            self._too_big()
        return dict(pairs)

    def _too_big(self) -> None:
        raise UndecodableValue(
                f"{self.size} bytes of encoded records decode to more than "
                f"{MAX_EXPANSION} bytes of sets, tuples, deques, dicts... per byte; refused "
                "(forged bytes, or a result of nothing but empty containers)")

    def _other(self, code: int, data: bytes) -> Any:
        if code == EXT_PICKLE:
            if not self.allow_pickle:
                raise PickledValueRefused(
                    f"a value was pickled ({pickled_name(data)}, {len(data)} bytes) and this "
                    f"decoder never unpickles; if the job's results need pickling, {OPT_IN}")
            import cloudpickle

            return cloudpickle.loads(data)
        raise UndecodableValue(f"unknown extension type {code} ({len(data)} bytes): written "
                               "by a newer pymapreduce, or not by pymapreduce at all")


# One callback per depth, as msgpack passes its callbacks no state of ours; partial
# objects, not lambdas, so a nested value costs no extra Python frame.
_DEFAULTS = [[partial(_encode_ext, allow, depth)
              for depth in range(MAX_NESTING + 1)] for allow in (False, True)]
_MAX_BUFFER = 2**31 - 1  # a nested payload is part of the bytes given: no limit of its own
_READ_SIZE = 64 * 1024  # an Unpacker's first buffer; it grows for a larger payload


def _pack(obj: Any, allow_pickle: bool, depth: int) -> bytes:
    return msgpack.packb(obj, default=_DEFAULTS[allow_pickle][depth], strict_types=True,
                         use_bin_type=True)


def _unpack(data: Any, allow_pickle: bool) -> tuple[Any, _Decoding]:
    decoding = _Decoding(allow_pickle, len(data))
    value = msgpack.unpackb(data, ext_hook=partial(decoding.ext, 0), raw=False,
                            object_pairs_hook=decoding.pairs, strict_map_key=False,
                            use_list=True)
    return value, decoding


def pickled_name(data: bytes, max_ops: int = 200) -> str:
    """What a pickle would build, read off its opcodes without running it: the first
    global it names (``module.Class``), or ``"unknown type"``."""
    import pickletools  # (only when a pickle is refused: not worth every start-up)

    strings: list = []
    try:
        for n, (op, arg, _) in enumerate(pickletools.genops(bytes(data))):
            if n >= max_ops:
                break
            if op.name == "GLOBAL":
                return repr(str(arg).replace(" ", ".", 1)[:200])
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                return repr(f"{strings[-2]}.{strings[-1]}"[:200])
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated or garbled pickle: say nothing more about it
        pass
    return "unknown type"


def _packer(allow: bool) -> msgpack.Packer:
    return msgpack.Packer(default=_DEFAULTS[allow][0], strict_types=True, use_bin_type=True)


PACKER_KEEP = 1 << 20  # bytes: a packer that encoded more is let go (its buffer grew so)


class _Packers(threading.local):
    """Each thread's two msgpack packers (pickles refused, allowed), kept: ``packb`` makes
    a Packer per call, most of what encoding a small value costs (a task's one pair: 0.98
    us with ``packb``, 0.57 with this). A packer is taken while it packs, so a value's
    encoding that calls :func:`pack` again (a ``__reduce__`` that does) gets its own. A
    packer's buffer grows to its largest encoding and never shrinks: one that encoded
    more than PACKER_KEEP bytes, or failed, is replaced by a new one."""

    def __init__(self) -> None:
        self.idle: list = [_packer(False), _packer(True)]


_packers = _Packers()


def pack(obj: Any, *, allow_pickle: bool = True) -> bytes:
    """Encode any Python value (types preserved exactly).

    ``allow_pickle=False``: a value that would need pickling raises
    :class:`~pymapreduce.errors.ValueNeedsPickle` (naming its type) instead.
    """
    allow = allow_pickle is not False
    idle = _packers.idle
    packer = idle[allow]
    if packer is None:  # (packing on this thread already: the value's own encoding)
        return _pack(obj, allow, 0)
    spent = True
    try:
        idle[allow] = None
        out = packer.pack(obj)
        spent = len(out) > PACKER_KEEP
        return out
    finally:
        idle[allow] = _packer(allow) if spent else packer


def unpack(data: Any, *, allow_pickle: bool = False) -> Any:
    """Decode what :func:`pack` made.

    By default this never runs code: a pickled value raises
    :class:`~pymapreduce.errors.PickledValueRefused` (before anything is unpickled), and
    bytes that are not a valid encoding raise :class:`~pymapreduce.errors.UndecodableValue`,
    as do values built to cost the decoder far more than their size: nesting deeper than
    ``MAX_NESTING``, a set or map whose items' hashes repeat (``safe_types.check_hashes``),
    more than ``MAX_EXPANSION`` bytes of extension objects per byte, or numbers past the
    bounds of ``safe_types``. ``allow_pickle=True`` unpickles: only for bytes from a peer
    trusted to run code here.
    """
    return _checked(data, allow_pickle is True)[0]


def _checked(data: Any, allow_pickle: bool) -> tuple[Any, _Decoding]:
    try:
        return _unpack(data, allow_pickle)
    except UndecodableValue:
        raise
    except RecursionError as exc:  # (Python's own limit, in a thread deep in user code)
        raise UndecodableValue(f"cannot decode {len(data)} bytes of encoded records: "
                               f"too deep for this thread's recursion limit: {exc}") from None
    except Exception as exc:  # msgpack and the constructors raise many unrelated types
        raise UndecodableValue(f"cannot decode {len(data)} bytes of encoded records: "
                               f"{type(exc).__name__}: {exc}") from exc


class KeyHashes:
    """The hashes of the keys of every partition checked so far, for a caller that puts
    them all in one dict: keys forged to share a hash would make building it quadratic,
    however few of them each partition holds."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.repeats = 0

    def check(self, keys: list) -> None:
        """Add ``keys``; raise UndecodableValue once more than ``MAX_HASH_REPEATS`` keys
        in all repeat a hash seen before."""
        before = len(self.seen)
        self.seen.update(map(hash, keys))
        self.repeats += len(keys) - (len(self.seen) - before)
        if self.repeats > S.MAX_HASH_REPEATS:
            raise UndecodableValue(
                f"{self.repeats} keys repeat the hash of another key (at most "
                f"{S.MAX_HASH_REPEATS} may): values forged to make a dict of them take "
                "quadratic time; refused")


def unpack_columns(data: Any, *, allow_pickle: bool = False,
                   keys: KeyHashes | None = None, pairs: bool = False) -> Any:
    """:func:`unpack` for an output partition (columns ``[keys, values]``): also checks
    that the keys' hashes do not repeat, in this partition or (given ``keys``) in any
    partition checked before, unless the keys can only be msgpack's own str, bytes and
    numbers (whose hashes cannot be made to repeat more than a few times), or the
    decoder unpickles (a peer trusted with pickles can run code anyway). ``pairs``: the
    partition is a list of pairs (a map-only job's, an emitting reduce's), where one key
    may come many times (a join's) and no dict is made of them: its keys are not checked."""
    value, decoding = _checked(data, allow_pickle is True)
    if (decoding.exts and not allow_pickle and not pairs and type(value) is list
            and len(value) in (2, 3)
            and type(value[0]) is list):  # (3: a part file's commit record follows)
        try:
            (keys if keys is not None else KeyHashes()).check(value[0])
        except TypeError as exc:  # an unhashable key: no dict can hold it
            raise UndecodableValue(f"a key cannot be hashed: {exc}") from None
    return value


def unpack_safe(data: Any) -> Any:
    """Decode without ever running code (``unpack(data, allow_pickle=False)``)."""
    return unpack(data, allow_pickle=False)


class paused_gc:  # noqa: N801 (used as a function: ``with paused_gc():``)
    """Pause the cyclic garbage collector around allocation-heavy work.

    Building millions of small lists (map output groups, decoded partitions) makes the
    collector run over and over, for nothing: none of it is garbage yet. Measured on word
    count, unpacking a partition took 5x longer with the collector running. Cycles made in
    the meantime are collected once it runs again. (A class, not a generator context
    manager: it is entered around every task and every decoded partition, and a
    generator's set-up cost a microsecond of a no-op task.)
    """

    __slots__ = ("was_enabled",)

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            gc.enable()
