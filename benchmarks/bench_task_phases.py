"""A no-op job's phases, timed apart: submit, run, fetch (issue 13's task rate).

    cd /tmp && python3 /work/main/benchmarks/bench_task_phases.py --trees /tmp/a,/tmp/b

Each tree (a checkout of pymapreduce; none: the installed one) runs in a fresh child
process in turn, ``--repeat`` rounds: an embedded cluster of 2 worker processes, one warm
job, then ``--jobs`` map-only jobs of ``--tasks`` in-memory records, one no-op map task
each, as ``bench_task_rate.py`` runs them. Per job: ``submit`` (the client packing the
records until the broker's answer), ``run`` (until ``wait()`` returns: the job ended),
``fetch`` (``result()``: the outputs, of no pairs, brought home), and the tasks a second
over the three. Run it from a directory outside the checkouts (``python -m pymapreduce``,
which the embedded cluster starts, imports from its current directory first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(tasks: int, jobs: int) -> list[dict]:
    sys.path.insert(0, HERE)
    from jobs import NoOp

    from pymapreduce import Client, LocalCluster

    records = [(i, i) for i in range(tasks)]
    out = []
    with LocalCluster(workers=2) as cluster, Client(cluster.address) as client:
        client.submit(NoOp(), records[:200], map_tasks=200, reducers=0).result()  # warm
        for _ in range(jobs):
            t0 = time.perf_counter()
            handle = client.submit(NoOp(), records, map_tasks=tasks, reducers=0)
            t1 = time.perf_counter()
            handle.wait()
            t2 = time.perf_counter()
            result = handle.result()
            t3 = time.perf_counter()
            assert result == [], len(result)
            out.append({"submit": t1 - t0, "run": t2 - t1, "fetch": t3 - t2,
                        "rate": tasks / (t3 - t0)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=3, help="jobs per child process (default 3)")
    ap.add_argument("--repeat", type=int, default=2, help="child processes per tree")
    ap.add_argument("--trees", default="", help="comma list of checkouts (default: none)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.tasks, args.jobs)))
        return 0
    trees = [t for t in args.trees.split(",") if t] or [""]
    print(f"command : {' '.join(sys.argv)}")
    print(f"date    : {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    rows: dict[str, list[dict]] = {t: [] for t in trees}
    for _ in range(args.repeat):
        for tree in trees:
            env = dict(os.environ)
            if tree:
                env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH",
                                                                                   "")
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                   "--tasks", str(args.tasks), "--jobs", str(args.jobs)],
                                  env=env, capture_output=True, text=True, timeout=600,
                                  cwd="/tmp", check=True)
            rows[tree] += json.loads(done.stdout.strip().splitlines()[-1])
    print("| tree | jobs | submit s | run s | fetch s | tasks/s |")
    print("|---|---|---|---|---|---|")
    for tree, jobs in rows.items():
        med = {k: statistics.median(j[k] for j in jobs) for k in jobs[0]}
        print(f"| {tree or '(installed)'} | {len(jobs)} | {med['submit']:.3f} | "
              f"{med['run']:.3f} | {med['fetch']:.3f} | {med['rate']:,.0f} |")
    print("(medians over every job of every child process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
