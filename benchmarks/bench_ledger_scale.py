"""The broker's bookkeeping with 10 to 1,000 workers: the part of its cost that grows with them.

    python benchmarks/bench_ledger_scale.py                      # 10, 24, 100, 1000 workers
    python benchmarks/bench_ledger_scale.py --workers 10,1000 --beats 20000

No sockets and no processes: the broker's ledger (broker/ledger.py) is driven by calls, as
the broker loop drives it, with W simulated workers registered. This machine cannot run
1,000 worker processes; the ledger's share of the broker's cost can still be measured at
that size, and the part of the cost it does not cover (receiving, decoding, encoding and
sending each message) does not depend on the number of workers
(benchmarks/bench_broker_cost.py measures the whole with real processes, docs/scaling.md
puts the two together). Two figures per W, in CPU microseconds of this process:
- heartbeat: one HEARTBEAT handled, then ``dispatch()``, which the broker loop runs after
  every control message (no task pending);
- task: a map-only job of ``--tasks`` tasks (each reported to run ``--secs`` seconds, so the
  broker hands out as many per TASKS message as it would for tasks that long), every
  worker reporting each TASKS batch in one DONE, each DONE followed by ``dispatch()``:
  ledger CPU per task and per message (DONE in, TASKS out).
Run with the event log (the default broker) and without it (``--no-events``). The
collector is set as the broker daemon sets it (``tune_collector``), and what the set-up
made is frozen before each measurement: with Python's defaults the collections of this
process's own garbage made the figures jump between two levels, 19 and 34 us per task.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import time
from typing import Any

import common

from pymapreduce.broker.config import BrokerConfig
from pymapreduce.broker.daemon import tune_collector
from pymapreduce.broker.ledger import Ledger, Send
from pymapreduce.broker.sink import Store
from pymapreduce.broker.tasks import JobState
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.records import pack

T0 = 1000.0  # the hand-set clock's start
EMPTY = pack([[], []])  # a no-op map task's one output partition: no key, no value
# what each task's output is: EMPTY (which the broker keeps nowhere), or with
# BENCH_LEDGER_OUTPUT=pair one pair, which it stores and serves (the path of every task
# that writes something)
OUTPUT = pack([[0], [0]]) if os.environ.get("BENCH_LEDGER_OUTPUT") == "pair" else EMPTY


def new_ledger(events: bool, workers: int) -> tuple[Ledger, Store, list]:
    store = Store(1 << 30)
    ledger = Ledger(BrokerConfig(bind="tcp://127.0.0.1:0", events=events), store)
    ws = [ledger.register(b"w%06d" % i, "", {"credit": 32, "name": f"w{i}", "pid": i}, T0)
          for i in range(workers)]
    ledger.outbox.clear()
    return ledger, store, ws


def heartbeat_us(events: bool, workers: int, beats: int) -> float:
    """Ledger CPU per HEARTBEAT (and the dispatch after it), W idle workers."""
    ledger, store, ws = new_ledger(events, workers)
    try:
        gc.collect()
        gc.freeze()  # (the set-up's objects live on, as a broker's tables do)
        t0 = time.process_time()
        for k in range(beats):
            w = ws[k % workers]
            ledger.heartbeat(w.route, "", w.route, T0)
            ledger.dispatch(T0)
            ledger.outbox.clear()
        return 1e6 * (time.process_time() - t0) / beats
    finally:
        store.close()


def task_us(events: bool, workers: int, tasks: int, secs: float) -> tuple[float, float]:
    """(ledger CPU per task, per message) for a map-only job through W workers."""
    ledger, store, ws = new_ledger(events, workers)
    try:
        return run_job(ledger, ws, "j", tasks, secs)
    finally:
        store.close()


def run_job(ledger: Ledger, ws: list, job_id: str, tasks: int, secs: float,
            freeze: bool = True) -> tuple[float, float]:
    """Run a map-only job of ``tasks`` no-op tasks through ``ledger``'s workers ``ws``, as
    the broker loop would (the job stays held, as a broker holds it for the result TTL);
    returns (ledger CPU per task, per message). ``freeze``: the set-up's objects leave the
    collector's sight first (not for a job after others: a broker's tables stay in it)."""
    by_route = {w.route: w for w in ws}
    splits = [["mem", pack([[i, i]])] for i in range(tasks)]
    job = JobState(job_id, job_id, b"code", splits, 0, True, b"client", T0,
                   options={"reducers": 0, "map_only": True})
    ledger.jobs[job.id] = job
    ledger.scheduler.add(job)
    ledger.events.job_submitted(job)  # (as a submission does: its ring and attempt table)
    queue: collections.deque = collections.deque()  # (route, attempts) to report, in order
    messages = 0
    nbytes = 4  # (what a worker reports: both counts and the run time, a dict per report as
    # each message's decoding makes them)

    def collect() -> None:
        nonlocal messages
        for item in ledger.outbox:
            if isinstance(item, Send) and item.msg.command == P.TASKS:
                body = item.msg.body
                queue.append((item.route, [[body["job"], *t[:3], {"records": 1, "bytes": nbytes,
                                                                  "secs": secs}, 1]
                                           for t in body["tasks"]]))
                messages += 1
        ledger.outbox.clear()

    if freeze:
        gc.collect()
        gc.freeze()
    t0 = time.process_time()
    ledger.dispatch(T0)
    collect()
    while queue:
        route, reports = queue.popleft()
        ledger.done(by_route[route], reports, (OUTPUT,) * len(reports))
        messages += 1
        ledger.dispatch(T0)
        collect()
    cpu = time.process_time() - t0
    if job.done_maps != tasks:
        raise RuntimeError(f"{job.done_maps} of {tasks} tasks committed")
    return 1e6 * cpu / tasks, 1e6 * cpu / messages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="10,24,100,1000", help="default 10,24,100,1000")
    ap.add_argument("--beats", type=int, default=20000, help="heartbeats per W (default 20000)")
    ap.add_argument("--tasks", type=int, default=20000, help="tasks per W (default 20000)")
    ap.add_argument("--secs", type=float, default=0.5,
                    help="each task's reported run time (default 0.5: one task per message)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    tune_collector()  # as the broker daemon's process
    counts = [int(x) for x in args.workers.split(",")]
    info = common.print_machine(f"ledger cost with {counts} simulated workers, "
                                f"{args.tasks} tasks of {args.secs}s, {args.beats} heartbeats")
    rows: list[list[Any]] = []
    out: dict[str, Any] = {}
    for events in (False, True):
        for w in counts:
            hb = heartbeat_us(events, w, args.beats)
            per_task, per_msg = task_us(events, w, args.tasks, args.secs)
            mode = "events" if events else "no-events"
            out[f"{mode}/{w}"] = {"heartbeat_us": hb, "task_us": per_task, "msg_us": per_msg}
            rows.append([mode, w, hb, per_task, per_msg])
            common.log(f"{mode} {w}: heartbeat {hb:.1f} us, task {per_task:.1f} us")
    common.print_table(["broker", "workers", "ledger us/heartbeat", "ledger us/task",
                        "ledger us/message"], rows)
    common.write_json(args.json, {"machine": info, "args": vars(args), "figures": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
