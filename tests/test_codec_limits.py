"""Results built to cost a client more than their size are refused with a typed error.

A worker key can forge any reduce output; the client's safe decoder already refuses
pickles, and here it also refuses values whose decoding would crash it (nesting that
overflows a small thread stack), take quadratic time (items forged to share one hash),
take minutes later (a Decimal of exponent 1E+100000000) or blow up in memory (a partition
of nothing but empty deques). Each case is small, so a test without the limit does not
hang: it fails because nothing was refused. The last test forges partitions through a real
broker, with a rogue worker holding a real worker key.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from fractions import Fraction

import msgpack
import pytest
import zmq

from pymapreduce import Client, Job, UndecodableValue, ValueNeedsPickle
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import safe_types as S
from pymapreduce.patterns import security
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.records import (
    MAX_NESTING,
    KeyHashes,
    pack,
    unpack,
    unpack_columns,
    unpack_safe,
)

from .conftest import ROOT
from .jobs import WordCount
from .test_result_codec import next_tasks, rogue_worker

E = msgpack.ExtType
M = (1 << 61) - 1  # ints that are multiples of it all hash to 0


def colliding_ints(n: int) -> list[int]:
    """``n`` distinct big ints with one hash (what a forger would send)."""
    return [(k + 1) * M * (1 << 64) for k in range(n)]


def test_nested_values_decode_in_a_thread_with_a_small_stack():
    """msgpack.unpackb keeps 35 KiB of parse stack per nesting level on the C stack: a
    256 KiB thread died (SIGSEGV) at 6 levels. Run in a child, so a crash fails the test."""
    child = textwrap.dedent(f"""
        import threading, msgpack
        from pymapreduce.patterns.records import pack, unpack_safe
        from pymapreduce.errors import UndecodableValue
        def nest(depth, leaf=1):
            v = leaf
            for _ in range(depth):
                v = msgpack.ExtType(2, msgpack.packb([v]))
            return msgpack.packb([["k"], [v]])
        out = []
        def run():
            deep = nest({MAX_NESTING})
            v = unpack_safe(deep)[1][0]
            for _ in range({MAX_NESTING}):
                assert type(v) is tuple
                v = v[0]
            out.append(v == 1 and unpack_safe(pack(unpack_safe(deep))) == unpack_safe(deep))
            for depth in ({MAX_NESTING} + 1, 100_000):
                try:
                    unpack_safe(nest(depth))
                except UndecodableValue as exc:
                    out.append("nested more than" in str(exc))
        threading.stack_size(256 * 1024)
        t = threading.Thread(target=run)
        t.start()
        t.join()
        print(out)
    """)
    r = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"the decoding child died ({r.returncode}): {r.stderr[-800:]}"
    assert r.stdout.strip() == "[True, True, True]", r.stderr[-800:]


def ext_set(code: int, items: list) -> bytes:
    return msgpack.packb(E(code, pack(items)))


@pytest.mark.parametrize("what,blob", [
    ("set", ext_set(S.EXT_SET, colliding_ints(2000))),
    ("frozenset", ext_set(S.EXT_FROZENSET, colliding_ints(2000))),
    ("Counter", msgpack.packb(E(S.EXT_COUNTER, pack([colliding_ints(2000), [1] * 2000])))),
    ("OrderedDict", msgpack.packb(E(S.EXT_ORDEREDDICT,
                                    pack([colliding_ints(2000), [1] * 2000])))),
    ("defaultdict", msgpack.packb(E(S.EXT_DEFAULTDICT,
                                    pack(["int", colliding_ints(2000), [1] * 2000])))),
    ("map", pack({k: 1 for k in colliding_ints(2000)})),  # a plain dict: a msgpack map
    ("set", ext_set(S.EXT_SET, [Fraction(k, 1) for k in colliding_ints(2000)])),
    ("set", ext_set(S.EXT_SET, [Decimal(k) for k in colliding_ints(2000)])),
    ("set", ext_set(S.EXT_SET, [(k,) for k in colliding_ints(2000)])),
    ("set", ext_set(S.EXT_SET, [complex(1000003.0 * k, -k) for k in range(2000)])),
])
def test_items_forged_to_share_a_hash_are_refused(what, blob):
    """60,000 such big ints (720 KB) took 15 s to become a set; 1 GiB would take days."""
    with pytest.raises(UndecodableValue, match=f"a {what} of 2000 items .* repeat the hash"):
        unpack_safe(blob)


def test_honest_containers_with_a_few_shared_hashes_still_decode():
    honest = [set(range(-40, 1000)) | set(colliding_ints(S.MAX_HASH_REPEATS - 2)),  # 0, -1
              collections.Counter({(i, str(i)): i for i in range(5000)}),
              {Fraction(i, 7): Decimal(i) / 3 for i in range(5000)},
              frozenset(colliding_ints(S.MAX_HASH_REPEATS + 1))]
    for value in honest:
        assert unpack_safe(pack(value)) == value


def test_partition_keys_with_one_hash_are_refused_within_and_across_partitions():
    keys = colliding_ints(200)
    with pytest.raises(UndecodableValue, match="199 keys repeat"):
        unpack_columns(pack([keys, [1] * 200]))  # one partition
    parts = [pack([keys[i:i + 20], [1] * 20]) for i in range(0, 200, 20)]
    assert all(unpack_columns(p) for p in parts)  # 19 repeats each: fine alone
    seen = KeyHashes()  # what Handle.result() passes, as it makes one dict of them all
    with pytest.raises(UndecodableValue, match="keys repeat the hash"):
        for p in parts:
            unpack_columns(p, keys=seen)
    words = pack([[f"w{i}" for i in range(1000)], list(range(1000))])
    assert unpack_columns(words, keys=KeyHashes())[0][999] == "w999"


def test_numbers_that_cost_minutes_later_are_refused_and_never_sent_unpickled():
    for text in ("1E+100000000", "-1E-100000000", "9" * 20_000):
        blob = msgpack.packb(E(S.EXT_DECIMAL, text.encode()))
        start = time.process_time()
        with pytest.raises(UndecodableValue, match="Decimal of"):
            unpack_safe(blob)
        assert time.process_time() - start < 5  # (a bound on the test, not a benchmark)
    huge = msgpack.packb(E(S.EXT_BIGINT, b"\x01" * (S.MAX_BIGINT_BYTES + 1)))
    with pytest.raises(UndecodableValue, match="an int of"):
        unpack_safe(huge)
    fraction = msgpack.packb(E(S.EXT_FRACTION, msgpack.packb([1, E(S.EXT_BIGINT, huge)])))
    with pytest.raises(UndecodableValue):
        unpack_safe(fraction)
    # a worker never sends one unpickled: the task fails saying why (or, between workers,
    # where pickles are allowed, it travels pickled)
    for value in (Decimal("1E+100000"), 1 << (8 * S.MAX_BIGINT_BYTES + 8),
                  Fraction(1, 3 << (8 * S.MAX_BIGINT_BYTES))):
        with pytest.raises(ValueNeedsPickle, match="past"):
            pack([value], allow_pickle=False)
        assert unpack(pack([value]), allow_pickle=True) == [value]


def test_a_partition_that_decodes_to_far_more_than_its_size_is_refused():
    """1M empty deques (6 MB) took a client to 817 MiB of memory."""
    deques = msgpack.packb([["k"], [E(S.EXT_DEQUE, msgpack.packb([None, []]))] * 200_000])
    with pytest.raises(UndecodableValue, match="per byte"):
        unpack_safe(deques)
    assert len(unpack(deques, allow_pickle=True)[1]) == 200_000  # workers: peers they trust
    fine = [[f"word{i}" for i in range(50_000)], [{i, i + 1} for i in range(50_000)]]
    assert unpack_safe(pack(fine)) == fine  # a set per key: well under the bound
    counts = [[i for i in range(20_000)], [collections.Counter(a=i, b=2) for i in range(20_000)]]
    assert unpack_safe(pack(counts)) == counts


def test_a_rogue_worker_cannot_slow_down_result_with_keys_across_partitions(daemons, tmp_path):
    """Each of 4 forged partitions holds 20 keys with one hash, under the per-partition
    limit; result(), which makes one dict of them all, refuses them together."""
    keys = security.cluster_keys(str(tmp_path / "keys"))
    _, address = daemons.broker("--keys", keys)
    ctx = zmq.Context()
    forged = colliding_ints(80)
    try:
        rogue = rogue_worker(ctx, address, keys)
        with Client(address, keys=keys) as client:
            deadline = time.monotonic() + 30
            while client.info()["workers"] < 1:
                assert time.monotonic() < deadline, "the rogue worker never registered"
                time.sleep(0.05)
            handle = client.submit(WordCount(), [(0, "a b a")], map_tasks=1, reducers=4)
            reduces = 0
            while reduces < 4:
                msg = next_tasks(rogue, deadline)
                job, results, blobs = msg.body["job"], [], []
                for kind, index, attempt, _desc, *_ in msg.body["tasks"]:
                    if kind == "map":  # an honest-looking output: one partition per reducer
                        outputs = [pack([["a"], [[1]]])] * 4
                    else:
                        outputs = [pack([forged[20 * index:20 * index + 20], [1] * 20])]
                        reduces += 1
                    blobs += outputs
                    results.append([job, kind, index, attempt, {"records": 1}, len(outputs)])
                rogue.send_multipart(Message(P.DONE, {"results": results}, tuple(blobs)).encode())
            with pytest.raises(UndecodableValue, match=f"job {handle.job_id}.*repeat the hash"):
                handle.result(30)
            assert sorted(k for k, _ in handle.results()) == sorted(forged)  # one at a time
    finally:
        ctx.destroy(0)


class EmitJoin(Job):
    """A reduce-side join: each user's name paired with each of its orders, many pairs a
    key, their values tuples (extension types, so the key check applied)."""

    def map(self, key, value):
        yield value[0], value[1:]

    def reduce(self, user, tagged):
        names = [v for tag, v in tagged if tag == "user"]
        for name in names:
            for tag, amount in tagged:
                if tag == "order":
                    yield user, (name, amount)


class MapOnlyTagged(Job):
    def map(self, key, value):
        yield value[0], (key, value[1])


class SortTagged(Job):
    total_order = True

    def map(self, key, value):
        yield value[0], (key, value[1])


def test_outputs_whose_keys_repeat_by_design_decode(cluster):
    """An emitting reduce (the join of docs/newuser.md) yielding more than 32 pairs for
    one key, with tuple values, failed result() and results() with "keys repeat the hash
    of another key ... values forged": equal keys were counted as forged ones. A list of
    pairs makes no dict, so its keys are not checked; a map-only job's and a sort's too."""
    records = [(i, ("u1", "user", "ann")) for i in range(2)]
    records += [(i, ("u1", "order", float(i))) for i in range(2, 102)]
    records += [(i, ("u2", "order", 1.0)) for i in range(102, 110)]
    expected = sorted(("u1", (name, float(i))) for name in ("ann", "ann")
                      for i in range(2, 102))
    with Client(cluster) as client:
        handle = client.submit(EmitJoin(), records, map_tasks=3, reducers=2)
        assert sorted(handle.result(30)) == expected
        assert sorted(client.submit(EmitJoin(), records, reducers=2).results()) == expected
        pairs = [(i, (k, v)) for i, (k, v) in enumerate([("a", 1)] * 100)]
        out = client.submit(MapOnlyTagged(), pairs, reducers=0).result(30)
        assert sorted(out) == sorted(("a", (i, 1)) for i in range(100))
        out = client.submit(SortTagged(), pairs, reducers=2).result(30)
        assert out == [("a", (i, 1)) for i in range(100)]
        # a reduce job's dict still refuses keys forged to share a hash (above)


def _kept_after_packing(size: int, allow_pickle: bool) -> int:
    """Bytes still allocated after ``pack`` of a value of ``size`` bytes was let go, on a
    thread of its own (pack keeps a packer per thread)."""
    import threading
    import tracemalloc

    from pymapreduce.patterns.records import pack

    out: dict = {}

    def run() -> None:
        pack([0])
        pack([0], allow_pickle=False)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            blob = pack([b"x" * size], allow_pickle=allow_pickle)
            assert len(blob) > size
            del blob
            out["kept"] = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive()
    return out["kept"]


@pytest.mark.parametrize("allow_pickle", [True, False])
def test_pack_keeps_no_large_buffer_for_the_life_of_its_thread(allow_pickle):
    """(Found by a red team: a kept packer's buffer had grown to twice the largest value
    it encoded, 128 MiB after one of 64, and stayed so.)"""
    assert _kept_after_packing(64 << 20, allow_pickle) < (4 << 20)


def test_a_packer_that_failed_midway_is_not_used_again():
    from pymapreduce.errors import ValueNeedsPickle
    from pymapreduce.patterns.records import pack, unpack

    with pytest.raises(ValueNeedsPickle):
        pack([1, "x" * 1000, object()], allow_pickle=False)
    assert unpack(pack([1, 2], allow_pickle=False)) == [1, 2]
