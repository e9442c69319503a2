"""Results reach clients through a decoder that cannot run code (issue 9, point 2b).

Three layers: the codec alone (safe types round-trip exactly, pickles are refused without
being loaded); jobs on real daemons (a result that needs pickling fails its task unless the
job opts in); and a secured broker where a rogue worker, holding a real worker key and
speaking the protocol by hand, answers a reduce task with a pickle bomb.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from fractions import Fraction

import msgpack
import pytest
import zmq
import zmq.auth

from pymapreduce import (
    Client,
    Job,
    JobFailed,
    PickledValueRefused,
    UndecodableValue,
    UnencodableValue,
    ValueNeedsPickle,
    run_sequential,
)
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import security
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.records import (
    EXT_PICKLE,
    MAX_NESTING,
    pack,
    pickled_name,
    unpack,
    unpack_safe,
)

from .conftest import ROOT
from .jobs import WordCount

UTC2 = dt.timezone(dt.timedelta(hours=2))


def zone(key):
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        return zoneinfo.ZoneInfo(key)
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database on this machine")


class Point:
    """A user class: only pickle can carry it."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


class OddZone(dt.tzinfo):
    """A tzinfo of a user's own: a datetime holding it must be pickled whole."""

    def utcoffset(self, when):
        return dt.timedelta(minutes=30)

    def __eq__(self, other):
        return type(other) is OddZone

    __hash__ = object.__hash__


def bomb(marker) -> bytes:
    """Pickle bytes whose loading creates ``marker`` (and so would run any code)."""

    class Bomb:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    return pickle.dumps(Bomb())


def same(a, b) -> bool:
    """Equal, with the same types all the way down (1 == 1.0 == True would not do)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a) and all(
            same(x, y) for x, y in zip(a, b))
    if isinstance(a, (list, tuple, collections.deque)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (set, frozenset)):
        return a == b and sorted(map(repr, a)) == sorted(map(repr, b))
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and repr(a) == repr(b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return a == b


SAFE_VALUES = [
    ("tuple", 1, (2.5, None)),
    {1, 2, 3},
    frozenset({"a", ("b", 1)}),
    2**64,
    -(2**63) - 1,
    10**400,
    complex(1.5, -2),
    Decimal("3.14159265358979323846264338327950288"),
    Decimal("-0"),
    Decimal("NaN"),
    Decimal("-Infinity"),
    Decimal("1E+10000"),  # as far as the bound goes (safe_types.MAX_DECIMAL_EXPONENT)
    Decimal("-7E-10000"),
    Fraction(2**70, 3),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 59, 999999),
    dt.time(1, 2, tzinfo=UTC2, fold=1),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30), "EST-ish")),
    dt.datetime(2024, 1, 2, tzinfo=UTC2, fold=1),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    collections.OrderedDict([("b", 1), ("a", (2,))]),
    collections.Counter({"x": 3, ("y", 1): 1}),
    collections.defaultdict(list, {"k": [1, 2]}),
    collections.defaultdict(None, {"k": 1}),
    collections.deque([1, (2, 3)], maxlen=5),
    # nesting: each extension's payload is packed with extension types of its own
    ({2**100, -(2**80)}, frozenset({2**65})),
    {("k", dt.date(2020, 1, 1)): [{Decimal("1.5")}, (b"x",)]},
    [collections.Counter({(1, 2): 2**70})],
]


@pytest.mark.parametrize("value", SAFE_VALUES, ids=lambda v: type(v).__name__)
def test_safe_types_round_trip_exactly_without_pickle(value):
    blob = pack(value, allow_pickle=False)  # would raise ValueNeedsPickle if pickled
    back = unpack_safe(blob)
    assert same(back, value), (back, value)
    assert pack(value) == blob  # the default encoder makes the same bytes


def test_defaultdict_keeps_its_factory():
    back = unpack(pack(collections.defaultdict(set, {"a": {1}})))
    assert back.default_factory is set
    back["new"].add(2)
    assert back["new"] == {2}


def test_zoneinfo_datetimes_round_trip():
    value = dt.datetime(2024, 7, 1, 12, tzinfo=zone("Europe/Paris"))
    back = unpack_safe(pack(value, allow_pickle=False))
    assert same(back, value) and back.tzinfo.key == "Europe/Paris"


def test_the_safe_decoder_refuses_a_pickle_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    evil = msgpack.packb([["k"], [msgpack.ExtType(EXT_PICKLE, bomb(marker))]])
    hidden = pack(({("x", 1)}, [msgpack.ExtType(EXT_PICKLE, bomb(marker))]))  # nested deep
    for blob in (evil, hidden):
        with pytest.raises(PickledValueRefused, match="pickle_results") as info:
            unpack_safe(blob)
        assert "exec" in str(info.value)  # it names what the pickle would have called
        assert not marker.exists()
    with pytest.raises(PickledValueRefused):
        unpack(evil)  # refusing is the default, not a mode to remember
    assert not marker.exists()
    unpack(evil, allow_pickle=True)  # the control: this payload does run when loaded
    assert marker.read_text() == "ran"


def test_user_classes_are_pickled_and_only_loaded_on_request():
    value = {"p": Point(1, 2), "t": (Point(3, 4),)}
    blob = pack(value)
    assert unpack(blob, allow_pickle=True) == value
    with pytest.raises(PickledValueRefused, match="Point"):
        unpack_safe(blob)
    with pytest.raises(ValueNeedsPickle, match=r"test_result_codec\.Point.*pickle_results"):
        pack([1, {"deep": (Point(5, 6),)}], allow_pickle=False)


def test_a_datetime_with_a_foreign_zone_is_pickled_whole():
    value = dt.datetime(2024, 1, 1, tzinfo=OddZone())
    with pytest.raises(ValueNeedsPickle, match="datetime"):
        pack(value, allow_pickle=False)
    assert unpack(pack(value), allow_pickle=True) == value
    custom = collections.defaultdict(lambda: 0, {"a": 1})
    with pytest.raises(ValueNeedsPickle, match="defaultdict"):
        pack(custom, allow_pickle=False)


@pytest.mark.parametrize("blob", [
    msgpack.packb(msgpack.ExtType(99, b"?")),  # an unknown extension
    msgpack.packb(msgpack.ExtType(12, msgpack.packb([2024, 13, 1, 0, 0, 0, 0, 0, None]))),
    msgpack.packb(msgpack.ExtType(17, msgpack.packb(["os.system", [], []]))),  # factory
    msgpack.packb(msgpack.ExtType(12, msgpack.packb([2024, 1, 1, 0, 0, 0, 0, 0,
                                                     ["zone", "/etc/passwd"]]))),
    msgpack.packb(msgpack.ExtType(3, b"\xc1")),  # not msgpack inside
    b"\x92\xa1",  # truncated
])
def test_malformed_encodings_raise_a_typed_error(blob):
    with pytest.raises(UndecodableValue):
        unpack_safe(blob)


def _nested_ext(depth: int, inner: bytes, code: int = 2) -> bytes:
    """``inner`` wrapped ``depth`` times in msgpack extension objects of type ``code``: the
    bytes ``msgpack.packb(ExtType(code, ...))`` makes level by level (each level's header
    depends on the size inside it, in msgpack's smallest form), made in linear time where
    packing each level copied all of it (quadratic: 10 s alone, 100 s on a busy host)."""
    headers = []
    size = len(inner)
    for _ in range(depth):
        if size in FIXEXT:
            header = bytes([FIXEXT[size], code])
        elif size < 1 << 8:
            header = bytes([0xC7, size, code])
        elif size < 1 << 16:
            header = b"\xc8" + size.to_bytes(2, "big") + bytes([code])
        else:
            header = b"\xc9" + size.to_bytes(4, "big") + bytes([code])
        headers.append(header)
        size += len(header)
    return b"".join(reversed(headers)) + inner


FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}  # msgpack's fixext forms by size


def test_nested_ext_is_what_packing_each_level_makes():
    blob = msgpack.packb([])
    for _ in range(20_000):  # (past each header form: fixext, ext8, ext16, ext32)
        blob = msgpack.packb(msgpack.ExtType(2, blob))
    assert _nested_ext(20_000, msgpack.packb([])) == blob and len(blob) > 1 << 16


def test_deep_nesting_is_refused_instead_of_crashing_the_process():
    """A few hundred bytes nesting tuples 200,000 deep overflowed the C stack (SIGSEGV)."""
    blob = _nested_ext(200_000, msgpack.packb([]))
    with pytest.raises(UndecodableValue, match="nested more than"):
        unpack_safe(blob)
    value = ()
    for _ in range(MAX_NESTING - 1):
        value = (value,)
    assert unpack_safe(pack(value)) == value  # as deep as allowed: fine both ways
    with pytest.raises(UnencodableValue, match="levels deep"):
        pack((value,))  # the worker fails the task instead of sending undecodable bytes


def test_pickled_name_reads_the_opcodes_only():
    assert "test_result_codec.Point" in pickled_name(pickle.dumps(Point(1, 2)))
    assert pickled_name(b"garbage") == "unknown type"


# -- jobs on real daemons ------------------------------------------------------------------

RECORDS = [(i, f"a{i % 3} b{i % 2}") for i in range(60)]


class PointSums(Job):
    """Reduce output of a user class: needs pickling."""

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return Point(word, sum(counts))


class PointSumsOptedIn(PointSums):
    pickle_results = True


class PointPairs(Job):
    """Map-only, user-class values."""

    def map(self, key, line):
        yield key, Point(key, len(line))


class RichValues(PointSums):
    """Reduce output of safe stdlib types only: needs no opt-in."""

    def reduce(self, word, counts):
        return (frozenset({word}), {2**70 + sum(counts)}, Decimal(sum(counts)) / 3,
                dt.date(2024, 1, 1) + dt.timedelta(days=sum(counts)))


class ToTuples(Job):
    def map(self, word, point):
        yield word, (point.x, point.y)


class PointsThenTuples(Job):
    """A user class between steps (worker to worker) and plain values at the end."""

    def steps(self):
        return [PointSums(), ToTuples()]


def test_a_result_that_needs_pickling_fails_its_task_unless_the_job_opts_in(cluster):
    with Client(cluster) as client:
        for job in (PointSums(), PointPairs()):
            with pytest.raises(JobFailed) as info:
                client.submit(job, RECORDS, reducers=2).result(60)
            text = str(info.value)
            assert "ValueNeedsPickle" in text and "test_result_codec.Point" in text
            assert "pickle_results" in text
        handle = client.submit(PointSumsOptedIn(), RECORDS, reducers=2)
        assert handle.result(60) == run_sequential(PointSums(), RECORDS)
        job_id = handle.job_id
    with Client(cluster) as other:  # another process's view: it must opt in itself
        with pytest.raises(PickledValueRefused, match="pickle_results"):
            other.job(job_id).result(60)
        assert other.job(job_id, pickle_results=True).result(60) == run_sequential(
            PointSums(), RECORDS)
    instance = PointSums()
    instance.pickle_results = True  # an instance attribute opts in too
    with Client(cluster) as client:
        assert client.submit(instance, RECORDS).result(60) == run_sequential(
            PointSums(), RECORDS)


def test_safe_types_and_pickled_intermediates_need_no_opt_in(cluster):
    with Client(cluster) as client:
        out = client.submit(RichValues(), RECORDS, reducers=2).result(60)
        expected = run_sequential(RichValues(), RECORDS)
        assert out == expected and all(same(out[k], expected[k]) for k in expected)
        out = client.submit(PointsThenTuples(), RECORDS).result(60)
        assert sorted(out) == sorted(run_sequential(PointsThenTuples(), RECORDS))
        assert all(type(v) is tuple for _, v in out)


# -- a rogue worker on a secured broker ------------------------------------------------------


def rogue_worker(ctx, address, keys):
    """A DEALER with the cluster's real worker key, driven by hand."""
    public, secret = zmq.auth.load_certificate(os.path.join(keys, "worker.key_secret"))
    server, _ = zmq.auth.load_certificate(os.path.join(keys, "broker.key"))
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
    sock.connect(address)
    sock.send_multipart(Message(P.READY, {"credit": 4, "name": "rogue", "pid": os.getpid(),
                                          "tags": []}).encode())
    return sock


def next_tasks(sock, deadline):
    """The next TASKS message (heartbeating while waiting, as a live worker would)."""
    while time.monotonic() < deadline:
        if sock.poll(200):
            msg = Message.decode(sock.recv_multipart())
            if msg.command == P.TASKS:  # (its code blob is never looked at, let alone loaded)
                return msg
        else:
            sock.send_multipart(Message(P.HEARTBEAT).encode())
    raise TimeoutError("the broker sent the rogue worker no tasks")


def test_a_rogue_worker_cannot_run_code_in_clients(daemons, tmp_path):
    keys = security.cluster_keys(str(tmp_path / "keys"))
    marker = tmp_path / "ran-in-a-client"
    _, address = daemons.broker("--keys", keys)
    ctx = zmq.Context()
    try:
        rogue = rogue_worker(ctx, address, keys)
        with Client(address, keys=keys) as client:
            deadline = time.monotonic() + 30
            while client.info()["workers"] < 1:
                assert time.monotonic() < deadline, "the rogue worker never registered"
                time.sleep(0.05)
            handle = client.submit(WordCount(), [(0, "a b a")], map_tasks=1, reducers=1)
            answered = set()
            while "reduce" not in answered:
                msg = next_tasks(rogue, deadline)
                job, results, blobs = msg.body["job"], [], []
                for kind, index, attempt, _desc, *_ in msg.body["tasks"]:
                    if kind == "map":  # an honest-looking map output: one partition
                        blobs.append(pack([["a"], [[1]]]))
                    else:  # the forged reduce output: a pickle that runs code when loaded
                        blobs.append(msgpack.packb(
                            [["a"], [msgpack.ExtType(EXT_PICKLE, bomb(marker))]]))
                    results.append([job, kind, index, attempt, {"records": 1}, 1])
                    answered.add(kind)
                rogue.send_multipart(Message(P.DONE, {"results": results}, tuple(blobs)).encode())
            with pytest.raises(PickledValueRefused, match="pickle_results"):
                handle.result(30)
            with pytest.raises(PickledValueRefused):
                list(handle.results())
            assert not marker.exists()
        # a second client that re-attaches by id gets the same refusal, not the bomb
        with Client(address, keys=keys) as again:
            with pytest.raises(PickledValueRefused, match=f"job {handle.job_id}"):
                again.job(handle.job_id).result(30)
        assert not marker.exists()
    finally:
        ctx.destroy(0)


class BigInts(Job):
    """Ints past Python's 4300-digit limit on int-to-text conversion, as values and keys."""

    def map(self, key, line):
        yield line, 7 ** (6000 + key)
        yield 3 ** 9000, key

    def reduce(self, key, values):
        return sum(values)


def _digits(n: int) -> str:
    """``str(n)`` of any size (the limit put back after)."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(n)
    finally:
        sys.set_int_max_str_digits(limit)


def test_ints_of_any_size_are_written_in_full_to_part_files_and_stdout(cluster, tmp_path):
    """JSON holds an int of any size, but ``json.dumps`` and ``int.__repr__`` refuse ones
    past Python's digits limit (a ValueError that failed the reduce tasks four times, and
    `pymapreduce run` printing them): part files and printed pairs have every digit."""
    limit = sys.get_int_max_str_digits()
    expected = {"a": 7 ** 6001, "b": 7 ** 6002, 3 ** 9000: 3}
    with Client(cluster) as client:
        handle = client.submit(BigInts(), [(1, "a"), (2, "b")], reducers=2,
                               output_dir=str(tmp_path / "out"))
        assert handle.result(60) == expected
    lines = [line for part in sorted((tmp_path / "out").glob("part-*"))
             for line in part.read_text().splitlines()]
    assert sorted(lines) == sorted(f"[{json.dumps(k) if isinstance(k, str) else _digits(k)}, "
                                   f"{_digits(v)}]" for k, v in expected.items())
    job = tmp_path / "bigjob.py"
    job.write_text("from pymapreduce import Job\n\n\nclass Big(Job):\n"
                   "    def map(self, key, line):\n        yield line, 7 ** 6000\n")
    (tmp_path / "in.txt").write_text("x\n")
    done = subprocess.run([sys.executable, "-m", "pymapreduce", "run", f"{job}:Big",
                           str(tmp_path / "in.txt"), "--connect", cluster],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f'["x", {_digits(7 ** 6000)}]\n'
    assert sys.get_int_max_str_digits() == limit  # (the limit is put back)


def test_big_ints_written_by_two_threads_at_once_keep_the_digits_limit_after():
    """Python's digits limit is the interpreter's, not a thread's: two clients writing
    outputs side by side lift it at once. The one that ends first must not put the limit
    back under the other (whose big int then failed with ValueError), and the last one
    must put back the limit found before, not the lifted one (which left every later
    int(str) of the process unbounded)."""
    import threading

    from pymapreduce.client.output import encode_lines, whole_ints

    limit = sys.get_int_max_str_digits()
    assert limit != 0
    big = 7 ** 6000
    entered, first_out, errors = threading.Event(), threading.Event(), []

    def second() -> None:
        try:
            with whole_ints():
                entered.set()
                assert first_out.wait(30)
                encode_lines(["k"], [big])  # (the first block has ended meanwhile)
                str(big)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=second)
    try:
        with whole_ints():
            thread.start()
            assert entered.wait(30)
        first_out.set()
        thread.join(30)
        assert not thread.is_alive()
        assert errors == []
        assert sys.get_int_max_str_digits() == limit
        with pytest.raises(ValueError):
            str(big)  # (the limit holds again)
    finally:
        first_out.set()
        sys.set_int_max_str_digits(limit)
