"""What finished jobs kept for their result TTL cost the jobs after them: a broker's CPU
per no-op task, job after job, while every finished job stays.

    python benchmarks/bench_kept_jobs.py --jobs 15 --tasks 10000
    python benchmarks/bench_kept_jobs.py --trees /tmp/before,.     # before/after, one run

A ``pymapreduce broker`` daemon and a ``pymapreduce worker`` of 2 processes from each
source tree (``--trees``; default this checkout), one client submitting ``--jobs``
map-only jobs of ``--tasks`` no-op tasks one after the other, each kept by the broker
(the default result TTL is an hour). Each job's figure is the broker process's CPU
(Linux's scheduler counters of all its threads, /proc) during that job, per task. A
broker whose work per task does not depend on what it keeps shows the same figure for
the last jobs as for the first; the table gives the median of each end (``--ends``
jobs) and their ratio. With several trees, their brokers run one after the other, in
the order given, ``--rounds`` times (so drift of a shared machine hits each alike).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

import common
from procs import read_ready, sched_cpu_seconds

READY = re.compile(r"pymapreduce broker ready: (\S+)")


def run_tree(tree: str, jobs: int, tasks: int, extra: list[str]) -> list[float]:
    """The broker's CPU microseconds per task of each job, with ``tree``'s pymapreduce."""
    tree = os.path.abspath(tree)  # (also the processes' directory: first on their path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [tree, common.BENCH_DIR, os.environ.get("PYTHONPATH", "")]))
    code = ("import sys\nfrom pymapreduce import Client\nfrom jobs import NoOp\n"
            + "addr, n = sys.argv[1], int(sys.argv[2])\n"
            + "with Client(addr) as c:\n"
            + "    c.submit(NoOp(), [(i, i) for i in range(100)], map_tasks=100,"
            + " reducers=0).result()\n"
            + "    print('go', flush=True); sys.stdin.readline()\n"
            + "    for _ in range(int(sys.argv[3])):\n"
            + "        c.submit(NoOp(), [(i, i) for i in range(n)], map_tasks=n,"
            + " reducers=0).result()\n"
            + "        print('done', flush=True); sys.stdin.readline()\n")
    broker = subprocess.Popen([sys.executable, "-m", "pymapreduce", "broker", "--bind",
                               "tcp://127.0.0.1:0", *extra], env=env, cwd=tree, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    worker = client = None
    try:
        address = read_ready(broker, READY).group(1)
        worker = subprocess.Popen([sys.executable, "-m", "pymapreduce", "worker", "--connect",
                                   address, "--processes", "2"], env=env, cwd=tree,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = subprocess.Popen([sys.executable, "-c", code, address, str(tasks), str(jobs)],
                                  env=env, cwd=tree, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE,
                                  text=True)
        if client.stdout.readline().strip() != "go":
            raise RuntimeError(f"{tree}: the client did not start")
        per_task = []
        for _ in range(jobs):
            before = sched_cpu_seconds(broker.pid)
            client.stdin.write("\n")
            client.stdin.flush()
            if client.stdout.readline().strip() != "done":
                raise RuntimeError(f"{tree}: a job did not finish")
            per_task.append(1e6 * (sched_cpu_seconds(broker.pid) - before) / tasks)
        client.stdin.write("\n")
        client.stdin.close()
        client.wait(60)
        return per_task
    finally:
        for proc in (client, worker, broker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=15, help="jobs kept one after another (15)")
    ap.add_argument("--tasks", type=int, default=10_000, help="no-op tasks a job (10,000)")
    ap.add_argument("--ends", type=int, default=5, help="jobs at each end compared (5)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each tree (1)")
    ap.add_argument("--trees", default=common.REPO_ROOT, help="comma list of source trees")
    ap.add_argument("--broker-args", default="", help="more broker options, e.g. --no-events")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    trees = args.trees.split(",")
    info = common.print_machine(f"kept jobs: {args.jobs} jobs of {args.tasks} no-op tasks "
                                f"kept, broker CPU per task; trees {', '.join(trees)}")
    runs: dict[str, list[list[float]]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for tree in trees:
            per_task = run_tree(tree, args.jobs, args.tasks, args.broker_args.split())
            runs[tree].append(per_task)
            common.log(f"{tree}: " + " ".join(f"{x:.0f}" for x in per_task))
    rows, figures = [], {}
    for tree, samples in runs.items():
        first = statistics.median(x for s in samples for x in s[:args.ends])
        last = statistics.median(x for s in samples for x in s[-args.ends:])
        figures[tree] = {"first_us": first, "last_us": last, "runs": samples}
        rows.append([tree, first, last, last / first])
    common.print_table(["tree", f"first {args.ends} jobs us/task",
                        f"last {args.ends} jobs us/task", "last / first"], rows)
    common.write_json(args.json, {"machine": info, "jobs": args.jobs, "tasks": args.tasks,
                                  "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
