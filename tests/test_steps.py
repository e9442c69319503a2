"""Multi-step jobs: each step's output feeds the next inside the cluster."""

from __future__ import annotations

import os
import sys
import time

import pytest

from pymapreduce import Client, Job, JobFailed, run_sequential

from .conftest import FAST, ROOT, wait_workers
from .jobs import WordCount

sys.path.insert(0, os.path.join(ROOT, "examples"))
import cloudpickle  # noqa: E402
import pagerank  # noqa: E402

cloudpickle.register_pickle_by_value(pagerank)  # the workers need not have the file


class Lengths(Job):
    """Map-only: each word with its length."""

    def map(self, word, count):
        yield word, len(word) * count


class ByLength(Job):
    def map(self, word, weighted):
        yield len(word), weighted

    def reduce(self, length, values):
        return sum(values)


class Pipeline(Job):
    """Word count, then a map-only step, then a regrouping by word length."""

    def steps(self):
        return [WordCount(), Lengths(), ByLength()]


class NothingAtFirst(Job):
    def steps(self):
        class Drop(Job):
            def map(self, key, value):
                return ()

            def reduce(self, key, values):
                return 0

        return [Drop(), WordCount()]


RECORDS = [(i, " ".join(f"w{(i * j) % 23}" * (1 + j % 3) for j in range(6))) for i in range(50)]


def test_pagerank_in_ten_steps_equals_the_direct_computation(cluster):
    graph = pagerank.make_graph(150)
    with Client(cluster) as client:
        handle = client.submit(pagerank.PageRank(150, 10), pagerank.initial_records(graph),
                               map_tasks=6, reducers=3)
        result = handle.result(120)
        status = handle.status()
    pagerank.check(result, graph, 10)
    assert status["step"] == [10, 10]
    assert status["state"] == "succeeded"


def test_steps_with_a_map_only_step_between(cluster):
    expected = run_sequential(Pipeline(), RECORDS)
    assert expected  # the reference is not trivially empty
    with Client(cluster) as client:
        assert client.submit(Pipeline(), RECORDS, map_tasks=5).result(60) == expected
        assert client.submit(NothingAtFirst(), RECORDS, map_tasks=5).result(60) == {}


def test_a_multi_step_job_survives_a_broker_restart_mid_way(daemons, tmp_path):
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    graph = pagerank.make_graph(120)
    job = pagerank.PageRank(120, 12)
    with Client(address, timeout=20) as client:
        handle = client.submit(job, pagerank.initial_records(graph), map_tasks=4, reducers=3)
        while handle.status()["step"][0] < 4:
            time.sleep(0.01)
        broker.kill()
        broker.wait()
        daemons.broker(*FAST, "--state-dir", str(state), bind=address)
        result = handle.result(120)
        assert handle.status()["recovered"] > 0
    pagerank.check(result, graph, 12)


class Divides(Job):
    """The last step: its reduce divides by a count that is zero for one key."""

    def map(self, word, weighted):
        yield len(word) % 2, weighted

    def reduce(self, key, values):
        return sum(values) // key  # (key 0: a word of even length)


class FailsInItsLastStep(Job):
    def steps(self):
        return [WordCount(), Lengths(), Divides()]


def test_a_failed_multi_step_job_says_which_step_failed(cluster):
    """Task names are a step's own (every step has a reduce-0): the failure says its step,
    where it named the task alone."""
    with Client(cluster) as client:
        handle = client.submit(FailsInItsLastStep(), [(0, "a bb ccc")], reducers=1)
        with pytest.raises(JobFailed) as failed:
            handle.result(60)
    first = str(failed.value).splitlines()[0]
    assert ": step 3 of 3: reduce-0 failed" in first and "ZeroDivisionError" in first, first
