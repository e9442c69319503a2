"""The worker daemon says when its processes have registered with the broker: one line
for all of them, once at start and once after a broker restart, not per process, per
task or per heartbeat (workers/registrations.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess

from pymapreduce import Client, run_sequential
from pymapreduce.workers.registrations import SETTLE, Registrations

from .conftest import FAST, ROOT, pmr, read_line
from .jobs import WordCount

ADDR = "tcp://127.0.0.1:5555"


def test_one_line_when_every_process_has_registered_and_none_while_nothing_changes():
    regs = Registrations(3, ADDR)
    assert regs.step(0.0) is None  # nobody yet (the ready line said "connecting")
    for slot in range(3):
        regs.mark(slot, False)  # READY sent
    regs.mark(0, True)
    regs.mark(1, True)
    assert regs.step(0.1) is None  # 2 of 3: the round waits for the third
    regs.mark(2, True)
    assert regs.step(0.2) == f"3 of 3 processes registered with {ADDR}"
    assert all(regs.step(0.3 + i) is None for i in range(100))  # said once


def test_a_broker_restart_is_one_line_however_the_processes_spread_over_the_looks():
    regs = Registrations(3, ADDR)
    for slot in range(3):
        regs.mark(slot, True)
    assert regs.step(0.0) is not None
    # the restarted broker asks each to register again: one between two looks (its
    # READY and WELCOME both unseen), then the others, one look apart
    regs.mark(0, False)
    regs.mark(0, True)
    assert regs.step(1.0) is None  # 1 and 2 still think they are registered
    regs.mark(1, False)
    assert regs.step(1.1) is None
    regs.mark(1, True)
    regs.mark(2, False)
    assert regs.step(1.2) is None
    regs.mark(2, True)
    assert regs.step(1.3) == f"3 of 3 processes registered with {ADDR}"
    assert regs.step(1.3 + 2 * SETTLE) is None


def test_a_restarted_process_is_said_after_the_settle_time_and_a_partial_count_too():
    regs = Registrations(2, ADDR)
    regs.mark(0, True)
    assert regs.step(0.0) is None
    # one of two never answers: said after SETTLE with the count, then when it comes
    assert regs.step(SETTLE) == f"1 of 2 processes registered with {ADDR}"
    assert regs.step(SETTLE + 1) is None
    regs.mark(1, True)
    assert regs.step(SETTLE + 2) == f"2 of 2 processes registered with {ADDR}"
    # process 1 dies and its replacement registers: one line, SETTLE after it did
    regs.gone(1)
    assert regs.step(20.0) is None
    regs.mark(1, False)
    regs.mark(1, True)
    assert regs.step(20.1) is None
    assert regs.step(20.1 + SETTLE) == f"2 of 2 processes registered with {ADDR}"
    assert regs.step(40.0) is None


def test_the_page_is_shared_with_a_forked_process():
    regs = Registrations(1, ADDR)
    pid = os.fork()
    if pid == 0:  # the child: what a worker process does
        regs.mark(0, False)
        regs.mark(0, True)
        os._exit(0)
    os.waitpid(pid, 0)
    assert regs.step(0.0) == f"1 of 1 process registered with {ADDR}"


def test_the_daemon_says_once_when_its_processes_registered_and_once_after_a_restart(
        daemons):
    broker, address = daemons.broker(*FAST)
    proc = subprocess.Popen(pmr("worker", "--connect", address, "--processes", "2",
                                "--log-level", "INFO", "--parent-pid", str(os.getpid())),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    daemons.procs.append(proc)
    registered = re.compile(re.escape(f"INFO 2 of 2 processes registered with {address}"))
    seen: list[str] = []
    read_line(proc, registered, 30.0, seen)
    assert "pymapreduce worker ready: 2 processes connecting to" in "".join(seen[:-1])
    records = [(i, f"w{i % 7} w{i % 3}") for i in range(200)]
    with Client(address) as client:  # tasks and heartbeats: nothing more to say
        assert client.submit(WordCount(), records, map_tasks=20).result(60) == \
            run_sequential(WordCount(), records)
    broker.kill()
    broker.wait()
    daemons.broker(*FAST, bind=address)  # every process registers again
    read_line(proc, registered, 30.0, seen)
    with Client(address) as client:
        assert client.submit(WordCount(), records, map_tasks=20).result(60) == \
            run_sequential(WordCount(), records)
    proc.send_signal(signal.SIGTERM)
    seen.extend(line.decode() for line in proc.stdout)
    assert proc.wait(10) == 0
    assert sum(1 for line in seen if registered.search(line)) == 2, seen
    assert not [line for line in seen if "register again" in line], seen
