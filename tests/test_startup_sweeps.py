"""A daemon's start-up sweep of the temporary directory (patterns/owned.py) must not hold
its start: anyone can plant entries with a daemon's prefix there (120,000 of them took
1.8 s to look at). The broker's sweep ran on a thread of its own; a sink's and a worker
supervisor's now do too.

Each test starts the real daemon (``tests/held_sweep.py``: the command itself, its sweep
held until the test lets it go) with ``$TMPDIR`` a directory of the test's own, planted
with entries of the daemon's prefix and a directory a killed daemon left. The daemon must
print its ready line while its sweep is held; let go, the sweep removes the dead daemon's
directory and leaves the rest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from pymapreduce.patterns import owned

from .conftest import FAST, ROOT, read_line, wait_workers

SWEPT = re.compile(r'^\["swept", ')


def held(daemons, tmp, *args: str) -> subprocess.Popen:
    """``pymapreduce ARGS`` with its sweeps held, ``$TMPDIR`` at ``tmp`` (cleaned up with
    the test's daemons)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.held_sweep", *args,
                             "--parent-pid", str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "TMPDIR": str(tmp)})
    daemons.procs.append(proc)
    return proc


def plant(tmp, prefix: str, entries: int = 3000) -> tuple[str, str]:
    """Entries named ``prefix...`` that no daemon made (files), a live-looking directory
    of someone else's making (no ``.owner``), and a directory a killed daemon left (its
    ``.owner`` held by nobody): the paths of the last two."""
    for i in range(entries):
        (tmp / f"{prefix}planted-{i}").write_bytes(b"")
    foreign = tmp / f"{prefix}foreign"
    foreign.mkdir()
    dead = tmp / f"{prefix}dead"
    (dead / "job").mkdir(parents=True)
    (dead / "job" / "data").write_bytes(b"x")
    (dead / owned.OWNER).write_bytes(b"")
    return str(foreign), str(dead)


def let_go(proc: subprocess.Popen, sweeps: int) -> dict[str, list[str]]:
    """Release the held sweep; what each of the daemon's ``sweeps`` removed, by prefix."""
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    removed = {}
    for _ in range(sweeps):
        _, prefix, paths = json.loads(read_line(proc, SWEPT).string)
        removed[prefix] = paths
    return removed


def test_a_sink_is_ready_while_its_start_up_sweep_runs(daemons, tmp_path):
    from pymapreduce.sinks.store import ROOT_PREFIX

    _, address = daemons.broker(*FAST)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    foreign, dead = plant(tmp, ROOT_PREFIX)
    proc = held(daemons, tmp, "sink", "--connect", address, "--log-level", "WARNING")
    read_line(proc, re.compile(r"pymapreduce sink ready: "))  # (the sweep is still held)
    assert let_go(proc, 1) == {ROOT_PREFIX: [dead]}
    assert os.path.isdir(foreign) and not os.path.exists(dead)
    assert len([n for n in os.listdir(tmp) if n.startswith(f"{ROOT_PREFIX}planted-")]) == 3000


def test_a_worker_daemon_is_ready_while_its_start_up_sweeps_run(daemons, tmp_path):
    from pymapreduce.spill.budget import DIR_PREFIX
    from pymapreduce.workers.isolation import ROOT_PREFIX

    _, address = daemons.broker(*FAST)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    jobs_foreign, jobs_dead = plant(tmp, ROOT_PREFIX)
    spill_foreign, spill_dead = plant(tmp, DIR_PREFIX)
    proc = held(daemons, tmp, "worker", "--connect", address, "--processes", "2",
                "--log-level", "WARNING")
    read_line(proc, re.compile(r"pymapreduce worker ready: "))  # (the sweeps are held)
    wait_workers(address, 2)  # its processes serve meanwhile
    assert let_go(proc, 2) == {ROOT_PREFIX: [jobs_dead], DIR_PREFIX: [spill_dead]}
    assert os.path.isdir(jobs_foreign) and os.path.isdir(spill_foreign)
    assert not os.path.exists(jobs_dead) and not os.path.exists(spill_dead)


def test_the_harness_holds_a_sweep_run_before_the_ready_line(daemons, tmp_path):
    """The harness itself: a sweep run in the foreground before a ready line (as the sink
    and the worker daemon ran theirs) holds that line until the test lets it go: then
    the sweep's line comes first."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    _, dead = plant(tmp, "pymapreduce-test-", 10)
    code = ("import sys, tests.held_sweep as h; from pymapreduce.patterns import owned; "
            "owned.sweep(sys.argv[1], 'pymapreduce-test-'); print('ready', flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT)
    daemons.procs.append(proc)
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    assert json.loads(proc.stdout.readline()) == ["swept", "pymapreduce-test-", [dead]]
    assert proc.stdout.readline() == b"ready\n"
    assert proc.wait(30) == 0


def test_a_sweep_holds_its_guard_while_it_holds_a_dead_directory_s_lock(tmp_path):
    """A worker supervisor forks while its sweep runs on a thread; a child forked while
    the sweep holds a dead daemon's directory lock would hold it for its whole life. The
    sweep holds the supervisor's fork lock (``guard``) from taking a directory's lock to
    letting it go, and only then."""
    import threading

    events = []

    class Guard:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __enter__(self):
            self.lock.acquire()
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")
            self.lock.release()

    guard = Guard()

    def remove(path: str) -> None:
        assert guard.lock.locked()
        events.append("remove")
        import shutil

        shutil.rmtree(path)

    _, dead = plant(tmp_path, "pymapreduce-test-", 2)
    assert owned.sweep(str(tmp_path), "pymapreduce-test-", remove, guard) == [dead]
    assert events.count("remove") == 1
    assert events[events.index("remove") - 1:events.index("remove") + 2] == [
        "enter", "remove", "exit"]
    assert len(events) == 2 * 4 + 1  # (each of the 4 entries looked at under the guard)
