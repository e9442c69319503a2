"""A submission's in-memory splits cut and packed in C (``speedups.pack_splits``, client/
submit.py): byte for byte what the Python loop packs, and anything else left to that loop,
which checks and refuses as before."""

from __future__ import annotations

import gc
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymapreduce import speedups
from pymapreduce.client import submit as submit_module
from pymapreduce.client.submit import build_submission
from pymapreduce.errors import InputError, UnencodableValue
from pymapreduce.inputs import chunk, normalize_records
from pymapreduce.job import Job
from pymapreduce.patterns.records import pack, unpack

built = pytest.mark.skipif(not speedups.built(), reason="the C extension is not built here "
                           "(no C compiler at install, or PYMAPREDUCE_PURE=1)")


class Echo(Job):
    def map(self, key, value):
        yield key, value


class Unencodable:
    def __reduce__(self):
        raise TypeError("no")


def python_splits(records, n):
    return [pack([[k, v] for k, v in piece]) for piece in chunk(normalize_records(records), n)]


plain = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.text(max_size=40), st.text(alphabet="ab", min_size=30, max_size=70000),
)


@built
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(plain, plain), min_size=1, max_size=60), st.integers(1, 80))
def test_the_c_splits_are_the_python_loop_s_bytes(records, n):
    n = min(n, len(records))
    got = speedups.pack_splits(records, n)
    assert got == python_splits(records, n)
    assert [unpack(b) for b in got] == [[list(r) for r in piece]
                                        for piece in chunk(records, n)]


@built
@pytest.mark.parametrize("odd", [
    [(1, 2), [3, 4]],  # a list, not a tuple
    [(1, 2), (3, 4, 5)],  # three items
    [(1, (2, 3))],  # a value that is a tuple (pack keeps its type)
    [(1, b"x")],  # bytes
    [(1 << 64, 1)],  # past 64 bits
    [(-(1 << 63) - 1, 1)],
    [("\ud800", 1)],  # a lone surrogate: packing's own error, on the Python path
    [(1, 2.5), (1, {"a": 1})],
])
def test_what_the_c_path_does_not_write_is_left_to_python(odd):
    assert speedups.pack_splits(odd, 1) is None


@built
def test_pack_splits_refuses_what_it_cannot_cut():
    with pytest.raises(TypeError):
        speedups.pack_splits(((1, 2),), 1)
    with pytest.raises(ValueError):
        speedups.pack_splits([(1, 2)], 2)
    with pytest.raises(ValueError):
        speedups.pack_splits([(1, 2)], 0)
    with pytest.raises(ValueError):
        speedups.pack_splits([], 1)


@built
def test_a_finalizer_run_while_the_result_is_made_does_not_reach_the_records():
    """The records are read before anything is allocated; a finalizer that empties the
    list while the output list is made finds nothing left to change."""
    records = [(i, str(i)) for i in range(2000)]

    class Emptier:
        def __del__(self):
            records.clear()

    for _ in range(50):
        cycle = Emptier()
        cycle.self = cycle
        del cycle
    # (no other thread runs meanwhile: one that allocates would start the collector first)
    switch, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1000)
    gc.set_threshold(1)
    try:
        got = speedups.pack_splits(records, 2000)
    finally:
        gc.set_threshold(*threshold)
        sys.setswitchinterval(switch)
        gc.collect()
    assert records == []  # (emptied during the call: before it, the call would refuse)
    assert got is not None and len(got) == 2000 and unpack(got[7]) == [[7, "7"]]


def _blobs(inputs, c_path, monkeypatch, **kw):
    from pymapreduce import speedups as module

    monkeypatch.setattr(module, "pack_splits", module.pack_splits if c_path else None)
    sub = build_submission(Echo(), inputs, slots=2, map_tasks=kw.pop("map_tasks", 7),
                           reducers=0, name="x", **kw)
    return list(sub.blobs[1:-1])  # (the code first, the splits' list last)


@built
@pytest.mark.parametrize("inputs", [
    [(i, f"w{i}") for i in range(50)],
    {f"k{i}": i * 0.5 for i in range(20)},
    [(1, 2)],
    [(1, 2), (3, (4,))],  # the C path gives up: the Python loop packs it all
])
def test_a_submission_s_splits_are_the_same_either_way(inputs, monkeypatch):
    assert _blobs(inputs, True, monkeypatch) == _blobs(inputs, False, monkeypatch)


def test_bad_inputs_are_refused_as_before(monkeypatch):
    for c_path in (True, False):
        with pytest.raises(InputError, match="input record 1 is 7, not a"):
            _blobs([(1, 2), 7], c_path, monkeypatch)
        with pytest.raises(UnencodableValue, match="an input record cannot be sent"):
            _blobs([(1, 2), ("\ud800", 1)], c_path, monkeypatch)  # (a lone surrogate)
        with pytest.raises(UnencodableValue, match="an input record cannot be sent"):
            _blobs([(1, 2), (3, Unencodable())], c_path, monkeypatch)
        assert _blobs([], c_path, monkeypatch) == [pack([])]  # (one empty split, as before)


def test_only_in_memory_inputs_reach_the_c_path():
    assert submit_module._packed_splits(iter([(1, 2)]), 1) is None
    assert submit_module._packed_splits([], 1) is None


def test_counts_that_are_not_whole_numbers_are_refused_by_name():
    """map_tasks and reducers: an int (or numpy's) of at least 1 and 0; a float, a str or
    a bool is a ConfigError naming it (a float reached the C packer's TypeError)."""
    from pymapreduce.errors import ConfigError

    for bad in (2.5, "7", True, 0, -3):
        with pytest.raises(ConfigError, match=f"map_tasks must be a whole number of at "
                                              f"least 1, got {bad!r}"):
            build_submission(Echo(), [(1, 2), (3, 4)], slots=2, map_tasks=bad, reducers=0,
                             name="x")
    for bad in ("x", 1.5, False, -1):
        with pytest.raises(ConfigError, match="reducers must be a whole number"):
            build_submission(Echo(), [(1, 2)], slots=2, map_tasks=None, reducers=bad,
                             name="x")

    class Odd(Echo):
        map_tasks = 2.5

    with pytest.raises(ConfigError, match="Odd.map_tasks must be a whole number"):
        build_submission(Odd(), [(1, 2), (3, 4)], slots=2, map_tasks=None, reducers=0,
                         name="x")
    with pytest.raises(TypeError, match=r"got the class Echo: pass Echo\(\)"):
        build_submission(Echo, [(1, 2)], slots=2, map_tasks=None, reducers=0, name="x")
