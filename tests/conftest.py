"""Fixtures that start real daemons as subprocesses and always clean them up."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = re.compile(r"pymapreduce broker ready: (\S+)")

# Fast failure detection, so fault tests take seconds, not minutes.
FAST = ["--heartbeat", "0.2", "--liveness", "1.0"]


def pmr(*args: str) -> list[str]:
    return [sys.executable, "-m", "pymapreduce", *args]


def read_line(proc: subprocess.Popen, pattern: re.Pattern, timeout: float = 20.0,
              seen: list | None = None) -> re.Match:
    """The first line of ``proc``'s stdout matching ``pattern`` (the lines read on the
    way appended to ``seen``, if given)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline().decode()
                if not line:
                    raise RuntimeError(f"process exited ({proc.wait()}) before a line "
                                       f"matching {pattern.pattern!r}: {seen or ''}")
                if seen is not None:
                    seen.append(line)
                m = pattern.search(line)
                if m:
                    return m
    finally:
        sel.close()
    raise TimeoutError(f"no line matching {pattern.pattern!r} within {timeout}s: "
                       f"{seen or ''}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def rss(pid: int) -> int:
    """Resident bytes of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def kill_daemon(proc: subprocess.Popen) -> None:
    """kill -9 of a whole worker daemon: its supervisor and its processes."""
    kids = children(proc.pid)
    proc.kill()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def wait_dead(pids, timeout: float = 10.0) -> list[int]:
    """Wait until every pid has exited; returns those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


class Daemons:
    """Starts brokers and workers; kills every one of them at the end of the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def broker(self, *extra: str, bind: str = "tcp://127.0.0.1:0") -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(pmr("broker", "--bind", bind, "--log-level", "WARNING",
                                    "--parent-pid", str(os.getpid()), *extra),
                                stdout=subprocess.PIPE, cwd=ROOT)
        self.procs.append(proc)
        return proc, read_line(proc, READY).group(1)

    def worker(self, address: str, processes: int = 1, *extra: str,
               env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            pmr("worker", "--connect", address, "--processes", str(processes),
                "--log-level", "WARNING", "--parent-pid", str(os.getpid()), *extra),
            stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        read_line(proc, re.compile(r"pymapreduce worker ready"))
        return proc

    def cleanup(self) -> None:
        kids = [c for p in self.procs for c in children(p.pid)]
        for proc in self.procs:
            stop(proc)
        for pid in wait_dead(kids, 5):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def daemons():
    d = Daemons()
    try:
        yield d
    finally:
        d.cleanup()


def wait_workers(address: str, n: int, timeout: float = 20.0) -> None:
    from pymapreduce import Client

    deadline = time.monotonic() + timeout
    with Client(address, timeout=timeout) as client:
        while client.info()["workers"] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} workers did not register")
            time.sleep(0.02)


@pytest.fixture
def cluster(daemons):
    """A broker (fast liveness) and one worker daemon with two processes."""
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    return address


@pytest.fixture
def corpus(tmp_path):
    """A few text files with repeated, mixed-width lines (non-ASCII and CRLF included)."""
    words = ["alpha", "beta", "gamma", "délta", "ε", "zeta", "eta", "θeta", "iota", "kappa"]
    paths = []
    for f in range(3):
        lines = []
        for i in range(2000 + 500 * f):
            n = (i * 7 + f) % 9 + 1
            lines.append(" ".join(words[(i + j * 3) % len(words)] for j in range(n)))
        path = tmp_path / f"part-{f}.txt"
        eol = "\r\n" if f == 2 else "\n"
        path.write_bytes(eol.join(lines).encode() + (b"" if f == 1 else eol.encode()))
        paths.append(str(path))
    return paths


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
MOTO_RUNNING = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on an OS-chosen port; yields its endpoint URL. Made-up credentials
    are in this process's environment while it runs (inherited by daemons started after
    it), never in a job."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    log = tmp_path_factory.mktemp("moto") / "server.log"
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    with open(log, "w") as sink:  # (a file: its request log never fills a pipe)
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p0"], stdout=sink, stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (m := MOTO_RUNNING.search(log.read_text())):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "moto's server did not start"
            time.sleep(0.05)
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def ledger():
    """A broker's ledger (no sockets) with a fast heartbeat, and its store closed after."""
    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.ledger import Ledger
    from pymapreduce.broker.sink import Store

    store = Store(1 << 30)
    yield Ledger(BrokerConfig(bind="tcp://127.0.0.1:0", heartbeat_interval=0.2, liveness=1.0),
                 store)
    store.close()
