"""What a new user meets on day one, checked against a direct computation: files that
open with a UTF-8 byte-order mark, a dict result whose keys a ``reduce_final``
repeats, ``job_file()`` in a job that shipped no files, and a total-order job's ``map``
that raises on the client's sample."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pymapreduce import Client, Job, JobFailed, job_file, read_csv, read_jsonl, read_text
from pymapreduce.errors import PyMapReduceError

from .conftest import ROOT, pmr

BOM = "\ufeff"


class SumBy(Job):
    def map(self, offset, row):
        yield row["city"], int(row["sales"])

    def reduce(self, city, sales):
        return sum(sales)


class Kinds(Job):
    def map(self, offset, event):
        yield event["kind"], 1

    def reduce(self, kind, ones):
        return sum(ones)


class Lines(Job):
    def map(self, key, line):
        yield key, line


def test_a_utf8_byte_order_mark_is_not_part_of_a_file_s_first_line(cluster, tmp_path):
    rows = "".join(f"{c},{s}\n" for c, s in [("paris", 3), ("oslo", 4), ("lima", 5)] * 300)
    # Excel's "CSV UTF-8" opens with a byte-order mark; another file of the job has none
    (tmp_path / "excel.csv").write_text(BOM + "city,sales\n" + rows, encoding="utf-8")
    (tmp_path / "plain.csv").write_text("city,sales\n" + rows, encoding="utf-8")
    (tmp_path / "events.jsonl").write_text(
        BOM + "".join(json.dumps({"kind": f"k{i % 3}", "é": i}) + "\n" for i in range(900)),
        encoding="utf-8")
    text = BOM + "".join(f"zoé {i}\n" for i in range(2000))
    (tmp_path / "notes.txt").write_text(text, encoding="utf-8")
    expected_lines, offset = [], 0  # offsets count the mark's 3 bytes
    for i in range(2000):
        expected_lines.append((offset, f"zoé {i}"))
        offset += len(f"zoé {i}\n".encode()) + (3 if i == 0 else 0)
    with Client(cluster) as client:
        for encoding in ("utf-8", "utf-8-sig", "UTF8"):
            sales = client.submit(SumBy(), read_csv(str(tmp_path / "*.csv"), split_bytes=2048,
                                                    encoding=encoding)).result(60)
            assert sales == {"paris": 1800, "oslo": 2400, "lima": 3000}, encoding
        kinds = client.submit(Kinds(), read_jsonl(str(tmp_path / "events.jsonl"),
                                                  split_bytes=4096)).result(60)
        assert kinds == {"k0": 300, "k1": 300, "k2": 300}
        for encoding in ("utf-8", "utf-8-sig"):
            lines = client.submit(Lines(), read_text(str(tmp_path / "notes.txt"),
                                                     split_bytes=1000, encoding=encoding),
                                  reducers=0).result(60)
            assert sorted(lines) == expected_lines, encoding
        # a byte-order mark anywhere but at a file's start is text, as it was
        (tmp_path / "inner.txt").write_text("a\n" + BOM + "b\n", encoding="utf-8")
        lines = client.submit(Lines(), read_text(str(tmp_path / "inner.txt")),
                              reducers=0).result(60)
        assert sorted(lines) == [(0, "a"), (2, BOM + "b")]
        # Latin-1 reads the mark's bytes as the characters they are
        lines = client.submit(Lines(), read_text(str(tmp_path / "excel.csv"),
                                                 encoding="latin-1"), reducers=0).result(60)
        assert sorted(lines)[0] == (0, "ï»¿city,sales")


class KeysPerTask(Job):
    """A word count whose reduce tasks each report how many keys they reduced, under one
    key: the output holds that key once per reduce task."""

    def map(self, offset, line):
        for word in line.split():
            yield word, 1

    def reduce_init(self):
        self.keys = 0

    def reduce(self, word, ones):
        self.keys += 1
        return sum(ones)

    def reduce_final(self):
        yield "keys reduced", self.keys


def test_a_dict_result_refuses_a_key_that_reduce_final_yields_in_every_task(cluster):
    lines = [(i, f"w{i % 50} x{i % 7}") for i in range(1000)]
    with Client(cluster) as client:
        handle = client.submit(KeysPerTask(), lines, map_tasks=4, reducers=3)
        # (a dict kept one task's count and lost the other two, without a word)
        with pytest.raises(PyMapReduceError, match="holds the key 'keys reduced' more than "
                           "once .*partitions 0 and 1.* read every pair with results()"):
            handle.result(60)
        pairs = list(handle.results())
        assert sum(v for k, v in pairs if k == "keys reduced") == 57
        assert len([k for k, v in pairs if k == "keys reduced"]) == 3
        assert dict(p for p in pairs if p[0] != "keys reduced") == {
            **{f"w{n}": 20 for n in range(50)},
            **{f"x{n}": len(range(n, 1000, 7)) for n in range(7)}}
        # a reduce_final whose key is its task's own is a dict as ever
        assert client.submit(KeysPerTask(), lines, reducers=1).result(60)["keys reduced"] == 57


class StopWords(Job):
    """Opens its stop words through job_file(), as docs/travel.md shows."""

    def map_init(self):
        with open(job_file("stop.txt")) as f:
            self.stop = set(f.read().split())

    def map(self, key, line):
        for word in line.split():
            if word not in self.stop:
                yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


def test_job_file_of_a_job_that_shipped_none_fails_in_the_task(tmp_path, monkeypatch):
    lines = [(i, f"the w{i % 4} of") for i in range(40)]
    (tmp_path / "stop.txt").write_text("the of\n")
    # the embedded cluster's workers run in the user's directory, where stop.txt lies: a
    # job that forgot to ship it ran here, then failed (or read another stop.txt) on a
    # cluster's workers, which open it in their own directory
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobFailed, match="no job file 'stop.txt' was shipped with this job: "
                       "it ships none"):
        StopWords().run(lines, workers=1)
    shipped = StopWords().run(lines, workers=1, files=[str(tmp_path / "stop.txt")])
    assert shipped == {f"w{n}": 10 for n in range(4)}
    assert job_file("stop.txt") == "stop.txt"  # outside a task: the name itself


def test_a_total_order_map_that_raises_on_the_sample_names_the_job_file_s_line(tmp_path):
    (tmp_path / "sortjob.py").write_text(
        "from pymapreduce import Job\n"
        "\n"
        "class ByNumber(Job):\n"
        "    total_order = True\n"
        "    def map(self, offset, line):\n"
        "        yield int(line.split()[1]), line\n")
    (tmp_path / "in.txt").write_text("".join(f"line{i} x\n" for i in range(100)))
    proc = subprocess.run(pmr("run", "sortjob.py:ByNumber", "in.txt", "--workers", "1"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    # it said "pymapreduce: error: ValueError: invalid literal ..." alone, exit code 2 (bad
    # usage), the client's copy of the job's code named "<dynamic-code>", not sortjob.py
    assert proc.returncode == 1, proc.stderr
    assert f'File "{tmp_path / "sortjob.py"}", line 6, in map' in proc.stderr
    assert "on the sample of the inputs that total_order reads" in proc.stderr
    assert proc.stderr.splitlines()[-1] == ("pymapreduce: error: your code raised "
                                            "ValueError: invalid literal for int() with "
                                            "base 10: 'x'")
