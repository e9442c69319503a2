"""Rough edges a new user met from a clean clone and install (docs/cli.md, docs/logs.md,
docs/travel.md), each pinned by a test."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import textwrap

import cloudpickle
import pytest

from pymapreduce import Client, Job, JobFailed, read_csv
from pymapreduce.shipping import dumps_keeping_filenames, pickle_by_value

from .conftest import READY, pmr, read_line, stop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_in(tmp_path, name: str, source: str):
    """Import ``source`` as module ``name`` from a file in tmp_path (the user's own code)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        __import__(name)
        return sys.modules[name], str(path)
    finally:
        sys.path.remove(str(tmp_path))


def test_code_pickled_by_value_keeps_its_file_name(tmp_path):
    # cloudpickle 3 (what a fresh `pip install` gets) names such code "<dynamic-code>",
    # and remote tracebacks then could not show the user's file and lines
    module, path = _module_in(tmp_path, "nu_filename_mod", """
        def parse(line):
            return int(line)
    """)
    cloudpickle.register_pickle_by_value(module)
    try:
        blob = dumps_keeping_filenames(module.parse)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["nu_filename_mod"]
    parse = cloudpickle.loads(blob)
    assert parse.__code__.co_filename == path
    assert parse("12") == 12


def test_a_job_from_a_users_module_keeps_its_file_name_on_the_way(tmp_path):
    module, path = _module_in(tmp_path, "nu_job_mod", """
        from pymapreduce import Job

        class Parse(Job):
            def map(self, key, line):
                yield key, int(line)
    """)
    try:
        blob = pickle_by_value(module.Parse())
    finally:
        del sys.modules["nu_job_mod"]
    job = cloudpickle.loads(blob)
    assert type(job).map.__code__.co_filename == path


# -- read_csv: no row lost or mislabelled ---------------------------------------------------
class Rows(Job):
    """Each CSV row as it reached map, keyed by (file name, offset)."""

    def map(self, key, row):
        path, offset = key
        yield (os.path.basename(path), offset), row

    def reduce(self, key, rows):
        return rows[0]


def _csv(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


def _rows(cluster, inputs) -> dict:
    with Client(cluster) as client:
        return client.submit(Rows(), inputs, reducers=1).result(60)


def test_csv_without_header_but_with_columns_keeps_each_files_first_row(tmp_path, cluster):
    path = _csv(tmp_path, "people.csv", "1,alice\n2,bob\n")
    rows = _rows(cluster, read_csv(path, header=False, columns=["id", "name"], with_path=True))
    assert rows == {("people.csv", 0): {"id": "1", "name": "alice"},
                    ("people.csv", 8): {"id": "2", "name": "bob"}}


def test_csv_with_given_columns_skips_each_files_header(tmp_path, cluster):
    path = _csv(tmp_path, "people.csv", "ID,NAME\n1,alice\n")
    rows = _rows(cluster, read_csv(path, columns=["id", "name"], with_path=True))
    assert rows == {("people.csv", 8): {"id": "1", "name": "alice"}}


def test_csv_files_with_another_header_fail_rather_than_be_mislabelled(tmp_path, cluster):
    users = _csv(tmp_path, "users.csv", "user_id,name\n1,alice\n")
    orders = _csv(tmp_path, "orders.csv", "order_id,user_id,amount\n10,1,5.0\n")
    with pytest.raises(JobFailed) as failed:
        _rows(cluster, read_csv([users, orders], with_path=True))
    # (the other header, which may be a row of data, is given as the failure's value)
    assert "orders.csv: its CSV header (of 3 fields) differs" in str(failed.value)
    assert "its fields ['order_id', 'user_id', 'amount']" in str(failed.value)
    # files with the same header are read as one input, each file's header left out
    more = _csv(tmp_path, "more.csv", "user_id,name\n2,bob\n")
    rows = _rows(cluster, read_csv([users, more], with_path=True))
    assert rows == {("users.csv", 13): {"user_id": "1", "name": "alice"},
                    ("more.csv", 13): {"user_id": "2", "name": "bob"}}


def test_a_csv_row_longer_than_the_header_fails_naming_it(tmp_path, cluster):
    path = _csv(tmp_path, "ragged.csv", "a,b\n1,2\n1,2,3\n")
    with pytest.raises(JobFailed) as failed:
        _rows(cluster, read_csv(path, with_path=True))
    assert "ragged.csv: the line at byte 8 has 3 CSV fields, more than the 2 columns" in str(
        failed.value)


def test_a_compressed_csvs_header_is_read_decompressed(tmp_path, cluster):
    path = _csv(tmp_path, "users.csv.gz", "user_id,name\n1,alice\n")
    inputs = read_csv(path, with_path=True)
    assert inputs.columns == ("user_id", "name")
    assert _rows(cluster, inputs) == {("users.csv.gz", 13): {"user_id": "1", "name": "alice"}}


# -- the command line ----------------------------------------------------------------------
def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pymapreduce", *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ROOT})


JOB = """
from pymapreduce import Job

class Count(Job):
    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)
"""


def test_output_given_twice_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "count.py").write_text(JOB)
    (tmp_path / "in.txt").write_text("a b a\n")
    proc = _cli(tmp_path, "run", "count.py:Count", "in.txt", "--output", "o1", "--output", "o2")
    assert proc.returncode == 2
    assert "--output given twice (o1 and o2)" in proc.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_a_missing_side_file_is_called_a_side_file(tmp_path):
    (tmp_path / "count.py").write_text(JOB)
    (tmp_path / "in.txt").write_text("a b a\n")
    proc = _cli(tmp_path, "run", "count.py:Count", "in.txt", "--file", "stop.txt")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "pymapreduce: error: side file (files=, --file) 'stop.txt' does not exist")


# -- the broker's log numbers attempts as `pymapreduce logs` does ---------------------------
class Fails(Job):
    def map(self, key, line):
        print("about to fail on", key)
        raise ValueError(f"bad record {line!r}")


def test_the_brokers_log_numbers_attempts_as_the_task_logs_do(daemons, tmp_path):
    errors = open(tmp_path / "broker.err", "wb")
    try:
        broker = subprocess.Popen(
            pmr("broker", "--bind", "tcp://127.0.0.1:0", "--log-level", "INFO",
                "--parent-pid", str(os.getpid())),
            stdout=subprocess.PIPE, stderr=errors, cwd=ROOT)
    finally:
        errors.close()
    daemons.procs.append(broker)
    address = read_line(broker, READY).group(1)
    daemons.worker(address, 1)
    with Client(address) as client:
        handle = client.submit(Fails(), [(0, "x")], map_tasks=1)
        with pytest.raises(JobFailed):
            handle.result(60)
        numbers = {entry["attempt"] for entry in handle.logs("map-0")}
    stop(broker)
    said = (tmp_path / "broker.err").read_text()
    logged = {int(n) for n in re.findall(rf"{handle.job_id} map-0 attempt (\d+) failed", said)}
    assert numbers == {1, 2, 3, 4}
    assert logged == numbers


SAMPLED = """
from pymapreduce import Job

class Sorted(Job):
    total_order = True

    def map(self, key, line):
        print("map saw", key)  # runs in the client too, on the sample
        yield int(line), key
"""


def test_a_total_order_jobs_prints_while_sampling_stay_off_stdout(tmp_path):
    (tmp_path / "sorted.py").write_text(SAMPLED)
    (tmp_path / "in.txt").write_text("".join(f"{(i * 37) % 101}\n" for i in range(101)))
    proc = _cli(tmp_path, "run", "sorted.py:Sorted", "in.txt", "--reducers", "3")
    assert proc.returncode == 0, proc.stderr
    pairs = [json.loads(line) for line in proc.stdout.splitlines()]  # JSON lines only
    assert [k for k, _ in pairs] == list(range(101))
    assert "map saw 0" in proc.stderr


def test_logs_of_a_task_name_that_cannot_exist_is_an_error_not_silence(tmp_path, cluster):
    # map-0 and reduce-0 exist; "map0" or "bogus" would only read as "it printed nothing"
    proc = _cli(tmp_path, "logs", "--connect", cluster, "Any-123", "bogus")
    assert proc.returncode == 2
    assert "no task 'bogus': tasks are named map-N and reduce-N" in proc.stderr
    proc = _cli(tmp_path, "logs", "--connect", cluster, "Any-123", "map-0")
    assert proc.returncode == 2 and "knows no job 'Any-123'" in proc.stderr


def test_a_client_takes_a_local_cluster_as_its_address():
    """``Client(cluster)`` is what a user writes first: it connects to the cluster's
    broker; a cluster not started yet, or anything else, is a clear error."""
    from pymapreduce import ConfigError, LocalCluster, run_sequential

    from .jobs import WordCount

    records = [(i, f"a b{i % 3}") for i in range(50)]
    with LocalCluster(workers=1) as cluster, Client(cluster) as client:
        assert client.address == cluster.address
        assert client.submit(WordCount(), records).result(30) == \
            run_sequential(WordCount(), records)
    with pytest.raises(ConfigError, match="a started LocalCluster, not LocalCluster"):
        Client(LocalCluster(workers=1))
    with pytest.raises(ConfigError, match="not int 5555"):
        Client(5555)
