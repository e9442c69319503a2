"""Task rate beside multiprocessing.Pool, and where each task's CPU goes, process by process.

    python benchmarks/bench_task_rate.py --tasks 10000 --repeat 3
    python benchmarks/bench_task_rate.py --trees /tmp/base,. --systems pymapreduce

Each run is a fresh child process (this script with ``--child``), alternating between the
systems (and ``--trees``, checkouts of pymapreduce), so every figure is a median of
``--repeat`` fresh processes measured in one run on one machine:

- **pool**: ``multiprocessing.Pool(2).map(noop, range(N), chunksize=1)``: every task its
  own round trip to a worker process, as every pymapreduce map task is here. The pool is
  started before the clock starts.
- **pymapreduce**: a map-only job of N in-memory records, one map task each (``map``
  yields nothing), on an embedded cluster of 2 worker processes started before the clock
  starts; submit to ``result()``, which also asks for the N outputs (of no pairs: the
  broker keeps none and answers each with no bytes).
- **pymapreduce-pair**: the same with a ``map`` that yields its record: each task's
  output of one pair is stored by the broker and brought home, as the pool brings home
  each task's value.

For pymapreduce the CPU each process spent during the timed part, per task (Linux's
per-thread scheduler statistics), split into the Python thread(s) and ZeroMQ's own
threads (``ZMQbg/*``: its I/O thread moves the bytes of every message): the client, the
broker, and both worker processes together. ``docs/ARCHITECTURE.md`` explains the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import common

WORKERS = 2


def _noop(x: int) -> int:
    return x


def thread_cpu(pid: int) -> tuple[float, float]:
    """(Python's threads, ZeroMQ's threads) CPU seconds of a live process so far."""
    py = zmq = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
        if name.startswith("ZMQbg"):
            zmq += ns / 1e9
        else:
            py += ns / 1e9
    return py, zmq


def child_pool(tasks: int) -> dict[str, Any]:
    import multiprocessing

    with multiprocessing.Pool(WORKERS) as pool:
        pool.map(_noop, range(200), chunksize=1)  # (the processes are up and warm)
        t0 = time.perf_counter()
        out = pool.map(_noop, range(tasks), chunksize=1)
        secs = time.perf_counter() - t0
    assert out == list(range(tasks))
    return {"seconds": secs}


def child_pymapreduce(tasks: int, pair: bool = False) -> dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import procs
    from jobs import NoOp, OnePair

    from pymapreduce import Client, LocalCluster

    records = [(i, i) for i in range(tasks)]
    with LocalCluster(workers=WORKERS) as cluster, Client(cluster.address) as client:
        client.submit(NoOp(), records[:200], map_tasks=200, reducers=0).result()  # warm
        roles = {"client": [os.getpid()], "broker": [cluster.broker_pid],
                 "workers": procs.children(cluster.worker_pid)}
        before = {r: [thread_cpu(p) for p in pids] for r, pids in roles.items()}
        t0 = time.perf_counter()
        handle = client.submit(OnePair() if pair else NoOp(), records, map_tasks=tasks,
                               reducers=0)
        result = handle.result()
        secs = time.perf_counter() - t0
        after = {r: [thread_cpu(p) for p in pids] for r, pids in roles.items()}
        maps = handle.status().get("maps")
    assert result == (records if pair else []) and maps == [tasks, tasks], (len(result), maps)
    cpu = {}
    for role in roles:
        py = sum(a[0] - b[0] for a, b in zip(after[role], before[role]))
        zq = sum(a[1] - b[1] for a, b in zip(after[role], before[role]))
        cpu[role] = {"python_us": 1e6 * py / tasks, "zmq_us": 1e6 * zq / tasks}
    return {"seconds": secs, "cpu": cpu}


def run_child(system: str, tree: str | None, tasks: int) -> dict[str, Any]:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", system,
                          "--tasks", str(tasks)], env=env, capture_output=True, text=True,
                         timeout=600, cwd="/tmp")
    if out.returncode != 0:
        raise RuntimeError(f"{system} ({tree}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000, help="no-op tasks (default 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per system")
    ap.add_argument("--systems", default="pool,pymapreduce,pymapreduce-pair",
                    help="default pool,pymapreduce,pymapreduce-pair")
    ap.add_argument("--trees", default="", help="checkouts of pymapreduce to compare, "
                    "comma-separated (default: the one on the path)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child == "pool":
            print(json.dumps(child_pool(args.tasks)))
        else:
            print(json.dumps(child_pymapreduce(args.tasks, args.child == "pymapreduce-pair")))
        return 0
    info = common.print_machine(f"{args.tasks} no-op tasks, {WORKERS} worker processes, "
                                f"{args.repeat} fresh processes each")
    trees = [t for t in args.trees.split(",") if t] or [None]
    runs: list[tuple[str, str | None]] = []
    for system in args.systems.split(","):
        runs += [(system, None)] if system == "pool" else [(system, t) for t in trees]
    samples: dict[tuple, list] = {r: [] for r in runs}
    for _ in range(args.repeat):  # rounds: every system once, in turn
        for r in runs:
            samples[r].append(run_child(r[0], r[1], args.tasks))
            common.log(f"{r[0]} {r[1] or ''}: {args.tasks / samples[r][-1]['seconds']:,.0f}/s")
    pool_rate = None
    if ("pool", None) in samples:
        pool_rate = args.tasks / statistics.median(s["seconds"] for s in samples[("pool", None)])
    rows, out = [], {}
    for (system, tree), got in samples.items():
        secs = [s["seconds"] for s in got]
        rate = args.tasks / statistics.median(secs)
        row = [system + (f" ({tree})" if tree else ""), rate, args.tasks / min(secs),
               rate / pool_rate if pool_rate else None]
        cpu: dict[str, Any] = {}
        if "cpu" in got[0]:
            for role in ("client", "broker", "workers"):
                for part in ("python_us", "zmq_us"):
                    cpu[f"{role}_{part}"] = statistics.median(s["cpu"][role][part] for s in got)
            row += [f"{cpu['client_python_us']:.1f}+{cpu['client_zmq_us']:.1f}",
                    f"{cpu['broker_python_us']:.1f}+{cpu['broker_zmq_us']:.1f}",
                    f"{cpu['workers_python_us']:.1f}+{cpu['workers_zmq_us']:.1f}"]
        else:
            row += [None] * 3
        rows.append(row)
        out[row[0]] = {"tasks_per_s_median": rate, "samples_s": secs, "cpu_us_per_task": cpu}
    common.print_table(["system", "tasks/s (median)", "tasks/s (best)", "x Pool",
                        "client CPU us/task (py+zmq)", "broker CPU us/task (py+zmq)",
                        "workers CPU us/task (py+zmq)"], rows)
    common.write_json(args.json, {"machine": info, "tasks": args.tasks,
                                  "repeat": args.repeat, "figures": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
