"""How an embedded cluster starts and stops: its workers start with its broker and read
the broker's address from standard input; a signal ends a daemon's wait at once."""

from __future__ import annotations

import os
import signal
import subprocess

from pymapreduce import Client, LocalCluster
from pymapreduce.patterns.wakeup import SignalWakeup

from .conftest import ROOT, pmr
from .jobs import WordCount


def test_a_worker_reads_its_broker_address_from_stdin_and_says_when_there_is_none():
    proc = subprocess.run(pmr("worker", "--connect", "-", "--processes", "1"),
                          input=b"", capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and b"standard input ended" in proc.stderr
    proc = subprocess.run(pmr("worker", "--connect", "-", "--processes", "1"),
                          input=b"not-an-address\n", capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and b"not-an-address" in proc.stderr


def test_an_embedded_cluster_started_in_parallel_runs_a_job_and_leaves_nothing_behind():
    with LocalCluster(workers=2) as cluster, Client(cluster.address) as client:
        broker, worker = cluster._broker, cluster._worker
        assert worker.stdin.closed  # the address was handed over
        assert dict(client.submit(WordCount(), [(0, "x y x")]).result()) == {"x": 2, "y": 1}
    assert broker.returncode is not None and worker.returncode is not None
    assert worker.returncode == 0 and broker.returncode == 0


def test_a_signal_ends_a_wakeup_sleep():
    wakeup = SignalWakeup()
    got = []
    old = signal.signal(signal.SIGUSR2, lambda *_: got.append(1))
    try:
        assert wakeup.fd is not None
        pid = os.fork()
        if pid == 0:  # a child signals its parent while the parent sleeps
            os.kill(os.getppid(), signal.SIGUSR2)
            os._exit(0)
        wakeup.sleep(600)  # pytest's timeout would fail the test if the signal did not end it
        os.waitpid(pid, 0)
        assert got == [1]
    finally:
        signal.signal(signal.SIGUSR2, old)
        wakeup.close()
    assert wakeup.fd is None
