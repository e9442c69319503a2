"""Where a TeraSort's CPU goes, per process and per thread, over the job alone.

    python benchmarks/bench_sort_cpu.py --records 1000000 --trees /work/main,. --repeat 5

Each run is a fresh child process (``--trees``: pymapreduce imported from each checkout in
turn, alternating) that starts an embedded cluster of 2 worker processes, reads every
thread's CPU time from Linux's scheduler counters (/proc/PID/task/TID/schedstat,
nanoseconds) of the broker, the workers and itself, runs ``bench_terasort.py``'s job
(``total_order``, ``results=False``, part files on local disk, 8 reducers) and reads
them again: start-up and shutdown are not counted. Threads are summed by kind: each
process's main thread, ZeroMQ's I/O threads, the rest. Prints the median of the runs of
each tree, and each run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common  # noqa: F401 (this folder and the checkout on sys.path)

TREE_ENV = "PMR_BENCH_TREE"


def threads(pid: int) -> dict[int, tuple[str, int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
        out[int(tid)] = ("main" if int(tid) == pid else
                         "zmq" if name.startswith("ZMQbg") else "other", ns)
    return out


def child(records: int, data_root: str) -> dict:
    """One job on a fresh cluster: CPU seconds by role and thread kind, and its seconds."""
    import procs
    from bench_terasort import TeraSort, input_file

    import pymapreduce
    from pymapreduce import Client, LocalCluster, read_text

    path = input_file(records, 2026, data_root)
    out = tempfile.mkdtemp(prefix="pmr-sort-cpu-")
    try:
        with LocalCluster(workers=2) as cluster:
            time.sleep(0.3)  # (the workers registered and idle)
            roles = {"broker": [cluster.broker_pid], "client": [os.getpid()],
                     "workers": procs.children(cluster.worker_pid)}
            before = {pid: threads(pid) for pids in roles.values() for pid in pids}
            with Client(cluster.address) as client:
                t0 = time.perf_counter()
                client.submit(TeraSort(), read_text(path), reducers=8,
                              output_dir=os.path.join(out, "out"), results=False).wait()
                secs = time.perf_counter() - t0
            after = {pid: threads(pid) for pid in before}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result: dict = {"seconds": secs, "package": os.path.dirname(pymapreduce.__file__)}
    for role, pids in roles.items():
        for pid in pids:
            for tid, (kind, ns) in after[pid].items():
                used = (ns - before[pid].get(tid, (kind, 0))[1]) / 1e9
                key = f"{role} {kind}"
                result[key] = result.get(key, 0.0) + used
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--trees", default=".", help="comma list of pymapreduce checkouts")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data-root", default=os.path.join(tempfile.gettempdir(), "pmr-bench"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.records, args.data_root)), flush=True)
        return
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    for _ in range(args.repeat):
        for tree in trees:
            # (from outside the checkouts: python -m pymapreduce imports from the cwd)
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", "--records",
                 str(args.records), "--data-root", args.data_root],
                env={**os.environ, TREE_ENV: tree}, cwd=tempfile.gettempdir(),
                capture_output=True, text=True, check=True)
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            runs[tree].append(json.loads(line[len("RESULT "):]))
            print(tree, json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                    for k, v in runs[tree][-1].items()}), flush=True)
    print(f"\nmedians of {args.repeat} runs, CPU seconds over the job ({args.records} records)")
    keys = sorted({k for rs in runs.values() for r in rs for k in r if k != "package"})
    print("| tree | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for tree, rs in runs.items():
        print(f"| {tree} | " + " | ".join(
            f"{statistics.median(r.get(k, 0.0) for r in rs):.3g}" for k in keys) + " |")


if __name__ == "__main__":
    if os.environ.get(TREE_ENV):  # a child imports pymapreduce from this checkout
        sys.path.insert(0, os.environ[TREE_ENV])
    main()
