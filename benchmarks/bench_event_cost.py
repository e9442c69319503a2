"""The event log's cost per task in instructions: the broker's ledger under cachegrind.

    python benchmarks/bench_event_cost.py                     # this tree
    python benchmarks/bench_event_cost.py --trees /tmp/before,.   # before/after
    python benchmarks/bench_event_cost.py --full                  # tables full

Timing the event log's cost on this machine is noisy: a broker's CPU per no-op task moves
10-20% from job to job (``bench_observe.py``), and even a single process's CPU time per task
doubles and halves with the host's load. Instructions do not: valgrind's cachegrind counts
every instruction a process executes and simulates its caches, the same count each run
(hash seeds fixed). Here the broker's ledger (broker/ledger.py, with the event log of
observe/events.py or ``--no-events``'s) is driven by calls as the broker loop drives it,
as ``bench_ledger_scale.py`` does (two simulated workers, no-op map tasks reported in one
DONE per TASKS message), with the collector tuned as the broker daemon tunes it; no
sockets, no message coding (the same with and without the log). Each case runs twice, a
job of ``--small`` and of ``--large`` tasks, and the difference over the difference in
tasks is the cost per task, net of start-up. The attempt table's caps are lifted so every
task pays the same (with the default caps a job past 5,625 tasks also drops rows).
``--full`` measures the steady state of a broker that holds its finished jobs instead:
jobs one after the other on one ledger, held, with the log's tables full (its global cap
on rows cut tenfold, so that this takes minutes), the difference between 12 and 24 jobs.

Figures per task: instructions, first-level data cache misses and last-level misses
(cachegrind's simulation of this machine's caches). What they leave out: the rest of the
broker loop (ZeroMQ, msgpack, about as much again per task), and what an instruction costs
in time, which cache misses raise. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

import common

CASES = ("no-events", "events")
FULL_TASKS = 2000  # tasks of each job (--full)
FULL_CAP = 20_000  # the log's cap on attempt rows over all jobs (--full; the broker's: 200,000)
COUNTS = re.compile(r"(I\s+refs|D1\s+misses|LL misses):\s+([\d,]+)")


def child(tree: str, case: str, tasks: int) -> None:
    """Run inside valgrind: one warm-up job, then a job of ``tasks`` tasks."""
    import gc

    common.import_tree(tree)
    import bench_ledger_scale as ledger_scale

    from pymapreduce.broker.daemon import tune_collector
    from pymapreduce.observe import events as events_module

    init = events_module.EventLog.__init__

    def uncapped(self, **kw):  # every task pays the same: no rows dropped past a cap
        kw.setdefault("attempts_per_job", 10**7)
        kw.setdefault("max_attempts", 10**8)
        init(self, **kw)

    events_module.EventLog.__init__ = uncapped
    tune_collector()
    with_events = case == "events"
    ledger_scale.task_us(with_events, 2, 200, 1e-4)  # every path once
    gc.collect()
    gc.freeze()
    if tasks:
        ledger_scale.task_us(with_events, 2, tasks, 1e-4)


def child_full(tree: str, case: str, jobs: int) -> None:
    """Run inside valgrind (``--full``): ``jobs`` jobs of FULL_TASKS tasks one after the
    other on one ledger, each held when done, the log's global cap on attempt rows cut to
    FULL_CAP: past the first FULL_CAP / FULL_TASKS jobs its tables are full and every
    dispatch drops rows, as in a broker that holds its finished jobs."""
    import gc

    common.import_tree(tree)
    import bench_ledger_scale as ledger_scale

    from pymapreduce.broker.daemon import tune_collector
    from pymapreduce.observe import events as events_module

    init = events_module.EventLog.__init__

    def capped(self, **kw):
        kw.setdefault("max_attempts", FULL_CAP)
        init(self, **kw)

    events_module.EventLog.__init__ = capped
    tune_collector()
    ledger, store, ws = ledger_scale.new_ledger(case == "events", 2)
    gc.collect()
    gc.freeze()  # (the set-up's objects; the tables the jobs leave stay in sight)
    try:
        for k in range(jobs):
            ledger_scale.run_job(ledger, ws, f"j{k}", FULL_TASKS, 1e-4, freeze=False)
    finally:
        store.close()


def counts(tree: str, case: str, tasks: int, full: bool = False) -> dict[str, int]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null",
         sys.executable, os.path.abspath(__file__), "--child-full" if full else "--child",
         tree, case, str(tasks)],
        env=env, capture_output=True, text=True, check=True).stderr
    found = {name.split()[0]: int(n.replace(",", "")) for name, n in COUNTS.findall(out)}
    if set(found) != {"I", "D1", "LL"}:
        raise RuntimeError(f"no cachegrind summary for {case} {tasks}:\n{out[-2000:]}")
    return found


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] in ("--child", "--child-full"):
        (child if sys.argv[1] == "--child" else child_full)(sys.argv[2], sys.argv[3],
                                                            int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=common.REPO_ROOT,
                    help="source trees to compare, comma-separated (default: this one)")
    ap.add_argument("--small", type=int, default=2000, help="tasks of the first job")
    ap.add_argument("--large", type=int, default=14000, help="tasks of the second job")
    ap.add_argument("--full", action="store_true",
                    help=f"held jobs of {FULL_TASKS} tasks with the log's tables full: "
                         "--small and --large count jobs (default 12 and 24)")
    ap.add_argument("--pair", action="store_true",
                    help="each task writes one pair (default: none, an output the broker "
                         "keeps nowhere)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.full and (args.small, args.large) == (2000, 14000):
        args.small, args.large = 12, 24
    if shutil.which("valgrind") is None:
        ap.error("needs valgrind on the PATH (apt-get install valgrind)")
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    if args.pair:  # (read by bench_ledger_scale in each child)
        os.environ["BENCH_LEDGER_OUTPUT"] = "pair"
    what = (f"{args.small} and {args.large} held jobs of {FULL_TASKS} tasks, tables full"
            if args.full else f"jobs of {args.small} and {args.large} tasks")
    what += ", one pair written by each task" if args.pair else ", tasks writing nothing"
    info = common.print_machine(f"event log cost per task in instructions (cachegrind), "
                                f"{what}")
    rows, figures = [], {}
    n = (args.large - args.small) * (FULL_TASKS if args.full else 1)
    for tree in trees:
        base = None
        for case in CASES:
            small = counts(tree, case, args.small, args.full)
            large = counts(tree, case, args.large, args.full)
            per = {k: (large[k] - small[k]) / n for k in large}
            figures[f"{tree} {case}"] = per
            extra = "" if base is None else f"{100 * (per['I'] / base['I'] - 1):+.1f}%"
            rows.append([tree, case, round(per["I"]), round(per["D1"], 1),
                         round(per["LL"], 2), extra])
            base = base or per
            common.log(f"{tree} {case}: {per['I']:.0f} instructions per task")
    common.print_table(["tree", "ledger", "instructions/task", "D1 misses/task",
                        "LL misses/task", "instructions over no-events"], rows)
    common.write_json(args.json, {"machine": info, "args": vars(args), "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
