"""An embedded cluster whose daemons are forked from the caller (pymapreduce/forkstart.py):
it runs jobs, survives a killed worker process, leaves no process behind, takes none of
the caller's handlers, and is not chosen while the caller runs other threads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pymapreduce import Client, ConfigError, Job, LocalCluster
from pymapreduce.forkstart import START_ENV, choose_start_method

from .conftest import ROOT, children, pmr, read_line, wait_dead
from .jobs import WordCount

LINES = [(i, f"a b {'c' if i % 2 else 'd'} a") for i in range(40)]
EXPECTED = {"a": 80, "b": 40, "c": 20, "d": 20}


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def wait_children(pid: int, n: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(children(pid)) != n and time.monotonic() < deadline:
        time.sleep(0.02)
    return children(pid)


def test_a_forked_cluster_runs_jobs_survives_a_killed_worker_and_leaves_nothing_behind():
    with LocalCluster(workers=2, start_method="fork") as cluster:
        assert cluster.start_method == "fork"
        workers = wait_children(cluster.worker_pid, 2)
        pids = [cluster.broker_pid, cluster.worker_pid, *workers]
        # forked, not executed: the daemons are this process's copies, named for ps/top
        assert cmdline(cluster.broker_pid) == cmdline(os.getpid())
        assert comm(cluster.broker_pid) == "pmr-broker"
        assert comm(cluster.worker_pid) == "pmr-worker"
        assert cluster.broker_args[:2] == ["pymapreduce", "broker"]
        with Client(cluster.address) as client:
            assert dict(client.submit(WordCount(), LINES).result(60)) == EXPECTED
            os.kill(workers[0], signal.SIGKILL)
            assert dict(client.submit(WordCount(), LINES).result(60)) == EXPECTED
            deadline = time.monotonic() + 20  # the supervisor reaps and replaces it
            while workers[0] in children(cluster.worker_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            again = wait_children(cluster.worker_pid, 2)
            assert len(again) == 2 and workers[0] not in again
            pids += again
    assert wait_dead(pids) == []
    assert not set(pids) & set(children(os.getpid()))  # reaped: no zombie either


def test_other_threads_make_the_embedded_cluster_spawn_its_daemons(monkeypatch):
    monkeypatch.delenv(START_ENV, raising=False)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert choose_start_method() == "spawn"
        with LocalCluster(workers=1) as cluster, Client(cluster.address) as client:
            assert cluster.start_method == "spawn"
            assert b"pymapreduce" in cmdline(cluster.broker_pid)  # a new Python
            pids = [cluster.broker_pid, cluster.worker_pid, *children(cluster.worker_pid)]
            assert dict(client.submit(WordCount(), LINES).result(60)) == EXPECTED
    finally:
        stop.set()
        thread.join()
    assert wait_dead(pids) == []
    monkeypatch.setenv(START_ENV, "fork")
    assert choose_start_method() == "fork"
    assert choose_start_method("spawn") == "spawn"
    with pytest.raises(ConfigError, match="start_method"):
        LocalCluster(start_method="vfork")


def test_a_fork_asked_for_beside_a_busy_thread_runs_a_job():
    stop = threading.Event()

    def busy() -> None:  # Python work, allocations and writes while the caller forks
        while not stop.is_set():
            sum(len(str(i)) for i in range(2000))
            sys.stderr.write("")

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        with LocalCluster(workers=2, start_method="fork") as cluster:
            pids = [cluster.broker_pid, cluster.worker_pid]
            assert WordCount().run(LINES, address=cluster.address) == EXPECTED
    finally:
        stop.set()
        thread.join()
    assert wait_dead(pids) == []


def test_forked_daemons_with_sinks_memory_and_keys(tmp_path):
    keys = str(tmp_path / "keys")
    subprocess.run(pmr("keys", "cluster", keys), check=True, cwd=ROOT, capture_output=True,
                   timeout=60)
    with LocalCluster(workers=2, sinks=1, memory="64MB", keys=keys,
                      start_method="fork") as cluster:
        pids = [cluster.broker_pid, cluster.worker_pid, *cluster.sink_pids]
        assert comm(cluster.sink_pids[0]) == "pmr-sink"
        with Client(cluster.address, keys=keys) as client:
            assert client.info()["sinks"] == 1
            assert dict(client.submit(WordCount(), LINES, reducers=2).result(60)) == EXPECTED
    assert wait_dead(pids) == []


CALLER = textwrap.dedent('''
    import logging, os, signal, socket, sys
    from pymapreduce import Job, LocalCluster

    class Echo(Job):
        def map(self, key, value):
            print("ECHO-FROM-TASK", flush=True)
            yield value, 1

        def reduce(self, key, values):
            return sum(values)

    # the caller's own handlers: a log file, a SIGTERM handler, an event loop's wakeup fd
    logging.basicConfig(filename=sys.argv[1], level=logging.DEBUG)
    signal.signal(signal.SIGTERM, lambda *_: open(sys.argv[2], "a").write("caller's\\n"))
    loop_r, loop_w = socket.socketpair()
    loop_r.setblocking(False)
    loop_w.setblocking(False)
    signal.set_wakeup_fd(loop_w.fileno())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # (and a signal mask)
    with LocalCluster(workers=1, log_level="INFO", start_method="fork") as cluster:
        print("PIDS", cluster.broker_pid, cluster.worker_pid, flush=True)
        print("RESULT", Echo().run([(0, "x"), (1, "x")], address=cluster.address), flush=True)
        daemons = cluster._broker, cluster._worker
    print("CODES", *(d.returncode for d in daemons), flush=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        print("WAKEUP", loop_r.recv(100), flush=True)
    except BlockingIOError:
        print("WAKEUP none", flush=True)
    if len(sys.argv) > 3:  # stay until killed
        with LocalCluster(workers=2, start_method="fork") as cluster:
            print("LIVE", cluster.broker_pid, cluster.worker_pid,
                  *open(f"/proc/{cluster.worker_pid}/task/{cluster.worker_pid}/children")
                  .read().split(), flush=True)
            signal.pause()
''')


def test_forked_daemons_take_none_of_the_callers_handlers_and_echo_task_output(tmp_path):
    script, log, marker = tmp_path / "caller.py", tmp_path / "caller.log", tmp_path / "term"
    script.write_text(CALLER)
    proc = subprocess.run([sys.executable, str(script), str(log), str(marker)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT {'x': 2}" in proc.stdout
    assert "ECHO-FROM-TASK" in proc.stdout  # what a task prints reaches the caller's stdout
    # the daemons log on stderr, as started daemons do, not into the caller's log file
    assert "pymapreduce broker" in proc.stderr
    assert "pymapreduce" not in (log.read_text() if log.exists() else "")
    assert not marker.exists()  # SIGTERM ran the daemons' handlers, not the caller's
    assert "WAKEUP none" in proc.stdout  # no byte of theirs in the caller's wakeup fd
    assert "CODES 0 0" in proc.stdout  # SIGTERM stopped them (the caller's mask is not theirs)


def test_a_killed_caller_takes_its_forked_daemons_with_it(tmp_path):
    script, log, marker = tmp_path / "caller.py", tmp_path / "caller.log", tmp_path / "term"
    script.write_text(CALLER)
    proc = subprocess.Popen([sys.executable, str(script), str(log), str(marker), "stay"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        m = read_line(proc, re.compile(r"LIVE ([\d ]+)"), timeout=60)
        pids = [int(p) for p in m.group(1).split()]
        assert len(pids) == 4  # broker, supervisor, two worker processes
        proc.kill()
        proc.wait(20)
        assert wait_dead(pids, timeout=20) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_forked_workers_use_the_callers_module_by_reference_and_never_import_it_again(
        tmp_path):
    """A module without a main guard whose job travels by reference: forked workers find
    the caller's copy of the module (as it was when the cluster started) instead of
    importing it, so it runs once and no cluster starts in a worker (spawned workers
    import it and refuse: tests/test_travel.py)."""
    from .test_embedded import GUARDLESS

    (tmp_path / "guardless.py").write_text(
        GUARDLESS.replace("class WC(Job):\n", "class WC(Job):\n    ship_modules = False\n"))
    imported = subprocess.run([sys.executable, "-c", "import guardless"], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
                                   START_ENV: "fork"},
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert "{'a': 2, 'b': 1}" in imported.stdout
    assert len((tmp_path / "imports.log").read_text().split()) == 1


def test_forked_daemons_hold_none_of_the_callers_descriptors():
    """A pipe the caller writes to ends when the caller closes it, whatever the cluster
    started meanwhile (a daemon holding a copy would keep the reader waiting forever)."""
    import select

    read_end, write_end = os.pipe()
    try:
        with LocalCluster(workers=1, start_method="fork") as cluster:
            held = set()
            for pid in (cluster.broker_pid, cluster.worker_pid,
                        *children(cluster.worker_pid)):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    held.add(os.path.realpath(f"/proc/{pid}/fd/{fd}"))
            os.close(write_end)
            write_end = -1
            assert select.select([read_end], [], [], 10)[0], "a daemon holds the pipe open"
            assert os.read(read_end, 1) == b""
            assert WordCount().run(LINES, address=cluster.address) == EXPECTED
        ours = os.path.realpath(f"/proc/self/fd/{read_end}")
        assert ours not in held
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


class Loaded(Job):
    """Whether a module this job never imports is in its worker process already."""

    def __init__(self, module):
        self.module = module

    def map(self, key, value):
        yield "loaded", self.module in sys.modules

    def reduce(self, key, values):
        return sorted(set(values))


def test_preloaded_modules_are_in_every_worker_process_and_launch_overlaps_the_caller():
    """``preload``: the supervisor imports the modules before it forks the worker
    processes (``pymapreduce worker --preload``), so every task finds them; and
    ``launch()`` then ``start()`` is ``start()``, the caller's own work in between."""
    # A module nothing of this process has imported (tests run before this one may have
    # imported some of these: IPython brings xml.dom.minidom), else the check says nothing.
    module = next(name for name in ("tabnanny", "pyclbr", "xml.dom.minidom", "mailcap")
                  if name not in sys.modules)
    records = [(i, i) for i in range(8)]
    with LocalCluster(workers=2) as cluster, Client(cluster.address) as client:
        assert client.submit(Loaded(module), records, map_tasks=4).result(60) == {
            "loaded": [False]}
    cluster = LocalCluster(workers=2, preload=[module]).launch()
    try:
        with pytest.raises(ConfigError, match="started already"):
            cluster.launch()
        assert not cluster.address  # (not waited for yet)
        assert cluster.start() is cluster and cluster.start() is cluster  # (once)
        with Client(cluster.address) as client:
            assert client.submit(Loaded(module), records, map_tasks=4).result(60) == {
                "loaded": [True]}
        assert module not in sys.modules  # imported there, not here
    finally:
        cluster.close()
    with pytest.raises(ConfigError, match="module names"):
        LocalCluster(preload="numpy")


def test_a_worker_daemon_names_a_module_it_cannot_preload():
    for name, said in (("no_such_module_here", "ModuleNotFoundError"),
                       ("os; rm -rf", "not a module name")):
        done = subprocess.run(pmr("worker", "--connect", "tcp://127.0.0.1:9", "--preload", name),
                              capture_output=True, timeout=60, cwd=ROOT)
        err = done.stderr.decode()
        assert done.returncode != 0 and "--preload" in err and said in err, err
        assert "Traceback" not in err
