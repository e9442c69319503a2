"""Engine errors that name one of the job's data values (an output it cannot use, a key)
show it to the job's owner only: the failure's position carries it (``JobFailed``,
``status``) and the task's own log keeps the whole traceback, while events, the JSON API,
the dashboard's data, the history and ``/metrics`` never hold it (docs/observability.md).
"""

from __future__ import annotations

import json
import traceback

import pytest

from pymapreduce import Client, Job, JobFailed
from pymapreduce.errors import BadOutput, ValueNeedsPickle, describe_position
from pymapreduce.kernels import not_iterable
from pymapreduce.ordering import as_pair, group_key, uncomparable
from pymapreduce.workers.runner import pack_output
from pymapreduce.workers.tasks import reported

from .conftest import wait_workers
from .test_observe import get, start_broker

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


JOBS = [(YieldsSecret(), "SECRETpairQ1", "yielded a value of type str, not a (key, value) pair"),
        (DictKeySecret(), "SECRETkeyQ2", "yielded a key, a dict, which cannot be grouped"),
        (ReturnsSecret(), "987654321", "returned a value (of type int), not an iterable"),
        (ResultNeedsPickle(), "SECRETresultQ4", "the result for a key: a "),
        (BadPartition(), "SECRETpartQ5", "returned a str, not an int in range(0, 2)")]


def test_the_engine_s_errors_give_their_data_value_to_the_owner_only(daemons):
    address, http = start_broker(daemons, "--max-attempts", "2")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    failed = []
    with Client(address) as client:
        for job, secret, public in JOBS:
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
            assert "the value " in where and secret in where and where in str(error)
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


@pytest.mark.parametrize("make, value", [
    (lambda: as_pair(YieldsSecret(), "map", [S, 1, 2]), repr([S, 1, 2])),
    (lambda: group_key(DictKeySecret(), "map", {S}), repr({S})),
    (lambda: (_ for _ in ()).throw(not_iterable(ReturnsSecret(), "map", len(S) * 10 ** 8)),
     repr(len(S) * 10 ** 8)),
    (lambda: (_ for _ in ()).throw(uncomparable(Job(), (S,), TypeError("no"))), repr((S,))),
    (lambda: pack_output(([S], [Opaque()]), True), repr(S)),
    (lambda: Job().count((S,)), repr((S,))),
    (lambda: Job().count("rows", S), repr(S)),
])
def test_each_error_that_shows_a_value_is_reported_without_it(make, value):
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
    assert f"the value {value}" in describe_position(where)


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
