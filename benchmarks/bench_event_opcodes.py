"""The event log's cost per task in Python bytecode instructions, function by function.

    python benchmarks/bench_event_opcodes.py                   # this tree
    python benchmarks/bench_event_opcodes.py --trees /tmp/before,.

``bench_event_cost.py`` counts machine instructions under cachegrind, which says how
much the log costs but not where in its Python: cachegrind sees the interpreter's loop,
not the functions it runs. This counts the bytecode instructions (opcodes) each Python
function runs (``sys.settrace`` with opcode events) while the broker's ledger is driven as
``bench_ledger_scale.py`` drives it (two simulated workers, no-op map tasks reported in
one DONE per TASKS message), with and without the event log, and prints the difference
per task by function: the same count every run. An opcode is not a unit of time (one
may be a dict lookup, another a call into C that walks a list), so read it beside the
instruction count; but the functions that run the log's Python per task, and how much,
are named here.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

import common


def child(tree: str, events: bool, tasks: int) -> dict[str, int]:
    common.import_tree(tree)
    import bench_ledger_scale as ledger_scale

    from pymapreduce.broker.daemon import tune_collector

    counts: collections.Counter = collections.Counter()

    def local(frame, event, arg):  # noqa: ANN001 (a trace function)
        if event == "opcode":
            counts[f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}"] += 1
        return local

    def calls(frame, event, arg):  # noqa: ANN001
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return local

    tune_collector()
    ledger_scale.task_us(events, 2, 200, 1e-4)  # every path once
    sys.settrace(calls)
    try:
        ledger_scale.task_us(events, 2, tasks, 1e-4)
    finally:
        sys.settrace(None)
    return dict(counts)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3] == "events", int(sys.argv[4]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=common.REPO_ROOT,
                    help="comma-separated source trees (default: this checkout)")
    ap.add_argument("--tasks", type=int, default=3200, help="tasks of the traced job")
    ap.add_argument("--top", type=int, default=12, help="functions listed per tree")
    args = ap.parse_args()
    common.print_machine(f"the event log's Python per task, {args.tasks} tasks")
    for tree in args.trees.split(","):
        runs = {}
        for case in ("events", "no-events"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", tree,
                                  case, str(args.tasks)], capture_output=True, text=True,
                                 check=True, env=dict(os.environ, PYTHONHASHSEED="0"))
            runs[case] = json.loads(out.stdout.strip().splitlines()[-1])
        with_log, without = runs["events"], runs["no-events"]
        diff = {k: with_log.get(k, 0) - without.get(k, 0) for k in set(with_log) | set(without)}
        base = sum(without.values()) / args.tasks
        extra = sum(diff.values()) / args.tasks
        print(f"\n{tree}: {base:.0f} opcodes per task without the log, {extra:+.1f} with it "
              f"({100 * extra / base:+.1f}%)")
        for name, n in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:args.top]:
            if n:
                print(f"  {n / args.tasks:+8.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
