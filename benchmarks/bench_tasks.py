"""Task throughput: N no-op map tasks through the broker, submit to result.

    python benchmarks/bench_tasks.py --tasks 10000

Each record is its own map task and the job is map-only, so the time is the engine's own
per-task cost: scheduling, dispatch to a worker, the DONE report, commit.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

import common
from common import stopwatch
from jobs import NoOp

WORKERS = 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000, help="number of map tasks (default 10000)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    from pymapreduce import Client, LocalCluster

    info = common.print_machine(f"{args.tasks} no-op map tasks, {WORKERS} workers")
    records = [(i, i) for i in range(args.tasks)]
    with ExitStack() as stack:
        with stopwatch() as start:
            cluster = stack.enter_context(LocalCluster(workers=WORKERS))
        client = stack.enter_context(Client(cluster.address))
        with stopwatch() as t:
            handle = client.submit(NoOp(), records, map_tasks=args.tasks, reducers=0)
            result = handle.result()
        maps = handle.status().get("maps")  # [committed, total]: the broker really ran N tasks
    ok = result == []
    if not ok:
        print(f"unexpected result: {type(result).__name__} of length {len(result)}")
    rate = args.tasks / t[0]
    common.print_table(["tasks", "map tasks done/total", "seconds", "tasks/s", "ms/task",
                        "cluster start s", "empty result"],
                       [[args.tasks, "/".join(map(str, maps or [])) or None, t[0], rate,
                         1000 * t[0] / args.tasks, start[0], ok]])
    common.write_json(args.json, {"machine": info, "tasks": args.tasks, "workers": WORKERS,
                                  "maps": maps, "seconds": t[0], "tasks_per_s": rate,
                                  "startup_s": start[0], "empty_result": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
