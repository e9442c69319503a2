"""A worker process that dies costs an attempt only to the task it was running: its
supervisor names that attempt (workers/running.py), and the tasks queued behind it in the
same process are queued again without a count. Real daemons, real kills."""

from __future__ import annotations

import os
import signal

import pytest

from pymapreduce import Client, Job, JobFailed

from .conftest import FAST, wait_workers


class KillsOnce(Job):
    """Each record in ``killers`` kills its worker process the first time it runs (a file
    in ``flags`` says it did); every other record, and every later run, is a word."""

    def __init__(self, flags: str, killers: tuple, always: bool = False) -> None:
        self.flags = flags
        self.killers = killers
        self.always = always

    def map(self, key, line):
        if key in self.killers:
            flag = os.path.join(self.flags, f"killed-{key}")
            if self.always or not os.path.exists(flag):
                with open(flag, "a") as f:
                    f.write("x")
                os.kill(os.getpid(), signal.SIGKILL)
        yield line, 1

    def reduce(self, word, counts):
        return sum(counts)


RECORDS = [(i, f"w{i % 3}") for i in range(12)]


def test_tasks_queued_behind_a_crash_are_not_charged_for_it(daemons, tmp_path):
    """Two tasks each kill the only worker process once, with two attempts allowed: the
    second killer waited in the process the first one killed. Charged for both deaths it
    would fail the job; charged for its own only, the job ends exact."""
    _, address = daemons.broker(*FAST, "--max-attempts", "2", "--backup-after", "off")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(KillsOnce(str(tmp_path), (0, 1)), RECORDS, map_tasks=12,
                               reducers=1)
        assert handle.result(120) == {"w0": 4, "w1": 4, "w2": 4}
    assert sorted(os.listdir(tmp_path)) == ["killed-0", "killed-1"]


def test_a_task_that_kills_every_worker_process_still_fails_the_job(daemons, tmp_path):
    """The crashing task itself is charged each time: it fails the job after its
    attempts, named, while the others are not charged for it."""
    _, address = daemons.broker(*FAST, "--max-attempts", "3", "--backup-after", "off")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(KillsOnce(str(tmp_path), (5,), always=True), RECORDS,
                               map_tasks=12, reducers=1)
        with pytest.raises(JobFailed) as failed:
            handle.result(120)
    assert "map-5" in str(failed.value) or "split 5" in str(failed.value), str(failed.value)
    with open(tmp_path / "killed-5") as f:
        assert f.read() == "xxx"  # (run three times: its three attempts, no more)
