"""What the broker's state directory costs: checksums, --fsync policies, restart checks.

    python benchmarks/bench_statedir.py                 # 3 repeats
    python benchmarks/bench_statedir.py --repeat 1 --output-mb 32

- ``checksum``: CRC-32 (what the broker stores per output file), Adler-32 and BLAKE2b over
  256 MiB in memory, to show what checking every committed output costs.
- ``jobs``: one broker and one worker daemon of two processes, two jobs per setting:
  *many commits* (a word count of 2,000 records in 400 map tasks: 402 commit rows and
  ~800 output files) and *bulk output* (a map-only job that copies ``--output-mb`` MiB of
  text lines, from files, into its output). Settings: no state directory; ``--state-dir``
  with ``--fsync never`` (the default); ``--fsync commit``. The state directory is on the
  disk of ``--dir`` (default: the system's temporary directory).
- ``restart``: the broker restarted on the bulk job's state directory; the time until it
  is ready is mostly reading every output file back and checking its CRC-32 (warm page
  cache: a cold disk adds its read time).
Every result is compared with the sequential one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

import common
from jobs import WordCount
from procs import read_ready

from pymapreduce import Client, Job, read_text, run_sequential

READY = re.compile(r"pymapreduce broker ready: (\S+)")
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]


class Copy(Job):
    """Map-only: every line, unchanged (its output is as big as its input)."""

    def map(self, offset, line):
        yield offset, line


def checksum_table() -> None:
    data = os.urandom(256 << 20)
    rows = []
    for name, fn in (("zlib.crc32", zlib.crc32), ("zlib.adler32", zlib.adler32),
                     ("blake2b", lambda b: hashlib.blake2b(b).digest())):
        secs = min(common.timed(lambda fn=fn: fn(data))[1] for _ in range(3))
        rows.append([name, secs, 256 / secs])
    common.print_table(["checksum of 256 MiB", "s", "MiB/s"], rows)


def make_text(path: str, mb: int) -> None:
    line = " ".join(WORDS) + "\n"
    with open(path, "w") as f:
        for i in range((mb << 20) // (len(line) + 8)):
            f.write(f"{i:07d} {line}")


def start(cmd: list[str], procs: list) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=common.REPO_ROOT)
    procs.append(proc)
    return proc


def pmr(*args: str) -> list[str]:
    return [sys.executable, "-m", "pymapreduce", *args, "--log-level", "ERROR",
            "--parent-pid", str(os.getpid())]


def run_setting(extra: list[str], text: str, records: list) -> tuple[float, float, float]:
    """(many commits s, bulk output s, restart s or nan) for one broker setting."""
    procs: list[subprocess.Popen] = []
    try:
        broker = start(pmr("broker", "--bind", "tcp://127.0.0.1:0", *extra), procs)
        address = read_ready(broker, READY).group(1)
        start(pmr("worker", "--connect", address, "--processes", "2"), procs)
        with Client(address, timeout=60) as client:
            while client.info()["workers"] < 2:
                time.sleep(0.05)
            t0 = time.perf_counter()
            got = client.submit(WordCount(), records, map_tasks=400, reducers=2).result(600)
            many = time.perf_counter() - t0
            assert got == run_sequential(WordCount(), records)
            t0 = time.perf_counter()
            handle = client.submit(Copy(), read_text([text], split_bytes=4 << 20))
            handle.wait(600)
            bulk = time.perf_counter() - t0
            assert sum(1 for _ in handle.results()) == sum(1 for _ in open(text))
        restart = float("nan")
        if "--state-dir" in extra:
            broker.kill()
            broker.wait()
            t0 = time.perf_counter()
            again = start(pmr("broker", "--bind", address, *extra), procs)
            read_ready(again, READY, timeout=300)
            restart = time.perf_counter() - t0
        return many, bulk, restart
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output-mb", type=int, default=64)
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where the state directories go (its disk is measured)")
    args = parser.parse_args()
    common.print_machine("state directory: checksums, fsync policies, restart checks")
    checksum_table()
    work = tempfile.mkdtemp(prefix="pmr-bench-state-", dir=args.dir)
    try:
        text = os.path.join(work, "text.txt")
        make_text(text, args.output_mb)
        records = [(i, " ".join(WORDS[(i + j) % len(WORDS)] for j in range(8)))
                   for i in range(2000)]
        rows = []
        for label, extra in (("no state directory", []),
                             ("--state-dir, --fsync never", ["--fsync", "never"]),
                             ("--state-dir, --fsync commit", ["--fsync", "commit"])):
            samples = []
            for r in range(args.repeat):
                state = os.path.join(work, f"state-{len(rows)}-{r}")
                flags = ["--state-dir", state, *extra] if extra else []
                samples.append(run_setting(flags, text, records))
                shutil.rmtree(state, ignore_errors=True)
            med = [statistics.median(s[i] for s in samples) for i in range(3)]
            rows.append([label, *med])
            common.log(f"{label}: {med}")
        base = rows[0]
        table = [[r[0], r[1], r[1] / base[1], r[2], r[2] / base[2],
                  None if r[3] != r[3] else r[3]] for r in rows]
        common.print_table(["broker", "400 tasks s", "x", f"{args.output_mb} MiB output s",
                            "x", "restart s"], table)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
