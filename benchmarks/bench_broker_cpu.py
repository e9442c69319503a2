"""The event log's cost as the broker process's CPU per no-op task, tree against tree.

    python benchmarks/bench_broker_cpu.py --trees /tmp/before,. --rounds 8 --repeat 3

For each source tree (in turn, ``--repeat`` times), two embedded clusters of two workers
run side by side in a child process: one whose broker keeps no event log
(``--no-events``), one with it (the default). They take turns running a job of
``--tasks`` no-op map tasks, ``--rounds`` times each; the broker processes' user and
system CPU and minor page faults (``/proc/PID/stat``) are read around each job. Printed
per tree and repeat: both brokers' CPU per task and the difference, the log's cost.

Broker CPU per task is steadier than task time on a shared machine (bench_observe.py
measures task time, the issue's bar), though it still moves 10-20% from minute to
minute: compare the differences within a repeat, trees alternating.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import common

CHILD = r"""
import os, sys
from pymapreduce import Client, LocalCluster
from jobs import NoOp

def stat(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[7]), int(f[11]) + int(f[12])  # minor faults, user + system ticks

tasks, rounds = int(sys.argv[1]), int(sys.argv[2])
records = [(i, i) for i in range(tasks)]
modes = ("no-events", "events")
clusters = {m: LocalCluster(workers=2, events=(m == "events")) for m in modes}
try:
    clients = {}
    for m, c in clusters.items():
        c.__enter__()
        clients[m] = Client(c.address).__enter__()
        clients[m].submit(NoOp(), records, map_tasks=tasks, reducers=0).result()  # warm
    totals = {m: [0, 0] for m in modes}
    for _ in range(rounds):
        for m, c in clusters.items():
            before = stat(c.broker_pid)
            clients[m].submit(NoOp(), records, map_tasks=tasks, reducers=0).result()
            after = stat(c.broker_pid)
            totals[m][0] += after[0] - before[0]
            totals[m][1] += after[1] - before[1]
    tick, n = os.sysconf("SC_CLK_TCK"), tasks * rounds
    print(*(f"{totals[m][1] / tick / n * 1e6:.3f} {totals[m][0] / n:.4f}" for m in modes))
finally:
    for c in clusters.values():
        c.__exit__(None, None, None)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=common.REPO_ROOT, help="comma list of source trees")
    ap.add_argument("--tasks", type=int, default=10_000, help="no-op tasks a job (10,000)")
    ap.add_argument("--rounds", type=int, default=8, help="jobs per broker per repeat (8)")
    ap.add_argument("--repeat", type=int, default=3, help="children per tree (3)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    info = common.print_machine(f"the event log's broker CPU: {args.rounds} jobs of "
                                f"{args.tasks} no-op tasks per broker, trees alternating")
    runs: dict[str, list] = {t: [] for t in trees}
    rows = []
    for k in range(args.repeat):
        for tree in trees:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [tree, os.path.join(tree, "benchmarks")]))
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.tasks),
                                  str(args.rounds)], cwd=tree, env=env, capture_output=True,
                                 text=True, check=True, timeout=1800).stdout.split()
            off, off_faults, on, on_faults = map(float, out)
            runs[tree].append({"no_events_us": off, "events_us": on,
                               "no_events_faults": off_faults, "events_faults": on_faults})
            rows.append([tree, k + 1, off, on, on - off, off_faults, on_faults])
            common.log(f"{tree} #{k + 1}: {off:.1f} and {on:.1f} us a task")
    common.print_table(["tree", "repeat", "no events us/task", "events us/task",
                        "the log's us/task", "faults/task off", "faults/task on"], rows)
    for tree, samples in runs.items():
        cost = statistics.median(s["events_us"] - s["no_events_us"] for s in samples)
        print(f"{tree}: the log's broker CPU, median of {len(samples)}: {cost:.2f} us a task")
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
