"""A real network between hosts: the broker and two workers in network namespaces of their own.

Topology (all made by the test, all removed at its end)::

    namespace pmr<pid>b (the broker's host)          namespace pmr<pid>w1
      br0 10.213.0.1/24 ── to-w1 ═══ veth ═══ eth0 10.213.0.11/24   worker, 1 process
          │                                         namespace pmr<pid>w2
          └─────────────── to-w2 ═══ veth ═══ eth0 10.213.0.12/24   worker, 1 process

The broker binds 10.213.0.1 with CURVE keys; the client runs in the broker's namespace (a
helper process driven over a pipe). Mid-job, the w1 link is cut at the bridge; the job must
finish on w2 with the sequential result, and once the link is back w1 must rejoin.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from pymapreduce import run_sequential

from .conftest import FAST, READY, ROOT, alive, children, pmr, read_line, stop, wait_dead
from .jobs import WordCount

SUBNET = "10.213.0"
BROKER_IP = f"{SUBNET}.1"
WORKERS = {"w1": f"{SUBNET}.11", "w2": f"{SUBNET}.12"}
RECORDS = [(i, f"w{i % 13} v{i % 5}") for i in range(300)]
DELAY = 0.02  # seconds per record: 6 s of map work in all, some 3 s with both workers up
ANSWER = re.compile(r"^\{.*\}$")

# The client, run inside the broker's namespace. It answers one JSON line per JSON command.
# Its job class lives in __main__, so it travels to the workers by value.
CLIENT_SCRIPT = r'''
import json
import os
import sys
import time

from pymapreduce import Client, Job


class SlowCount(Job):
    """Word count whose map notes (host, key) of each record it runs, then dawdles."""

    def __init__(self, log_path, delay):
        self.log_path = log_path
        self.delay = delay

    def map(self, key, line):
        with open(self.log_path, "a") as f:
            f.write(f"{os.environ.get('PMR_TEST_HOST', '?')} {key}\n")
        time.sleep(self.delay)
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


def main():
    address, keys = sys.argv[1:3]
    handle = None
    with Client(address, keys=keys, timeout=30) as client:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                if cmd["op"] == "submit":
                    records = [tuple(r) for r in cmd["records"]]
                    handle = client.submit(SlowCount(cmd["log"], cmd["delay"]), records,
                                           map_tasks=cmd["map_tasks"])
                    answer = {"job": handle.job_id}
                elif cmd["op"] == "result":
                    answer = {"result": handle.result(cmd["timeout"])}
                elif cmd["op"] == "workers":
                    answer = {"workers": client.info()["workers"]}
                else:
                    answer = {"error": f"unknown op {cmd['op']!r}"}
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)


main()
'''


class Network:
    """Namespaces, veths and a bridge; every process started in them; removal of it all."""

    def __init__(self, tmp_path) -> None:
        tag = os.getpid()
        self.broker_ns = f"pmr{tag}b"
        self.worker_ns = {name: f"pmr{tag}{name}" for name in WORKERS}
        self.namespaces: list[str] = []  # those created, removed in cleanup
        self.procs: list[subprocess.Popen] = []
        self.tmp_path = tmp_path
        self.env = {**os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}

    # -- topology --------------------------------------------------------------------------
    @staticmethod
    def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(args)}` failed ({proc.returncode}): "
                               f"{proc.stderr.strip()}")
        return proc

    def build(self) -> None:
        for ns in [self.broker_ns, *self.worker_ns.values()]:
            made = self.ip("netns", "add", ns, check=False)
            if made.returncode != 0:
                pytest.skip(f"cannot create a network namespace ({made.stderr.strip()})")
            self.namespaces.append(ns)
            self.ip("-n", ns, "link", "set", "lo", "up")
        b = self.broker_ns
        try:
            self.ip("-n", b, "link", "add", "br0", "type", "bridge")
        except RuntimeError as exc:
            pytest.skip(f"cannot create a bridge in a namespace: {exc}")
        self.ip("-n", b, "addr", "add", f"{BROKER_IP}/24", "dev", "br0")
        self.ip("-n", b, "link", "set", "br0", "up")
        for name, ns in self.worker_ns.items():
            port = f"to-{name}"
            try:
                self.ip("-n", b, "link", "add", port, "type", "veth",
                        "peer", "name", "eth0", "netns", ns)
            except RuntimeError as exc:
                pytest.skip(f"cannot create a veth pair between namespaces: {exc}")
            self.ip("-n", b, "link", "set", port, "master", "br0")
            self.ip("-n", b, "link", "set", port, "up")
            self.ip("-n", ns, "addr", "add", f"{WORKERS[name]}/24", "dev", "eth0")
            self.ip("-n", ns, "link", "set", "eth0", "up")
        for name, ns in self.worker_ns.items():  # each worker host reaches the broker's
            self.wait_reachable(ns, BROKER_IP, name)

    def wait_reachable(self, ns: str, address: str, name: str) -> None:
        """Wait until ``address`` answers a TCP connect from ``ns`` (the bridge port is up)."""
        probe = ("import socket, sys, time\n"
                 "end = time.monotonic() + 10\n"
                 "while True:\n"
                 "    try:\n"
                 "        socket.create_connection((sys.argv[1], 9), 0.5).close(); break\n"
                 "    except ConnectionRefusedError: break\n"  # a RST: the host answered
                 "    except OSError:\n"
                 "        if time.monotonic() > end: sys.exit(1)\n"
                 "        time.sleep(0.05)\n")
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe, address],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{name} cannot reach {address}: {done.stderr}"

    def link(self, name: str, state: str) -> None:
        """Cut (``down``) or restore (``up``) a worker's link, at the broker's bridge."""
        self.ip("-n", self.broker_ns, "link", "set", f"to-{name}", state)

    # -- processes -------------------------------------------------------------------------
    def start(self, ns: str, argv: list[str], env: dict | None = None,
              stdin: int | None = None) -> subprocess.Popen:
        # `ip netns exec` execs the command: the Popen's pid is the daemon's own pid
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                stdin=stdin, cwd=ROOT, env={**self.env, **(env or {})})
        self.procs.append(proc)
        return proc

    def broker(self, keys: str) -> str:
        proc = self.start(self.broker_ns, pmr(
            "broker", "--bind", f"tcp://{BROKER_IP}:0", "--keys", keys, *FAST,
            "--log-level", "WARNING", "--parent-pid", str(os.getpid())))
        return read_line(proc, READY).group(1)

    def worker(self, name: str, address: str, keys: str) -> subprocess.Popen:
        proc = self.start(self.worker_ns[name], pmr(
            "worker", "--connect", address, "--processes", "1", "--keys", keys,
            "--log-level", "WARNING", "--parent-pid", str(os.getpid())),
            env={"PMR_TEST_HOST": name})
        read_line(proc, re.compile(r"pymapreduce worker ready"))
        return proc

    def client(self, address: str, keys: str) -> RemoteClient:
        script = self.tmp_path / "netns_client.py"
        script.write_text(CLIENT_SCRIPT)
        proc = self.start(self.broker_ns, [sys.executable, str(script), address, keys],
                          stdin=subprocess.PIPE)
        return RemoteClient(proc)

    # -- removal ---------------------------------------------------------------------------
    def cleanup(self) -> None:
        kids = [c for p in self.procs for c in children(p.pid)]  # the workers' processes
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
            stop(proc)
        for pid in wait_dead(kids, 5):
            kill(pid)
        for ns in self.namespaces:  # anything else still running in our namespaces
            listed = self.ip("netns", "pids", ns, check=False).stdout.split()
            pids = [int(p) for p in listed if p.isdigit()]
            for pid in pids:
                kill(pid)
            wait_dead(pids, 5)
        for ns in self.namespaces:  # the veths and the bridge go with their namespaces
            self.ip("netns", "del", ns, check=False)
        self.namespaces.clear()


class RemoteClient:
    """The client process in the broker's namespace: one JSON command, one JSON answer."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def ask(self, wait: float = 40.0, **cmd):
        """Send ``cmd``; its answer within ``wait`` seconds (an error answer fails the test)."""
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        answer = json.loads(read_line(self.proc, ANSWER, timeout=wait).group(0))
        assert "error" not in answer, f"{cmd['op']}: {answer['error']}"
        return answer

    def workers(self) -> int:
        return self.ask(op="workers")["workers"]

    def wait_workers(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (count := self.workers()) != n:
            assert time.monotonic() < deadline, (
                f"{count} workers registered after {timeout:.0f}s, not {n}")
            time.sleep(0.1)


def kill(pid: int) -> None:
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def net(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    network = Network(tmp_path)
    try:
        network.build()
        yield network
    finally:
        network.cleanup()


def executions(path) -> list[tuple[str, int]]:
    """(host, record key) for each time a map ran a record, in the order they started."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line.split() for line in f if line.endswith("\n")]  # not one being written
    return [(host, int(key)) for host, key in lines]


@pytest.mark.timeout(120)
def test_a_link_cut_mid_job_changes_nothing_and_the_worker_rejoins(net, tmp_path):
    keys = str(tmp_path / "keys")
    subprocess.run(pmr("keys", "cluster", keys), check=True, cwd=ROOT, env=net.env,
                   capture_output=True, timeout=30)
    address = net.broker(keys)
    assert not ipaddress.ip_address(urlsplit(address).hostname).is_loopback, address
    for name in WORKERS:
        net.worker(name, address, keys)
    client = net.client(address, keys)
    client.wait_workers(len(WORKERS), timeout=20)

    log = tmp_path / "runs"
    client.ask(op="submit", records=RECORDS, log=str(log), delay=DELAY, map_tasks=30)
    deadline = time.monotonic() + 30
    while True:  # both hosts are at work
        ran = executions(log)
        if all(sum(host == name for host, _ in ran) >= 10 for name in WORKERS):
            break
        assert time.monotonic() < deadline, f"both workers never got work: {ran[-5:]}"
        time.sleep(0.02)

    net.link("w1", "down")
    before_cut = len(executions(log))
    assert len({key for _, key in executions(log)}) < len(RECORDS), (
        "the job had finished before the link was cut: make it longer")

    result = client.ask(op="result", timeout=60, wait=70)["result"]
    assert result == run_sequential(WordCount(), RECORDS)
    assert client.workers() == 1  # the broker took the silent host for dead

    ran = executions(log)
    w2_ran = {key for host, key in ran if host == "w2"}
    w1_after_cut = {key for host, key in ran[before_cut:] if host == "w1"}
    assert w1_after_cut <= w2_ran  # what w1 ran cut off, w2 ran again

    net.link("w1", "up")
    client.wait_workers(len(WORKERS), timeout=20)  # the cut-off worker rejoined
