"""What reading results back costs the broker: FETCH throughput, and memory under unread FETCHes.

    python benchmarks/bench_fetch.py                    # 3 repeats, 64 MiB of text
    python benchmarks/bench_fetch.py --repeat 1 --text-mb 16 --unread 150,1000

- ``throughput``: one broker and one worker daemon of two processes; a word count whose
  result has a key per line (about a million keys for 64 MiB) and a map-only copy of the
  text (outputs as big as the input). Each result is read back with ``results()`` (decoding
  included) and as raw FETCH round trips, one partition at a time (broker and socket only).
  Settings: outputs in the broker's memory (the default budget); spilled to files
  (``--memory-budget-mb 1``), so every FETCH is served from a file; the same with
  ``--state-dir``, where each file is also checked against its CRC-32 as it is read.
- ``unread``: a client sends N FETCHes of one spilled 5 MiB partition and never reads the
  replies; the broker's RSS before and 3 s after. Each reply waits in the broker's queue to
  that client (at most 1,000 messages), so what one reply holds decides the broker's memory.
Every result is compared with the sequential one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common
import zmq
from jobs import WordCount
from procs import read_ready, rss_mib

from pymapreduce import Client, Job, read_text, run_sequential
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message

READY = re.compile(r"pymapreduce broker ready: (\S+)")
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
PART_MB = 5


class Copy(Job):
    """Map-only: every line, unchanged (its output is as big as its input)."""

    def map(self, offset, line):
        yield offset, line


class Big(Job):
    """One record in, one value of PART_MB MiB out: a single large partition."""

    def map(self, key, value):
        yield key, "z" * (PART_MB << 20)


def make_text(path: str, mb: int) -> None:
    line = " ".join(WORDS) + "\n"
    with open(path, "w") as f:
        for i in range((mb << 20) // (len(line) + 8)):
            f.write(f"{i:07d} {line}")




class Cluster:
    """A broker and a worker daemon of ``processes`` processes, killed by PID at the end."""

    def __init__(self, extra: list[str], processes: int = 2) -> None:
        self.procs: list[subprocess.Popen] = []
        self.broker = self._start(self._pmr("broker", "--bind", "tcp://127.0.0.1:0", *extra))
        self.address = read_ready(self.broker, READY).group(1)
        self._start(self._pmr("worker", "--connect", self.address, "--processes",
                              str(processes)))
        with Client(self.address, timeout=60) as client:
            while client.info()["workers"] < 1:
                time.sleep(0.05)

    @staticmethod
    def _pmr(*args: str) -> list[str]:
        return [sys.executable, "-m", "pymapreduce", *args, "--log-level", "ERROR",
                "--parent-pid", str(os.getpid())]

    def _start(self, cmd: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=common.REPO_ROOT)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


def raw_fetch_mib_s(address: str, job_id: str, parts: int) -> float:
    """MiB/s of FETCH round trips, one partition at a time, blobs not decoded."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        total = 0
        t0 = time.perf_counter()
        for part in range(parts):
            sock.send_multipart(Message(P.FETCH, {"job_id": job_id, "part": part,
                                                  "req": part}).encode())
            if not sock.poll(60_000):
                raise TimeoutError(f"no answer to FETCH of partition {part}")
            frames = sock.recv_multipart(copy=False)
            total += sum(len(f.buffer) for f in frames[1:])
        return total / (1 << 20) / (time.perf_counter() - t0)
    finally:
        sock.close()
        ctx.term()


def throughput(extra: list[str], text: str, repeat: int) -> list[float]:
    """[word count results() s, copy results() s, raw FETCH MiB/s] medians."""
    cluster = Cluster(extra)
    try:
        with Client(cluster.address, timeout=120) as client:
            wc = client.submit(WordCount(), read_text([text], split_bytes=8 << 20), reducers=8)
            wc.wait(600)
            copy = client.submit(Copy(), read_text([text], split_bytes=4 << 20))
            copy.wait(600)
            with open(text) as f:  # each line: a distinct number, then WORDS once each
                expect = run_sequential(WordCount(), enumerate(f))
            lines = expect[WORDS[0]]
            samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                got = dict(wc.results())
                t_wc = time.perf_counter() - t0
                assert got == expect
                t0 = time.perf_counter()
                n = sum(1 for _ in copy.results())
                t_copy = time.perf_counter() - t0
                assert n == lines
                rate = raw_fetch_mib_s(cluster.address, copy.job_id, copy.status()["parts"])
                samples.append((t_wc, t_copy, rate))
            return [statistics.median(s[i] for s in samples) for i in range(3)]
    finally:
        cluster.close()


def unread(n: int, spill: str) -> tuple[float, float]:
    """Broker RSS (MiB) before and after ``n`` unread FETCHes of a spilled partition."""
    cluster = Cluster(["--memory-budget-mb", "1", "--spill-dir", spill], processes=1)
    try:
        with Client(cluster.address, timeout=60) as client:
            handle = client.submit(Big(), [(0, 0)], map_tasks=1, reducers=1)
            handle.wait(120)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 4096)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cluster.address)
        before = rss_mib(cluster.broker.pid)
        for i in range(n):
            sock.send_multipart(Message(P.FETCH, {"job_id": handle.job_id, "part": 0,
                                                  "req": i}).encode())
        time.sleep(3)
        after = rss_mib(cluster.broker.pid)
        sock.close()
        ctx.term()
        return before, after
    finally:
        cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--text-mb", type=int, default=64)
    parser.add_argument("--unread", default="150,1000", help="counts of unread FETCHes")
    args = parser.parse_args()
    common.print_machine("FETCH: throughput, and broker memory under unread FETCHes")
    work = tempfile.mkdtemp(prefix="pmr-bench-fetch-")
    try:
        text = os.path.join(work, "text.txt")
        make_text(text, args.text_mb)
        rows = []
        for label, extra in (("outputs in memory", []),
                             ("outputs spilled to files",
                              ["--memory-budget-mb", "1", "--spill-dir", work]),
                             ("--state-dir, read back from files (CRC checked)",
                              ["--memory-budget-mb", "1", "--state-dir",
                               os.path.join(work, "state")])):
            wc, copy, rate = throughput(extra, text, args.repeat)
            rows.append([label, wc, copy, rate])
        common.print_table([f"{args.text_mb} MiB of text", "word count results() s",
                            "copy results() s", "raw FETCH MiB/s"], rows)
        rows = []
        for n in (int(x) for x in args.unread.split(",")):
            before, after = unread(n, work)
            rows.append([n, before, after, after - before])
        common.print_table([f"unread FETCHes of a spilled {PART_MB} MiB partition",
                            "broker RSS before MiB", "after MiB", "growth MiB"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
