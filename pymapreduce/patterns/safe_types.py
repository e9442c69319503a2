"""Extension types that carry common stdlib values without pickle, so decoding runs no code.

Each type msgpack lacks (a tuple, a set, an int beyond 64 bits, a datetime, a Decimal...)
gets an extension code and a payload that is either raw bytes or a msgpack value built of
plain types and other extension types, so nesting works (a tuple of sets of big ints comes
back exactly, types and all). Decoding builds the value by calling the type's own
constructor on checked plain data: nothing in the payload names a function or a class.

Codes are part of the wire format: never renumber one, only add. Code 1 is cloudpickle
(``records.EXT_PICKLE``), the fallback for everything not listed here.
"""

from __future__ import annotations

import collections
import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..errors import UndecodableValue

EXT_TUPLE = 2
EXT_SET = 3
EXT_FROZENSET = 4
EXT_BIGINT = 5
# 6: unused (msgpack itself carries a bytearray, as bin: it comes back as bytes)
EXT_COMPLEX = 7
EXT_DECIMAL = 8
EXT_FRACTION = 9
EXT_DATE = 10
EXT_TIME = 11
EXT_DATETIME = 12
EXT_TIMEDELTA = 13
EXT_UUID = 14
EXT_ORDEREDDICT = 15
EXT_COUNTER = 16
EXT_DEFAULTDICT = 17
EXT_DEQUE = 18


# Bounds on what one value may cost whoever decodes it, checked on both sides: the encoder
# pickles a value past them (so results holding one need the job's opt-in, and say why)
# and the safe decoder refuses one, with UndecodableValue.
#
# A set, frozenset or map of items forged to share one hash takes quadratic time to build
# (60,000 big ints, 720 KB, took 15 s): past this many items whose hash repeats another's,
# it is refused. Honest data has next to none (str and bytes hashes are salted per process;
# -1 and -2 share a hash, as do ints 2**61-1 apart).
MAX_HASH_REPEATS = 32
# int(Decimal("1E+999999")), 14 bytes, takes 23 s (and its time grows with the square of
# the exponent); past this, a Decimal is refused (|adjusted exponent|, digits)
MAX_DECIMAL_EXPONENT = 10_000
MAX_DECIMAL_CHARS = 10_000
# an int past 64 bits (and so a Fraction's parts): 64 KiB is 157,826 decimal digits
MAX_BIGINT_BYTES = 64 * 1024


def check_hashes(items: list, what: str) -> list:
    """``items``, if building a set or dict of them takes linear time: raise
    UndecodableValue when more than ``MAX_HASH_REPEATS`` of them repeat a hash."""
    if len(items) > MAX_HASH_REPEATS:  # (fewer cannot repeat too often: nothing to hash)
        repeats = len(items) - len(set(map(hash, items)))
        if repeats > MAX_HASH_REPEATS:
            raise UndecodableValue(
                f"a {what} of {len(items)} items of which {repeats} repeat the hash of "
                f"another (at most {MAX_HASH_REPEATS} may): forged to make building it "
                "take quadratic time; refused")
    return items


class NotSafe(Exception):
    """This value has a listed type but a part no safe payload can carry (a datetime whose
    tzinfo is neither ``datetime.timezone`` nor ``zoneinfo.ZoneInfo``, a defaultdict whose
    factory is not a builtin type): it is pickled whole instead."""


# defaultdict factories that can be named safely: builtin types, looked up by name on decode
FACTORIES: dict[str, type] = {t.__name__: t for t in (
    int, float, str, bytes, bool, list, dict, set, frozenset, tuple, complex)}


def _tz_out(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        # a timezone made without a name reports a generated one: send it only if given
        name = tz.tzname(None)
        if dt.timezone(offset).tzname(None) == name:
            name = None
        return ["offset", offset, name]
    key = getattr(tz, "key", None)
    if type(tz).__module__ == "zoneinfo" and type(tz).__name__ == "ZoneInfo" and key:
        return ["zone", key]
    raise NotSafe(type(tz).__name__)


def _tz_in(spec: Any) -> dt.tzinfo | None:
    if spec is None:
        return None
    if spec[0] == "offset" and type(spec[1]) is dt.timedelta:
        return dt.timezone(spec[1]) if spec[2] is None else dt.timezone(spec[1], _str(spec[2]))
    if spec[0] == "zone":
        import zoneinfo

        # ZoneInfo refuses keys that are absolute or climb out of the tz database
        return zoneinfo.ZoneInfo(_str(spec[1]))
    raise ValueError(f"unknown time zone form {spec[0]!r}")


def _str(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(f"expected a str, got {type(value).__name__}")
    return value


def _ints(values: Any, n: int) -> list:
    if type(values) is not list or len(values) != n or any(type(v) is not int for v in values):
        raise ValueError(f"expected {n} ints")
    return values


def _defaultdict_out(obj: collections.defaultdict) -> list:
    factory = obj.default_factory
    if factory is not None and FACTORIES.get(getattr(factory, "__name__", "")) is not factory:
        raise NotSafe(f"defaultdict({factory!r})")
    return [None if factory is None else factory.__name__, list(obj), list(obj.values())]


def _defaultdict_in(p: list) -> collections.defaultdict:
    factory = None if p[0] is None else FACTORIES[_str(p[0])]
    return collections.defaultdict(factory, _columns(p[1:], "defaultdict"))


def _date_in(p: Any) -> dt.date:
    return dt.date(*_ints(p, 3))


def _time_in(p: Any) -> dt.time:
    *fields, tz = p
    h, m, s, us, fold = _ints(fields, 5)
    return dt.time(h, m, s, us, tzinfo=_tz_in(tz), fold=fold)


def _datetime_in(p: Any) -> dt.datetime:
    *fields, tz = p
    y, mo, d, h, mi, s, us, fold = _ints(fields, 8)
    return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)


def _fraction_in(p: Any) -> Fraction:
    num, den = _ints(p, 2)
    return Fraction(num, den)


def _complex_in(p: Any) -> complex:
    if type(p) is not list or len(p) != 2 or any(type(v) is not float for v in p):
        raise ValueError("expected two floats")
    return complex(p[0], p[1])


def _deque_in(p: Any) -> collections.deque:
    maxlen, items = p
    if maxlen is not None and type(maxlen) is not int:
        raise ValueError("deque maxlen must be an int")
    return collections.deque(items, maxlen)


def _columns(p: Any, what: str) -> zip:
    keys, values = p
    if type(keys) is not list or type(values) is not list or len(keys) != len(values):
        raise ValueError("expected two lists of equal length")
    return zip(check_hashes(keys, what), values)


def _set_in(p: Any) -> set:
    return set(check_hashes(p, "set"))


def _frozenset_in(p: Any) -> frozenset:
    return frozenset(check_hashes(p, "frozenset"))


def _bigint_out(obj: int) -> bytes:
    size = obj.bit_length() // 8 + 1
    if size > MAX_BIGINT_BYTES:
        raise NotSafe(f"an int of {size} bytes, past the safe decoder's {MAX_BIGINT_BYTES}")
    return obj.to_bytes(size, "big", signed=True)


def _bigint_in(b: bytes) -> int:
    if len(b) > MAX_BIGINT_BYTES:
        raise UndecodableValue(f"an int of {len(b)} bytes: past the safe types' "
                               f"{MAX_BIGINT_BYTES}; refused")
    return int.from_bytes(b, "big", signed=True)


def _decimal_bounds(d: Decimal, chars: int) -> str:
    """Why ``d`` is out of bounds, or ``""``."""
    if chars > MAX_DECIMAL_CHARS:
        return f"a Decimal of {chars} characters, past {MAX_DECIMAL_CHARS}"
    if d.is_finite() and abs(d.adjusted()) > MAX_DECIMAL_EXPONENT:
        return f"a Decimal of exponent {d.adjusted()}, past +-{MAX_DECIMAL_EXPONENT}"
    return ""


def _decimal_out(d: Decimal) -> bytes:
    text = str(d).encode("ascii")
    why = _decimal_bounds(d, len(text))
    if why:
        raise NotSafe(f"{why}: int() of it could take minutes")
    return text


def _decimal_in(b: bytes) -> Decimal:
    if len(b) > MAX_DECIMAL_CHARS:  # (before parsing it)
        raise UndecodableValue(f"a Decimal of {len(b)} characters: past the safe types' "
                               f"{MAX_DECIMAL_CHARS}; refused")
    d = Decimal(b.decode("ascii"))
    why = _decimal_bounds(d, len(b))
    if why:
        raise UndecodableValue(f"{why}; refused (int() of it could take minutes)")
    return d


# type -> (code, raw bytes payload) for payloads that are not msgpack
RAW_OUT: dict[type, tuple[int, Callable[[Any], bytes]]] = {
    int: (EXT_BIGINT, _bigint_out),  # only ints msgpack cannot carry get here
    Decimal: (EXT_DECIMAL, _decimal_out),
    uuid.UUID: (EXT_UUID, lambda u: u.bytes),
}
RAW_IN: dict[int, Callable[[bytes], Any]] = {
    EXT_BIGINT: _bigint_in,
    EXT_DECIMAL: _decimal_in,
    EXT_UUID: lambda b: uuid.UUID(bytes=bytes(b)),
}

# type -> (code, function making a msgpack-able payload); nested values are packed by the
# caller's packer, so they get these extension types too
PACKED_OUT: dict[type, tuple[int, Callable[[Any], Any]]] = {
    tuple: (EXT_TUPLE, list),
    set: (EXT_SET, list),
    frozenset: (EXT_FROZENSET, list),
    complex: (EXT_COMPLEX, lambda c: [c.real, c.imag]),
    Fraction: (EXT_FRACTION, lambda f: [f.numerator, f.denominator]),
    dt.date: (EXT_DATE, lambda d: [d.year, d.month, d.day]),
    dt.time: (EXT_TIME, lambda t: [t.hour, t.minute, t.second, t.microsecond, t.fold,
                                   _tz_out(t.tzinfo)]),
    dt.datetime: (EXT_DATETIME, lambda d: [d.year, d.month, d.day, d.hour, d.minute, d.second,
                                           d.microsecond, d.fold, _tz_out(d.tzinfo)]),
    dt.timedelta: (EXT_TIMEDELTA, lambda t: [t.days, t.seconds, t.microseconds]),
    collections.OrderedDict: (EXT_ORDEREDDICT, lambda d: [list(d), list(d.values())]),
    collections.Counter: (EXT_COUNTER, lambda d: [list(d), list(d.values())]),
    collections.defaultdict: (EXT_DEFAULTDICT, _defaultdict_out),
    collections.deque: (EXT_DEQUE, lambda d: [d.maxlen, list(d)]),
}
PACKED_IN: dict[int, Callable[[Any], Any]] = {
    EXT_TUPLE: tuple,
    EXT_SET: _set_in,
    EXT_FROZENSET: _frozenset_in,
    EXT_COMPLEX: _complex_in,
    EXT_FRACTION: _fraction_in,
    EXT_DATE: _date_in,
    EXT_TIME: _time_in,
    EXT_DATETIME: _datetime_in,
    EXT_TIMEDELTA: lambda p: dt.timedelta(*_ints(p, 3)),
    EXT_ORDEREDDICT: lambda p: collections.OrderedDict(_columns(p, "OrderedDict")),
    EXT_COUNTER: lambda p: collections.Counter(dict(_columns(p, "Counter"))),
    EXT_DEFAULTDICT: _defaultdict_in,
    EXT_DEQUE: _deque_in,
}
