"""Orders and shapes of keys and pairs (issue 10): total order across partitions, values
sorted for reduce (value_key), list keys, and a clear, unretried error for a map that
yields non-pairs. The pure parts without sockets first, then real daemons."""

from __future__ import annotations

import json
import random
import re

import pytest

from pymapreduce import (
    BadOutput,
    Client,
    ConfigError,
    Job,
    JobFailed,
    read_jsonl,
    read_text,
    run_sequential,
    stable_hash,
)
from pymapreduce.kernels import finish_map, map_grouped
from pymapreduce.sampling import cut_boundaries, sample_keys

from .jobs import WordCount

# -- jobs ---------------------------------------------------------------------------------


class SortPairs(Job):
    """A sort: total_order and no reduce, so each value comes back with its key."""

    total_order = True

    def map(self, key, value):
        yield value, key


class OrderedWordCount(WordCount):
    total_order = True


class CountThenRank(Job):
    """Two steps: count words, then order the (count, word) pairs by count."""

    def steps(self):
        return [WordCount(), RankByCount()]

    def map(self, key, value):  # (a multi-step job's own map is not run)
        yield key, value


class RankByCount(Job):
    total_order = True

    def map(self, word, count):
        yield (count, word), None


class Mixed(Job):
    total_order = True

    def map(self, key, value):
        yield (key if key % 2 else str(key)), value


class Events(Job):
    """Each user's events in time order, however the map tasks saw them."""

    def map(self, key, event):
        user, time, what = event
        yield user, (time, what)

    def value_key(self, event):
        return event[0]

    def reduce(self, user, events):
        return [what for _, what in events]


class EarliestPerTask(Events):
    """A combiner that relies on sorted values: it keeps its first (earliest) one."""

    def combine(self, user, events):
        if events != sorted(events, key=self.value_key):
            raise AssertionError(f"combine got {events} unsorted")
        return events[0]

    def reduce(self, user, events):
        if events != sorted(events, key=self.value_key):
            raise AssertionError(f"reduce got {events} unsorted")
        return events[0][1]


class ByPair(Job):
    """JSON records whose key is a list, as JSON gives them."""

    def map(self, offset, record):
        yield record["pair"], record["n"]

    def reduce(self, pair, ns):
        return sum(ns)


class YieldsInt(WordCount):
    def map(self, key, line):
        yield 5


class YieldsStr(WordCount):
    def map(self, key, line):
        for word in line.split():
            yield word  # a str of two letters must not pass as a pair


class YieldsTriple(WordCount):
    def map(self, key, line):
        yield line, 1, 2


class FinalYieldsNone(WordCount):
    def map_final(self):
        yield None


class ReduceFinalYieldsInt(WordCount):
    def reduce_final(self):
        yield 7


class DictKey(WordCount):
    def map(self, key, line):
        yield {"line": line}, 1


class PartitionByLetter(WordCount):
    """A partition that returns the key's first letter, not a partition's number."""

    def partition(self, key, reducers):
        return key[0]


class ListPairs(WordCount):
    """Pairs as 2-item lists (as JSON decodes them) are pairs."""

    def map(self, key, line):
        for word in line.split():
            yield [word, 1]


LINES = [(i, f"w{i % 17} x{i % 5} w{(i * 7) % 23}") for i in range(600)]


# -- without sockets ----------------------------------------------------------------------


def test_boundaries_are_even_quantiles_and_an_empty_sample_gives_one_range():
    assert cut_boundaries("J", list(range(100, 0, -1)), 4) == [26, 51, 76]
    assert cut_boundaries("J", [], 4) == []
    assert cut_boundaries("J", [5] * 90 + [1, 9], 3) == [5, 5]  # duplicates: ranges empty
    with pytest.raises(BadOutput, match="do not compare.*int, str"):
        cut_boundaries("J", [1, "a", 2], 2)


def test_a_list_key_is_grouped_and_partitioned_as_its_tuple():
    assert stable_hash(["a", [1, 2]]) == stable_hash(("a", (1, 2)))
    job = ByPair()
    records = [(0, {"pair": ["a", [1]], "n": 1}), (1, {"pair": ("a", (1,)), "n": 2}),
               (2, {"pair": ("a", [1]), "n": 4})]
    groups = map_grouped(job, records)
    assert dict(groups) == {("a", (1,)): [1, 2, 4]}
    assert run_sequential(job, records) == {("a", (1,)): 7}


def test_sampled_keys_holding_lists_are_the_keys_the_map_tasks_partition():
    """A key ("a", [1]) is grouped as ("a", (1,)); the sample must cut the boundaries
    from that, or no map task's key would compare with them (list against tuple)."""

    class SortByPair(ByPair):
        total_order = True

        def map(self, offset, record):
            yield (record["user"], [record["n"]]), 1

    records = [(i, {"user": "abcd"[i % 4], "n": i % 3}) for i in range(40)]
    keys = sample_keys(SortByPair(), None, records)
    assert all(type(k[1]) is tuple for k in keys)
    job = SortByPair()
    job.__dict__["_pmr_bounds"] = cut_boundaries("SortByPair", keys, 3)
    parts = finish_map(job, map_grouped(job, records), 3)  # raised BadOutput before
    got = [k for keys_, _ in parts for k in sorted(keys_)]  # (each reduce sorts its own)
    assert got == sorted(run_sequential(job, records)) and len(got) == 12
    assert all(keys_ for keys_, _ in parts)  # the sample's ranges spread them


def test_map_side_runs_are_sorted_by_value_key():
    job = Events()
    records = [(0, ("u", 3, "c")), (1, ("u", 1, "a")), (2, ("u", 2, "b"))]
    [(keys, values)] = finish_map(job, map_grouped(job, records), 1)
    assert keys == ["u"] and values == [[(1, "a"), (2, "b"), (3, "c")]]


# -- on real daemons ----------------------------------------------------------------------


def parts_of(folder) -> list[list]:
    """Each part file's pairs, in part order."""
    names = sorted(p.name for p in folder.iterdir() if p.name.startswith("part-"))
    return [[json.loads(line) for line in (folder / n).read_text().splitlines()] for n in names]


def assert_ranges(parts: list[list]) -> None:
    """Each part is sorted and its keys are at most those of the next part."""
    keys = [k for part in parts for k, _ in part]
    assert keys == sorted(keys)
    assert sum(1 for p in parts if p) >= 2, "the sample should spread keys over the parts"


def test_total_order_over_several_reducers_with_in_memory_inputs(cluster, tmp_path):
    rng = random.Random(7)
    records = [(i, rng.randrange(10_000)) for i in range(4000)]
    with Client(cluster) as client:
        handle = client.submit(SortPairs(), records, map_tasks=6, reducers=4,
                               output_dir=tmp_path / "out")
        result = handle.result(60)
        streamed = list(client.job(handle.job_id).results())
    expected = sorted(((v, k) for k, v in records), key=lambda p: p[0])  # stable: ties
    assert result == expected  # in input order, as map tasks and segments keep it
    assert streamed == expected
    parts = parts_of(tmp_path / "out")
    assert len(parts) == 4 and all(parts)  # every range got some keys
    assert_ranges(parts)


def test_total_order_with_files_a_reduce_and_part_files(cluster, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = random.Random(3)
    words = [f"{rng.choice('abcdefghij')}{rng.randrange(1000)}" for _ in range(20_000)]
    for n in range(3):
        (folder / f"f{n}.txt").write_text(
            "".join(" ".join(words[i:i + 5]) + "\n" for i in range(n, len(words), 15)))
    expected = run_sequential(WordCount(), ((0, " ".join(words[i:i + 5]))
                                            for n in range(3)
                                            for i in range(n, len(words), 15)))
    with Client(cluster) as client:
        handle = client.submit(OrderedWordCount(), read_text(str(folder), split_bytes=20_000),
                               reducers=3, output_dir=tmp_path / "out")
        result = handle.result(60)
        streamed = list(client.job(handle.job_id).results())
    assert result == expected and list(result) == sorted(expected)
    assert [k for k, _ in streamed] == sorted(expected)
    assert_ranges(parts_of(tmp_path / "out"))


def test_skewed_and_duplicate_heavy_keys_stay_in_order(cluster):
    rng = random.Random(11)
    records = [(i, "hot" if rng.random() < 0.9 else f"k{rng.randrange(500):03d}")
               for i in range(3000)]
    with Client(cluster) as client:
        result = client.submit(SortPairs(), records, map_tasks=5, reducers=4).result(60)
    assert [k for k, _ in result] == sorted(v for _, v in records)
    assert sorted(v for _, v in result) == list(range(3000))  # nothing lost or doubled


def test_empty_and_iterator_inputs_and_a_multi_step_job_ordered_by_its_last_step(
        cluster, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with Client(cluster) as client:
        assert client.submit(SortPairs(), [], reducers=3).result(60) == []
        once = ((i, -i) for i in range(50))  # read once: by the sampler and the submit
        assert client.submit(SortPairs(), once, reducers=2).result(60) == [
            (-i, i) for i in reversed(range(50))]
        assert client.submit(OrderedWordCount(), read_text(str(empty)), reducers=3).result(60) == {}
        ranked = client.submit(CountThenRank(), LINES, reducers=3).result(60)
    counts = run_sequential(WordCount(), LINES)
    assert [k for k, _ in ranked] == sorted((n, w) for w, n in counts.items())


def test_keys_that_do_not_compare_are_refused_at_submit(cluster):
    with Client(cluster) as client:
        with pytest.raises(BadOutput, match="Mixed has total_order but its map's keys do "
                                            "not compare"):
            client.submit(Mixed(), [(i, i) for i in range(10)], reducers=2)
        with pytest.raises(ConfigError, match="runs map-only"):
            client.submit(SortPairs(), [(1, 2)], reducers=0)
        assert client.jobs() == []  # nothing was submitted


def test_values_arrive_sorted_by_value_key_across_map_tasks(cluster):
    rng = random.Random(5)
    events = [(f"u{u}", t, f"e{u}-{t}") for u in range(20) for t in range(40)]
    rng.shuffle(events)  # each map task sees each user's events out of order
    records = list(enumerate(events))
    expected = {f"u{u}": [f"e{u}-{t}" for t in range(40)] for u in range(20)}
    with Client(cluster) as client:
        assert client.submit(Events(), records, map_tasks=8, reducers=3).result(60) == expected
        earliest = client.submit(EarliestPerTask(), records, map_tasks=8,
                                 reducers=3).result(60)
    assert earliest == {u: names[0] for u, names in expected.items()}
    assert run_sequential(Events(), records) == expected


def test_list_keys_come_back_as_tuples(cluster, tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"pair": [f"a{i % 4}", [i % 3, "x"]], "n": i} for i in range(900)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected: dict = {}
    for r in rows:
        key = (r["pair"][0], tuple(r["pair"][1]))
        expected[key] = expected.get(key, 0) + r["n"]
    with Client(cluster) as client:
        handle = client.submit(ByPair(), read_jsonl(str(path), split_bytes=4000), reducers=3)
        assert handle.result(60) == expected
        streamed = list(client.job(handle.job_id).results())
        assert sorted(streamed) == sorted(expected.items())  # each key in one partition
        counted = client.submit(ListPairs(), LINES, map_tasks=3).result(60)
    assert counted == run_sequential(WordCount(), LINES)


def test_a_partition_that_returns_no_partition_fails_the_job_at_once(cluster):
    """The same code returns the same on every attempt: BadOutput, not retried
    --max-attempts times, and the key it was given is in the failure's position."""
    with Client(cluster) as client:
        with pytest.raises(JobFailed) as info:
            client.submit(PartitionByLetter(), LINES[:1], reducers=2).result(60)
    text = str(info.value).split("\n")[0]
    assert ("BadOutput: PartitionByLetter.partition(key, 2) returned a value of type str, "
            "not an int in range(0, 2)") in text, text
    assert "partition's key 'w0'" in str(info.value)
    assert "failed 2 times" in text, text


@pytest.mark.parametrize("job, message, value, label", [
    (YieldsInt(), "YieldsInt.map yielded a value of type int, not a (key, value) pair", "5",
     "map's output"),
    (YieldsStr(), "YieldsStr.map yielded a value of type str, not a (key, value) pair", "'w0'",
     "map's output"),
    (YieldsTriple(), "YieldsTriple.map yielded a tuple of 3 items, not a (key, value) pair",
     "('w0 x0 w0', 1, 2)", "map's output"),
    (FinalYieldsNone(), "FinalYieldsNone.map_final yielded a value of type NoneType, not a "
     "(key, value) pair", "None", "map_final's output"),
    (ReduceFinalYieldsInt(), "ReduceFinalYieldsInt.reduce_final yielded a value of type int, "
     "not a", "7", "reduce_final's output"),
    (DictKey(), "DictKey.map yielded a key, a dict, which cannot", "{'line': 'w0 x0 w0'}",
     "map's key"),
])
def test_non_pairs_fail_the_job_at_once_naming_the_method_and_value(cluster, job, message,
                                                                    value, label):
    """The error names the method and the value's type; the value itself is in the
    failure's position, which only the job's owner reads (tests/test_data_in_errors.py)."""
    with Client(cluster) as client:
        with pytest.raises(JobFailed) as info:
            client.submit(job, LINES[:1], reducers=1).result(60)
    text = str(info.value).split("\n")[0]
    assert f"BadOutput: {message}" in text
    assert f"{label} {value}" in str(info.value)
    attempts = int(re.search(r"failed (\d+) times", text).group(1))
    assert attempts < 4  # not retried as a lost worker would be (the default is 4)


class MapOnlyYieldsStr(YieldsStr):
    reduce = None


@pytest.mark.parametrize("job, line", [
    (YieldsStr(), "yield word  # a str of two letters must not pass as a pair"),
    (YieldsTriple(), "yield line, 1, 2"),
    (DictKey(), 'yield {"line": line}, 1'),
    (FinalYieldsNone(), "yield None"),
    (MapOnlyYieldsStr(), "yield word  # a str of two letters must not pass as a pair"),
])
def test_a_non_pair_traceback_ends_at_the_users_yield(cluster, job, line):
    """The remote traceback of a non-pair ends at the job's own ``yield`` of it (its
    file and line), not inside pymapreduce's check; nothing is chained before it."""
    with Client(cluster) as client:
        with pytest.raises(JobFailed) as info:
            client.submit(job, LINES[:1], reducers=0 if job.reduce is None else 1).result(60)
    tb = info.value.remote_traceback.rstrip().splitlines()
    assert tb[-1].startswith("pymapreduce.errors.BadOutput: "), tb
    last = max(i for i, text in enumerate(tb) if text.startswith("  File "))
    assert tb[last].startswith(f'  File "{__file__}", line '), tb
    assert tb[last + 1].strip() == line, tb
    assert "During handling" not in info.value.remote_traceback
    assert "ordering.py" not in info.value.remote_traceback
    assert f"\n    {line}\n" in str(info.value)  # (and so in the CLI's error)
