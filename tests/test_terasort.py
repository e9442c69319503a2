"""The sort path's speed work (benchmarks/bench_terasort.py): the part-file writer encodes
a column at a time and must write the very bytes ``json.dumps`` per pair wrote; a
total_order job without reduce sorts runs instead of grouping (pymapreduce/rangesort.py)
and must give what the general kernels give. Pure kernels first, then real daemons."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import math
import os
import random
import re

import pytest

from pymapreduce import BadOutput, Client, Job, read_text, run_sequential
from pymapreduce.client import output
from pymapreduce.client.output import encode_lines, write_output
from pymapreduce.kernels import (
    RecordFailed,
    finish_map,
    map_grouped,
    merge_segments,
    reduce_groups,
)
from pymapreduce.patterns.records import pack, unpack
from pymapreduce.rangesort import map_runs, merge_runs, pack_runs, plain_sort
from pymapreduce.sampling import cut_boundaries, sample_keys


def reference(keys, values) -> str:
    """What the writer wrote before: one json.dumps per pair."""
    return "".join(json.dumps([k, v], ensure_ascii=False, default=repr) + "\n"
                   for k, v in zip(keys, values))


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Thing:
    def __repr__(self) -> str:
        return 'Thing("x")'


STRS = ["", "plain", 'quote " and \\ back', "tab\there\nnewline\r\x00\x1f\x7f",
        "été, 日本語, emoji \U0001F600", "\u2028\u2029", "</script>", " "]
INTS = [0, -1, 7, 2**63, -(2**80), 10**30]
FLOATS = [0.0, -0.0, 1.5, 1e300, 5e-324, 1 / 3, math.nan, math.inf, -math.inf]
OTHERS = [True, False, None, (1, "a"), [1, [2, 3]], {"k": 1, "2": [None]}, {1: "int key"},
          {3, 1}, frozenset(), Color.RED, Name("sub"), Thing(), b"bytes",
          decimal.Decimal("1.10"), datetime.date(2026, 11, 30), 3 + 4j, (), []]


@pytest.mark.parametrize("keys, values", [
    (STRS, STRS[::-1]),
    (INTS, INTS[::-1]),
    (FLOATS, FLOATS[::-1]),
    ([1.5, 2.5], [math.inf, 0.1]),  # a float column without and with a non-finite
    (OTHERS, OTHERS[::-1]),
    ([True, False], [None, None]),  # one fast type that is not str, int or float
    (STRS[:6], INTS),  # str keys, int values: word count
    (INTS + STRS, STRS + FLOATS[:6]),  # mixed columns of the fast types
    (STRS + OTHERS, OTHERS + STRS),  # mixed with everything else
    ([], []),
    (["a", "b"], [1]),  # columns of unequal lengths: as zip, the shorter decides
])
def test_lines_are_the_bytes_json_dumps_wrote_per_pair(keys, values):
    assert encode_lines(keys, values) == reference(keys, values)


def test_random_columns_match_json_dumps():
    rng = random.Random(10)
    pool = STRS + INTS + FLOATS + OTHERS
    for _ in range(200):
        n = rng.randrange(0, 30)
        kinds = rng.sample([STRS, INTS, FLOATS, pool], 2)
        keys = [rng.choice(kinds[0]) for _ in range(n)]
        values = [rng.choice(kinds[1]) for _ in range(n)]
        assert encode_lines(keys, values) == reference(keys, values)


def test_a_partition_larger_than_a_chunk_is_written_whole_and_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "CHUNK_RECORDS", 7)  # many chunks, a short last one
    parts = [([f"k{i:03d}" for i in range(50)], [[i, "v"] for i in range(50)]),
             ([], []),
             (["only"], [1])]
    written = write_output(tmp_path, iter(parts))
    assert [os.path.basename(p) for p in written] == ["part-00000", "part-00001",
                                                      "part-00002"]
    assert sorted(os.listdir(tmp_path)) == ["_SUCCESS", "part-00000", "part-00001",
                                            "part-00002"]
    for path, (keys, values) in zip(written, parts):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert text == reference(keys, values)
        assert [json.loads(line) for line in text.splitlines()] == [
            [k, v] for k, v in zip(keys, values)]


def test_a_value_json_cannot_write_fails_as_before(tmp_path):
    class Loop(list):
        pass

    loop = Loop()
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        write_output(tmp_path, [(["k"], [loop])])
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate cannot be UTF-8
        write_output(tmp_path / "b", [(["\ud800"], [1])])
    assert not os.path.exists(tmp_path / "_SUCCESS")


# -- the sort kernels ---------------------------------------------------------------------


class Sort(Job):
    """TeraSort's shape: identity map and no reduce, in one key order."""

    total_order = True

    def map(self, key, value):
        yield value[0], value[1]


class SortWithFinal(Sort):
    def map_final(self):
        yield "m", "from map_final"  # joins the task's output, after its records


class ListKeys(Sort):
    def map(self, key, value):
        yield [value[0][0], [value[0][1:]]], value[1]  # JSON-shaped: lists


def bounded(job: Job, keys: list, reducers: int) -> Job:
    job.__dict__["_pmr_bounds"] = cut_boundaries(type(job).__name__, list(keys), reducers)
    return job


def through_wire(blobs: list) -> list:
    return [unpack(b, allow_pickle=True) for b in blobs if len(b)]


def general(job: Job, tasks: list, reducers: int) -> list:
    """The output partitions the general kernels (group, then reduce) give."""
    segments = [[] for _ in range(reducers)]
    for records in tasks:
        for p, part in enumerate(finish_map(job, map_grouped(job, records), reducers)):
            if part[0]:
                segments[p].append(unpack(pack(list(part)), allow_pickle=True))
    return [reduce_groups(job, merge_segments(s, combined=False)) for s in segments]


def sorted_runs(job: Job, tasks: list, reducers: int) -> list:
    segments = [[] for _ in range(reducers)]
    for records in tasks:
        for p, blob in enumerate(pack_runs(map_runs(job, records, reducers))):
            segments[p] += through_wire([blob])
    return [merge_runs(job, s) for s in segments]


def records_of(rng: random.Random, n: int, alphabet: str = "abcdefgh") -> list:
    return [(i, ("".join(rng.choices(alphabet, k=2)), f"v{i}")) for i in range(n)]


@pytest.mark.parametrize("job_type", [Sort, SortWithFinal, ListKeys])
@pytest.mark.parametrize("reducers", [1, 3, 8])
def test_sorted_runs_give_what_grouping_gives(job_type, reducers):
    rng = random.Random(reducers)
    records = records_of(rng, 900)  # 64 distinct keys: many ties, kept in input order
    tasks = [records[i:i + 130] for i in range(0, len(records), 130)]
    job = bounded(job_type(), sample_keys(job_type(), None, records[::9]), reducers)
    assert plain_sort(job)
    got = sorted_runs(job, tasks, reducers)
    assert got == general(job, tasks, reducers)
    flat = [pair for keys, values in got for pair in zip(keys, values)]
    # the reference: globally sorted, ties in task order, then input order (map_final's
    # pairs after their task's records)
    expected = sorted((p for t in tasks for p in run_sequential(job, t)), key=lambda p: p[0])
    assert flat == expected
    assert [k for k, _ in flat] == sorted(k for k, _ in expected)
    if job_type is ListKeys:
        assert all(type(k) is tuple and type(k[1]) is tuple for k, _ in flat)


def test_keys_outside_the_sample_and_empty_boundaries_still_sort():
    job = bounded(Sort(), ["m"], 4)  # one key sampled: ranges below and above it
    records = records_of(random.Random(5), 300, "az")
    got = sorted_runs(job, [records[:100], records[100:]], 4)
    assert [pair for k, v in got for pair in zip(k, v)] == run_sequential(job, records)
    empty = bounded(Sort(), [], 3)  # nothing sampled: every key in partition 0
    got = sorted_runs(empty, [records], 3)
    assert [len(k) for k, _ in got] == [300, 0, 0]


def test_bad_keys_fail_as_with_grouping():
    job = bounded(Sort(), ["b", "d"], 3)
    with pytest.raises(BadOutput, match=r"yielded the key 5 \(int\), which does not compare "
                                        "with the sampled keys"):
        map_runs(job, [(0, ("a", 1)), (1, (5, 2))], 3)
    with pytest.raises(BadOutput, match="cannot be grouped"):
        map_runs(job, [(0, ({"a": 1}, 1))], 3)
    with pytest.raises(BadOutput, match="keys do not compare with each other"):
        map_runs(bounded(Sort(), [], 2), [(0, ("a", 1)), (1, (5, 2))], 2)
    class YieldsInt(Sort):
        def map(self, key, value):
            yield 5

    class Triple(Sort):
        def map(self, key, value):
            yield value, 1, 2

    for job_type, message in ((YieldsInt, "YieldsInt.map yielded 5, not a"),
                              (Triple, r"Triple.map yielded \('x', 1, 2\), not a")):
        with pytest.raises(RecordFailed) as failed:  # (the runner reports the cause)
            map_runs(bounded(job_type(), ["b"], 2), [(0, "x")], 2)
        assert isinstance(failed.value.__cause__, BadOutput)
        assert re.match(message, str(failed.value.__cause__))


def test_a_reduce_task_refuses_segments_that_are_not_sorted_runs():
    job = bounded(Sort(), ["b"], 2)
    grouped = unpack(pack([["a"], [["v"]]]))  # the general kernels' segment
    with pytest.raises(ValueError, match="not sorted runs"):
        merge_runs(job, [grouped])


class WithReduce(Sort):
    def reduce(self, key, values):
        return values


class WithCombine(Sort):
    def combine(self, key, values):
        return values[0]


class WithValueKey(Sort):
    def value_key(self, value):
        return value


class WithPartition(Sort):
    def partition(self, key, reducers):
        return 0


@pytest.mark.parametrize("job_type", [WithReduce, WithCombine, WithValueKey, WithPartition])
def test_jobs_that_group_keep_the_general_kernels(job_type):
    assert not plain_sort(bounded(job_type(), ["a"], 2))
    assert not plain_sort(Sort())  # no boundaries: not sampled by a client


# -- real daemons -------------------------------------------------------------------------


class TeraSort(Job):
    total_order = True

    def map(self, offset, line):
        yield line[:3], line[3:]


def test_a_sort_of_files_writes_ordered_part_files_holding_every_record(cluster, tmp_path):
    rng = random.Random(2026)
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [f"{rng.choice('abcdefghij')}{rng.randrange(30):02d} row {i} \"q\" é"
             for i in range(6000)]  # 300 distinct keys: ties across map tasks
    for n in range(3):
        (folder / f"part{n}.txt").write_text("".join(x + "\n" for x in lines[n::3]),
                                              encoding="utf-8")
    with Client(cluster) as client:
        handle = client.submit(TeraSort(), read_text(str(folder), split_bytes=30_000),
                               reducers=5, output_dir=tmp_path / "out")
        result = handle.result(60)
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_SUCCESS"] + [f"part-{i:05d}" for i in range(5)]
    pairs = [tuple(json.loads(line)) for i in range(5)
             for line in (out / f"part-{i:05d}").read_text(encoding="utf-8").splitlines()]
    assert pairs == result
    assert [k for k, _ in pairs] == sorted(k for k, _ in pairs)  # across the part files
    assert sorted(k + v for k, v in pairs) == sorted(lines)  # every record, once
    assert sum(1 for i in range(5) if (out / f"part-{i:05d}").stat().st_size) >= 3
    by_key: dict = {}
    for k, v in pairs:  # a key's records in input order: file order, then line order
        by_key.setdefault(k, []).append(int(v.split()[1]))
    # row i is in file i % 3, which map tasks read in name order
    assert all(rows == sorted(rows, key=lambda i: (i % 3, i)) for rows in by_key.values())
