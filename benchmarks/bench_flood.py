"""Peers that flood and never read: what they cost everyone else, measured.

    python benchmarks/bench_flood.py --messages 50000 --repeat 5

For each flood (control socket without keys, control socket with CURVE keys, a worker key
flooding heartbeats, the data-plane sink), a broker and a 2-process worker daemon run a
small word count (300 records, 4 map tasks) again and again: first idle, then while one
peer sends ``--messages`` messages and reads none of the replies. Reported per flood: the
small job's median latency idle and under the flood (the bar: under the flood within 1 s of
idle), the broker's resident memory before and after (the bar: within 50 MiB), and whether
every result was exact. Last, a SUBMIT of 1,000,000 file byte ranges: the broker's memory
growth against the message's size.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import common
import msgpack
from common import MIB, log
from jobs import WordCount
from procs import rss_mib

RECORDS = [(i, f"w{i % 13} x{i % 4}") for i in range(300)]




def start(cmd: list[str], ready: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "pymapreduce", *cmd, "--log-level", "ERROR"],
                            stdout=subprocess.PIPE)
    while True:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"{cmd[0]} exited before its ready line")
        m = re.search(ready, line)
        if m:
            return proc, m.group(1) if m.groups() else ""


def small_job(address: str, keys: str | None) -> tuple[float, bool]:
    from pymapreduce import Client, run_sequential

    begin = time.perf_counter()
    with Client(address, timeout=60, keys=keys) as c:
        ok = c.submit(WordCount(), RECORDS, map_tasks=4).result(60) == run_sequential(
            WordCount(), RECORDS)
    return time.perf_counter() - begin, ok


def flooder(ctx, address: str, keys: str | None, kind: str, messages: int) -> threading.Thread:
    import zmq

    from pymapreduce.patterns import protocol as P
    from pymapreduce.patterns import security
    from pymapreduce.patterns.message import Message

    sock = ctx.socket(zmq.PUSH if kind == "data" else zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    if keys:
        security.PeerKeys.load(keys, "worker" if kind in ("heartbeat", "data") else "client"
                               ).apply(sock)
    if kind == "data":
        probe = ctx.socket(zmq.DEALER)
        probe.setsockopt(zmq.LINGER, 0)
        if keys:
            security.PeerKeys.load(keys, "worker").apply(probe)
        probe.connect(address)
        probe.send_multipart(Message(P.READY, {"credit": 1}).encode())
        probe.poll(5000)
        address = Message.decode(probe.recv_multipart()).body["sink"]
        probe.send_multipart(Message(P.BYE).encode())
        probe.close(0)
        msgs = [Message(P.OUTPUT, {"job": "nope", "kind": "map", "index": 0, "attempt": 1},
                        (b"x" * 100,)).encode()]
    elif kind == "heartbeat":
        msgs = [Message(P.HEARTBEAT).encode()]
    else:
        msgs = [Message(P.STATUS, {"job_id": "nope", "req": 1}).encode(), [b"garbage"],
                Message(P.HELLO, {"req": 2}).encode(), Message(P.JOBS, {"req": 3}).encode()]
    sock.connect(address)
    if kind == "heartbeat":
        sock.send_multipart(Message(P.READY, {"credit": 2, "name": "flooder"}).encode())

    def run() -> None:
        for i in range(messages):
            sock.send_multipart(msgs[i % len(msgs)])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def one_flood(kind: str, keys: str | None, messages: int, repeat: int) -> dict:
    import zmq

    extra = ["--keys", keys] if keys else []
    broker, address = start(["broker", "--bind", "tcp://127.0.0.1:0", *extra],
                            r"broker ready: (\S+)")
    worker, _ = start(["worker", "--connect", address, "--processes", "2", *extra],
                      r"(worker ready)")
    ctx = zmq.Context()
    try:
        small_job(address, keys)  # warm
        idle = [small_job(address, keys) for _ in range(repeat)]
        before = rss_mib(broker.pid)
        thread = flooder(ctx, address, keys, kind, messages)
        flooded = []
        while thread.is_alive() or len(flooded) < repeat:
            flooded.append(small_job(address, keys))
        after = rss_mib(broker.pid)
        return {"flood": kind, "keys": bool(keys), "messages": messages,
                "idle_s": statistics.median(t for t, _ in idle),
                "flooded_s": statistics.median(t for t, _ in flooded),
                "flooded_max_s": max(t for t, _ in flooded), "jobs_during": len(flooded),
                "exact": all(ok for _, ok in idle + flooded),
                "rss_before_mib": before, "rss_after_mib": after,
                "alive": broker.poll() is None}
    finally:
        ctx.destroy(0)
        for proc in (worker, broker):
            proc.terminate()
            proc.wait(10)


def ranges() -> dict:
    import zmq

    from pymapreduce.patterns import protocol as P
    from pymapreduce.patterns.message import Message

    broker, address = start(["broker", "--bind", "tcp://127.0.0.1:0"], r"broker ready: (\S+)")
    ctx = zmq.Context()
    try:
        blob = msgpack.packb([["files", [["/data/input.txt", i, i + 1] for i in range(50_000)]]
                              for _ in range(20)])
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        time.sleep(0.3)
        before = rss_mib(broker.pid)
        sock.send_multipart(Message(P.SUBMIT, {"job_id": "r", "req": 1, "splits": 1},
                                    (b"code", blob)).encode())
        sock.poll(60_000)
        reply = Message.decode(sock.recv_multipart()).command
        return {"message_mib": len(blob) / MIB, "growth_mib": rss_mib(broker.pid) - before,
                "reply": reply}
    finally:
        ctx.destroy(0)
        broker.terminate()
        broker.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    from pymapreduce.patterns import security

    info = common.print_machine("floods that never read")
    keys = security.cluster_keys(tempfile.mkdtemp(prefix="pmr-bench-keys-"))
    rows, results = [], []
    for kind, k in (("control", None), ("control", keys), ("heartbeat", keys),
                    ("data", None), ("data", keys)):
        log(f"flood: {kind} {'with' if k else 'without'} keys")
        r = one_flood(kind, k, args.messages, args.repeat)
        results.append(r)
        rows.append([f"{kind} {'CURVE' if k else 'plain'}", r["messages"], r["idle_s"],
                     r["flooded_s"], r["flooded_max_s"], r["flooded_s"] - r["idle_s"],
                     r["rss_after_mib"] - r["rss_before_mib"], r["exact"] and r["alive"]])
    common.print_table(["flood", "messages", "job idle s (median)", "job flooded s (median)",
                        "flooded max s", "added s", "broker RSS +MiB", "exact, alive"], rows)
    log("a SUBMIT of 1,000,000 byte ranges")
    r = ranges()
    print(f"\nSUBMIT of 1M byte ranges: message {r['message_mib']:.1f} MiB, broker grew "
          f"{r['growth_mib']:.1f} MiB ({r['growth_mib'] / r['message_mib']:.2f}x), "
          f"reply {r['reply']}")
    common.write_json(args.json, {"machine": info, "floods": results, "ranges": r})
    ok = all(x["exact"] and x["alive"] for x in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
