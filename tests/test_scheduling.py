"""Scheduling with real daemons: fair shares, priorities, tags, queued jobs, listings."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from pymapreduce import Client, PyMapReduceError, run_sequential

from .conftest import FAST, ROOT, pmr, wait_workers
from .jobs import WordCount, note


class Noted(WordCount):
    """Word count whose map notes "<tag> <pid>" per record in a shared file, then waits."""

    def __init__(self, log_path, tag, delay=0.05):
        self.log_path = log_path
        self.tag = tag
        self.delay = delay

    def map(self, key, line):
        note(self.log_path, self.tag, os.getpid())
        time.sleep(self.delay)
        yield from super().map(key, line)


def notes(path) -> list[list[str]]:
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


RECORDS = [(i, f"w{i % 7}") for i in range(40)]


def test_two_equal_jobs_share_the_workers_while_both_run(cluster, tmp_path):
    log = tmp_path / "runs"
    with Client(cluster) as client:
        a = client.submit(Noted(str(log), "a"), RECORDS, map_tasks=40)
        b = client.submit(Noted(str(log), "b"), RECORDS, map_tasks=40)
        assert a.result(60) == b.result(60) == run_sequential(WordCount(), RECORDS)
    first = [tag for tag, _ in notes(log)][:40]  # while both had work left
    assert 12 <= first.count("b") <= 28, first


def test_priority_weighs_the_share(cluster, tmp_path):
    log = tmp_path / "runs"
    with Client(cluster) as client:
        low = client.submit(Noted(str(log), "low"), RECORDS, map_tasks=40)
        high = client.submit(Noted(str(log), "high"), RECORDS, map_tasks=40, priority=3)
        high.result(60)
        low.result(60)
    tags = [tag for tag, _ in notes(log)]
    first = tags[tags.index("high"):][:32]  # from the high-priority job's start
    assert first.count("high") >= 20, first  # about 3 of every 4 slots


def test_a_small_job_is_not_stuck_behind_a_big_one(cluster, tmp_path):
    log = tmp_path / "runs"
    big_records = [(i, f"w{i % 7}") for i in range(200)]
    with Client(cluster) as client:
        big = client.submit(Noted(str(log), "big", delay=0.05), big_records, map_tasks=200)
        while not log.exists() or len(notes(log)) < 10:
            time.sleep(0.02)
        small = client.submit(Noted(str(log), "small", delay=0.0), RECORDS[:4], map_tasks=4)
        assert small.result(30) == run_sequential(WordCount(), RECORDS[:4])
        assert big.status()["state"] == "running"  # it finished while the big one ran
        assert big.result(60) == run_sequential(WordCount(), big_records)


def test_tasks_go_only_to_workers_with_the_required_tags(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    plain = daemons.worker(address, 1)
    tagged = daemons.worker(address, 1, "--tag", "gpu", "--tag", "bigmem")
    wait_workers(address, 2)
    log = tmp_path / "runs"
    with Client(address) as client:
        handle = client.submit(Noted(str(log), "g", delay=0.01), RECORDS, map_tasks=20,
                               requires={"gpu"})
        assert handle.result(60) == run_sequential(WordCount(), RECORDS)
        pids = {int(pid) for _, pid in notes(log)}
        workers = {w["pid"]: w for w in client.workers()}
    assert len(pids) == 1
    (pid,) = pids
    assert workers[pid]["tags"] == ["bigmem", "gpu"]
    assert pid not in [int(p) for p in _children(plain.pid)]
    assert pid in [int(p) for p in _children(tagged.pid)]


def test_a_job_whose_tags_no_worker_has_waits_queued_and_says_why(daemons):
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(WordCount(), RECORDS, map_tasks=4, requires={"tpu"})
        deadline = time.monotonic() + 10
        while "waiting" not in handle.status() and time.monotonic() < deadline:
            time.sleep(0.05)
        status = handle.status()
        assert status["state"] == "queued"
        assert "tpu" in status["waiting"]
        listing = subprocess.run(pmr("status", "--connect", address), capture_output=True,
                                 text=True, timeout=30, cwd=ROOT)
        assert listing.returncode == 0
        assert re.search(rf"{handle.job_id}\s+queued", listing.stdout)
        assert "no live worker has the tags tpu" in listing.stdout
        daemons.worker(address, 1, "--tag", "tpu")  # the right worker joins: it runs
        assert handle.result(60) == run_sequential(WordCount(), RECORDS)


def test_jobs_and_workers_are_listed(cluster):
    with Client(cluster) as client:
        handle = client.submit(WordCount(), RECORDS, map_tasks=4)
        handle.result(60)
        jobs = {j["job_id"]: j for j in client.jobs()}
        workers = client.workers()
    assert jobs[handle.job_id]["state"] == "succeeded"
    assert jobs[handle.job_id]["maps"] == [4, 4]
    assert len(workers) == 2
    assert sum(w["done"] for w in workers) >= 4
    assert all(w["pid"] > 0 and w["host"] for w in workers)


def test_too_many_unfinished_jobs_are_refused_clearly(daemons):
    _, address = daemons.broker(*FAST, "--max-jobs", "2")  # no worker: nothing finishes
    with Client(address) as client:
        client.submit(WordCount(), RECORDS)
        client.submit(WordCount(), RECORDS)
        with pytest.raises(PyMapReduceError, match="limit"):
            client.submit(WordCount(), RECORDS)


def _children(pid: int) -> list[int]:
    from .conftest import children

    return children(pid)


class Sleepy(WordCount):
    """Map that notes when it starts and ends each record, sleeping in between."""

    def __init__(self, log_path, seconds):
        self.log_path = log_path
        self.seconds = seconds

    def map(self, key, line):
        note(self.log_path, "start", key)
        try:
            time.sleep(self.seconds)
        except Exception:  # user code that swallows errors must not swallow a cancel
            pass
        note(self.log_path, "end", key)
        yield from super().map(key, line)


def wait_started(log) -> None:
    """Until a Sleepy task has written its first line (not only made the file: a cancel
    between the two would stop the task before its line is written)."""
    while not (log.exists() and log.read_text().startswith("start 0\n")):
        time.sleep(0.02)


def test_cancel_stops_running_tasks_on_the_workers(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    log = tmp_path / "runs"
    with Client(address) as client:
        handle = client.submit(Sleepy(str(log), 60), RECORDS[:4], map_tasks=4)
        wait_started(log)
        handle.cancel()
        assert handle.status()["state"] == "cancelled"
        # the only worker is free again at once: the next job does not wait a minute
        assert client.submit(WordCount(), RECORDS, map_tasks=2).result(20) == \
            run_sequential(WordCount(), RECORDS)
    assert log.read_text().split("\n")[:2] == ["start 0", ""]  # stopped mid-sleep


def test_a_worker_s_log_names_a_stopped_attempt_by_its_number(daemons, tmp_path):
    """The worker's log says ``attempt 1``, as the broker's log, the task logs and the
    dashboard do, not the attempt's identifier (whose other bits are random)."""
    _, address = daemons.broker(*FAST)
    err = tmp_path / "worker.err"
    with open(err, "w") as sink:
        proc = subprocess.Popen(pmr("worker", "--connect", address, "--processes", "1",
                                    "--log-level", "INFO", "--parent-pid", str(os.getpid())),
                                stdout=subprocess.PIPE, stderr=sink, cwd=ROOT)
    daemons.procs.append(proc)  # (stopped with the others at the end)
    wait_workers(address, 1)
    log = tmp_path / "runs"
    with Client(address) as client:
        handle = client.submit(Sleepy(str(log), 60), RECORDS[:1], map_tasks=1)
        wait_started(log)
        handle.cancel()
        deadline = time.monotonic() + 30
        while "stopped" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    stopped = [ln for ln in err.read_text().splitlines() if "stopped" in ln]
    assert stopped and re.search(r"map-0 attempt 1 stopped", stopped[0]), stopped


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])  # SIGINT: Ctrl-C on the daemon
def test_sigterm_drains_a_worker_and_nothing_is_lost(daemons, tmp_path, sig):
    import signal

    _, address = daemons.broker("--heartbeat", "1", "--liveness", "60")  # no help from liveness
    leaving = daemons.worker(address, 1)
    daemons.worker(address, 1)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 5}") for i in range(30)]
    with Client(address) as client:
        handle = client.submit(Noted(str(log), "d", delay=0.1), records, map_tasks=30)
        while not log.exists() or len(notes(log)) < 6:
            time.sleep(0.02)
        leaving.send_signal(getattr(signal, sig))
        assert leaving.wait(15) == 0
        assert handle.result(30) == run_sequential(WordCount(), records)
        assert len(client.workers()) == 1


def test_a_job_waiting_for_tags_times_out_saying_why(cluster):
    from pymapreduce import JobTimeout

    with Client(cluster) as client:
        handle = client.submit(WordCount(), RECORDS, requires={"gpuu"})
        with pytest.raises(JobTimeout, match="still queued .* no live worker has the tags gpuu"):
            handle.result(timeout=2.5)
        handle.cancel()


def test_a_job_without_map_is_refused_at_submit(cluster):
    from pymapreduce import ConfigError, Job

    class NoMap(Job):
        def mapp(self, key, value):  # a typo
            yield key, value

    with Client(cluster) as client:
        with pytest.raises(ConfigError, match="defines no map"):
            client.submit(NoMap(), RECORDS)
