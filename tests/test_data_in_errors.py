"""Engine errors that name one of the job's data values (an output it cannot use, a key)
show it to the job's owner only: the failure's position carries it (``JobFailed``,
``status``) and the task's own log keeps the whole traceback, while events, the JSON API,
the dashboard's data, the history and ``/metrics`` never hold it (docs/observability.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import traceback

import pytest

from pymapreduce import Client, Job, JobFailed, read_csv
from pymapreduce.errors import BadOutput, ValueNeedsPickle, describe_position
from pymapreduce.kernels import not_iterable
from pymapreduce.ordering import as_pair, group_key, uncomparable
from pymapreduce.workers.runner import pack_output
from pymapreduce.workers.tasks import reported

from .conftest import ROOT, pmr, read_line, wait_workers
from .test_observe import READY_HTTP, get, start_broker

LINES = [(0, "a b"), (1, "c d")]


class YieldsSecret(Job):
    def map(self, key, line):
        yield "SECRET" + "pairQ1"  # a str is not a (key, value) pair (made: the
        # traceback shows this line)


class DictKeySecret(Job):
    def map(self, key, line):
        yield {"k": "SECRET" + "keyQ2"}, 1

    def reduce(self, key, values):  # (grouped by key: a dict cannot be)
        return sum(values)


class ReturnsSecret(Job):
    def map(self, key, line):
        return 987654 * 1000 + 321  # not an iterable of pairs


class Opaque:
    """A value msgpack cannot carry: the result needs a pickle the job did not allow."""


class ResultNeedsPickle(Job):
    def map(self, key, line):
        yield "SECRET" + "resultQ4", 1

    def reduce(self, key, values):
        return Opaque()


class BadPartition(Job):
    def map(self, key, line):
        yield "SECRET" + "partQ5", 1

    def partition(self, key, reducers):
        return "left"

    def reduce(self, key, values):
        return sum(values)


# (the job, its value, its public text, and what the position calls the value: a key is
# named a key, not "the value", which reads as a record's or a result's value)
JOBS = [(YieldsSecret(), "SECRETpairQ1", "yielded a value of type str, not a (key, value) pair",
         "map's output"),
        (DictKeySecret(), "SECRETkeyQ2", "yielded a key, a dict, which cannot be grouped",
         "map's key"),
        (ReturnsSecret(), "987654321", "returned a value (of type int), not an iterable",
         "map's return value"),
        (ResultNeedsPickle(), "SECRETresultQ4", "the result for a key: a ", "the result's key"),
        (BadPartition(), "SECRETpartQ5", "BadOutput: BadPartition.partition(key, 2) returned a "
         "value of type str, not an int in range(0, 2)",
         "partition's key")]


def test_the_engine_s_errors_give_their_data_value_to_the_owner_only(daemons):
    address, http = start_broker(daemons, "--max-attempts", "2")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    failed = []
    with Client(address) as client:
        for job, secret, public, label in JOBS:
            handle = client.submit(job, LINES, reducers=2)
            with pytest.raises(JobFailed) as info:
                handle.result(60)
            error = info.value
            message = str(error).split("\n")[0]
            assert public in message, message
            assert secret not in message, message
            # the owner reads the value where the failure is placed, and the whole text in
            # the task's log
            where = describe_position(error.position)
            assert f"{label} " in where and secret in where, where
            assert "the value" not in where, where
            assert where in str(error)
            assert secret not in error.remote_traceback, error.remote_traceback
            assert public in error.remote_traceback.strip().splitlines()[-1]
            assert secret in handle.logs().text()
            failed.append((handle.job_id, secret))
    secrets = [s.encode() for _, s in failed]
    pages = ["api/jobs", "api/cluster", "api/history", "metrics",
             "api/events?format=json", *(f"api/jobs/{job}" for job, _ in failed),
             *(f"api/events?job={job}&format=json" for job, _ in failed)]
    for page in pages:
        status, body = get(http + page)
        assert status == 200, (page, status, body[:200])
        for secret in secrets:
            assert secret not in body, (page, secret)
    # the failures are there, by their public texts
    status, body = get(http + f"api/jobs/{failed[0][0]}")
    assert b"yielded a value of type str" in body
    events = json.loads(get(http + f"api/events?job={failed[0][0]}&format=json")[1])["events"]
    assert any(e["type"] == "failed" and "not a (key, value) pair" in e["error"]
               for e in events)


def _raised(fn, *args):
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


S = "".join(["SEC", "RET"])  # (made, not written: a traceback shows the test's lines)


@pytest.mark.parametrize("make, value, label", [
    (lambda: as_pair(YieldsSecret(), "map", [S, 1, 2]), repr([S, 1, 2]), "map's output"),
    (lambda: as_pair(YieldsSecret(), "reduce", S), repr(S), "reduce's output"),
    (lambda: group_key(DictKeySecret(), "map", {S}), repr({S}), "map's key"),
    (lambda: (_ for _ in ()).throw(not_iterable(ReturnsSecret(), "map", len(S) * 10 ** 8)),
     repr(len(S) * 10 ** 8), "map's return value"),
    (lambda: (_ for _ in ()).throw(uncomparable(Job(), (S,), TypeError("no"))), repr((S,)),
     "map's key"),
    (lambda: pack_output(([S], [Opaque()]), True), repr(S), "the result's key"),
    (lambda: Job().count((S,)), repr((S,)), "the counter name"),
    (lambda: Job().count("rows", S), repr(S), "count's n"),
])
def test_each_error_that_shows_a_value_is_reported_without_it(make, value, label):
    """Raised where the user runs code (a local run) the message names the value; as a
    worker reports it, the text and traceback do not, and the position does."""
    exc = _raised(make)
    assert value in str(exc)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where: dict = {"split": 3}
    error, shown = reported(exc, tb, where)
    assert value not in error and value not in shown, (error, shown)
    assert where["value"] == value
    assert shown.strip().splitlines()[-1].endswith(error.split(": ", 1)[1])
    # the position says what the value is: a key as a key (the result's key is no value
    # of the result, which is the thing that needs a pickle)
    assert f"{label} {value}" in describe_position(where)
    assert "the value" not in describe_position(where)


def test_a_position_from_an_older_worker_names_its_value_the_value():
    """A position without ``value_label`` (an older worker's) reads as before; a label
    that is not a short text is not shown."""
    assert describe_position({"split": 0, "value": "'x'"}) == "the value 'x' (map split 0)"
    assert describe_position({"split": 0, "value": "'x'", "value_label": "z" * 41}) \
        == "the value 'x' (map split 0)"


def test_a_tuple_of_three_is_reported_by_its_length_not_only_its_type():
    """``yield word, 1, len(word)``: "a value of type tuple, not a (key, value) pair"
    read as if a tuple were wrong; the length says what is."""
    for pair, kind in [((S, 1, 2), "a tuple of 3 items"), ([S], "a list of 1 item"),
                       ((), "a tuple of 0 items")]:
        exc = _raised(as_pair, YieldsSecret(), "map", pair)
        error, _ = reported(exc, "", {})
        assert error == f"BadOutput: YieldsSecret.map yielded {kind}, not a (key, value) pair"


def test_an_error_of_the_user_s_own_is_reported_as_it_is():
    """Users' exceptions keep their texts (the job's code chose what they say), even with
    attributes that look like the engine's."""
    class Mine(ValueError):
        value = "x"
        public = "y"

    exc = _raised(lambda: (_ for _ in ()).throw(Mine(f"{S} in my message")))
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where: dict = {}
    assert reported(exc, tb, where) == (f"Mine: {S} in my message", tb)
    assert where == {}
    assert isinstance(_raised(lambda: as_pair(Job(), "map", 5)), BadOutput)
    assert isinstance(_raised(lambda: pack_output((["k"], [Opaque()]), True)), ValueNeedsPickle)


# -- every observer's channel, the daemons' logs included ------------------------------

def start_logged(daemons, tmp_path) -> tuple[str, str, list]:
    """A broker (--http) and a worker daemon logging at INFO (each failed attempt's error
    is a line of the broker's log) into files: (address, http URL, the log files)."""
    logs = [tmp_path / "broker.log", tmp_path / "worker.log"]
    with open(logs[0], "wb") as err:
        proc = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--log-level",
                                    "INFO", "--parent-pid", str(os.getpid()), "--http",
                                    "127.0.0.1:0", "--max-attempts", "2"),
                                stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    daemons.procs.append(proc)
    m = read_line(proc, READY_HTTP)
    address, http = m.group(1), m.group(2)
    with open(logs[1], "wb") as err:
        proc = subprocess.Popen(pmr("worker", "--connect", address, "--processes", "1",
                                    "--log-level", "INFO", "--parent-pid", str(os.getpid())),
                                stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    daemons.procs.append(proc)
    read_line(proc, re.compile(r"pymapreduce worker ready"))
    wait_workers(address, 1)
    return address, http, logs


def assert_unseen(secret: str, address: str, http: str, jobs: list, logs: list) -> None:
    """``secret`` is in none of what others may read: the JSON API, the events (also as
    `pymapreduce events` prints them), /metrics, the history, the daemons' logs."""
    pages = ["api/jobs", "api/cluster", "api/history", "metrics", "api/events?format=json",
             *(f"api/jobs/{job}" for job in jobs),
             *(f"api/events?job={job}&format=json" for job in jobs)]
    for page in pages:
        status, body = get(http + page)
        assert status == 200, (page, status, body[:200])
        assert secret.encode() not in body, (page, body[body.find(secret.encode()) - 300:][:400])
    printed = subprocess.run(pmr("events", "--connect", address, "--no-follow"), cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert secret not in printed.stdout
    for path in logs:
        text = path.read_text(errors="replace")
        assert secret not in text, (path, text[text.find(secret) - 300:][:400])


class Rows(Job):
    def map(self, offset, row):
        yield row.get("name", "?"), 1

    def reduce(self, key, values):
        return sum(values)


def test_a_csv_file_s_first_line_unlike_the_header_is_its_owner_s_only(daemons, tmp_path):
    """read_csv's other files must have the first one's header: a file without one (its
    first line a row of data) fails its task, and the row is the failure's position's."""
    (tmp_path / "a.csv").write_text("name,val\nx,1\n")
    (tmp_path / "b.csv").write_text(f"{S}row,7\ny,2\n")
    address, http, logs = start_logged(daemons, tmp_path)
    with Client(address) as client:
        handle = client.submit(Rows(), read_csv([str(tmp_path / "a.csv"),
                                                 str(tmp_path / "b.csv")]), reducers=1)
        with pytest.raises(JobFailed) as info:
            handle.result(60)
    message = str(info.value).split("\n")[0]
    assert "its CSV header (of 2 fields) differs from the first file's ['name', 'val']" \
        in message, message
    assert S not in message and S not in info.value.remote_traceback
    assert f"its fields {[S + 'row', '7']!r}" in describe_position(info.value.position)
    assert_unseen(S, address, http, [handle.job_id], logs)
