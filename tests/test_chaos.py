"""Chaos: a word count over files while worker processes, whole worker daemons and the
broker are killed at random moments (seeded). Every run's result is the sequential one.

The long soak version is ``benchmarks/chaos_soak.py``; these runs are short and bounded.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from pymapreduce import Client, read_text, run_sequential

from .conftest import FAST, children, kill_daemon, wait_workers
from .jobs import WordCount, WordCountCombined, read_lines


class SlowWordCount(WordCountCombined):
    """Word count that takes a little while per line, so faults land mid-task."""

    def map(self, key, line):
        time.sleep(0.001)
        yield from super().map(key, line)


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_word_count_while_worker_processes_are_killed_at_random(daemons, corpus, tmp_path, seed):
    rng = random.Random(seed)
    state = tmp_path / "state"
    # An attempt lost with its worker counts against its task (a task that kills its worker
    # must fail the job in the end: docs/fault-tolerance.md). Here one of 4 processes dies
    # every 0.2-0.6 s, so on a slow machine an attempt is lost about one time in five and
    # one task of ~100 lost 4 times in a row was seen (2026-12-02): 10 attempts, so that
    # what is tested is exactness under kills, not the attempt budget.
    broker, address = daemons.broker(*FAST, "--state-dir", str(state), "--max-attempts", "10")
    sups = [daemons.worker(address, 2) for _ in range(2)]
    wait_workers(address, 4)
    expected = run_sequential(WordCount(), read_lines(corpus))
    stop = threading.Event()
    kills: list[str] = []

    def chaos() -> None:
        while not stop.wait(rng.uniform(0.2, 0.6)):
            victims = [pid for s in sups for pid in children(s.pid)]
            if victims and kill_quietly(rng.choice(victims)):
                kills.append("process")

    with Client(address, timeout=20) as client:
        handle = client.submit(SlowWordCount(), read_text(corpus, split_bytes=8192), reducers=3)
        killer = threading.Thread(target=chaos, daemon=True)
        killer.start()
        try:
            result = handle.result(120)
        finally:
            stop.set()
            killer.join(5)
    assert result == expected
    assert len(kills) >= 2, f"only {len(kills)} kill(s) before the job ended"


def test_word_count_while_daemons_freeze_die_and_the_broker_restarts(daemons, corpus, tmp_path):
    rng = random.Random(11)
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    sups = [daemons.worker(address, 1) for _ in range(3)]
    wait_workers(address, 3)
    expected = run_sequential(WordCount(), read_lines(corpus))
    with Client(address, timeout=20) as client:
        handle = client.submit(SlowWordCount(), read_text(corpus, split_bytes=8192), reducers=3)

        def progress() -> float:
            done, total = handle.status()["maps"]
            return done / total

        while progress() < 0.2:
            time.sleep(0.02)
        frozen = children(sups[0].pid)[0]  # a frozen worker process
        os.kill(frozen, signal.SIGSTOP)
        while progress() < 0.4:
            time.sleep(0.02)
        kill_daemon(sups[1])  # a whole worker daemon
        daemons.worker(address, 1)  # a replacement joins mid-job
        time.sleep(rng.uniform(0.1, 0.5))
        broker.kill()  # and the broker dies, mid-map
        broker.wait()
        daemons.broker(*FAST, "--state-dir", str(state), bind=address)
        os.kill(frozen, signal.SIGCONT)
        assert handle.result(120) == expected
        assert handle.status()["recovered"] > 0
