"""Failures of real processes: frozen, killed and busy workers (the result never changes)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pymapreduce import Client, JobFailed, run_sequential

from .conftest import FAST, children, kill_daemon, wait_workers
from .jobs import WordCount, note


class Logged(WordCount):
    """Word count whose map notes each execution of a record in a file, then dawdles."""

    def __init__(self, log_path, delay=0.0, busy=0.0):
        self.log_path = log_path
        self.delay = delay
        self.busy = busy

    def map(self, key, line):
        note(self.log_path, key)
        if self.busy:  # CPU-bound, never yields: only a heartbeat thread keeps us alive
            end = time.process_time() + self.busy
            while time.process_time() < end:
                pass
        time.sleep(self.delay)
        yield from super().map(key, line)


def executions(path) -> list[int]:
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def test_a_long_cpu_bound_map_does_not_make_its_worker_look_dead(daemons, tmp_path):
    _, address = daemons.broker(*FAST)  # taken for dead after 1 s of silence
    daemons.worker(address, 1)
    wait_workers(address, 1)
    log = tmp_path / "runs"
    records = [(0, "a b"), (1, "b c")]
    with Client(address) as client:
        result = client.submit(Logged(str(log), busy=2.5), records, map_tasks=2).result(60)
    assert result == run_sequential(WordCount(), records)
    assert sorted(executions(log)) == [0, 1]  # each record ran once: no re-run, no purge


def test_a_frozen_worker_loses_its_task_and_rejoins_when_thawed(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    first = daemons.worker(address, 1)
    wait_workers(address, 1)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 3}") for i in range(6)]
    with Client(address) as client:
        handle = client.submit(Logged(str(log), delay=1.0), records, map_tasks=6)
        while not log.exists():
            time.sleep(0.02)
        frozen = children(first.pid)[0]
        os.kill(frozen, signal.SIGSTOP)  # mid-task, holding its queue
        try:
            daemons.worker(address, 1)
            assert handle.result(60) == run_sequential(WordCount(), records)
            assert client.info()["workers"] == 1  # the frozen one was declared dead
        finally:
            os.kill(frozen, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while client.info()["workers"] < 2:  # thawed, it is told to register again
            assert time.monotonic() < deadline, "the thawed worker never rejoined"
            time.sleep(0.1)
        # and it does real work again
        assert client.submit(WordCount(), records, map_tasks=6).result(30) == (
            run_sequential(WordCount(), records))


def test_killing_a_whole_worker_daemon_mid_job_changes_nothing(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    doomed = daemons.worker(address, 2)
    daemons.worker(address, 1)
    wait_workers(address, 3)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 11} v{i % 4}") for i in range(60)]
    with Client(address) as client:
        handle = client.submit(Logged(str(log), delay=0.05), records, map_tasks=20)
        while handle.status()["maps"][0] < 3:
            time.sleep(0.02)
        kill_daemon(doomed)
        assert handle.result(60) == run_sequential(WordCount(), records)
        handle.status()
        assert handle.counters == {}  # and no counter was double-counted (none were set)


class SlowOnOneWorker(Logged):
    """Maps fast, except on a worker started with PMR_TEST_SLOW=1 (a straggling machine)."""

    def map(self, key, line):
        if os.environ.get("PMR_TEST_SLOW"):
            time.sleep(30)
        yield from super().map(key, line)


def test_a_straggler_gets_a_backup_attempt_and_the_first_commit_wins(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1, env={"PMR_TEST_SLOW": "1"})
    wait_workers(address, 1)
    daemons.worker(address, 1)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 5}") for i in range(8)]
    with Client(address) as client:
        handle = client.submit(SlowOnOneWorker(str(log), delay=0.3), records, map_tasks=8)
        # the slow worker sits on its tasks for 30 s each; backups finish them elsewhere
        assert handle.result(60) == run_sequential(WordCount(), records)
        assert handle.status()["backups"] >= 1
    assert sorted(set(executions(log))) == list(range(8))


class Poisoned(WordCount):
    """Word count whose map raises on lines holding "poison" (each try is logged)."""

    def __init__(self, log_path=None):
        self.log_path = log_path

    def map(self, key, line):
        if self.log_path:
            note(self.log_path, key, os.getpid())
        if "poison" in line:
            raise ValueError(f"cannot digest {line!r}")
        yield from super().map(key, line)


def poisoned_records():
    records = [(i, f"w{i % 5} v{i % 3}") for i in range(40)]
    records[7] = (7, "a poison pill")
    records[23] = (23, "more poison")
    return records


def test_bad_records_are_skipped_after_failing_twice_and_listed(cluster):
    records = poisoned_records()
    job = Poisoned()
    job.skip_bad_records = True
    with Client(cluster) as client:
        handle = client.submit(job, records, map_tasks=8)
        result = handle.result(60)
        status = handle.status()
    good = [r for r in records if "poison" not in r[1]]
    assert result == run_sequential(WordCount(), good)
    skipped = sorted(status["skipped"], key=lambda s: s["task"])
    assert [s["key"] for s in skipped] == ["7", "23"]
    # records 7 and 23 are the 3rd and 4th of their splits of five
    assert [(s["task"], s["record"]) for s in skipped] == [("map-1", 2), ("map-4", 3)]
    assert status["state"] == "succeeded"


def test_without_skipping_a_poison_record_fails_the_job_naming_it(cluster):
    with Client(cluster) as client:
        with pytest.raises(JobFailed) as info:
            client.submit(Poisoned(), poisoned_records(), map_tasks=8).result(60)
    err = info.value
    assert err.task in ("map-1", "map-4")
    assert err.position["key"] in ("7", "23")
    assert "cannot digest" in err.remote_traceback


def test_more_bad_records_than_allowed_fail_the_job(cluster):
    job = Poisoned()
    job.skip_bad_records = 1
    with Client(cluster) as client:
        with pytest.raises(JobFailed, match="more than 1 bad records"):
            client.submit(job, poisoned_records(), map_tasks=8).result(60)


def test_a_failed_task_is_retried_on_another_worker(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    log = tmp_path / "tries"

    class FailsOnce(Poisoned):
        def map(self, key, line):
            note(self.log_path, key, os.getpid())
            with open(self.log_path) as f:
                tries = [x for x in f.read().split("\n") if x.startswith(f"{key} ")]
            if key == 3 and len(tries) == 1:
                raise ValueError("first try of record 3 fails")
            yield from WordCount.map(self, key, line)

    records = [(i, f"w{i % 4}") for i in range(12)]
    with Client(address) as client:
        result = client.submit(FailsOnce(str(log)), records, map_tasks=12).result(60)
    assert result == run_sequential(WordCount(), records)
    tries = [line.split() for line in log.read_text().split("\n") if line.startswith("3 ")]
    assert len(tries) == 2
    assert tries[0][1] != tries[1][1], "the retry ran on the worker where the task failed"


class SlowLast(WordCount):
    """Record 11 takes long; every try is logged with the pid that runs it."""

    def __init__(self, log_path):
        self.log_path = log_path

    def map(self, key, line):
        note(self.log_path, key, os.getpid())
        if key == 11:
            time.sleep(2.0)
        yield from super().map(key, line)


@pytest.mark.parametrize("what", ["process", "daemon"])
def test_a_killed_worker_is_noticed_at_once_not_after_its_liveness(daemons, tmp_path, what):
    # liveness of a minute and no backup tasks: the job can finish within the 30 s it is
    # given only if the broker notices the death at once: a killed process's replacement
    # says so; a killed daemon's connections close, and a probe finds it unreachable
    _, address = daemons.broker("--heartbeat", "1", "--liveness", "60", "--backup-after", "off")
    first = daemons.worker(address, 1)
    daemons.worker(address, 1)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 5}") for i in range(12)]
    with Client(address) as client:
        handle = client.submit(SlowLast(str(log)), records, map_tasks=12)
        running = None
        while running is None:
            lines = [x.split() for x in log.read_text().splitlines()] if log.exists() else []
            running = next((int(pid) for key, pid in lines if key == "11"), None)
            time.sleep(0.02)
        if what == "daemon":  # kill -9 of the daemon running the slow task, whole
            doomed = first if running in children(first.pid) else daemons.procs[-1]
            doomed.kill()
        os.kill(running, signal.SIGKILL)  # mid-task, with nothing left to hand it
        assert handle.result(30) == run_sequential(WordCount(), records)
    tries = [x.split() for x in log.read_text().splitlines() if x.startswith("11 ")]
    assert len(tries) == 2 and tries[0][1] != tries[1][1]
