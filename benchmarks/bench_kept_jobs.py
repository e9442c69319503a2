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

Per job the broker's CPU varies by 10-20% (how attempts share messages depends on
timing), so a cost that grows with the kept jobs shows better without the cluster:
``--store`` times, in a child process per tree, what a job's end costs the broker's store
(its outputs freed: the map outputs, then the rest) with 1, 15 and 50 finished jobs of
``--tasks`` outputs kept, per task of the ending job.
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


STORE_CHILD = """
import sys, time
from pymapreduce.broker.sink import Store
tasks = int(sys.argv[1])
for kept in (1, 15, 50):
    store = Store(1 << 30)
    for j in range(kept + 1):
        for i in range(tasks):
            store.put((f"j{j}", "out", i), b"")
    jid = f"j{kept}"
    start = time.process_time()
    if hasattr(store, "discard_job"):
        store.discard_job(jid, lambda k: k[1] == "map")
        store.discard_job(jid)
    else:  # (trees before the store's index by job)
        store.discard_where(lambda k: k[0] == jid and k[1] == "map")
        store.discard_where(lambda k: k[0] == jid)
    print(kept, 1e6 * (time.process_time() - start) / tasks)
    store.close()
"""


def store_costs(tree: str, tasks: int) -> dict[int, float]:
    """Microseconds per task of a job's end in the store, by kept jobs, from ``tree``."""
    tree = os.path.abspath(tree)
    out = subprocess.run([sys.executable, "-c", STORE_CHILD, str(tasks)], cwd=tree,
                         env=dict(os.environ, PYTHONPATH=tree), capture_output=True,
                         text=True, check=True, timeout=600).stdout
    return {int(k): float(v) for k, v in (line.split() for line in out.splitlines())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=15, help="jobs kept one after another (15)")
    ap.add_argument("--tasks", type=int, default=10_000, help="no-op tasks a job (10,000)")
    ap.add_argument("--ends", type=int, default=5, help="jobs at each end compared (5)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each tree (1)")
    ap.add_argument("--trees", default=common.REPO_ROOT, help="comma list of source trees")
    ap.add_argument("--broker-args", default="", help="more broker options, e.g. --no-events")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--store", action="store_true",
                    help="time a job's end in the store alone, with 1, 15, 50 jobs kept")
    args = ap.parse_args()
    trees = args.trees.split(",")
    if args.store:
        common.print_machine(f"a job's end in the broker's store, {args.tasks} outputs a job")
        costs = {tree: store_costs(tree, args.tasks) for tree in trees}
        common.print_table(["tree", "1 job kept us/task", "15 kept", "50 kept"],
                           [[t, c[1], c[15], c[50]] for t, c in costs.items()])
        common.write_json(args.json, {"tasks": args.tasks, "store": costs})
        return 0
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
