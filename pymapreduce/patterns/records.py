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
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import msgpack

from ..errors import PickledValueRefused, UndecodableValue, UnencodableValue, ValueNeedsPickle
from . import safe_types as S

EXT_PICKLE = 1
EXT_TUPLE = S.EXT_TUPLE  # (kept importable under its old name)

OPT_IN = ("set pickle_results = True on the Job (for a handle on a job submitted elsewhere: "
          "Client.job(job_id, pickle_results=True)), and only if you trust every worker key: "
          "unpickling a result runs code the worker chose")


# Extension values nest (a tuple in a tuple...), and each level is a nested msgpack call
# that takes tens of KiB of C stack: about 200 levels overflowed the main thread's 8 MiB
# stack and killed the process. Bytes from a peer could nest that deep in a few hundred
# bytes, so both sides stop well before, with a typed error.
MAX_NESTING = 64


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
    except S.NotSafe:
        pass  # e.g. a datetime with a pytz zone: the whole value is pickled below
    if not allow_pickle:
        raise ValueNeedsPickle(
            f"a {_type_name(t)} value can only travel pickled (msgpack and the safe "
            f"extension types cannot carry it); to send it to the client anyway, {OPT_IN}")
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


def _decode_ext(allow_pickle: bool, depth: int, code: int, data: bytes) -> Any:
    packed = S.PACKED_IN.get(code)  # (the commonest first: tuples, sets)
    if packed is not None:
        if depth >= MAX_NESTING:
            raise UndecodableValue(f"extension values nested more than {MAX_NESTING} deep")
        return packed(msgpack.unpackb(data, ext_hook=_EXT_HOOKS[allow_pickle][depth + 1],
                                      raw=False, strict_map_key=False))
    raw = S.RAW_IN.get(code)
    if raw is not None:
        return raw(data)
    if code == EXT_PICKLE:
        if not allow_pickle:
            raise PickledValueRefused(
                f"a value was pickled ({pickled_name(data)}, {len(data)} bytes) and this "
                f"decoder never unpickles; if the job's results need pickling, {OPT_IN}")
        import cloudpickle

        return cloudpickle.loads(data)
    raise UndecodableValue(f"unknown extension type {code} ({len(data)} bytes): written by "
                           "a newer pymapreduce, or not by pymapreduce at all")


# One callback per (allow_pickle, depth), as msgpack passes its callbacks no state of ours;
# partial objects, not lambdas, so a nested value costs no extra Python frame.
_DEFAULTS = [[partial(_encode_ext, allow, depth)
              for depth in range(MAX_NESTING + 1)] for allow in (False, True)]
_EXT_HOOKS = [[partial(_decode_ext, allow, depth)
               for depth in range(MAX_NESTING + 1)] for allow in (False, True)]


def _pack(obj: Any, allow_pickle: bool, depth: int) -> bytes:
    return msgpack.packb(obj, default=_DEFAULTS[allow_pickle][depth], strict_types=True,
                         use_bin_type=True)


def _unpack(data: Any, allow_pickle: bool, depth: int) -> Any:
    return msgpack.unpackb(data, ext_hook=_EXT_HOOKS[allow_pickle][depth], raw=False,
                           strict_map_key=False, use_list=True)


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


def pack(obj: Any, *, allow_pickle: bool = True) -> bytes:
    """Encode any Python value (types preserved exactly).

    ``allow_pickle=False``: a value that would need pickling raises
    :class:`~pymapreduce.errors.ValueNeedsPickle` (naming its type) instead.
    """
    return _pack(obj, allow_pickle is not False, 0)


def unpack(data: Any, *, allow_pickle: bool = False) -> Any:
    """Decode what :func:`pack` made.

    By default this never runs code: a pickled value raises
    :class:`~pymapreduce.errors.PickledValueRefused` (before anything is unpickled), and
    bytes that are not a valid encoding raise :class:`~pymapreduce.errors.UndecodableValue`.
    ``allow_pickle=True`` unpickles: only for bytes from a peer trusted to run code here.
    """
    try:
        return _unpack(data, allow_pickle is True, 0)
    except UndecodableValue:
        raise
    except Exception as exc:  # msgpack and the constructors raise many unrelated types
        raise UndecodableValue(f"cannot decode {len(data)} bytes of encoded records: "
                               f"{type(exc).__name__}: {exc}") from exc


def unpack_safe(data: Any) -> Any:
    """Decode without ever running code (``unpack(data, allow_pickle=False)``)."""
    return unpack(data, allow_pickle=False)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector around allocation-heavy work.

    Building millions of small lists (map output groups, decoded partitions) makes the
    collector run over and over, for nothing: none of it is garbage yet. Measured on word
    count, unpacking a partition took 5x longer with the collector running. Cycles made in
    the meantime are collected once it runs again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
