"""Security costs and hostile input, measured.

    python benchmarks/bench_security.py --size-mb 256 --repeat 2 --frames 100000

1. Word count on a 2-worker LocalCluster with CURVE on every socket (keys) against the same
   without keys, in one run: the throughput ratio.
2. A live broker (unsecured, loopback) takes ``--frames`` random and mutated messages on
   its control and data sockets; its resident memory before, right after, and after it
   went idle, then a real job on it, checked against the sequential result.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

import common
import msgpack
from common import MIB, log, stopwatch
from corpus import build_corpus
from jobs import WordCount
from procs import rss_mib

WORKERS = 2


def wordcount(files: list[str], keys: str | None) -> tuple[dict, float]:
    from pymapreduce import Client, LocalCluster, read_text

    with ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster(workers=WORKERS, keys=keys))
        client = stack.enter_context(Client(cluster.address, keys=keys))
        with stopwatch() as t:
            result = client.submit(WordCount(), read_text(files)).result()
    return result, t[0]




def hostile_message(rng: random.Random) -> list[bytes]:
    """Garbage, or a protocol message with random fields, then maybe bit-flipped or cut."""
    from pymapreduce.patterns import protocol as P

    if rng.random() < 0.3:
        return [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 4))]
    commands = [P.READY, P.DONE, P.FAILED, P.HEARTBEAT, P.HELLO, P.SUBMIT, P.WATCH, P.STATUS,
                P.FETCH, P.CANCEL, P.RELEASE, P.OUTPUT, "NOPE"]
    fields = ["job_id", "job", "kind", "index", "attempt", "results", "splits", "part", "credit",
              "reducers", "req"]
    junk = [None, True, -1, 2**63, 1.5, "x" * rng.randrange(20), b"\x00", [1, [2]], {"a": 1}]
    body = {rng.choice(fields): rng.choice(junk) for _ in range(rng.randrange(6))}
    frame = msgpack.packb([rng.choice([1, 1, 1, 0, 9]), rng.choice(commands), body])
    if rng.random() < 0.5 and frame:
        i = rng.randrange(len(frame))
        frame = frame[:i] + bytes([rng.randrange(256)]) + frame[i + 1:]
    return [frame, *[rng.randbytes(rng.randrange(32)) for _ in range(rng.randrange(3))]]


def hostile(frames: int) -> dict:
    import zmq

    from pymapreduce import Client, run_sequential
    from pymapreduce.patterns import protocol as P
    from pymapreduce.patterns.message import Message

    broker = subprocess.Popen([sys.executable, "-m", "pymapreduce", "broker", "--bind",
                               "tcp://127.0.0.1:0", "--log-level", "ERROR", "--liveness", "1",
                               "--heartbeat", "0.2"], stdout=subprocess.PIPE)
    worker = None
    ctx = zmq.Context()
    try:
        line = broker.stdout.readline().decode()
        address = re.search(r"ready: (\S+)", line).group(1)
        probe = ctx.socket(zmq.DEALER)
        probe.connect(address)
        probe.send_multipart(Message(P.READY, {"credit": 1}).encode())
        probe.poll(5000)
        sink = Message.decode(probe.recv_multipart()).body["sink"]
        probe.send_multipart(Message(P.BYE).encode())
        with Client(address) as c:  # warm: the broker has served a client once
            c.info()
        time.sleep(0.5)
        before = rss_mib(broker.pid)
        control, data = ctx.socket(zmq.DEALER), ctx.socket(zmq.PUSH)
        control.connect(address)
        data.connect(sink)
        rng = random.Random(7)
        with stopwatch() as t:
            for i in range(frames):
                (data if i % 5 == 0 else control).send_multipart(hostile_message(rng))
                while control.poll(0):
                    control.recv_multipart()
            with Client(address, timeout=60) as c:  # answered only once it read them all
                c.info()
        right_after = rss_mib(broker.pid)
        time.sleep(2.0)  # fake workers from fuzzed READYs expire
        idle = rss_mib(broker.pid)
        worker = subprocess.Popen([sys.executable, "-m", "pymapreduce", "worker", "--connect",
                                   address, "--processes", "2", "--log-level", "ERROR"],
                                  stdout=subprocess.DEVNULL)
        records = [(i, f"a{i % 7} b{i % 3}") for i in range(1000)]
        with Client(address, timeout=60) as c:
            while c.info()["workers"] < 2:
                time.sleep(0.05)
            correct = c.submit(WordCount(), records).result(60) == run_sequential(
                WordCount(), records)
        return {"frames": frames, "seconds": t[0], "alive": broker.poll() is None,
                "rss_before_mib": before, "rss_right_after_mib": right_after,
                "rss_idle_mib": idle, "job_correct": correct}
    finally:
        ctx.destroy(0)
        for proc in (worker, broker):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--json")
    args = ap.parse_args()
    from pymapreduce.patterns import security

    info = common.print_machine(f"CURVE cost and hostile input, {WORKERS} workers")
    files = build_corpus(common.corpus_dir(args.size_mb, args.corpus_root), args.size_mb)
    mib = sum(os.path.getsize(p) for p in files) / MIB
    keys = security.cluster_keys(tempfile.mkdtemp(prefix="pmr-bench-keys-"))
    times: dict[str, list[float]] = {"plain": [], "curve": []}
    reference = None
    for i in range(args.repeat):
        for name, k in (("plain", None), ("curve", keys)):
            log(f"word count {name} ({i + 1}/{args.repeat})")
            result, seconds = wordcount(files, k)
            reference = reference or result
            assert result == reference, f"{name} result differs"
            times[name].append(seconds)
    ratio = None
    if args.repeat > 0:
        plain, curve = min(times["plain"]), min(times["curve"])
        ratio = plain / curve
        common.print_table(["word count", "seconds (best)", "MiB/s", "all runs s"],
                           [["no keys", plain, mib / plain, times["plain"]],
                            ["CURVE", curve, mib / curve, times["curve"]]])
        print(f"\nCURVE throughput / plain throughput: {ratio:.3f}\n")
    log(f"throwing {args.frames} hostile messages at a broker")
    h = hostile(args.frames)
    common.print_table(["hostile messages", "seconds", "broker alive", "RSS before MiB",
                        "RSS right after MiB", "RSS idle MiB", "job after correct"],
                       [[h["frames"], h["seconds"], h["alive"], h["rss_before_mib"],
                         h["rss_right_after_mib"], h["rss_idle_mib"], h["job_correct"]]])
    common.write_json(args.json, {"machine": info, "size_mib": mib, "times": times,
                                  "ratio": ratio, "hostile": h})
    return 0 if h["alive"] and h["job_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
