"""Layer 1: pure kernels, codecs and input splitting (no sockets, no processes)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymapreduce import (
    InputError,
    Job,
    UnencodableValue,
    read_csv,
    read_text,
    run_sequential,
    stable_hash,
)
from pymapreduce.errors import BadOutput
from pymapreduce.inputs import chunk, normalize_records, plan_file_splits, read_split
from pymapreduce.kernels import (
    finish_map,
    map_grouped,
    merge_segments,
    reduce_groups,
)
from pymapreduce.patterns.records import pack, unpack
from pymapreduce.workers.tasks import reported

from .jobs import WordCount, WordCountCombined, read_lines

KEYS = ["word", "ünïcode", b"raw", 7, -3, 2**70, 1.5, None, ("a", 1), True, "", ("x", ("y", 2)),
        frozenset({"a", "b", "c", "d"}), ("t", frozenset({"x", "y"}))]


def test_stable_hash_is_the_same_in_every_process():
    script = (
        "from pymapreduce import stable_hash\n"
        f"print([stable_hash(k) for k in {KEYS!r}])"
    )
    outs = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.check_output([sys.executable, "-c", script], env=env, text=True))
    assert len(outs) == 1
    assert outs.pop().strip() == str([stable_hash(k) for k in KEYS])


def test_equal_numbers_share_a_partition():
    assert stable_hash(1) == stable_hash(1.0) == stable_hash(True)


@pytest.mark.parametrize(
    "value",
    [
        ("tuple", 1),
        {("tuple", "key"): [1, 2]},
        2**100,
        -(2**90),
        {1, 2, 3},
        frozenset({"a"}),
        Fraction(1, 3),
        b"\x00\xff",
        [1, [2, (3, 4)]],
        {"nested": {"dict": None}},
        1.25,
        "ünïcode ✓",
    ],
)
def test_records_round_trip_with_their_types(value):
    back = unpack(pack(value))
    assert back == value
    assert type(back) is type(value)


def test_unencodable_value_names_its_type():
    with pytest.raises(UnencodableValue, match="lock"):
        pack({"k": threading.Lock()})


def test_normalize_accepts_every_documented_shape():
    expected = [("a", 1), ("b", 2)]
    assert normalize_records({"a": 1, "b": 2}) == expected
    assert normalize_records([("a", 1), ["b", 2]]) == expected
    assert normalize_records([{"a": 1}, {"b": 2}]) == expected
    assert normalize_records(iter(expected)) == expected


def test_a_list_of_readers_is_refused_saying_to_give_one_reader_every_path(tmp_path):
    """[read_csv(a), read_csv(b)] (a join's first try) said "input record 0 is
    TextInput(patterns=('a.csv',), split_bytes=None, encoding='utf-8', max_line_, not a
    (key, value) pair": the repr cut mid-word, and nothing on how to read two files."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("id,name\n1,x\n")
    b.write_text("id,amount\n1,2.5\n")
    with pytest.raises(InputError, match=r"record 0 is a read_csv\(...\) input: a job takes "
                       r"one input.*read_csv\(\['users.csv', 'orders.csv'\]\).*with_path"):
        normalize_records([read_csv(str(a)), read_csv(str(b))])
    with pytest.raises(InputError, match=r"record 1 is a read_text\(...\) input"):
        normalize_records([("k", "v"), read_text(str(a))])


@pytest.mark.parametrize("bad", [None, "text", 42, [("a", 1), "xyz"], [(1, 2, 3)]])
def test_normalize_rejects_what_is_not_pairs(bad):
    with pytest.raises(InputError):
        normalize_records(bad)


def test_chunk_keeps_order_and_balance():
    records = list(range(10))
    parts = chunk(records, 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sum(parts, []) == records
    assert chunk([], 4) == [[]]


def test_read_text_with_no_match_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="matches no file"):
        read_text(str(tmp_path / "nothing-*.txt")).files()


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="ab é\r✓", max_size=12), max_size=40),
    final_newline=st.booleans(),
    split_bytes=st.integers(min_value=1, max_value=64),
)
def test_splits_read_every_line_exactly_once(tmp_path_factory, lines, final_newline, split_bytes):
    path = tmp_path_factory.mktemp("split") / "f.txt"
    data = "\n".join(lines).encode() + (b"\n" if final_newline and lines else b"")
    path.write_bytes(data)
    splits, total = plan_file_splits(read_text(str(path), split_bytes=split_bytes), 1)
    assert total == len(data)
    got = [rec for s in splits for rec in read_split(s.ranges)]
    # reference: every line with its byte offset, without its newline (and a trailing \r)
    expected, offset = [], 0
    if data:
        for raw in data.split(b"\n")[: -1 if data.endswith(b"\n") else None]:
            text = raw.decode()
            expected.append((offset, text[:-1] if text.endswith("\r") else text))
            offset += len(raw) + 1
    assert got == expected


def test_gzip_files_are_one_split_read_whole(tmp_path):
    path = tmp_path / "a.txt.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"one\ntwo two\n")
    splits, _ = plan_file_splits(read_text(str(path), split_bytes=1), 2)
    assert len(splits) == 1
    assert list(read_split(splits[0].ranges)) == [
        (0, "one"),
        (4, "two two"),
    ]


def test_distributed_kernels_equal_the_sequential_run(corpus):
    records = list(read_lines(corpus))
    expected = run_sequential(WordCount(), records)
    job = WordCountCombined()
    segments = [[] for _ in range(3)]
    for piece in chunk(records, 5):  # five map tasks, three reducers
        for r, part in enumerate(finish_map(job, map_grouped(job, piece), 3)):
            segments[r].append(unpack(pack(part)))
    result = {}
    for r in range(3):
        result.update(zip(*reduce_groups(job, merge_segments(segments[r], combined=True))))
    assert result == expected
    # without a combiner, segments carry every value
    plain = WordCount()
    segments = [finish_map(plain, map_grouped(plain, p), 1)[0] for p in chunk(records, 4)]
    assert dict(zip(*reduce_groups(plain, merge_segments(segments, combined=False)))) == expected
    assert expected["alpha"] > 0 and "délta" in expected


def test_values_reach_reduce_in_input_order():
    class Collect(Job):
        def map(self, key, value):
            yield "k", value

        def reduce(self, key, values):
            return list(values)

    records = [(i, i) for i in range(20)]
    job = Collect()
    segs = [finish_map(job, map_grouped(job, p), 1)[0] for p in chunk(records, 4)]
    assert reduce_groups(job, merge_segments(segs, combined=False)) == (["k"], [list(range(20))])


def test_custom_partition_is_used_and_checked():
    class ByLength(Job):
        def map(self, key, value):
            yield value, 1

        def partition(self, key, reducers):
            return len(key) % reducers

    parts = finish_map(ByLength(), {"a": [1], "bb": [1], "ccc": [1]}, 2)
    assert parts[1] == (["a", "ccc"], [[1], [1]])

    class Broken(ByLength):
        def partition(self, key, reducers):
            return reducers

    with pytest.raises(BadOutput, match=r"Broken.partition\('a', 2\) returned 2, not an int in "
                       r"range\(0, 2\)") as info:
        finish_map(Broken(), {"a": [1]}, 2)
    # as a worker reports it: no key, and no "returned a int, not an int"
    assert reported(info.value, "", {})[0] == \
        "BadOutput: Broken.partition(key, 2) returned an int outside range(0, 2)"


def test_map_only_sequential_keeps_every_pair():
    class Echo(Job):
        def map(self, key, value):
            yield value, key

    assert run_sequential(Echo(), [(1, "x"), (2, "x")]) == [("x", 1), ("x", 2)]


def test_combine_runs_as_values_pile_up_and_the_result_is_unchanged():
    calls = []

    class Counting(WordCountCombined):
        def combine(self, word, counts):
            calls.append(len(counts))
            return sum(counts)

    records = [(i, "same word " * 50) for i in range(100)]  # 5,000 of each word
    job = Counting()
    groups = map_grouped(job, records)
    assert all(len(v) < 64 for v in groups.values())  # never one value per record
    assert max(calls) == 64
    (keys, values, *_), = finish_map(job, groups, 1)  # (a third item: its buckets)
    assert dict(zip(keys, values)) == run_sequential(WordCount(), records)


def test_invalid_utf8_is_replaced_and_offsets_stay_exact(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\nbad \xff\xfe byte\n\xc3\xa9t\xc3\xa9\r\nlast")
    splits, _ = plan_file_splits(read_text(str(path), split_bytes=5), 1)
    got = [rec for s in splits for rec in read_split(s.ranges)]
    assert got == [(0, "ok"), (3, "bad \ufffd\ufffd byte"), (15, "été"), (22, "last")]


def test_a_failing_map_names_the_record(tmp_path):
    from pymapreduce.kernels import RecordFailed

    class Picky(Job):
        def map(self, key, value):
            if value == "bad":
                raise KeyError(value)
            yield value, 1

    with pytest.raises(RecordFailed) as info:
        map_grouped(Picky(), [(1, "good"), (2, "bad"), (3, "good")])
    assert info.value.key == 2
    assert isinstance(info.value.__cause__, KeyError)


def test_splits_span_files_in_equal_pieces_and_read_every_line_once(corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    text = read_text([*corpus, str(empty)], split_bytes=10_000)
    splits, total = plan_file_splits(text, 1)
    sizes = [sum(e - s for _, s, e in split.ranges) for split in splits]
    assert sum(sizes) == total and max(sizes) - min(sizes) < len(splits)
    assert any(len(split.ranges) > 1 for split in splits)  # some split crosses a file end
    got = [rec for split in splits for rec in read_split(split.ranges)]
    assert got == list(read_lines(corpus))


def test_in_mapper_combining_output_travels_flat_and_reduces_the_same():
    """A map that yields nothing and a map_final that yields the task's counts: the pairs
    go to partitions flat (one value each), and reduce sees what a grouped run gives it:
    every value of a key, across tasks and duplicates, keys sorted, list keys as tuples."""

    class InMapper(Job):
        def map_init(self):
            self.counts = {}

        def map(self, key, line):
            for word in line.split():
                self.counts[word] = self.counts.get(word, 0) + 1

        def map_final(self):
            yield from self.counts.items()
            yield "dup", 1  # the same key twice in one task
            yield "dup", 2
            yield ["a", ["b"]], 5  # a list key: grouped as its tuple

        def reduce(self, word, counts):
            return sorted(counts)

    records = [(i, f"w{i % 7} w{i % 3} x") for i in range(60)]
    job = InMapper()
    flat = map_grouped(job, records[:10])
    assert not isinstance(flat, dict)  # (the flat path was taken)
    expected: dict = {}  # what reduce must see: the values of every task's map_final
    for piece in chunk(records, 3):
        for key, values in run_sequential(job, piece).items():
            expected[key] = sorted(expected.get(key, []) + values)
    assert expected["dup"] == [1, 1, 1, 2, 2, 2] and expected[("a", ("b",))] == [5, 5, 5]
    segments = [[] for _ in range(3)]
    for piece in chunk(records, 3):
        for r, part in enumerate(finish_map(job, map_grouped(job, piece), 3)):
            assert len(part) == 3 and part[2] is True
            if part[0]:
                segments[r].append(unpack(pack(list(part))))
    result = {}
    for r in range(3):
        out = reduce_groups(job, merge_segments(segments[r], combined=False))
        result.update(zip(*out))
    assert result == expected
    assert sum(result["x"]) == 60
