"""Fault benchmarks: what a killed worker, a slow worker and a killed broker cost a job.

    python benchmarks/bench_faults.py                  # all scenarios, 3 repeats each
    python benchmarks/bench_faults.py --repeat 1 --scenarios kill,broker

A real cluster of separate processes on this machine: one broker and three worker daemons
of one process each. The job is a word count over in-memory text in which each record's
``map`` also waits a little (``--wait-ms``, as if reading from a remote store): the three
workers then are three units of capacity even on a two-core machine, so losing or slowing
one of them costs what it would on three machines. ``--wait-ms 0 --words 600`` makes the
job CPU-bound instead: three workers then share two cores. Every run's result is compared
with the sequential result, and every ratio below is against the undisturbed time measured
in the same run of this script.

Scenarios:
- ``undisturbed``: the reference time.
- ``kill``: kill -9 of one whole worker daemon (supervisor and its process) when half of
  the map tasks are committed; the bar is <= 1.5x the undisturbed time.
- ``slow``: one worker started with ``--slowdown 10`` (it idles 9x each task's duration
  after it), with backup tasks (the default) and without (``--backup-after off``); the
  bar is <= 1.3x with backups.
- ``broker``: the broker (with ``--state-dir``) killed with kill -9 when half of the map
  tasks are committed, and restarted on the same address and directory; the client waits
  in ``result()`` throughout. Counted: map tasks committed before the kill (read from the
  journal the dead broker left), tasks the restarted broker recovered, and committed map
  tasks that ran again (the bar is zero; each map call logs its record to a file).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import common
from jobs import WordCount
from procs import children, kill_daemon, read_ready, signal_pid

READY = re.compile(r"pymapreduce broker ready: (\S+)")
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon"]


class WaitingWordCount(WordCount):
    """Word count whose map waits ``wait`` seconds per record and may log each record."""

    def __init__(self, wait: float, log_path: str | None = None) -> None:
        self.wait = wait
        self.log_path = log_path

    def map(self, key: Any, value: str):
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"{key}\n")
        time.sleep(self.wait)
        return super().map(key, value)


def make_records(n: int, words: int) -> list[tuple[int, str]]:
    return [(i, " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] + str(j % 13)
                         for j in range(words)))
            for i in range(n)]


def sequential(records: list[tuple[int, str]]) -> dict:
    from pymapreduce import run_sequential

    return run_sequential(WordCount(), records)


class Cluster:
    """A broker and worker daemons as subprocesses, each killed by its PID at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pymapreduce", *args, "--log-level", "ERROR",
                "--parent-pid", str(os.getpid())]

    def broker(self, *extra: str, bind: str = "tcp://127.0.0.1:0") -> subprocess.Popen:
        proc = subprocess.Popen(self._cmd("broker", "--bind", bind, *extra),
                                stdout=subprocess.PIPE, cwd=common.REPO_ROOT)
        self.procs.append(proc)
        self.address = read_ready(proc, READY).group(1)
        return proc

    def worker(self, *extra: str) -> subprocess.Popen:
        proc = subprocess.Popen(self._cmd("worker", "--connect", self.address, "--processes",
                                          "1", *extra),
                                stdout=subprocess.DEVNULL, cwd=common.REPO_ROOT)
        self.procs.append(proc)
        return proc

    def wait_workers(self, n: int) -> None:
        from pymapreduce import Client

        with Client(self.address, timeout=30) as client:
            deadline = time.monotonic() + 30
            while client.info()["workers"] < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{n} workers did not register")
                time.sleep(0.05)

    def close(self) -> None:
        kids = [k for p in self.procs for k in children(p.pid)]
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        for pid in kids:
            signal_pid(pid, signal.SIGKILL)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def when_half_mapped(handle: Any, action) -> threading.Thread:
    """Run ``action()`` on a thread once half of the job's map tasks are committed."""
    from pymapreduce import Client

    def watch() -> None:
        with Client(handle.client.address, timeout=30) as client:
            job = client.job(handle.job_id)
            while True:
                done, total = job.status()["maps"]
                if done * 2 >= total:
                    action()
                    return
                time.sleep(0.01)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def run_job(address: str, records: list, args: argparse.Namespace, *, log_path: str | None = None,
            during=None) -> tuple[dict, float, dict]:
    """Submit, optionally act at half of the map phase, and wait; ``(result, s, status)``."""
    from pymapreduce import Client

    with Client(address, timeout=30) as client:
        start = time.perf_counter()
        handle = client.submit(WaitingWordCount(args.wait_ms / 1000, log_path), records,
                               map_tasks=args.tasks, reducers=3)
        watcher = when_half_mapped(handle, during) if during else None
        result = handle.result(600)
        seconds = time.perf_counter() - start
        if watcher is not None:
            watcher.join(30)
        return result, seconds, handle.status()


def scenario_plain(records, args, worker_extra=(), broker_extra=()) -> tuple[dict, float]:
    with Cluster() as c:
        c.broker(*broker_extra)
        for i in range(3):
            c.worker(*(worker_extra if i == 0 else ()))
        c.wait_workers(3)
        result, seconds, _ = run_job(c.address, records, args)
        return result, seconds


def scenario_kill(records, args) -> tuple[dict, float]:
    with Cluster() as c:
        c.broker()
        workers = [c.worker() for _ in range(3)]
        c.wait_workers(3)
        result, seconds, _ = run_job(c.address, records, args,
                                     during=lambda: kill_daemon(workers[0]))
        return result, seconds


def scenario_broker(records, args) -> tuple[dict, float, dict]:
    with tempfile.TemporaryDirectory(prefix="pmr-bench-faults-") as tmp, Cluster() as c:
        state = os.path.join(tmp, "state")
        log_path = os.path.join(tmp, "runs")
        broker = c.broker("--state-dir", state)
        for _ in range(3):
            c.worker()
        c.wait_workers(3)
        facts: dict[str, Any] = {}

        def kill_and_restart() -> None:
            broker.kill()
            broker.wait()
            db = sqlite3.connect(f"file:{state}/journal.sqlite?mode=ro", uri=True)
            facts["committed"] = {i for (i,) in db.execute(
                "SELECT idx FROM commits WHERE kind='map'")}
            db.close()
            with open(log_path) as f:
                facts["ran_before"] = len(f.read().split())
            t = time.perf_counter()
            c.broker("--state-dir", state, bind=c.address)
            facts["restart_s"] = time.perf_counter() - t

        result, seconds, status = run_job(c.address, records, args, log_path=log_path,
                                          during=kill_and_restart)
        with open(log_path) as f:
            after = [int(x) for x in f.read().split()][facts["ran_before"]:]
        per_task = len(records) // args.tasks  # record i belongs to map task i // per_task
        rerun = {i // per_task for i in after} & facts["committed"]
        facts.update(recovered=status.get("recovered"), rerun_committed=len(rerun),
                     committed_at_kill=len(facts.pop("committed")),
                     tasks_after=len({i // per_task for i in after}))
        return result, seconds, facts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1200, help="records (default 1200)")
    ap.add_argument("--tasks", type=int, default=120, help="map tasks (default 120)")
    ap.add_argument("--wait-ms", type=float, default=10.0,
                    help="wait per record in map, ms (default 10)")
    ap.add_argument("--words", type=int, default=60,
                    help="words per record (default 60); with --wait-ms 0 and more words, "
                         "the job is CPU-bound instead")
    ap.add_argument("--repeat", type=int, default=3, help="runs per scenario (default 3)")
    ap.add_argument("--backup-after", default="0.25",
                    help="the broker's --backup-after in the scenarios with backup tasks "
                         "(default 0.25, the broker's default)")
    ap.add_argument("--scenarios", default="undisturbed,kill,slow,broker")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.records % args.tasks:
        ap.error("--records must be a multiple of --tasks")
    wanted = args.scenarios.split(",")
    info = common.print_machine(
        f"fault benchmarks: {args.records} records in {args.tasks} map tasks, "
        f"{args.words} words and {args.wait_ms:g} ms wait per record, 3 worker daemons")
    records = make_records(args.records, args.words)
    reference = sequential(records)
    plans: list[tuple[str, Any]] = [
        ("undisturbed", lambda: scenario_plain(records, args, (),
                                               ("--backup-after", args.backup_after)))]
    if "kill" in wanted:
        plans.append(("kill 1 of 3 workers at 50% of map", lambda: scenario_kill(records, args)))
    if "slow" in wanted:
        plans.append(("1 of 3 workers 10x slower, backup tasks on",
                      lambda: scenario_plain(records, args, ("--slowdown", "10"),
                                             ("--backup-after", args.backup_after))))
        plans.append(("1 of 3 workers 10x slower, backup tasks off",
                      lambda: scenario_plain(records, args, ("--slowdown", "10"),
                                             ("--backup-after", "off"))))
    broker_facts: list[dict] = []
    if "broker" in wanted:
        def broker_run():
            result, seconds, facts = scenario_broker(records, args)
            broker_facts.append(facts)
            return result, seconds
        plans.append(("broker kill -9 at 50% of map, restarted", broker_run))

    times: dict[str, list[float]] = {name: [] for name, _ in plans}
    correct: dict[str, bool] = {name: True for name, _ in plans}
    for rep in range(args.repeat):  # interleaved, so drift in the machine hits all alike
        for name, fn in plans:
            result, seconds = fn()
            times[name].append(seconds)
            correct[name] &= result == reference
            common.log(f"run {rep + 1}: {name}: {seconds:.2f}s, "
                       f"{'correct' if result == reference else 'WRONG RESULT'}")
    base = statistics.median(times["undisturbed"])
    rows = []
    for name, _ in plans:
        med = statistics.median(times[name])
        rows.append([name, med, min(times[name]), med / base, correct[name]])
    print()
    common.print_table(["scenario", "median s", "min s", "x undisturbed", "results correct"],
                       rows)
    if broker_facts:
        print()
        common.print_table(
            ["broker run", "map tasks committed at kill", "recovered by the restart",
             "committed tasks run again", "tasks run after the kill", "restart s"],
            [[i + 1, f["committed_at_kill"], f["recovered"], f["rerun_committed"],
              f["tasks_after"], f["restart_s"]] for i, f in enumerate(broker_facts)])
    common.write_json(args.json, {"machine": info, "args": vars(args), "times": times,
                                  "correct": correct, "broker": broker_facts})
    ok = all(correct.values()) and all(f["rerun_committed"] == 0 for f in broker_facts)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
