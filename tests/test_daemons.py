"""Layer 3: real `pymapreduce broker` and `pymapreduce worker` processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from pymapreduce import (
    BrokerUnavailable,
    Client,
    InputError,
    Job,
    JobFailed,
    JobNotPicklable,
    PyMapReduceError,
    read_text,
    run_sequential,
)

from .conftest import children, pmr, wait_dead
from .jobs import Lengths, WordCount, WordCountCombined, read_lines


def test_word_count_over_files_equals_the_sequential_run(cluster, corpus, tmp_path):
    expected = run_sequential(WordCount(), read_lines(corpus))
    out = tmp_path / "out"
    with Client(cluster) as client:
        handle = client.submit(WordCountCombined(), read_text(corpus, split_bytes=4096),
                               reducers=3, output_dir=str(out))
        assert handle.result(timeout=60) == expected
        status = handle.status()
    assert status["state"] == "succeeded"
    assert status["maps"][0] == status["maps"][1] > 3  # cut into many splits
    assert status["reduces"] == [3, 3]
    assert status["records"] == len(list(read_lines(corpus)))
    assert status["bytes"] == sum(os.path.getsize(p) for p in corpus)
    # output files: one per reducer, JSON lines, sorted keys, _SUCCESS last
    names = sorted(os.listdir(out))
    assert names == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
    from_files = {}
    for name in names[1:]:
        pairs = [json.loads(line) for line in (out / name).read_text().splitlines()]
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys)
        from_files.update(pairs)
    assert from_files == expected


def test_map_only_job_returns_every_pair_in_input_order(cluster, corpus):
    expected = run_sequential(Lengths(), read_lines(corpus))
    with Client(cluster) as client:
        result = client.submit(Lengths(), read_text(corpus, split_bytes=2000)).result(60)
    assert result == expected
    with Client(cluster) as client:  # reducers=0 makes any job map-only
        pairs = client.submit(WordCount(), [(0, "a b a")], reducers=0).result(60)
    assert pairs == [("a", 1), ("b", 1), ("a", 1)]


def test_in_memory_inputs_of_every_shape(cluster):
    job = WordCount()
    shapes = [
        {1: "a b", 2: "b c"},
        [(1, "a b"), (2, "b c")],
        [{1: "a b"}, {2: "b c"}],
        ((k, v) for k, v in [(1, "a b"), (2, "b c")]),
    ]
    with Client(cluster) as client:
        for inputs in shapes:
            assert client.submit(job, inputs).result(30) == {"a": 1, "b": 2, "c": 1}
        assert client.submit(job, []).result(30) == {}


def test_job_attributes_closures_and_odd_keys_travel(cluster):
    offset = 100

    class Configured(Job):
        def __init__(self, factor):
            self.factor = factor
            self.key_of = lambda v: (v % 3, frozenset({v % 2}))  # a lambda attribute

        def map(self, key, value):
            self.count("records")
            yield self.key_of(value), value * self.factor + offset  # closure over offset

        def combine(self, key, values):
            return sum(values)

        def reduce(self, key, values):
            self.count("keys")
            return sum(values)

    job = Configured(10)
    records = [(i, i) for i in range(300)]
    with Client(cluster) as client:
        handle = client.submit(job, records, map_tasks=7, reducers=2)
        assert handle.result(30) == run_sequential(job, records)
        handle.status()
        assert handle.counters == {"records": 300, "keys": 6}


def test_results_stream_and_reattach_from_another_client(cluster):
    records = [(i, f"w{i % 50} x{i % 7}") for i in range(1000)]
    with Client(cluster) as client:
        handle = client.submit(WordCount(), records, reducers=4)
        job_id = handle.job_id
        handle.wait(30)
    with Client(cluster) as other:
        again = other.job(job_id)
        streamed = list(again.results())
        assert dict(streamed) == run_sequential(WordCount(), records)
        assert len(streamed) == 57
        again.release()  # its outputs go; its status stays listed until the result TTL
        assert other.job(job_id).status()["released"] is True
        with pytest.raises(PyMapReduceError, match="released"):
            list(other.job(job_id).results())


def test_user_code_error_raises_job_failed_with_the_remote_traceback(cluster):
    class Fails(Job):
        def map(self, key, value):
            if value == "poison":
                raise ValueError("cannot digest " + value)
            yield value, 1

        def reduce(self, key, values):
            return sum(values)

    with Client(cluster) as client:
        handle = client.submit(Fails(), [(0, "ok"), (1, "poison"), (2, "ok")], map_tasks=3)
        with pytest.raises(JobFailed) as info:
            handle.result(60)
        # the cluster serves the next job normally
        assert client.submit(WordCount(), [(0, "a a")]).result(30) == {"a": 2}
    err = info.value
    assert err.job_id == handle.job_id
    assert err.task == "map-1"
    assert err.position["split"] == 1 and err.position["record"] == 0
    assert "ValueError: cannot digest poison" in err.remote_traceback
    assert "in map" in err.remote_traceback
    assert "failed 4 times" in str(err)


def test_error_in_reduce_fails_the_job(cluster):
    class BadReduce(WordCount):
        def reduce(self, word, counts):
            return 1 / 0

    with Client(cluster) as client, pytest.raises(JobFailed, match="ZeroDivisionError"):
        client.submit(BadReduce(), [(0, "a")]).result(60)


def test_unpicklable_job_is_refused_at_submit_naming_the_attribute(cluster):
    job = WordCount()
    job.lock = threading.Lock()
    with Client(cluster) as client, pytest.raises(JobNotPicklable, match="'lock'"):
        client.submit(job, [(0, "a")])


def test_missing_input_is_a_clear_error(cluster, tmp_path):
    with Client(cluster) as client, pytest.raises(InputError, match="matches no file"):
        client.submit(WordCount(), read_text(str(tmp_path / "absent" / "*.txt")))


def test_port_in_use_is_reported_with_its_own_exit_code(daemons):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = subprocess.run(pmr("broker", "--bind", f"tcp://127.0.0.1:{port}"),
                              capture_output=True, text=True, timeout=30)
    finally:
        holder.close()
    assert proc.returncode == 4
    assert "address already in use (another daemon listens there: stop it, or give " \
        "another port; port 0 lets the OS pick a free one)" in proc.stderr
    # one line, in the form of every other command's errors
    assert proc.stderr.startswith("pymapreduce: error: broker: cannot bind")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_broker_beyond_loopback_needs_insecure():
    proc = subprocess.run(pmr("broker", "--bind", "tcp://0.0.0.0:0"),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--insecure" in proc.stderr
    assert proc.stderr.startswith("pymapreduce: error: broker: refusing to listen")


@pytest.mark.timeout(60)  # (a client that waited on forever would fail here, not hang CI)
def test_a_broker_that_does_not_answer_raises_after_the_timeout():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"tcp://127.0.0.1:{port}", timeout=1.0) as client:
        with pytest.raises(BrokerUnavailable, match="did not answer"):
            client.submit(WordCount(), [(0, "a")])


def test_a_broker_that_dies_mid_job_is_reported_not_waited_for(daemons):
    broker, address = daemons.broker()
    with Client(address, timeout=2.0) as client:
        handle = client.submit(WordCount(), [(0, "a")])  # no worker: it cannot finish
        killer = threading.Timer(0.5, broker.kill)
        killer.start()
        try:
            with pytest.raises(BrokerUnavailable, match="lost contact"):
                handle.wait()
        finally:
            killer.join()


def test_killed_worker_process_is_restarted_and_the_job_is_right(daemons):
    _, address = daemons.broker("--heartbeat", "0.2", "--liveness", "1.0")
    sup = daemons.worker(address, 2)
    from .conftest import wait_workers

    wait_workers(address, 2)

    class Slow(WordCount):
        def map(self, key, line):
            time.sleep(0.01)
            yield from super().map(key, line)

    records = [(i, f"w{i % 13}") for i in range(400)]
    with Client(address) as client:
        handle = client.submit(Slow(), records, map_tasks=40)
        while handle.status()["maps"][0] < 5:
            time.sleep(0.02)
        victims = children(sup.pid)
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        assert handle.result(60) == run_sequential(WordCount(), records)
        # the supervisor replaced the dead process
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            len(children(sup.pid)) < 2 or victims[0] in children(sup.pid)
        ):
            time.sleep(0.05)
        assert len(children(sup.pid)) == 2 and victims[0] not in children(sup.pid)


def test_worker_daemon_stops_its_processes_on_sigterm(daemons):
    _, address = daemons.broker()
    sup = daemons.worker(address, 2)
    kids = children(sup.pid)
    assert len(kids) == 2
    sup.send_signal(signal.SIGTERM)
    sup.wait(10)
    assert wait_dead(kids) == []


def test_broker_forgets_a_worker_whose_supervisor_was_killed(daemons):
    _, address = daemons.broker("--heartbeat", "0.2", "--liveness", "1.0")
    sup = daemons.worker(address, 2)
    from .conftest import wait_workers

    wait_workers(address, 2)
    kids = children(sup.pid)
    sup.kill()  # kill -9: the children must follow, and the broker must notice
    sup.wait()
    assert wait_dead(kids) == []
    deadline = time.monotonic() + 10
    with Client(address) as client:
        while client.info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.info()["workers"] == 0


def test_a_task_that_kills_its_worker_fails_the_job_instead_of_looping(cluster):
    class Exits(WordCount):
        def map(self, key, line):
            if line == "poison":
                os._exit(3)  # the worker process dies with the task
            yield from super().map(key, line)

    with Client(cluster) as client:
        handle = client.submit(Exits(), [(0, "fine"), (1, "poison")], map_tasks=2)
        with pytest.raises(JobFailed, match="was lost") as info:
            handle.result(60)
        assert info.value.task == "map-1"
        # the restarted workers serve the next job
        assert client.submit(WordCount(), [(0, "a a")]).result(30) == {"a": 2}


def test_code_that_cannot_load_on_the_workers_reports_the_real_cause(cluster, tmp_path,
                                                                    monkeypatch):
    (tmp_path / "only_here.py").write_text(
        "from pymapreduce import Job\n"
        "class LocalOnly(Job):\n"
        "    ship_modules = False\n"  # (by value it would run: tests/test_travel.py)
        "    def map(self, key, value):\n"
        "        yield value, 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # importable here, not on the workers
    from only_here import LocalOnly

    with Client(cluster) as client, pytest.raises(JobFailed) as info:
        client.submit(LocalOnly(), [(0, "a"), (1, "b")], map_tasks=2).result(60)
    assert "No module named 'only_here'" in str(info.value)


def test_output_dir_of_an_earlier_run_is_replaced_not_mixed(cluster, tmp_path):
    out = tmp_path / "out"
    records = [(i, f"w{i}") for i in range(50)]
    with Client(cluster) as client:
        client.submit(WordCount(), records, reducers=4, output_dir=out).wait(30)
        assert len(list(out.glob("part-*"))) == 4
        client.submit(WordCount(), [(0, "only")], reducers=1, output_dir=out).wait(30)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000"]
    assert (out / "part-00000").read_text() == '["only", 1]\n'


def test_cli_cancel_stops_a_running_job(cluster):
    class Slow(WordCount):
        def map(self, key, line):
            time.sleep(0.2)
            yield from super().map(key, line)

    with Client(cluster) as client:
        handle = client.submit(Slow(), [(i, "x") for i in range(200)], map_tasks=50)
        proc = subprocess.run(pmr("cancel", "--connect", cluster, handle.job_id),
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert "cancelled" in proc.stdout
        with pytest.raises(JobFailed, match="cancelled"):
            handle.result(10)


def test_results_stream_while_later_partitions_still_reduce(cluster):
    class SlowSecondPartition(WordCount):
        def partition(self, key, reducers):
            return 0 if key == "fast" else 1

        def reduce(self, word, counts):
            if word == "slow":
                time.sleep(2.0)
            return sum(counts)

    with Client(cluster) as client:
        handle = client.submit(SlowSecondPartition(), [(0, "fast slow fast")], reducers=2)
        stream = handle.results()
        assert next(stream) == ("fast", 2)
        assert handle.status()["state"] == "running"  # the first partition came early
        assert list(stream) == [("slow", 1)]


def test_streaming_results_of_a_failing_job_raise_job_failed(cluster):
    class FailsLate(WordCount):
        def reduce(self, word, counts):
            raise RuntimeError("late failure")

    with Client(cluster) as client:
        handle = client.submit(FailsLate(), [(0, "a")], reducers=1)
        with pytest.raises(JobFailed, match="late failure"):
            list(handle.results())


def test_a_worker_that_joins_later_gets_the_waiting_work(daemons):
    _, address = daemons.broker()
    with Client(address) as client:
        handle = client.submit(WordCount(), [(0, "a b a")], map_tasks=1, reducers=1)
        time.sleep(0.3)
        assert handle.status()["maps"] == [0, 1]  # nobody to run it yet
        daemons.worker(address, 1)
        assert handle.result(30) == {"a": 2, "b": 1}
