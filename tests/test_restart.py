"""Broker restart: kill -9 the broker mid-job and start it again on the same state dir.

Workers and a client blocked in ``result()`` reconnect by themselves, the result is the
sequential one, and map tasks committed before the crash (read back from the journal the
dead broker left) are not run again.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from pymapreduce import Client, JobNotFound, run_sequential

from .conftest import FAST, ROOT, wait_workers
from .jobs import WordCount
from .test_faults import Logged, executions


class SlowReduce(WordCount):
    def reduce(self, key, values):
        time.sleep(0.15)
        return super().reduce(key, values)


def committed(state_dir, kind: str = "map") -> set[int]:
    """Task indexes the journal holds as committed (read as the restarted broker will)."""
    db = sqlite3.connect(f"file:{state_dir}/journal.sqlite?mode=ro", uri=True)
    try:
        return {i for (i,) in db.execute("SELECT idx FROM commits WHERE kind=?", (kind,))}
    finally:
        db.close()


class Waiter(threading.Thread):
    """A client blocked in result() on its own thread, as a user's program would be."""

    def __init__(self, address, job, records, **submit) -> None:
        super().__init__(daemon=True)
        self.client = Client(address, timeout=20)
        self.handle = self.client.submit(job, records, **submit)
        self.result = self.error = None

    def run(self) -> None:
        try:
            self.result = self.handle.result(120)
        except Exception as exc:  # reported by the test
            self.error = exc


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        time.sleep(0.02)


def test_broker_killed_mid_map_restarts_from_its_journal(daemons, tmp_path):
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 7} x{i % 3}") for i in range(60)]
    waiter = Waiter(address, Logged(str(log), delay=0.08), records, map_tasks=60)
    waiter.start()
    wait_for(lambda: len(committed(state)) >= 20, what="20 committed map tasks")

    broker.kill()  # SIGKILL: nothing is flushed or said goodbye to
    broker.wait()
    before = committed(state)
    ran_before = len(executions(log))
    assert 20 <= len(before) < 60

    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    waiter.join(120)
    assert not waiter.is_alive()
    assert waiter.error is None, waiter.error
    assert waiter.result == run_sequential(WordCount(), records)
    rerun = set(executions(log)[ran_before:])
    assert not rerun & before, f"committed map tasks ran again: {sorted(rerun & before)}"
    status = waiter.handle.status()
    assert status["recovered"] == len(before)
    assert status["state"] == "succeeded"

    # another process re-attaches to the job by its id and reads the same result
    code = ("import sys; from pymapreduce import Client; "
            "print(sorted(Client(sys.argv[1]).job(sys.argv[2]).result(30).items()))")
    out = subprocess.run([sys.executable, "-c", code, address, waiter.handle.job_id],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted(waiter.result.items()))
    waiter.client.close()


def test_broker_killed_mid_reduce_keeps_every_map_and_the_done_reduces(daemons, tmp_path):
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    records = [(i, " ".join(f"k{(i + j) % 40}" for j in range(5))) for i in range(30)]

    class Job(Logged, SlowReduce):
        pass

    waiter = Waiter(address, Job(str(log)), records, map_tasks=10, reducers=8)
    waiter.start()
    wait_for(lambda: len(committed(state, "reduce")) >= 2, what="2 committed reduce tasks")
    broker.kill()
    broker.wait()
    maps, reduces = committed(state), committed(state, "reduce")
    ran_before = len(executions(log))
    assert len(maps) == 10

    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    waiter.join(120)
    assert waiter.error is None, waiter.error
    assert waiter.result == run_sequential(WordCount(), records)
    assert executions(log)[ran_before:] == []  # no map ran again
    assert waiter.handle.status()["recovered"] >= len(maps) + len(reduces)
    waiter.client.close()


def test_a_finished_job_is_still_there_after_a_restart(daemons, tmp_path):
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 1)
    records = [(i, f"a b{i % 4}") for i in range(20)]
    with Client(address) as client:
        job_id = client.submit(WordCount(), records).job_id
        elapsed = client.job(job_id).wait(60)["elapsed"]
    broker.kill()
    broker.wait()
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    with Client(address) as client:
        handle = client.job(job_id)
        assert handle.result(30) == run_sequential(WordCount(), records)
        assert abs(handle.status()["elapsed"] - elapsed) < 0.5  # its time, not the restart's


def test_a_restart_without_state_makes_the_waiting_client_fail_clearly(daemons, tmp_path):
    broker, address = daemons.broker(*FAST)
    records = [(0, "a")]
    with Client(address, timeout=10) as client:
        handle = client.submit(WordCount(), records)  # no worker: it waits
        handle.status()
        broker.kill()
        broker.wait()
        daemons.broker(*FAST, bind=address)
        start = time.monotonic()
        with pytest.raises(JobNotFound, match="restarted without its state"):
            handle.wait(60)
        assert time.monotonic() - start < 15  # said promptly, not after the job's timeout


def test_a_second_broker_on_the_same_state_dir_is_refused(daemons, tmp_path):
    state = tmp_path / "state"
    daemons.broker("--state-dir", str(state))
    proc = subprocess.run([sys.executable, "-m", "pymapreduce", "broker", "--bind",
                           "tcp://127.0.0.1:0", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode != 0
    assert "in use by another broker" in proc.stderr
    assert "stop that broker first, or give this one another --state-dir" in proc.stderr


def test_a_finished_job_whose_files_were_lost_says_so_instead_of_an_empty_result(daemons,
                                                                                  tmp_path):
    import shutil

    from pymapreduce import JobFailed

    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 1)
    records = [(i, f"a b{i % 4}") for i in range(20)]
    with Client(address) as client:
        job_id = client.submit(WordCount(), records).job_id
        client.job(job_id).wait(60)
    broker.kill()
    broker.wait()
    for job_dir in (state / "outputs").iterdir():  # the disk lost the results
        shutil.rmtree(job_dir)
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    with Client(address) as client:
        with pytest.raises(JobFailed, match="missing from the state directory"):
            client.job(job_id).result(30)


def test_a_finished_job_whose_journal_missed_map_commits_keeps_its_result(daemons,
                                                                          tmp_path):
    """Map commits the journal could not write (its disk was full for a while) are not
    written later; the job then finished, and every reduce partition's commit is there.
    After a restart the job has its result, not a failure: the missing maps' outputs were
    spent. With a reduce partition's commit missing as well it still fails, clearly
    (an empty partition and a lost one cannot be told apart)."""
    from pymapreduce import JobFailed

    records = [(i, f"a b{i % 4} c{i}") for i in range(40)]
    for drop_reduce in (False, True):
        state = tmp_path / f"state{int(drop_reduce)}"
        broker, address = daemons.broker(*FAST, "--state-dir", str(state))
        daemons.worker(address, 1)
        with Client(address) as client:
            job_id = client.submit(WordCount(), records, map_tasks=8, reducers=2).job_id
            client.job(job_id).wait(60)
        broker.kill()
        broker.wait()
        assert committed(state, "map") == set(range(8))
        assert committed(state, "reduce") == {0, 1}
        db = sqlite3.connect(f"{state}/journal.sqlite")
        with db:  # (as the rows skipped while the disk was full)
            db.execute("DELETE FROM commits WHERE kind='map' AND idx IN (1, 4, 6)")
            if drop_reduce:
                db.execute("DELETE FROM commits WHERE kind='reduce' AND idx=1")
        db.close()
        daemons.broker(*FAST, "--state-dir", str(state), bind=address)
        with Client(address) as client:
            handle = client.job(job_id)
            if drop_reduce:
                with pytest.raises(JobFailed, match="only part of its commits"):
                    handle.result(30)
            else:
                assert handle.result(30) == run_sequential(WordCount(), records)
                assert handle.status()["state"] == "succeeded"


@pytest.mark.parametrize("state", [True, False])
def test_a_stopped_broker_says_what_became_of_its_unfinished_jobs(tmp_path, state):
    # an operator's `kill PID` (systemctl stop): the last log line says whether the jobs
    # still queued are kept for the next start, or lost
    from .conftest import READY, pmr, read_line, stop

    extra = ["--state-dir", str(tmp_path / "state")] if state else []
    broker = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--parent-pid",
                                  str(__import__("os").getpid()), *extra),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        address = read_line(broker, READY).group(1)
        with Client(address) as client:  # no worker: it stays queued
            client.submit(WordCount(), [(1, "a b")])
        broker.terminate()
        assert broker.wait(20) == 0
        last = broker.stderr.read().decode().strip().splitlines()[-1]
    finally:
        stop(broker)
        broker.stderr.close()
    if state:
        assert "INFO stopped; 1 unfinished job(s) kept in " in last, last
        assert last.endswith("a broker started again on it carries them on"), last
    else:
        assert "WARNING stopped; 1 unfinished job(s) lost with it (without --state-dir" \
            in last, last


def test_a_recovered_job_s_flow_counts_what_was_done_before_the_restart(daemons, tmp_path):
    """The dashboard's per-phase flow of a job a restarted broker recovered counts its
    journaled commits too (it counted only the work done since the restart)."""
    import json
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as probe:  # a port for both brokers' HTTP (free a moment ago)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tmp_path / "state"
    http = ["--http", f"127.0.0.1:{port}"]
    broker, address = daemons.broker(*FAST, "--state-dir", str(state), *http)
    daemons.worker(address, 1)
    records = [(i, f"a b{i % 4}") for i in range(40)]

    def flow(job_id: str) -> dict:
        """The job's flow once the dashboard's snapshot has its ended row."""
        url = f"http://127.0.0.1:{port}/api/jobs/{job_id}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as reply:
                    job = json.loads(reply.read())["job"]
                if job["state"] == "succeeded":  # (and what it wrote as its result)
                    return {**job["flow"], "result": job["bytes_out"]}
            except (urllib.error.URLError, ConnectionError):
                pass  # (not serving yet, or not in its snapshot yet)
            assert time.monotonic() < deadline, "the job never showed on the dashboard"
            time.sleep(0.1)

    with Client(address) as client:
        job_id = client.submit(WordCount(), records, map_tasks=4, reducers=2).job_id
        client.job(job_id).wait(60)
    before = flow(job_id)
    assert before["map"]["records_in"] == 40 and before["reduce"]["bytes_out"] > 0
    assert before["result"] == before["reduce"]["bytes_out"]
    broker.kill()
    broker.wait()
    daemons.broker(*FAST, "--state-dir", str(state), *http, bind=address)
    assert flow(job_id) == before
