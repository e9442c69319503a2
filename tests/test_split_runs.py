"""A SUBMIT names its in-memory splits as one run, ``["mems", first, n]`` (blobs ``first``
to ``first + n - 1``, one split each), where a descriptor per split cost about a
microsecond a split on each side; ``["mem", i]`` descriptors are still read. A run that
names blobs not there, or more splits than a job may have, is refused with the reason,
as a bad ``["mem", i]`` is, and never read past the message's blobs."""

from __future__ import annotations

import msgpack
import pytest

from pymapreduce.broker.submission import MAX_TASKS, read_splits
from pymapreduce.client.submit import build_submission
from pymapreduce.patterns.records import unpack

from .jobs import NoOp


def _read(descs: list, nblobs: int) -> list:
    blobs = (b"code", *[b"r%d" % i for i in range(1, nblobs)])
    return read_splits(msgpack.packb(descs), blobs)


def test_a_run_of_in_memory_splits_is_read_as_one_split_a_blob():
    splits = _read([["mems", 1, 3]], 4)
    assert splits == [["mem", b"r1"], ["mem", b"r2"], ["mem", b"r3"]]


def test_runs_and_single_descriptors_mix_in_their_order():
    splits = _read([["mem", 3], ["mems", 1, 2], ["mem", 1]], 4)
    assert [s[1] for s in splits] == [b"r3", b"r1", b"r2", b"r1"]


@pytest.mark.parametrize("desc", [
    ["mems", 0, 1],          # the job's code is no split
    ["mems", 1, 0],          # an empty run
    ["mems", 1, 4],          # past the last blob
    ["mems", 3, -1],
    ["mems", -2, 3],
    ["mems", True, 1],       # (a bool is no index)
    ["mems", 1, 1.0],
    ["mems", "1", 1],
    ["mems", 1, 2**64 - 1],
])
def test_a_run_that_names_blobs_not_there_is_refused(desc):
    with pytest.raises(ValueError, match="in-memory splits|malformed"):
        _read([desc], 4)


def test_runs_past_the_job_s_task_cap_are_refused_before_they_are_made():
    blobs = (b"code", b"r")
    # one blob named over and over in runs: each run passes alone, the sum may not
    descs = [["mems", 1, 1]] * 3
    assert len(read_splits(msgpack.packb(descs), blobs)) == 3
    many = [["mem", 1]] * (MAX_TASKS - 1) + [["mems", 1, 1], ["mems", 1, 1]]
    with pytest.raises(ValueError, match="input splits"):
        read_splits(msgpack.packb(many), blobs)


def test_a_client_sends_its_records_as_one_run():
    records = [(i, f"v{i}") for i in range(7)]
    sub = build_submission(NoOp(), records, slots=2, map_tasks=7, reducers=0, name=None)
    descs = msgpack.unpackb(sub.blobs[sub.body["splits"]])
    assert descs == [["mems", 1, 7]]
    splits = read_splits(sub.blobs[sub.body["splits"]], tuple(sub.blobs))
    assert [unpack(s[1]) for s in splits] == [[[i, f"v{i}"]] for i in range(7)]
