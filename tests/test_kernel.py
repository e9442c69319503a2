"""The shuffle's hash buckets (``pymapreduce/buckets.py``): map tasks that partition by
hash cut each partition into buckets, and reduce tasks merge them bucket by bucket. The
results, and each key's values in map-task order, must be what a merge of the whole
segments gives, whatever the segments hold; a segment that cannot be merged by bucket is
merged as before."""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from pymapreduce import Client, Job, buckets, read_text, run_sequential, stable_hash
from pymapreduce.buckets import BUCKETS, MIN_BUCKET_PAIRS, ROUND
from pymapreduce.kernels import finish_map, map_grouped, merge_segments
from pymapreduce.patterns.records import pack, unpack

from .jobs import InMapper, WordCountCombined, read_lines

MANY = MIN_BUCKET_PAIRS * BUCKETS  # keys enough for a reduce task to merge by bucket


class Tagged(Job):
    """Each task's output tagged with the task's first record, so that the order of a
    key's values (map-task order) shows in the result."""

    def map_init(self):
        self.first = None
        self.words = {}

    def map(self, key, line):
        if self.first is None:
            self.first = key
        for w in line.split():
            self.words[w] = self.first

    def map_final(self):
        return self.words.items()

    def reduce(self, word, tags):
        return list(tags)


def segments_of(job: Job, tasks: list, reducers: int) -> list[list]:
    """Each partition's segments as a reduce task receives them (packed, then decoded),
    in map-task order, from map tasks over ``tasks`` (lists of records)."""
    outs = [finish_map(job, map_grouped(job, records), reducers) for records in tasks]
    return [[unpack(pack(list(out[p])), allow_pickle=True) for out in outs if out[p][0]]
            for p in range(reducers)]


def plain(segments: list) -> list:
    """The same segments without their cuts: flagged single values, merged whole."""
    return [[s[0], s[1], True] for s in segments]


def word_tasks(n_tasks: int, words: int, seed: int = 7) -> list[list]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(words)] + ["ünï", "ε", "日本"]
    return [[(t * 1000 + i, " ".join(rng.choice(vocab) for _ in range(12)))
             for i in range(words // 6)] for t in range(n_tasks)]


@pytest.mark.parametrize("job", [WordCountCombined(), InMapper()])
@pytest.mark.parametrize("reducers", [1, 3])
def test_partitions_are_cut_into_buckets_by_the_same_hash(job, reducers):
    (records,) = word_tasks(1, 4000)
    parts = finish_map(job, map_grouped(job, records), reducers)
    assert len(parts) == reducers
    for p, (keys, values, cuts) in enumerate(parts):
        assert len(cuts) == BUCKETS and cuts[-1] == len(keys) == len(values)
        for b in range(BUCKETS):
            for k in keys[cuts[b - 1] if b else 0 : cuts[b]]:
                # the partition is the one a plain hash gives, the bucket the rest of it
                assert stable_hash(k) % reducers == p
                assert stable_hash(k) // reducers % BUCKETS == b


@pytest.fixture
def unions(monkeypatch):
    """How many merges took the bucket path (each ends in one union of its buckets)."""
    calls = []
    real = buckets._union

    def counted(parts):
        calls.append(len(parts))
        return real(parts)

    monkeypatch.setattr(buckets, "_union", counted)
    return calls


@pytest.mark.parametrize("job", [WordCountCombined(), InMapper()])
def test_merge_by_bucket_equals_a_whole_merge_in_map_task_order(job, unions):
    tasks = word_tasks(2 * ROUND + 3, MANY)  # rounds of ROUND segments, a short last
    for segments in segments_of(job, tasks, 2):
        got = merge_segments(segments, combined=True)
        assert unions.pop() == BUCKETS and not unions  # (the bucket path was taken)
        want = merge_segments(plain(segments), combined=True)
        assert dict(got) == dict(want)  # lists equal: values in map-task order
    tagged = segments_of(Tagged(), tasks, 2)
    for segments in tagged:
        got = merge_segments(segments, combined=False)
        assert all(v == sorted(v) for v in got.values())  # task order, not bucket order
        assert dict(got) == dict(merge_segments(plain(segments), combined=False))


def test_a_job_of_many_keys_equals_the_sequential_run_on_a_cluster(cluster, tmp_path):
    """Map tasks cut buckets and reduce tasks merge them in the worker processes: the
    result of each job is the sequential one, and each key's values come in task order."""
    paths = []
    for t, records in enumerate(word_tasks(6, 3 * MANY, seed=11)):
        path = tmp_path / f"part-{t}.txt"
        path.write_text("".join(line + "\n" for _, line in records), encoding="utf-8")
        paths.append(str(path))
    split = os.path.getsize(paths[0]) // 2 + 1  # about two tasks a file
    records = list(read_lines(paths))
    with Client(cluster) as client:
        for job in (WordCountCombined(), InMapper()):
            for reducers in (1, 3):
                handle = client.submit(job, read_text(paths, split_bytes=split),
                                       reducers=reducers)
                assert handle.result() == run_sequential(job, records)
        # (keys (path, offset): each task's tag sorts after those of the tasks before it)
        got = client.submit(Tagged(), read_text(paths, split_bytes=split, with_path=True),
                            reducers=2).result()
    assert set(got) == {w for _, line in records for w in line.split()}
    assert all(v == sorted(v) and len(v) == len(set(v)) for v in got.values())
    assert max(map(len, got.values())) > 6  # (several tasks' values for most words)


def test_a_segment_without_buckets_is_merged_whole_in_its_place(unions):
    job = WordCountCombined()
    tasks = word_tasks(2 * ROUND, MANY)
    (segments,) = segments_of(job, tasks, 1)
    want = dict(merge_segments(plain(segments), combined=True))
    for at in (0, 3, ROUND, 2 * ROUND - 1):  # in the first round, a later one, the last
        mixed = list(segments)
        mixed[at] = [mixed[at][0], mixed[at][1]]  # a plain combined segment (a spilled map)
        assert dict(merge_segments(mixed, combined=True)) == want
        flagged = list(segments)
        flagged[at] = [flagged[at][0], flagged[at][1], True]
        assert dict(merge_segments(flagged, combined=True)) == want
        # (by bucket up to the plain segment's round, unless it came first)
        assert unions == ([] if at == 0 else [BUCKETS, BUCKETS])
        unions.clear()


def test_lists_of_values_among_bucketed_segments_keep_their_order(unions):
    """A job without a combiner whose map yields in some tasks (lists of values per key)
    and only map_final in others (single values): each segment merged as what it is."""
    job = InMapper()
    tasks = word_tasks(ROUND + 2, MANY)
    (segments,) = segments_of(job, tasks, 1)
    k, v = segments[5][0], segments[5][1]
    lists = [list(k), [[x, 0] for x in v]]  # this task sent two values for each key
    mixed = segments[:5] + [lists] + segments[6:]
    got = merge_segments(mixed, combined=False)
    assert unions == [BUCKETS]  # (by bucket until the segment of lists)
    want = merge_segments(plain(segments[:5]) + [lists] + plain(segments[6:]), combined=False)
    assert dict(got) == dict(want)


@pytest.mark.parametrize("cuts", [
    lambda c: c[:-1],                       # too few
    lambda c: [c[1], c[0]] + c[2:],         # out of order
    lambda c: c[:-1] + [c[-1] - 1],         # short of the end
    lambda c: [-1] + c[1:],                 # before the start
    lambda c: [float(x) for x in c],        # not ints
    lambda c: "not a list",
])
def test_cuts_that_do_not_fit_their_segment_are_ignored(cuts, unions):
    job = WordCountCombined()
    (segments,) = segments_of(job, word_tasks(ROUND + 1, MANY), 1)
    want = dict(merge_segments(plain(segments), combined=True))
    for at in (0, ROUND):
        bad = list(segments)
        bad[at] = [bad[at][0], bad[at][1], cuts(list(bad[at][2]))]
        assert dict(merge_segments(bad, combined=True)) == want
    assert unions == [BUCKETS]  # (by bucket for the first round when it was not the bad one)


def test_cuts_that_put_a_key_in_two_buckets_fail_rather_than_lose_values():
    job = WordCountCombined()
    (segments,) = segments_of(job, word_tasks(3, MANY), 1)
    keys, values, cuts = segments[1]
    # the same cuts, over the keys in another order: every key now in a wrong bucket
    lying = [list(reversed(keys)), list(reversed(values)), cuts]
    with pytest.raises(ValueError, match="buckets disagree"):
        merge_segments([segments[0], lying, segments[2]], combined=True)


class Keyed(Job):
    """Emits each record's key as the key: the key types a test chooses."""

    def map(self, key, value):
        yield value, 1

    def combine(self, key, values):
        return sum(values)

    def reduce(self, key, values):
        return sum(values)


@pytest.mark.parametrize("keys, cut", [
    (list(range(MANY)), True),                                 # ints: buckets
    ([str(i) for i in range(MANY)], True),                     # strs: buckets
    ([float(i) for i in range(MANY)], False),                  # floats: none (NaN's order)
    ([(i, "x") for i in range(MANY)], False),                  # tuples: none
    ([i if i % 2 else str(i) for i in range(MANY)], False),    # mixed: none
    ([True, False] + list(range(2, MANY)), False),             # bools among ints: none
])
def test_buckets_are_cut_only_for_keys_all_str_or_all_int(keys, cut):
    job = Keyed()
    records = list(enumerate(keys * 2))
    parts = finish_map(job, map_grouped(job, records), 2)
    assert all((type(p[2]) is list) == cut for p in parts)
    segments = [unpack(pack(list(p)), allow_pickle=True) for p in parts]
    got = {}
    for s in segments:
        got.update({k: sum(v) for k, v in merge_segments([s, s], combined=True).items()})
    assert got == {k: 4 for k in keys}


def test_equal_numbers_of_two_types_stay_one_key():
    """1 and 1.0 are one dict key: no buckets may split them (floats send none)."""
    job = Keyed()
    ints = list(range(MANY))
    floats = [float(i) for i in range(MANY)]
    seg_int = unpack(pack(list(finish_map(job, map_grouped(job, enumerate(ints)), 1)[0])),
                     allow_pickle=True)
    seg_float = unpack(pack(list(finish_map(job, map_grouped(job, enumerate(floats)), 1)[0])),
                       allow_pickle=True)
    for order in ([seg_int, seg_float], [seg_float, seg_int], [seg_int] * ROUND + [seg_float]):
        got = merge_segments(order, combined=True)
        assert len(got) == MANY and all(len(v) == len(order) for v in got.values())


class ItemsOf(Job):
    """map_final returns a dict's items (not a generator): the pairs are taken from the
    dict as they are; keys of every kind must still be partitioned and grouped exactly."""

    def map_init(self):
        self.totals = {}

    def map(self, key, value):
        self.totals[value] = self.totals.get(value, 0) + 1

    def map_final(self):
        return self.totals.items()

    def reduce(self, key, counts):
        return sum(counts)


@pytest.mark.parametrize("keys", [
    [f"k{i}" for i in range(MANY)],
    list(range(MANY)),
    [(i, "t") for i in range(300)] + [frozenset({i}) for i in range(50)] + [None, b"b", 2.5],
    ["s", 1, (1, 2)] * 10,
])
def test_a_dict_items_map_final_is_partitioned_and_grouped_exactly(keys):
    job = ItemsOf()
    tasks = [list(enumerate(keys[t::3] + keys[: len(keys) // 2])) for t in range(3)]
    want = Counter()
    for records in tasks:
        want.update(Counter(v for _, v in records))
    for reducers in (1, 3):
        got = {}
        for segments in segments_of(job, tasks, reducers):
            groups = merge_segments(segments, combined=False)
            assert not got.keys() & groups.keys()  # each key in one partition
            got.update((k, sum(v)) for k, v in groups.items())
        assert got == dict(want)
