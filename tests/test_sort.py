"""A plain sort's faster paths (issue 13, docs/terasort.md): a column of plain text written
in quotes as it is, columns reordered by one itemgetter, and a reduce task that writes its
part file from the merged columns (not from their packed bytes). Each must give exactly
what the path before gave: the bytes ``json.dumps`` wrote per pair, the records of
``sorted()``, the output a worker killed mid-job leaves none of twice."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from pymapreduce import Client, Job, ValueNeedsPickle, read_text, sampling, speedups
from pymapreduce.client.output import encode_lines
from pymapreduce.lines import READ_BLOCK, read_split
from pymapreduce.patterns.records import pack, unpack
from pymapreduce.rangesort import EncodedLines, cut_runs, in_order, merge_runs, pack_runs
from pymapreduce.sampling import cut_boundaries, sample_records
from pymapreduce.store.output import temp_name, write_attempt
from pymapreduce.workers.runner import run_task

from .conftest import FAST, children, wait_workers


def reference(keys, values) -> str:
    return "".join(json.dumps([k, v], ensure_ascii=False, default=repr) + "\n"
                   for k, v in zip(keys, values))


class Name(str):
    pass


PLAIN = ["", "a", "plain text", "été 日本語 \U0001F600", "\x7f and ~", "\u2028\u2029",
         "</script>", "x" * 300]
ESCAPED = ['a "quote"', "back\\slash", "tab\t", "nl\n", "\x00", "\x1f", "cr\r"]


@pytest.mark.parametrize("keys, values", [
    (PLAIN, PLAIN[::-1]),  # both columns plain: quotes in the separators on both sides
    (PLAIN, ESCAPED + ["z"]),  # one plain column, one escaped
    (ESCAPED + ["z"], PLAIN),
    (PLAIN, list(range(8))),  # a plain column beside ints
    ([Name("sub")] * 3, ["a", "b", "c"]),  # a str subclass: through the encoder
    (["a", "b"], ["x"]),  # unequal lengths: zip's
    (["only"], [""]),
])
def test_plain_text_columns_give_the_bytes_json_dumps_gave(keys, values):
    assert encode_lines(keys, values) == reference(keys, values)


def test_one_escape_anywhere_in_a_column_takes_the_escaping_path():
    rng = random.Random(13)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + ["é", "中", "\x00", "\x1f", "\U0001F600"]
    for _ in range(300):
        n = rng.randrange(1, 20)
        keys = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 6)))
                for _ in range(n)]
        values = ["".join(rng.choice(alphabet[:95]) for _ in range(rng.randrange(0, 9)))
                  for _ in range(n)]
        assert encode_lines(keys, values) == reference(keys, values)


def test_a_lone_surrogate_still_fails_when_written(tmp_path):
    text = encode_lines(["\ud800"], ["v"])
    assert text == reference(["\ud800"], ["v"])
    with pytest.raises(UnicodeEncodeError):
        text.encode("utf-8")


def test_in_order_is_the_columns_taken_in_order():
    keys = ["c", "a", "b", "a"]
    values = [1, 2, 3, 4]
    for order in ([], [2], [1, 0], [1, 3, 2, 0]):
        taken = in_order(order, keys, values)
        assert [list(c) for c in taken] == [[keys[i] for i in order],
                                            [values[i] for i in order]]


class Sort(Job):
    total_order = True

    def map(self, offset, line):
        yield line[:4], line[4:]


def bounded(job: Job, keys: list, reducers: int) -> Job:
    job.__dict__["_pmr_bounds"] = cut_boundaries("Sort", sorted(keys), reducers)
    return job


def test_runs_and_merges_travel_as_lists_and_give_sorted_order():
    rng = random.Random(5)
    keys = [f"{rng.randrange(500):04d}" for _ in range(3000)]
    values = [f" row {i}" for i in range(3000)]
    job = bounded(Sort(), keys, 4)
    segments = [[], [], [], []]
    for t in range(3):  # three map tasks of a thousand records each
        parts = cut_runs(job, keys[t::3], values[t::3], 4)
        assert all(type(k) is list and type(v) is list for k, v in parts)
        for p, blob in enumerate(pack_runs(parts)):
            segments[p].append(unpack(blob, allow_pickle=True) if blob else [[], [], 1])
    got = []
    for p in range(4):
        k, v = merge_runs(job, segments[p])
        assert type(k) is list and type(v) is list
        assert unpack(pack([k, v])) == [k, v]  # lists, not tuples, on the wire
        got += zip(k, v)
    order = sorted(range(3000), key=lambda i: (keys[i], i % 3, i))  # key, task, input
    assert got == [(keys[i], values[i]) for i in order]


@pytest.mark.parametrize("results", [True, False])
@pytest.mark.parametrize("keys, values", [
    (["a", "b\"", "c"], ["x", "y", "z"]),
    (["k1", "k2"], [1, 2.5]),
    ([], []),
])
def test_write_attempt_of_columns_is_write_attempt_of_their_bytes(tmp_path, results, keys,
                                                                   values):
    spec_a = {"url": str(tmp_path / "a"), "results": results}
    spec_b = {"url": str(tmp_path / "b"), "results": results}
    from_bytes = write_attempt(spec_a, "j", 3, 7, pack([keys, values]))
    from_columns = write_attempt(spec_b, "j", 3, 7, (keys, values))
    # the record names the bytes written, the same file either way
    assert from_columns == from_bytes
    name = temp_name("j", 7, 3)
    assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    assert (tmp_path / "b" / name).read_text(encoding="utf-8") == reference(keys, values)


def reduce_blobs(job: Job, lines: list[str], reducers: int) -> list[list[bytes]]:
    """Each partition's map output segments, of two map tasks over ``lines``."""
    outs = [run_task(job, "map", ["mem", 0], [pack([[i, x] for i, x in enumerate(half)])],
                     reducers, False)[0] for half in (lines[::2], lines[1::2])]
    return [[o[p] for o in outs] for p in range(reducers)]


def test_a_reduce_task_gives_columns_only_when_nothing_could_need_a_pickle():
    lines = [f"{i % 97:04d}value{i}" for i in range(400)]
    job = bounded(Sort(), [x[:4] for x in lines], 2)
    for blobs in reduce_blobs(job, lines, 2):
        packed, _ = run_task(job, "reduce", ["part", 0, 2], list(blobs), 2, False)
        cols, _ = run_task(job, "reduce", ["part", 0, 2], list(blobs), 2, False,
                           columns=True)
        if speedups.merge_runs_json is not None:  # (runs of str: lines and packed pairs)
            assert type(cols[0]) is EncodedLines and cols[0].packed == packed[0]
        else:
            assert type(cols[0]) is tuple and unpack(packed[0]) == list(cols[0])

    class Sets(Job):  # values that need a pickle: packed, and refused when it must be
        total_order = True

        def map(self, offset, line):
            yield line[:4], Name(line)

    job = bounded(Sets(), [x[:4] for x in lines], 1)
    blobs = reduce_blobs(job, lines, 1)[0]
    out, _ = run_task(job, "reduce", ["part", 0, 2], list(blobs), 1, False, columns=True)
    assert type(out[0]) is bytes
    with pytest.raises(Exception) as failed:
        run_task(job, "reduce", ["part", 0, 2], list(blobs), 1, False, columns=True,
                 safe_output=True)
    assert isinstance(failed.value.cause, ValueNeedsPickle)


# -- real daemons -------------------------------------------------------------------------


def sort_input(folder, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    printable = [chr(c) for c in range(0x21, 0x7F)]
    lines = ["".join(rng.choice(printable) for _ in range(4)) + f" row {i:06d} é"
             for i in range(n)]
    folder.mkdir()
    (folder / "in.txt").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return lines


def part_records(out, parts: int) -> list[tuple[str, str]]:
    return [tuple(json.loads(line)) for i in range(parts)
            for line in (out / f"part-{i:05d}").read_text(encoding="utf-8").splitlines()]


def stable_sorted(lines: list[str]) -> list[tuple[str, str]]:
    """What the sort must give: records by key, ties in input order (one input file, read
    by map tasks in split order)."""
    return [(x[:4], x[4:]) for x in sorted(lines, key=lambda x: x[:4])]


@pytest.mark.parametrize("results", [False, True])
def test_a_sort_of_a_file_is_sorted_exactly(cluster, tmp_path, results):
    lines = sort_input(tmp_path / "in", 20_000, 7)
    with Client(cluster) as client:
        handle = client.submit(Sort(), read_text(str(tmp_path / "in"), split_bytes=100_000),
                               reducers=6, output_dir=tmp_path / "out", results=results)
        handle.wait(60)
        if results:
            assert handle.result(60) == stable_sorted(lines)
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == ["_SUCCESS"] + [f"part-{i:05d}" for i in range(6)]
    assert part_records(tmp_path / "out", 6) == stable_sorted(lines)
    assert sum(1 for i in range(6) if (tmp_path / "out" / f"part-{i:05d}").stat().st_size) >= 4


class SlowSort(Sort):
    """Each record's map takes a little time, so a worker can be killed mid-job."""

    def map(self, offset, line):
        time.sleep(0.0002)
        yield line[:4], line[4:]


def test_a_worker_killed_mid_sort_leaves_the_exact_output(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    supervisor = daemons.worker(address, 2)
    wait_workers(address, 2)
    lines = sort_input(tmp_path / "in", 20_000, 11)
    with Client(address) as client:
        handle = client.submit(SlowSort(), read_text(str(tmp_path / "in"), split_bytes=50_000),
                               reducers=4, output_dir=tmp_path / "out", results=False)
        deadline = time.monotonic() + 30
        while handle.status()["maps"][0] < 2:  # some map outputs are in, more to come
            assert time.monotonic() < deadline, "no map task finished"
            time.sleep(0.02)
        victim = children(supervisor.pid)[0]
        assert handle.status()["state"] == "running"  # (maps still to run: mid-job)
        os.kill(victim, signal.SIGKILL)
        handle.wait(120)
        status = handle.status()
    assert status["state"] == "succeeded"
    assert part_records(tmp_path / "out", 4) == stable_sorted(lines)
    assert sorted(os.listdir(tmp_path / "out")) == ["_SUCCESS"] + [
        f"part-{i:05d}" for i in range(4)]  # no second or partial part file


# -- the sampler's reads ------------------------------------------------------------------


def test_any_block_size_reads_the_same_records(tmp_path):
    rng = random.Random(3)
    path = tmp_path / "in.txt"
    lines = ["x" * rng.choice([0, 1, 5, 99, 700]) + rng.choice(["", "é", "\r"])
             for _ in range(400)]
    path.write_bytes("".join(x + "\n" for x in lines).encode("utf-8") + b"tail")
    size = path.stat().st_size
    cuts = [0, 1, 333, size // 2, size - 3, size]
    for a, b in zip(cuts, cuts[1:]):
        want = list(read_split([(str(path), a, b)]))
        for block in (1, 7, 64, 4096):
            assert list(read_split([(str(path), a, b)], block=block)) == want


def test_the_sample_and_its_boundaries_do_not_depend_on_the_block_size(tmp_path, monkeypatch):
    lines = sort_input(tmp_path / "in", 30_000, 9)
    inputs = read_text(str(tmp_path / "in"), split_bytes=50_000)
    sampled = sample_records(inputs, 2)
    monkeypatch.setattr(sampling, "SAMPLE_BLOCK", READ_BLOCK)  # a map task's blocks
    assert sample_records(inputs, 2) == sampled
    assert 5_000 < len(sampled) <= 10_000 and all(line in lines for _, line in sampled[::97])
