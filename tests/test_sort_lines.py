"""A plain sort's reduce written from its segments' bytes (``speedups.merge_runs_json``,
rangesort.py's ``merge_runs_lines``): when the client keeps no results, a reduce task
merges its runs where they lie in their bytes and writes their JSON lines, with no str
object per key and value. It must write exactly the part file the decoding path writes,
and leave to that path every segment that is not runs of str as map tasks pack them:
these bytes come from other workers, so a run out of order, a key of another type, text
that is not UTF-8 or a length that lies gets what it got before (sorted, or refused)."""

from __future__ import annotations

import json
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymapreduce import Job, speedups
from pymapreduce.errors import UndecodableValue
from pymapreduce.patterns.records import pack
from pymapreduce.rangesort import RUNS, EncodedLines, merge_runs_lines
from pymapreduce.sampling import cut_boundaries
from pymapreduce.store.output import temp_name, write_attempt
from pymapreduce.workers.runner import run_task

built = pytest.mark.skipif(not speedups.built(), reason="the C extension is not built here "
                           "(no C compiler at install, or PYMAPREDUCE_PURE=1)")


class Sort(Job):
    total_order = True

    def map(self, offset, line):
        yield line[:4], line[4:]


def bounded(keys: list, reducers: int) -> Job:
    job = Sort()
    job.__dict__["_pmr_bounds"] = cut_boundaries("Sort", sorted(keys), reducers)
    return job


def reference(runs: list) -> bytes:
    """The lines of the runs' pairs, stably sorted by key (as merge_runs orders them)."""
    keys = [k for ks, _ in runs for k in ks]
    values = [v for _, vs in runs for v in vs]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return "".join(json.dumps([keys[i], values[i]], ensure_ascii=False) + "\n"
                   for i in order).encode("utf-8")


TEXT = st.lists(st.sampled_from(
    ["a", "b", "z", "é", "ÿ", "中", "\U0001f600", '"', "\\", "\n", "\t", "\x00", "\x1f",
     "\x7f", "\x80", "\u2028", "x" * 9]), max_size=6).map("".join)


@built
@settings(max_examples=400)
@given(st.lists(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=8), max_size=6),
       st.booleans())
def test_merged_lines_are_the_stable_sort_of_the_runs_written(runs, views):
    runs = [tuple(map(list, zip(*sorted(run, key=lambda kv: kv[0])))) for run in runs]
    blobs = [pack([keys, values, RUNS]) for keys, values in runs]
    if views:  # (a TASKS message's frames come as memoryviews)
        blobs = [memoryview(b) for b in blobs]
    out = merge_runs_lines(blobs)
    assert out == EncodedLines(reference(runs), sum(len(k) for k, _ in runs))


def segment(keys: list, values: list) -> bytes:
    return pack([keys, values, RUNS])


GOOD = segment(["a", "c"], ["1", "2"])
# each one is left to the Python path: what is not runs of str exactly as map tasks pack them
LEFT = {
    "a run out of order": segment(["c", "a"], ["1", "2"]),
    "an int key": segment([1, 2], ["1", "2"]),
    "a bytes value": segment(["a"], [b"x"]),
    "another third item": pack([["a"], ["x"], 2]),
    "the 1 written long": pack([["a"], ["x"]]).replace(b"\x92", b"\x93", 1) + b"\xcc\x01",
    "a byte left over": GOOD + b"\x00",
    "cut short": GOOD[:-3],
    "empty": b"",
    "more values than keys": segment(["a"], ["x", "y"]),
    "a surrogate in UTF-8": b"\x93\x91\xa3\xed\xa0\x80\x91\xa1x\x01",
    "an overlong form": b"\x93\x91\xa2\xc0\xaf\x91\xa1x\x01",
    "past U+10FFFF": b"\x93\x91\xa4\xf4\x90\x80\x80\x91\xa1x\x01",
    "a lone continuation byte": b"\x93\x91\xa1\x80\x91\xa1x\x01",
    "a length past the bytes": b"\x93\x91\xdb\xff\xff\xff\xff" + b"a" * 8,
    "a count past the bytes": b"\x93\xdd\x7f\xff\xff\xff\xa1a",
}


@built
@pytest.mark.parametrize("name", sorted(LEFT))
def test_what_is_not_runs_of_str_is_left_to_the_python_path(name):
    assert merge_runs_lines([GOOD, LEFT[name]]) is None
    assert merge_runs_lines([LEFT[name]]) is None


def reduce_file(tmp_path, blobs: list, lines: bool, tag: str) -> tuple:
    """A reduce task of ``blobs`` as a worker runs it: its commit record, its part file's
    bytes and its statistics."""
    job = bounded(["a", "m"], 1)
    spec = {"url": str(tmp_path / tag), "results": False}
    out, stats = run_task(job, "reduce", ["part", 0, len(blobs)], list(blobs), 1, False,
                          columns=True, lines=lines)
    record = write_attempt(spec, "j", 0, 7, out[0])
    return record, (tmp_path / tag / temp_name("j", 7, 0)).read_bytes(), stats


@pytest.mark.parametrize("blobs", [
    [segment(["a", "b", "b"], ["1", 'two "2"', "é"]), segment(["b", "c"], ["\x00", "中"])],
    [segment(["c", "a"], ["1", "2"]), GOOD],  # a hostile worker's run out of order: sorted
    [segment([3, 1], ["x", "y"]), segment([2], ["z"])],  # ints: decoded, sorted, written
    [segment(["k"] * 5, [str(i) for i in range(5)])] * 3,  # ties: earlier segments first
], ids=["text", "out of order", "ints", "ties"])
def test_a_reduce_writes_the_part_file_the_decoding_path_writes(tmp_path, blobs):
    fast = reduce_file(tmp_path, blobs, True, "fast")
    slow = reduce_file(tmp_path, blobs, False, "slow")
    assert fast == slow  # the commit record (records, bytes), the file, the task's stats
    decoded = [msgpack.unpackb(b) for b in blobs]
    assert fast[1] == reference([(d[0], d[1]) for d in decoded])


@pytest.mark.parametrize("bad", ["a surrogate in UTF-8", "cut short", "a count past the bytes"])
def test_a_segment_that_does_not_decode_fails_the_task_as_before(tmp_path, bad):
    for lines in (True, False):
        with pytest.raises(Exception) as failed:
            reduce_file(tmp_path, [GOOD, LEFT[bad]], lines, f"t{lines}")
        assert isinstance(failed.value.cause, UndecodableValue)


def test_lines_are_never_taken_for_a_client_that_keeps_results(tmp_path):
    with pytest.raises(ValueError, match="keeps results"):
        write_attempt({"url": str(tmp_path), "results": True}, "j", 0, 7,
                      EncodedLines(b'["a", "b"]\n', 1))


@built
def test_a_large_reduce_of_many_runs_is_the_stable_sort(tmp_path):
    rng = random.Random(9)
    runs = []
    for _ in range(40):  # forty map tasks' runs, keys sharing long beginnings
        keys = sorted("prefix-" + "".join(rng.choice("ab\u00e9") for _ in range(3))
                      for _ in range(rng.randrange(1, 300)))
        runs.append((keys, [f"v{rng.randrange(10**6)}" for _ in keys]))
    out = merge_runs_lines([segment(k, v) for k, v in runs])
    assert out == EncodedLines(reference(runs), sum(len(k) for k, _ in runs))
