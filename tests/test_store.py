"""Inputs and outputs as URLs, against moto's S3-compatible server run as a real process
on loopback, and part files written by the reducers themselves, committed once per
partition (a worker killed while it writes leaves no part file behind)."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pymapreduce import Client, ConfigError, InputError, Job, JobFailed, JobTimeout, read_text
from pymapreduce.client.output import encode_lines, write_output
from pymapreduce.kernels import run_sequential
from pymapreduce.lines import read_split
from pymapreduce.store.urls import check_storage_options

from .conftest import FAST, ROOT, pmr, wait_workers
from .jobs import WordCount

pytest.importorskip("s3fs")
pytest.importorskip("moto")

@pytest.fixture
def bucket(s3, request):
    """A new bucket (named for the test) and an S3 filesystem to fill and read it."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    name = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:50].strip("-")
    fs.mkdir(name)
    return fs, name, {"endpoint_url": s3}


class SlowRepr:
    """A value whose JSON text (``repr``) is slow the first time it is written: the
    worker writing it notes its pid and sleeps, to be killed mid-write."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __repr__(self) -> str:
        if not os.path.exists(self.flag):
            with open(self.flag, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
        return "slow"


class ManyThenSlow(Job):
    """Partition 0's output: 20,000 small pairs (more than one written chunk), then one
    whose value writes slowly; partition 1: a few pairs."""

    pickle_results = True
    reducers = 2

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def map(self, key, value):
        yield key, value

    def partition(self, key, reducers):
        return 0 if isinstance(key, int) else 1

    def reduce(self, key, values):
        return SlowRepr(self.flag) if key == 19_999 else sum(values)


def parts_and_text(root) -> dict:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(root.iterdir())
            if p.is_file()}


# -- S3 through moto -----------------------------------------------------------------------

def test_word_count_from_s3_with_gz_to_s3_part_files(bucket):
    fs, name, opts = bucket
    lines = [f"w{i % 37} x{i % 5} é{i % 3}" for i in range(3000)]
    texts = ["".join(x + "\n" for x in lines[n::3]) for n in range(3)]
    for n, text in enumerate(texts[:2]):
        fs.pipe_file(f"{name}/in/f{n}.txt", text.encode())
    fs.pipe_file(f"{name}/in/f2.txt.gz", gzip.compress(texts[2].encode()))
    fs.pipe_file(f"{name}/in/_SUCCESS", b"")  # (skipped: a marker, as in a directory)
    expected = run_sequential(WordCount(), ((0, x) for t in texts for x in t.splitlines()))

    inputs = read_text(f"s3://{name}/in", split_bytes=4096, storage_options=opts)
    assert [u.rsplit("/", 1)[1] for u in inputs.files()] == ["f0.txt", "f1.txt", "f2.txt.gz"]
    result = WordCount().run(inputs, workers=2, reducers=3,
                             output_dir=f"s3://{name}/out", storage_options=opts)
    assert result == expected
    listed = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{name}/out", refresh=True))
    assert listed == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]  # no _temporary
    pairs = [json.loads(line) for i in range(3)
             for line in fs.cat_file(f"{name}/out/part-{i:05d}").decode().splitlines()]
    assert dict(pairs) == expected and len(pairs) == len(expected)
    for i in range(3):  # each file sorted by key, as the client wrote them before
        keys = [json.loads(x)[0] for x in fs.cat_file(f"{name}/out/part-{i:05d}").decode()
                .splitlines()]
        assert keys == sorted(keys)


def test_results_false_keeps_nothing_and_overwrite_holds_for_urls(bucket, tmp_path):
    fs, name, opts = bucket
    fs.pipe_file(f"{name}/in.txt", b"a b a\nc a\n" * 50)
    inputs = read_text(f"s3://{name}/in.txt", storage_options=opts)
    out = f"s3://{name}/out"
    status = WordCount().run(inputs, workers=1, reducers=3, output_dir=out,
                             storage_options=opts, results=False)
    assert status["state"] == "succeeded"
    text = b"".join(fs.cat_file(f"{name}/out/part-{i:05d}") for i in range(3)).decode()
    assert sorted(json.loads(x) for x in text.splitlines()) == [["a", 150], ["b", 50],
                                                                ["c", 50]]
    with pytest.raises(ConfigError, match="not empty"):  # before anything runs
        WordCount().run(inputs, workers=1, output_dir=out, storage_options=opts,
                        overwrite=False)
    # overwrite: fewer partitions than before, the extra part files of the last run go
    WordCount().run(inputs, workers=1, reducers=1, output_dir=out, storage_options=opts)
    listed = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{name}/out", refresh=True))
    assert listed == ["_SUCCESS", "part-00000"]
    # byte for byte what the client's writer makes of the same result
    write_output(tmp_path / "ref", [(["a", "b", "c"], [150, 50, 50])])
    assert fs.cat_file(f"{name}/out/part-00000") == (tmp_path / "ref/part-00000").read_bytes()


def test_cli_reads_and_writes_s3_with_the_endpoint_from_the_environment(bucket, tmp_path):
    fs, name, opts = bucket
    fs.pipe_file(f"{name}/logs/a.txt", b"x y\ny\n")
    fs.pipe_file(f"{name}/logs/b.txt.gz", gzip.compress(b"z y\n"))
    job = tmp_path / "count.py"
    job.write_text("from pymapreduce import Job\n\nclass Count(Job):\n"
                   "    def map(self, k, line):\n        for w in line.split():\n"
                   "            yield w, 1\n\n    def reduce(self, w, ones):\n"
                   "        return sum(ones)\n")
    env = {**os.environ, "FSSPEC_S3_ENDPOINT_URL": opts["endpoint_url"]}
    run = [*pmr("run", f"{job}:Count", f"s3://{name}/logs/*", "--workers", "1",
                "--reducers", "2", "--output", f"s3://{name}/counts")]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    text = b"".join(fs.cat_file(f"{name}/counts/part-{i:05d}") for i in range(2)).decode()
    assert sorted(json.loads(x) for x in text.splitlines()) == [["x", 1], ["y", 3], ["z", 1]]
    assert fs.exists(f"{name}/counts/_SUCCESS")
    again = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert again.returncode == 2 and "not empty" in again.stderr  # refused: no --overwrite


def test_csv_jsonl_and_whole_objects_from_s3(bucket):
    from pymapreduce import read_csv, read_files, read_jsonl

    fs, name, opts = bucket
    fs.pipe_file(f"{name}/t.csv", b"k,v\na,1\nb,2\na,3\n")
    fs.pipe_file(f"{name}/t.jsonl", b'{"k": "a"}\n\n{"k": "b"}\n')

    class Rows(Job):
        def map(self, offset, row):
            yield (row["k"] if isinstance(row, dict) else "file"), 1

        def reduce(self, k, ones):
            return sum(ones)

    assert Rows().run(read_csv(f"s3://{name}/t.csv", storage_options=opts),
                      workers=1) == {"a": 2, "b": 1}
    assert Rows().run(read_jsonl(f"s3://{name}/t.jsonl", storage_options=opts),
                      workers=1) == {"a": 1, "b": 1}

    class Sizes(Job):
        def map(self, path, data):
            yield path.rsplit("/", 1)[1], len(data)

    got = dict(Sizes().run(read_files(f"s3://{name}/t.*", storage_options=opts), workers=1))
    assert got == {"t.csv": 16, "t.jsonl": 23}  # as stored, byte for byte


def test_missing_bucket_or_object_is_a_clear_error_that_loses_nothing(bucket):
    fs, name, opts = bucket
    with pytest.raises(InputError, match="no such object or bucket"):
        read_text("s3://no-such-bucket-here/x.txt", storage_options=opts).files()
    with pytest.raises(InputError, match="no such object or bucket"):
        read_text(f"s3://{name}/missing.txt", storage_options=opts).files()
    with pytest.raises(InputError, match="matches no"):
        read_text(f"s3://{name}/*.nothing", storage_options=opts).files()
    fs.pipe_file(f"{name}/in.txt", b"a\n")
    with pytest.raises(ConfigError, match="no such bucket"):  # before the job runs
        WordCount().run(read_text(f"s3://{name}/in.txt", storage_options=opts), workers=1,
                        output_dir="s3://no-such-bucket-here/out", storage_options=opts)

    inputs = read_text(f"s3://{name}/in.txt", storage_options=opts)
    ranges = [[url, 0, 2] for url in inputs.files()]
    fs.rm_file(f"{name}/in.txt")  # gone after it was listed: the job is refused at once
    with pytest.raises(InputError, match="no such object"):
        WordCount().run(inputs, workers=1)
    with pytest.raises(InputError, match="no such object"):  # ... and a worker's read fails
        list(read_split(ranges, storage=opts))


def test_credentials_never_travel_with_a_job():
    for options in ({"key": "AKIA"}, {"secret": "s"}, {"token": "t"},
                    {"client_kwargs": {"aws_secret_access_key": "s"}},
                    {"headers": {"Authorization": "Bearer x"}}):
        with pytest.raises(ConfigError, match="credential"):
            check_storage_options(options)
        with pytest.raises(ConfigError, match="credential"):
            read_text("s3://b/k", storage_options=options)
    with pytest.raises(ConfigError, match="password"):
        read_text("https://user:pw@example.invalid/x.txt").files()
    with pytest.raises(ConfigError, match="credential"):
        read_text("https://example.invalid/x.txt?X-Amz-Signature=abc").files()
    assert check_storage_options({"endpoint_url": "http://h:1", "anon": False,
                                  "client_kwargs": {"region_name": "eu"}}) == {
        "endpoint_url": "http://h:1", "anon": False, "client_kwargs": {"region_name": "eu"}}


@pytest.mark.parametrize("blocked,needs", [("s3fs", "s3fs"), ("fsspec", "fsspec")])
def test_a_missing_package_is_named_with_how_to_install_it(blocked, needs):
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            "from pymapreduce import read_text\n"
            "read_text('s3://bucket/logs/*.gz').files()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "StoreUnavailable" in last and needs in last
    assert "pip install 'pymapreduce[s3]'" in last


def test_a_hostile_client_cannot_send_credentials_or_odd_outputs_through_the_broker(cluster):
    """The broker checks what a SUBMIT says about outputs and storage (the client library
    refuses earlier; a hand-made SUBMIT meets the broker's own check)."""
    from pymapreduce.broker.submission import output_spec, storage_option

    with pytest.raises(ValueError, match="credential"):
        storage_option({"secret": "x"})
    with pytest.raises(ValueError, match="output must be"):
        output_spec({"url": ""})
    with pytest.raises(ValueError, match="output must be"):
        output_spec({"url": "x" * 5000})
    assert output_spec({"url": "s3://b/o", "results": 0}) == {
        "url": "s3://b/o", "storage": {}, "results": True}
    with Client(cluster) as client:  # a hand-made SUBMIT with a credential: refused
        from pymapreduce.client.submit import build_submission
        from pymapreduce.errors import PyMapReduceError
        from pymapreduce.patterns import protocol as P

        sub = build_submission(WordCount(), [(0, "a")], slots=1, map_tasks=1, reducers=1,
                               name=None)
        sub.body["output"] = {"url": "/tmp/x", "storage": {"password": "p"}}
        with pytest.raises(PyMapReduceError, match="credential"):
            client._request(P.SUBMIT, sub.body, sub.blobs)
        assert client.jobs() == []


# -- direct output on a shared file system ---------------------------------------------------

def test_a_worker_killed_while_writing_leaves_no_partial_or_second_part_file(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    flag = tmp_path / "writer.pid"
    out = tmp_path / "out"
    records = [(i, 1) for i in range(20_000)] + [("a", 2), ("b", 3)]
    with Client(address) as client:
        handle = client.submit(ManyThenSlow(str(flag)), records, map_tasks=4,
                               output_dir=out)
        deadline = time.monotonic() + 60
        while not (flag.exists() and flag.read_text()):
            assert time.monotonic() < deadline, "the slow write never began"
            time.sleep(0.02)
        temps = [p for p in (out / "_temporary").rglob("part-*")]
        assert temps and temps[0].stat().st_size > 0  # its first chunk is on disk
        os.kill(int(flag.read_text()), signal.SIGKILL)  # mid-write
        result = handle.result(60)
    assert len(result) == 20_002 and result["a"] == 2 and result[19_999] is not None
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    files = parts_and_text(out)
    lines0 = files["part-00000"].splitlines()
    assert len(lines0) == 20_000 and lines0[-1] == '[19999, "slow"]'  # repr, as before
    # byte for byte what the client's writer made of the same partition
    write_output(tmp_path / "ref", [(list(range(20_000)), [1] * 19_999 + [result[19_999]])])
    assert (out / "part-00000").read_bytes() == (tmp_path / "ref/part-00000").read_bytes()
    assert files["part-00001"] == encode_lines(["a", "b"], [2, 3])


def test_total_order_part_files_stay_in_key_order_and_empty_partitions_exist(cluster, tmp_path):
    class Sorted(Job):
        total_order = True

        def map(self, key, value):
            yield value, key

    records = [(i, (i * 7919) % 1000) for i in range(1000)]
    with Client(cluster) as client:
        client.submit(Sorted(), records, map_tasks=3, reducers=4, output_dir=tmp_path / "o",
                      results=False).wait(60)
        with pytest.raises(Exception, match="results=False"):
            client.submit(Sorted(), records, reducers=2, output_dir=tmp_path / "p",
                          results=False).result(60)
    keys = [json.loads(x)[0] for i in range(4)
            for x in (tmp_path / "o" / f"part-{i:05d}").read_text().splitlines()]
    assert keys == sorted(v for _, v in records)


def test_empty_partitions_are_empty_part_files(cluster, tmp_path):
    with Client(cluster) as client:
        handle = client.submit(WordCount(), [(0, "a")], reducers=5, output_dir=tmp_path / "o")
        assert handle.result(60) == {"a": 1}
    names = sorted(os.listdir(tmp_path / "o"))
    assert names == ["_SUCCESS"] + [f"part-{i:05d}" for i in range(5)]
    assert sum((tmp_path / "o" / n).stat().st_size for n in names) == len('["a", 1]\n')


def test_a_multi_step_job_writes_its_last_steps_output_and_a_failed_job_no_part(cluster,
                                                                              tmp_path):
    from .test_steps import RECORDS, Pipeline

    class Boom(WordCount):
        def reduce(self, word, counts):
            raise RuntimeError("no")

    out = tmp_path / "o"
    with Client(cluster) as client:
        expected = client.submit(Pipeline(), RECORDS, reducers=2).result(60)
        assert client.submit(Pipeline(), RECORDS, reducers=2, output_dir=out).result(
            60) == expected
        pairs = [json.loads(x) for p in sorted(out.glob("part-*"))
                 for x in p.read_text().splitlines()]
        assert dict(pairs) == expected
        with pytest.raises(Exception, match="no"):
            client.submit(Boom(), [(0, "a")], reducers=1, output_dir=tmp_path / "f").wait(60)
    assert os.listdir(tmp_path / "f") == []  # no part file, no _SUCCESS, no _temporary


def test_forged_commit_records_are_refused():
    import msgpack

    from pymapreduce.errors import UndecodableValue
    from pymapreduce.store.commit import read_record
    from pymapreduce.store.output import temp_name

    assert read_record(b"") is None
    good = msgpack.packb([[], [], {"attempt": 7, "records": 0, "bytes": 0}])
    assert read_record(good)["attempt"] == 7
    for bad in (msgpack.packb([[], []]), msgpack.packb([[], [], {"attempt": "../../x"}]),
                msgpack.packb([[], [], {"attempt": -1, "records": 0, "bytes": 0}]), b"\xc1"):
        with pytest.raises(UndecodableValue):
            read_record(bad)
    # the name a client renames is made from the job id, the attempt and the part only
    # (the job's directory: its safe name and a hash of the exact id)
    import hashlib

    def digest(job_id: str) -> str:
        return hashlib.sha256(job_id.encode()).hexdigest()[:16]

    assert temp_name("../../etc/x", 255, 3) == \
        f"_temporary/_.._etc_x-{digest('../../etc/x')}/ff/part-00003"
    assert temp_name("..", 1, 0) == f"_temporary/job-{digest('..')}/1/part-00000"


def _kept_results(tmp_path):
    """An empty output directory, and one partition's bytes as the broker keeps them (its
    data, then the commit record of attempt 5), the output's spec and a decoder."""
    import msgpack

    from pymapreduce.patterns.records import pack

    out = tmp_path / "o"
    out.mkdir()
    data = b"\x93" + pack([["k"], [1]])[1:] + msgpack.packb(
        {"attempt": 5, "records": 1, "bytes": 9})
    output = {"url": str(out), "storage": {}, "results": True}
    return out, data, output, lambda part, blob: (["k"], [1])  # (the handle's decoder)


def test_a_part_file_the_client_cannot_see_is_written_from_the_kept_results(tmp_path):
    """A local output_dir that the workers do not share (a remote cluster): the commit
    finds no attempt file, and writes the part file from the data the broker kept, as
    the client did before; without kept results it says what is wrong."""
    from pymapreduce.store.commit import OutputMissing, commit_job

    out, data, output, decode = _kept_results(tmp_path)
    commit_job(output, "j", {"parts": 2}, [(0, data), (1, b"")], decode=decode)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert (out / "part-00000").read_text() == '["k", 1]\n'
    (out / "part-00000").unlink()
    with pytest.raises(OutputMissing, match="share"):
        commit_job({**output, "results": False}, "j", {"parts": 1}, [(0, data)],
                   decode=decode)
    assert "_SUCCESS" not in os.listdir(out)


def test_a_part_file_the_client_cannot_write_leaves_nothing_half_written(tmp_path,
                                                                       monkeypatch):
    """The client writes a part file from the kept results and its disk fills up: a
    clear error naming the file, no half-written file, no _SUCCESS; with room again,
    the commit runs again and completes."""
    import errno

    from pymapreduce.store.commit import OutputNotWritten, commit_job
    from pymapreduce.store.output import Location

    out, data, output, decode = _kept_results(tmp_path)
    write_lines = Location.write_lines

    def full(self, name, keys, values):
        with open(self.path(name), "w") as f:
            f.write('["k", ')  # (some of it, then the disk is full)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Location, "write_lines", full)
    with pytest.raises(OutputNotWritten, match="part-00001.*No space left"):
        commit_job(output, "j", {"parts": 2}, [(0, b""), (1, data)], decode=decode)
    assert sorted(os.listdir(out)) == ["part-00000"]  # (the empty partition's, complete)
    monkeypatch.setattr(Location, "write_lines", write_lines)
    commit_job(output, "j", {"parts": 2}, [(0, b""), (1, data)], decode=decode)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert (out / "part-00001").read_text() == '["k", 1]\n'


def test_http_inputs_from_a_server_that_reads_no_byte_range(tmp_path):
    """``http://`` objects: Python's own server answers no ranged GET, so each object is
    read whole, from the start (one split each), and the count is still exact."""
    pytest.importorskip("aiohttp")
    lines = [f"w{i % 11} v{i % 3}" for i in range(5000)]
    (tmp_path / "a.txt").write_text("".join(x + "\n" for x in lines[:4000]))
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(
        "".join(x + "\n" for x in lines[4000:]).encode()))
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind",
                             "127.0.0.1"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        port = re.search(r"port (\d+)", proc.stdout.readline()).group(1)
        base = f"http://127.0.0.1:{port}"
        inputs = read_text([f"{base}/a.txt", f"{base}/b.txt.gz"], split_bytes=4096)
        assert inputs.sized_files() == {f"{base}/a.txt": -1, f"{base}/b.txt.gz": -1}
        result = WordCount().run(inputs, workers=2)
    finally:
        proc.terminate()
        proc.wait(10)
    assert result == run_sequential(WordCount(), ((0, x) for x in lines))


class SlowMap(WordCount):
    def map(self, key, line):
        time.sleep(0.2)
        yield from super().map(key, line)


def test_a_backup_attempt_that_loses_never_leaves_a_second_part_file(daemons, tmp_path):
    """A straggler writes its part file under its attempt's name, then sits on its
    report; a backup elsewhere commits first. Only the winner's file becomes the part."""
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1, "--slowdown", "100")  # writes, then idles 100x its task
    wait_workers(address, 1)
    daemons.worker(address, 1)
    wait_workers(address, 2)
    records = [(i, f"w{i % 7} x") for i in range(6)]
    out = tmp_path / "out"
    with Client(address) as client:
        handle = client.submit(SlowMap(), records, map_tasks=6, reducers=2, output_dir=out)
        assert handle.result(60) == run_sequential(WordCount(), records)
        assert handle.status()["backups"] >= 1
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    pairs = [json.loads(x) for p in ("part-00000", "part-00001")
             for x in (out / p).read_text().splitlines()]
    assert dict(pairs) == run_sequential(WordCount(), records) and len(pairs) == 7


def test_a_broker_killed_mid_reduce_keeps_the_committed_part_files(daemons, tmp_path):
    """Commit records are outputs like any other: journaled, so a restarted broker still
    names the winners, and the waiting client commits the part files."""
    from .test_restart import SlowReduce, Waiter, committed, wait_for

    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    records = [(i, " ".join(f"k{(i + j) % 40}" for j in range(5))) for i in range(30)]
    out = tmp_path / "out"
    waiter = Waiter(address, SlowReduce(), records, map_tasks=6, reducers=6,
                    output_dir=out, results=False)
    waiter.start()
    wait_for(lambda: len(committed(state, "reduce")) >= 2, what="2 committed reduce tasks")
    broker.kill()
    broker.wait()
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    waiter.join(120)
    assert waiter.error is not None and "results=False" in str(waiter.error)  # (no result)
    waiter.client.close()
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [f"part-{i:05d}" for i in range(6)]
    pairs = [json.loads(x) for i in range(6)
             for x in (out / f"part-{i:05d}").read_text().splitlines()]
    assert dict(pairs) == run_sequential(WordCount(), records) and len(pairs) == 34


def test_file_urls_are_local_paths_on_the_fast_path(cluster, tmp_path):
    (tmp_path / "a.txt").write_text("p q p\n")
    inputs = read_text(f"file://{tmp_path}/*.txt")
    assert inputs.files() == [str(tmp_path / "a.txt")]  # a plain path: read with open()
    with Client(cluster) as client:
        handle = client.submit(WordCount(), inputs, reducers=1,
                               output_dir=f"file://{tmp_path}/out")
        assert handle.result(60) == {"p": 2, "q": 1}
    assert (tmp_path / "out" / "part-00000").read_text() == '["p", 2]\n["q", 1]\n'


class SlowPartition(Job):
    """Partition 0 reduces at once; each key of partition 1 takes 50 ms."""

    def map(self, key, value):
        yield key, value

    def partition(self, key, reducers):
        return key % 2

    def reduce(self, key, values):
        if key % 2:
            time.sleep(0.05)
        return sum(values)


def test_a_stopped_job_leaves_no_attempt_files_in_its_output(cluster, tmp_path):
    """A job stopped while its reducers write: cancelled through the handle that submitted
    it (partition 0's part file written, partition 1's attempt running), or given up by
    Job.run's timeout. What its attempts wrote under _temporary goes with it."""
    records = [(i, 1) for i in range(400)]
    out = tmp_path / "out"
    with Client(cluster) as client:
        handle = client.submit(SlowPartition(), records, map_tasks=2, reducers=2,
                               output_dir=out)
        deadline = time.monotonic() + 60
        while not list(out.glob("_temporary/*/*/part-00000")):
            assert time.monotonic() < deadline, "partition 0 was never written"
            time.sleep(0.02)
        handle.cancel()  # (no wait() after it: the cancel itself cleans up)
        deadline = time.monotonic() + 30  # (the running attempt stops when the broker says)
        while os.listdir(out):
            assert time.monotonic() < deadline, os.listdir(out)
            time.sleep(0.05)
        with pytest.raises(JobFailed, match="cancelled"):
            handle.wait(10)

    out2 = tmp_path / "out2"
    with pytest.raises(JobTimeout):
        SlowPartition().run(records, address=cluster, map_tasks=2, reducers=2,
                            output_dir=out2, timeout=4)
    deadline = time.monotonic() + 30  # (the running attempt stops when the broker says)
    while os.listdir(out2):
        assert time.monotonic() < deadline, os.listdir(out2)
        time.sleep(0.05)
    with Client(cluster) as client:  # and the job was cancelled, not left running
        jobs = [j for j in client.jobs() if j.get("name") == "SlowPartition"]
    assert jobs and all(j["state"] == "cancelled" for j in jobs), jobs


def test_an_attempt_stopped_while_writing_removes_its_file(tmp_path):
    """A worker whose attempt the broker stopped removes that attempt's file and the
    directories it leaves empty; another attempt's file stays."""
    from pymapreduce.patterns.records import pack
    from pymapreduce.store.output import discard_attempt, temp_name, write_attempt

    spec = {"url": str(tmp_path)}
    write_attempt(spec, "job-1", 0, 5, pack([["a"], [1]]))
    write_attempt(spec, "job-1", 1, 6, pack([["b"], [2]]))
    discard_attempt(spec, "job-1", 0, 5)
    assert not (tmp_path / temp_name("job-1", 5, 0)).exists()
    assert not (tmp_path / temp_name("job-1", 5, 0)).parent.exists()
    assert (tmp_path / temp_name("job-1", 6, 1)).read_text() == '["b", 2]\n'
    discard_attempt(spec, "job-1", 1, 6)
    assert os.listdir(tmp_path) == []
    discard_attempt(spec, "job-1", 1, 6)  # (gone already: nothing to do)


def test_a_part_file_write_that_fails_names_the_file(tmp_path):
    """A write that fails without naming a file (a full disk) says which file it was;
    a reduce task's own failure is placed at its partition, not at a map split."""
    import errno

    from pymapreduce.errors import describe_position
    from pymapreduce.store.output import Location

    def chunks():
        yield ["k"], [1]
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"No space left on device: .*_temporary/j/5/part-00001"):
        Location(str(tmp_path)).write_chunks("_temporary/j/5/part-00001", chunks())
    assert describe_position({"partition": 1}) == "reduce partition 1"
    assert describe_position({"split": 3}) == "map split 3"
