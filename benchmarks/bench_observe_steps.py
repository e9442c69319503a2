"""The event log's and the HTTP server's cost per task, on a broker loop turned by hand.

    python benchmarks/bench_observe_steps.py --tasks 5000 --rounds 10

Why this exists beside ``bench_observe.py``: on this 2-core machine a broker's CPU per
no-op task moves 10-20% from one job to the next when the broker shares the cores with its
workers (the cores are shared with the workers' processes, the machine's neighbours and
each other), more than the cost being measured. Here the broker's loop is the only thing
that runs when it runs:

- each broker (``--no-events``, the default event log, the event log with ``--http``) lives
  in a process of its own, with its collector tuned as the broker daemon tunes it, and its
  loop is turned by hand (``Broker._turn``), one turn at a time, in one thread;
- its two workers are fake, in the same thread, between the broker's turns: each answers
  every TASKS message at once with one DONE message reporting all its attempts (no-op
  map tasks, the shape a real worker's DONE has: ``bench_ledger_scale.py`` reports them
  the same way), so they cost the broker what real workers' messages do, and the fake
  workers' own CPU is never counted;
- the client is real, in the benchmark's process (``Client.submit(NoOp(), ...).result()``:
  submission, status, the results' fetch);
- for the ``events+http`` broker, a scraper thread in the benchmark's process reads
  ``/metrics`` and ``/api/jobs`` every 0.5 s while its jobs run (Prometheus and an open
  dashboard), over real HTTP: the broker's request threads serve them.

Measured per job, in the broker's process: the CPU of the loop's turns (``thread_time``
around each turn), and everything else the process spent beyond the loop's thread and
ZeroMQ's I/O threads (the HTTP server's threads: this process's CPU clock counts threads
that have ended). Brokers alternate job by job, in a shuffled order each round. The cost
is broker CPU per task against the ``--no-events`` broker, with a 95% interval from
resampling the rounds. When the broker is what limits the task rate, its rate is the
inverse of its CPU per task, so this cost is what the task rate loses; when it is not,
the rate loses less.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time

import common
import zmq
from bench_observe import SCRAPE_EVERY, Scraper
from jobs import NoOp

from pymapreduce import Client
from pymapreduce.broker.config import BrokerConfig
from pymapreduce.broker.daemon import Broker, tune_collector
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.records import pack

MODES = ("no events", "events", "events+http")
EMPTY = pack([[], []])  # a no-op map task's output: no key, no value
CREDIT = 32  # a worker's credit (workers/worker.py's default)


def _thread_cpu(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def _zmq_cpu() -> float:
    """CPU seconds of this process's ZeroMQ I/O threads (named when they are found: a
    thread names itself after it starts)."""
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("ZMQbg"):
                    total += _thread_cpu(int(tid))
        except OSError:
            pass
    return total


class FakeWorker:
    """A worker that answers each TASKS at once: one DONE reporting every attempt in it."""

    def __init__(self, ctx: zmq.Context, address: str, name: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.sock.send_multipart(Message(P.READY, {"credit": CREDIT, "name": name,
                                                   "pid": os.getpid()}).encode())

    def answer(self) -> None:
        """Answer what arrived."""
        while self.sock.poll(0):
            msg = Message.decode(self.sock.recv_multipart())
            if msg.command != P.TASKS:
                continue  # WELCOME, heartbeats
            job = msg.body["job"]
            reports = [[job, t[0], t[1], t[2], {"records": 1, "bytes": 0, "secs": 2e-5}, 1]
                       for t in msg.body["tasks"]]
            self.sock.send_multipart(Message(P.DONE, {"results": reports},
                                             (EMPTY,) * len(reports)).encode())


def broker_process(mode: str, conn) -> None:
    """One broker, turned by hand; ``conn`` gets its address, then "begin"/"end"/"stop"."""
    tune_collector()
    ctx = zmq.Context()
    config = BrokerConfig(bind="tcp://127.0.0.1:0", events=mode != "no events",
                          http="127.0.0.1:0" if mode == "events+http" else None,
                          liveness=3600.0)
    broker = Broker(config, context=ctx)
    poller = broker.loop_poller()
    fakes = [FakeWorker(ctx, broker.address, f"fake-{i}") for i in range(2)]
    conn.send((broker.address, broker.http_url))
    me = threading.get_native_id()
    measuring = False
    turns = 0.0
    try:
        while True:
            if conn.poll():
                what = conn.recv()
                if what == "stop":
                    break
                if what == "begin":
                    measuring, turns = True, 0.0
                    start = (time.process_time(), _thread_cpu(me), _zmq_cpu())
                elif what == "end":
                    measuring = False
                    proc, thread = time.process_time() - start[0], _thread_cpu(me) - start[1]
                    zio = _zmq_cpu() - start[2]
                    conn.send({"loop": turns, "others": max(0.0, proc - thread - zio),
                               "zmq_io": zio})
            t = time.thread_time()
            broker._turn(poller)
            if measuring:
                turns += time.thread_time() - t
            for fake in fakes:
                fake.answer()
    finally:
        for fake in fakes:
            fake.sock.close(0)
        broker.close()
        ctx.destroy(linger=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5000, help="no-op map tasks per job")
    ap.add_argument("--rounds", type=int, default=10, help="jobs on each broker (default 10)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    info = common.print_machine(f"event log and HTTP cost on a hand-turned broker loop: "
                                f"{args.tasks} no-op tasks, {args.rounds} rounds")
    mp = multiprocessing.get_context("fork")
    procs, conns, urls = {}, {}, {}
    for mode in MODES:
        here, there = mp.Pipe()
        procs[mode] = mp.Process(target=broker_process, args=(mode, there), daemon=True)
        procs[mode].start()
        conns[mode] = here
    cpu: dict[str, dict[str, list[float]]] = {m: {"loop": [], "others": [], "zmq_io": []}
                                              for m in MODES}
    scraper = None
    records = [(i, i) for i in range(args.tasks)]
    try:
        clients = {}
        for mode in MODES:
            if not conns[mode].poll(30):
                raise RuntimeError(f"the {mode} broker did not start")
            address, urls[mode] = conns[mode].recv()
            clients[mode] = Client(address)
        scraper = Scraper(urls["events+http"])
        scraper.start()
        rng = random.Random(7)
        for r in range(args.rounds):
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                if mode == "events+http":
                    scraper.active.set()
                conns[mode].send("begin")
                handle = clients[mode].submit(NoOp(), records, map_tasks=args.tasks,
                                              reducers=0)
                status, out = handle.wait(), handle.result()
                conns[mode].send("end")
                scraper.active.clear()
                got = conns[mode].recv()
                if status.get("state") != P.JOB_SUCCEEDED or out:
                    print(f"{mode}: the job did not succeed with no output: {status}")
                    return 1
                for k, v in got.items():
                    cpu[mode][k].append(v)
            common.log(f"round {r + 1}: " + ", ".join(
                f"{m} {1e6 * cpu[m]['loop'][-1] / args.tasks:.1f}" for m in MODES)
                + " us/task in the loop")
    finally:
        if scraper is not None:
            scraper.stopped.set()
        for mode in procs:
            try:
                conns[mode].send("stop")
            except OSError:
                pass
            procs[mode].join(10)
            if procs[mode].is_alive():
                procs[mode].kill()
                procs[mode].join()
    n = args.tasks
    rows, figures = [], {}
    for mode in MODES:
        c = cpu[mode]
        total = [a + b for a, b in zip(c["loop"], c["others"])]
        figures[mode] = {"loop_us_task": 1e6 * statistics.mean(c["loop"]) / n,
                         "others_us_task": 1e6 * statistics.mean(c["others"]) / n,
                         "broker_us_task": 1e6 * statistics.mean(total) / n,
                         "zmq_io_us_task": 1e6 * statistics.mean(c["zmq_io"]) / n,
                         "loop_sd_pct": 100 * statistics.stdev(c["loop"]) / statistics.mean(
                             c["loop"]) if len(c["loop"]) > 1 else 0.0}
        f = figures[mode]
        rows.append([mode, f["loop_us_task"], f["loop_sd_pct"], f["others_us_task"],
                     f["broker_us_task"], f["zmq_io_us_task"]])
    common.print_table(["broker", "loop us/task", "sd % (jobs)", "other threads us/task",
                        "broker us/task", "ZeroMQ I/O us/task"], rows)
    base = [a + b for a, b in zip(cpu[MODES[0]]["loop"], cpu[MODES[0]]["others"])]
    costs = {}
    for mode in MODES[1:]:
        other = [a + b for a, b in zip(cpu[mode]["loop"], cpu[mode]["others"])]
        est, lo, hi = common.interval(base, other)
        costs[mode] = {"broker_cpu": est, "low": lo, "high": hi}
        print(f"cost of {mode} against no events: broker CPU per task {100 * est:+.1f}% "
              f"(95% interval {100 * lo:+.1f}% to {100 * hi:+.1f}%; bar: under 5%)")
    print(f"scrapes every {SCRAPE_EVERY}s: {scraper.scrapes}, {scraper.errors} failed")
    common.write_json(args.json, {"machine": info, "args": vars(args), "figures": figures,
                                  "costs": costs, "scrapes": scraper.scrapes,
                                  "per_job": cpu})
    return 0 if scraper.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
