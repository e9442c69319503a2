"""The broker's event log alone: CPU per attempt of recording it, as the broker loop does.

    python benchmarks/bench_event_log.py --trees /tmp/before,.

No sockets and no other process: ``EventLog`` driven as the broker loop drives it, in a
child process per source tree (``--trees``) with the broker daemon's collector settings
(``gc.freeze()``, a young generation of 20,000): ``--jobs`` jobs of ``--tasks`` map
tasks, kept as a broker keeps finished jobs; their attempts dispatched ``--batch`` to a
message (``dispatched``), each committed (``done``) and the turn flushed (``flush``).
Each job's task objects say which attempts still run, as the broker's do. The same
loop against ``NullEventLog`` (a broker's ``--no-events``) is subtracted: what is left is
the log's CPU per attempt, its share of the collector's work included. Medians of
``--repeat`` runs; the trees alternate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import common

CHILD = r"""
import gc, os, sys, time
from pymapreduce.observe.events import EventLog, NullEventLog

class Task:
    __slots__ = ("job", "kind", "index", "name", "running", "failures")
    def __init__(self, job, i):
        self.job, self.kind, self.index, self.name = job, "map", i, f"map-{i}"
        self.running, self.failures = {}, 0

class Job:
    def __init__(self, n, k):
        self.id, self.step, self.tenant, self.name = f"j{k}", 0, "", "bench"
        self.reducers, self.steps, self.state = 0, [], "running"
        self.maps, self.reduces = [Task(self, i) for i in range(n)], []
    def tasks(self, kind):
        return self.maps if kind == "map" else self.reduces

def run(log, jobs, n, batch):
    kept, spent = [], 0.0
    stats, blobs = {"records": 1, "bytes": 10}, [b"x"]
    for k in range(jobs):
        job = Job(n, k)
        kept.append(job)
        log.job_submitted(job)
        ids = [int.from_bytes(os.urandom(8), "little") >> 14 << 12 | 1 for _ in range(n)]
        start = time.process_time()
        for first in range(0, n, batch):
            started = []
            for i in range(first, min(n, first + batch)):
                job.maps[i].running[ids[i]] = b"w"
                started.append(ids[i] if KEYS else ("map", i, ids[i], False))
            if KEYS:
                log.dispatched(job, job.maps[first:first + batch], started, "w1")
            else:
                log.dispatched(job, started, "w1")
            for i in range(first, min(n, first + batch)):
                del job.maps[i].running[ids[i]]
                if KEYS:
                    log.done((job.id, "map", i, ids[i]), stats, 0.001, blobs, "w1")
                else:
                    log.done(job.maps[i], ids[i], stats, 0.001, blobs, "w1")
            log.flush()
        spent += time.process_time() - start
    return 1e6 * spent / (jobs * n)

# (trees since the log took tasks and attempts: dispatched(job, tasks, attempts, ...),
# done(key, ...))
KEYS = EventLog.done.__code__.co_varnames[1] == "key"
gc.freeze()
gc.set_threshold(20000, *gc.get_threshold()[1:])
jobs, n, batch = map(int, sys.argv[1:4])
print(run(EventLog(), jobs, n, batch), run(NullEventLog(), jobs, n, batch))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=common.REPO_ROOT, help="comma list of source trees")
    ap.add_argument("--jobs", type=int, default=20, help="jobs kept (20)")
    ap.add_argument("--tasks", type=int, default=10_000, help="attempts a job (10,000)")
    ap.add_argument("--batch", type=int, default=32, help="attempts a message (32)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each tree (5)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    info = common.print_machine(f"event log alone: {args.jobs} jobs of {args.tasks} "
                                f"attempts, {args.batch} a message")
    runs: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
    for _ in range(args.repeat):
        for tree in trees:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.jobs), str(args.tasks), str(args.batch)],
                cwd=tree, env=dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True,
                check=True, timeout=900).stdout.split()
            runs[tree].append((float(out[0]), float(out[1])))
    rows, figures = [], {}
    for tree, samples in runs.items():
        log_us = statistics.median(e for e, _ in samples)
        null_us = statistics.median(n for _, n in samples)
        cost = statistics.median(e - n for e, n in samples)
        figures[tree] = {"events_us": log_us, "null_us": null_us, "cost_us": cost,
                         "runs": samples}
        rows.append([tree, log_us, null_us, cost])
    common.print_table(["tree", "with EventLog us/attempt", "with NullEventLog",
                        "the log's cost us/attempt"], rows)
    common.write_json(args.json, {"machine": info, "jobs": args.jobs, "tasks": args.tasks,
                                  "batch": args.batch, "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
