"""The MapReduce contract users write against: per-task hooks and a reduce that emits,
on real daemons, each checked against the sequential run."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pymapreduce import Client, Job, JobFailed, run_sequential

from .jobs import WordCount

LINES = [(i, f"w{i % 7} x{i % 3} w{i % 5}") for i in range(400)]


class InMapperCombining(Job):
    """Counts in a dict in ``map`` and yields the totals once, in ``map_final``."""

    def map_init(self):
        self.totals = {}
        self.count("map tasks")

    def map(self, key, line):
        for word in line.split():
            self.totals[word] = self.totals.get(word, 0) + 1

    def map_final(self):
        yield from self.totals.items()

    def reduce_init(self):
        self.count("reduce tasks")

    def reduce(self, word, counts):
        return sum(counts)


class Frequent(Job):
    """An emitting reduce: none, one or two pairs per word; and a pair from each reduce
    task's ``reduce_final``."""

    def reduce_init(self):
        self.seen = 0

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        self.seen += 1
        n = sum(counts)
        if n >= 100:
            yield word, n
            yield word.upper(), n * 2

    def reduce_final(self):
        yield f"keys-seen-{id(self)}", self.seen


class MapOnlyWithFinal(Job):
    def map_init(self):
        self.lines = 0

    def map(self, key, line):
        self.lines += 1
        yield key, len(line)

    def map_final(self):
        yield "lines", self.lines


class BadEmitter(WordCount):
    def reduce(self, word, counts):
        yield sum(counts)  # not a pair


def test_task_hooks_run_once_per_task_and_final_hooks_add_output(cluster):
    with Client(cluster) as client:
        handle = client.submit(InMapperCombining(), LINES, map_tasks=6, reducers=3)
        assert handle.result(60) == run_sequential(WordCount(), LINES)
        assert handle.counters == {"map tasks": 6, "reduce tasks": 3}


def test_a_reduce_that_emits_gives_the_list_of_its_pairs(cluster):
    with Client(cluster) as client:
        handle = client.submit(Frequent(), LINES, map_tasks=4, reducers=2)
        result = handle.result(60)
        streamed = list(client.job(handle.job_id).results())
    assert isinstance(result, list) and sorted(streamed) == sorted(result)
    pairs = [p for p in result if not p[0].startswith("keys-seen-")]
    expected = [p for p in run_sequential(Frequent(), LINES) if not p[0].startswith("keys-")]
    assert sorted(pairs) == sorted(expected) and pairs
    seen = [v for k, v in result if k.startswith("keys-seen-")]
    assert len(seen) == 2 and sum(seen) == len(run_sequential(WordCount(), LINES))


def test_a_map_only_job_s_final_hook_adds_its_pairs(cluster):
    with Client(cluster) as client:
        result = client.submit(MapOnlyWithFinal(), LINES, map_tasks=4, reducers=0).result(60)
    assert sorted(v for k, v in result if k == "lines") == [100, 100, 100, 100]
    assert len(result) == len(LINES) + 4


def test_an_emitting_reduce_runs_embedded_as_on_a_cluster():
    def words(pairs):
        return sorted(p for p in pairs if not p[0].startswith("keys-seen-"))

    result = Frequent().run(LINES, workers=1)
    assert isinstance(result, list)
    assert words(result) == words(run_sequential(Frequent(), LINES))


def test_a_reduce_that_yields_no_pair_fails_saying_so(cluster):
    with Client(cluster) as client:
        with pytest.raises(JobFailed, match="BadEmitter.reduce yielded a value of type int, "
                           "not a .key, value. pair") as info:
            client.submit(BadEmitter(), [(0, "a a a b b b")], reducers=1).result(60)
    assert "reduce's output 3" in str(info.value)  # (in the failure's position: its owner's)


class InvertedIndex(Job):
    """Which files each word appears in: records know their file (read_text with_path)."""

    def map(self, key, line):
        path, _offset = key
        for word in line.split():
            yield word, path.rsplit("/", 1)[-1]

    def reduce(self, word, names):
        return sorted(set(names))


def test_records_know_their_file_and_a_directory_means_its_files(cluster, tmp_path):
    from pymapreduce import read_text

    docs = {"a.txt": "apple banana\ncherry\n", "b.txt": "banana\n", "c.txt": "cherry apple\n"}
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for name, text in docs.items():
        (folder / ("sub" if name == "c.txt" else "") / name).write_text(text)
    (folder / "_SUCCESS").write_text("")  # markers and hidden files are not input
    (folder / ".hidden").write_text("secret\n")
    with Client(cluster) as client:
        index = client.submit(InvertedIndex(), read_text(str(folder), with_path=True),
                              reducers=2).result(60)
    assert index == {"apple": ["a.txt", "c.txt"], "banana": ["a.txt", "b.txt"],
                     "cherry": ["a.txt", "c.txt"]}


def test_a_file_named_twice_is_read_twice_as_hadoop_spark_and_mrjob_read_it(cluster,
                                                                             tmp_path):
    import gzip

    from pymapreduce import read_files, read_text
    from pymapreduce.inputs import plan_file_splits

    (tmp_path / "a.txt").write_text("x y\nx\n")
    (tmp_path / "b.txt").write_text("y\n")
    with gzip.open(tmp_path / "c.gz", "wt") as f:
        f.write("z\n")
    a, b, c = (str(tmp_path / n) for n in ("a.txt", "b.txt", "c.gz"))
    glob = str(tmp_path / "*.txt")
    twice = read_text([a, glob, c, c])  # a.txt by its name and by the glob; c.gz twice
    assert twice.files() == [a, a, b, c, c]
    splits, total = plan_file_splits(twice, 2)
    size = (tmp_path / "a.txt").stat().st_size
    assert total == 2 * size + 2 + 2 * (tmp_path / "c.gz").stat().st_size
    with Client(cluster) as client:
        got = client.submit(WordCount(), twice).result(60)
        assert got == {"x": 4, "y": 3, "z": 2}
        whole = client.submit(FileSizes(), read_files([a, a, b])).result(60)
    assert whole == {"a.txt": 2 * size, "b.txt": 2}


class FileSizes(Job):
    def map(self, path, data):
        yield path.rsplit("/", 1)[-1], len(data)

    def reduce(self, name, sizes):
        return sum(sizes)


def test_compressed_inputs_are_read_by_their_extension(cluster, tmp_path):
    import bz2
    import gzip
    import lzma

    import zstandard

    from pymapreduce import read_text

    text = "".join(f"w{i % 11} x{i % 4}\n" for i in range(3000))
    (tmp_path / "plain.txt").write_text(text)
    writers = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open, "zst": zstandard.open}
    for ext, opener in writers.items():
        with opener(tmp_path / f"part.{ext}", "wt") as f:
            f.write(text)
    with Client(cluster) as client:
        expected = client.submit(WordCount(), read_text(str(tmp_path / "plain.txt"))).result(60)
        for ext in writers:
            got = client.submit(WordCount(), read_text(str(tmp_path / f"part.{ext}"))).result(60)
            assert got == expected, ext
        (tmp_path / "cut.xz").write_bytes(lzma.compress(text.encode())[:200])
        with pytest.raises(JobFailed, match="cut.xz"):
            client.submit(WordCount(), read_text(str(tmp_path / "cut.xz"))).result(60)


class SumBy(Job):
    def map(self, key, row):
        yield row["city"], int(row["sales"])

    def reduce(self, city, sales):
        return sum(sales)


class CountKinds(Job):
    def map(self, key, record):
        yield record["kind"], 1

    def reduce(self, kind, ones):
        return sum(ones)


class Sizes(Job):
    def map(self, path, data):
        yield path.rsplit("/", 1)[-1], len(data)


class KindsOnly(Job):
    def map(self, key, record):
        yield record["kind"], key


def test_lines_their_format_cannot_read_are_skipped_as_bad_records(cluster, tmp_path):
    """With skip_bad_records, a line that is not JSON, or not a CSV row of its header, is a
    bad record like one whose map raises: it fails twice, is then left out by its ordinal
    and listed with its file and offset; the lines around it are read. Without it, the job
    fails naming the line (test_csv_jsonl_and_whole_file_inputs)."""
    from pymapreduce import read_csv, read_jsonl

    lines = [f'{{"kind": "k{i % 3}", "i": {i}}}' for i in range(30)]
    lines[4] = "{not json"
    lines[17] = '{"kind": '
    (tmp_path / "some-bad.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "rows.csv").write_text("city,sales\nparis,3\noslo,4,extra\n\"bad\"quote\",1\n"
                                       "oslo,5\n")
    good = [json.loads(x) for i, x in enumerate(lines) if i not in (4, 17)]
    with Client(cluster) as client:
        job = CountKinds()
        job.skip_bad_records = True
        handle = client.submit(job, read_jsonl(str(tmp_path / "some-bad.jsonl")))
        assert handle.result(60) == dict(Counter(r["kind"] for r in good))
        skipped = sorted(handle.status()["skipped"], key=lambda s: s["record"])
        assert [(s["record"], s["path"].endswith("some-bad.jsonl")) for s in skipped] == \
            [(4, True), (17, True)]
        offsets = [sum(len(x) + 1 for x in lines[:i]) for i in (4, 17)]
        assert [s["key"] for s in skipped] == [str(o) for o in offsets], skipped
        # map-only: its records are the lines read, in order
        pairs = client.submit(KindsOnly(), read_jsonl(str(tmp_path / "some-bad.jsonl")),
                              reducers=0)
        with pytest.raises(JobFailed, match="BadRecord"):
            pairs.result(60)  # (no skipping asked for)
        mapped = KindsOnly()
        mapped.skip_bad_records = 2
        out = client.submit(mapped, read_jsonl(str(tmp_path / "some-bad.jsonl")),
                            reducers=0).result(60)
        assert sorted(v for _, v in out) == sorted(
            sum(len(x) + 1 for x in lines[:i]) for i in range(30) if i not in (4, 17))
        sums = SumBy()
        sums.skip_bad_records = True
        handle = client.submit(sums, read_csv(str(tmp_path / "rows.csv")))
        assert handle.result(60) == {"paris": 3, "oslo": 5}
        assert sorted(s["record"] for s in handle.status()["skipped"]) == [1, 2]
        # past the number of bad records allowed: the job fails, saying so
        one = CountKinds()
        one.skip_bad_records = 1
        with pytest.raises(JobFailed, match="more than 1 bad records"):
            client.submit(one, read_jsonl(str(tmp_path / "some-bad.jsonl"))).result(60)


class SortedKinds(Job):
    total_order = True  # (no reduce: a plain sort, its keys sampled from the input)

    def map(self, key, record):
        yield record["i"], record["kind"]


def test_a_sorted_job_and_a_line_nested_past_json_s_depth_skip_their_bad_lines(
        cluster, tmp_path):
    """A total_order job samples its input's first lines to cut its key ranges: with
    skip_bad_records a bad line among them is left out there too, not the submission's
    error. A line nested deeper than JSON's reader goes (RecursionError, no ValueError) is
    a line that is not JSON like any other: skipped with skip_bad_records, and without it
    the job fails naming the line."""
    from pymapreduce import read_jsonl

    lines = [f'{{"kind": "k{i % 3}", "i": {i}}}' for i in range(30)]
    lines[1] = "{not json"
    lines[17] = "[" * 100_000
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    good = [(i, f"k{i % 3}") for i in range(30) if i not in (1, 17)]
    with Client(cluster) as client:
        job = SortedKinds()
        job.skip_bad_records = True
        handle = client.submit(job, read_jsonl(str(path)), reducers=2)
        assert handle.result(60) == good
        assert sorted(s["record"] for s in handle.status()["skipped"]) == [1, 17]
        counts = CountKinds()
        counts.skip_bad_records = True
        handle = client.submit(counts, read_jsonl(str(path)))
        assert handle.result(60) == dict(Counter(kind for _, kind in good))
        assert sorted(s["record"] for s in handle.status()["skipped"]) == [1, 17]
        lines[1] = lines[0]  # only the deep line is bad now
        path.write_text("\n".join(lines) + "\n")
        offset = sum(len(x) + 1 for x in lines[:17])
        with pytest.raises(JobFailed, match=f"BadRecord.*at byte {offset} is not JSON"):
            client.submit(CountKinds(), read_jsonl(str(path))).result(60)


def test_a_csv_header_that_is_no_csv_row_is_never_skipped_as_a_bad_record(cluster, tmp_path):
    """Every file of a read_csv input must have the first file's header, or its rows would
    be read under the wrong columns: a header line that is not even a CSV row fails the
    job with skip_bad_records too, rather than be skipped as a bad record and its file's
    rows read under the first file's columns."""
    from pymapreduce import read_csv

    (tmp_path / "a.csv").write_text("city,sales\nparis,3\n")
    (tmp_path / "b.csv").write_text('sales,"ci"ty\n4,7\n')
    with Client(cluster) as client:
        sums = SumBy()
        sums.skip_bad_records = True
        handle = client.submit(sums, read_csv([str(tmp_path / "a.csv"),
                                               str(tmp_path / "b.csv")]))
        with pytest.raises(JobFailed, match="b.csv: the line at byte 0 is not a CSV row"):
            handle.result(60)


def test_csv_jsonl_and_whole_file_inputs(cluster, tmp_path):
    from pymapreduce import read_csv, read_files, read_jsonl

    rows = [("paris", 3), ("oslo", 4), ('"new, york"', 5), ("oslo", 1)] * 250
    for n in range(2):  # two files, each with its header
        (tmp_path / f"sales{n}.csv").write_text(
            "city,sales\n" + "".join(f"{c},{s}\n" for c, s in rows))
    (tmp_path / "events.jsonl").write_text(
        "".join(f'{{"kind": "k{i % 3}", "i": {i}}}\n' for i in range(900)) + "\n")
    (tmp_path / "bad.jsonl").write_text('{"kind": "a"}\n{not json\n')
    with Client(cluster) as client:
        sales = client.submit(SumBy(), read_csv(str(tmp_path / "sales*.csv"),
                                                split_bytes=4096)).result(60)
        assert sales == {"paris": 1500, "oslo": 2500, "new, york": 2500}
        kinds = client.submit(CountKinds(), read_jsonl(str(tmp_path / "events.jsonl"),
                                                       split_bytes=4096)).result(60)
        assert kinds == {"k0": 300, "k1": 300, "k2": 300}
        # the same line on every attempt: the job fails once a second attempt says so
        # (it took --max-attempts, 4, as for a lost worker)
        with pytest.raises(JobFailed, match="failed 2 times; last error: BadRecord: .*"
                           "bad.jsonl: the line at byte 14 is not JSON"):
            client.submit(CountKinds(), read_jsonl(str(tmp_path / "bad.jsonl"))).result(60)
        (tmp_path / "bad.csv").write_text("city,sales\nparis,3,extra\n")
        with pytest.raises(JobFailed, match="failed 2 times; last error: BadRecord: .*"
                           "bad.csv: the line at byte 11 has 3 CSV fields"):
            client.submit(SumBy(), read_csv(str(tmp_path / "bad.csv"))).result(60)
        sizes = client.submit(Sizes(), read_files(str(tmp_path / "*.csv")),
                              reducers=0).result(60)
    assert sorted(sizes) == sorted((p.name, p.stat().st_size)
                                   for p in tmp_path.glob("*.csv"))
