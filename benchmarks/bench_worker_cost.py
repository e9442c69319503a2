"""A worker's cost per no-op task in instructions: its intake and task path under cachegrind.

    python benchmarks/bench_worker_cost.py                         # this tree
    python benchmarks/bench_worker_cost.py --trees /tmp/before,.   # before/after
    python benchmarks/bench_worker_cost.py --opcodes               # ... and by function

A worker process's CPU per no-op task moves with the host's load as the broker's does
(``bench_event_cost.py`` says why), so this counts instructions: a ``Worker`` (not
connected: no sockets) is given TASKS messages as the broker sends them (32 no-op map
tasks of one in-memory record each, encoded and decoded as on the wire) and runs each
task as its loop does (``_enqueue``, ``_run_one``: the job's state put back after each
task, its output captured, ``run_task``, the report built). Each tree runs twice under
valgrind's cachegrind, going over the messages two and three times; the difference over
one pass's tasks is the cost per task, net of start-up and of making the messages.
What it leaves out: ZeroMQ, reading and decoding the messages off the socket, the DONE
message's encoding and the loop's own per-task checks.

``--opcodes`` also counts the bytecode instructions each function runs per task
(``sys.settrace``), the same every run: where the Python of the path goes. Needs
valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import shutil
import subprocess
import sys

import common

PER_MESSAGE = 32  # tasks per TASKS message (the broker's usual credit)


def _driver(tree: str, tasks: int, daemon: bool = False):
    """``(go, tasks run per go)``: ``go()`` runs every message once through a Worker
    (``daemon``: as a worker daemon's process runs, with its descriptors 1 and 2 captured
    and its running attempt written to a page, where the tree has them)."""
    common.import_tree(tree)
    import cloudpickle
    from jobs import NoOp

    from pymapreduce.patterns import protocol as P
    from pymapreduce.patterns.message import Message
    from pymapreduce.patterns.records import pack
    from pymapreduce.patterns.wire import TaskItem
    from pymapreduce.workers.worker import Worker

    options: dict = {}
    if daemon:
        import inspect

        known = inspect.signature(Worker).parameters
        if "capture_fds" in known:
            options["capture_fds"] = True
        if "running" in known:
            from pymapreduce.workers.running import RunningPage

            options["running"] = RunningPage()
    worker = Worker(connect="tcp://127.0.0.1:1", **options)  # (never connected)
    worker.state.capture()  # as Worker.run does before its first task
    code = cloudpickle.dumps(NoOp())
    frames = []
    for first in range(0, tasks, PER_MESSAGE):
        body: dict = {"job": "j", "reducers": 0, "map_only": True}
        blobs: list = []
        if not first:  # the job's code comes with its first message to a worker
            body["code"] = 0
            blobs.append(code)
        items = []
        for i in range(first, first + PER_MESSAGE):
            items.append(TaskItem("map", i, (i << 12) | 1, ["mem", len(blobs)]).wire())
            blobs.append(pack([[i, i]]))
        body["tasks"] = items
        frames.append(Message(P.TASKS, body, tuple(blobs)).encode())

    def go() -> None:
        worker.jobs.clear()  # (each pass loads the job's code, as the first one did)
        for message in frames:
            worker._enqueue(Message.decode(message))
            while worker.queue:
                worker._run_one(worker.queue.popleft())
            worker.reports.clear()
            worker.report_blobs.clear()

    return go, len(frames) * PER_MESSAGE


def child(tree: str, tasks: int, passes: int, daemon: bool = False) -> None:
    """Run inside valgrind: a warm-up pass, then ``passes - 1`` more."""
    go, _ = _driver(tree, tasks, daemon)
    go()
    gc.collect()
    gc.freeze()
    for _ in range(passes - 1):
        go()


def instructions(tree: str, tasks: int, passes: int, daemon: bool = False) -> int:
    return common.cachegrind_instructions([os.path.abspath(__file__), "--child", tree,
                                           str(tasks), str(passes),
                                           *(["daemon"] if daemon else [])])


def opcodes(tree: str, tasks: int) -> tuple[float, list[tuple[str, float]]]:
    """Bytecode instructions per task, in all and by function (in a child process)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--opcodes-child", tree,
                          str(tasks)], capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.strip().splitlines()]
    return float(rows[0][1]), [(name, float(n)) for name, n in rows[1:]]


def opcodes_child(tree: str, tasks: int) -> None:
    go, n = _driver(tree, tasks)
    go()
    counts: collections.Counter = collections.Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        name = f"{code.co_filename.split('/pymapreduce/')[-1]}:{code.co_name}"

        def local(frame, event, arg):
            if event == "opcode":
                counts[name] += 1
            return local
        return local

    sys.settrace(tracer)
    go()
    sys.settrace(None)
    print(f"all\t{sum(counts.values()) / n}")
    for name, k in counts.most_common(25):
        print(f"{name}\t{k / n}")


def main() -> int:
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:] == ["daemon"])
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "--opcodes-child":
        opcodes_child(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=common.REPO_ROOT,
                    help="source trees to compare, comma-separated (default: this one)")
    ap.add_argument("--tasks", type=int, default=3200, help="tasks per pass (default 3200)")
    ap.add_argument("--as-daemon", action="store_true",
                    help="the worker as a daemon's process runs it: descriptors 1 and 2 "
                         "captured, the running attempt written for its supervisor")
    ap.add_argument("--opcodes", action="store_true",
                    help="also count bytecode instructions per task, by function")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        ap.error("needs valgrind on the PATH (apt-get install valgrind)")
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    info = common.print_machine(f"a worker's instructions per no-op task (cachegrind), "
                                f"{args.tasks} tasks a pass")
    rows, figures = [], {}
    base = None
    for tree in trees:
        per = (instructions(tree, args.tasks, 3, args.as_daemon)
               - instructions(tree, args.tasks, 2, args.as_daemon)) \
            / (args.tasks // PER_MESSAGE * PER_MESSAGE)
        figures[tree] = {"instructions": per}
        row = [tree, round(per), "" if base is None else f"{100 * (per / base - 1):+.1f}%"]
        if args.opcodes:
            total, by_function = opcodes(tree, min(args.tasks, 640))
            figures[tree].update(opcodes=total, by_function=by_function)
            row.append(round(total, 1))
            common.log(f"{tree}: bytecode instructions per task, by function:")
            for name, n in by_function[:15]:
                common.log(f"  {n:8.1f}  {name}")
        rows.append(row)
        base = base or per
        common.log(f"{tree}: {per:.0f} instructions per task")
    common.print_table(["tree", "instructions/task", "against the first"]
                       + (["opcodes/task"] if args.opcodes else []), rows)
    common.write_json(args.json, {"machine": info, "args": vars(args), "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
