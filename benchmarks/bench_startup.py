"""The seed's example as a whole process: Python's start, imports, cluster start, the job,
cluster stop and exit, against mrjob's inline runner and a plain loop, each a fresh process.

    python benchmarks/bench_startup.py --repeat 7 [--base /tmp/ab_base_startup]

Each run is ``python THIS_FILE --child SYSTEM`` timed from the parent's ``Popen`` to the
child's exit; the systems alternate run by run (a noisy machine then weighs on each
alike), and each run's printed dict is checked against the seed's README. Systems:

- ``pymapreduce``: ``CharCount().run(FILE)`` (the seed's CountCharacters job, an embedded
  cluster of 2 worker processes started and stopped) with the tree this file is in;
  ``pymapreduce-spawn``: the same with ``PYMAPREDUCE_START_METHOD=spawn`` (daemons as new
  Python processes, as before forking was the default);
- ``base``: the same job with the tree given by ``--base`` (the A/B's "before"), e.g.
  ``git -C REPO archive c24e19b pymapreduce benchmarks | tar -x -C /tmp/ab_base_startup``;
- ``mrjob-inline``: an MRJob with the same map and reduce, ``-r inline`` (one process, no
  cluster), if mrjob is installed;
- ``plain``: the same count in a loop (Python's start and the floor of any of them).

Python's bytecode caches are used as an installed package has them (pip compiles at
install time; mrjob's are there): each system runs once untimed first, with
``PYTHONDONTWRITEBYTECODE`` taken out of the children's environment so that the caches
are written. ``--no-bytecode-cache`` keeps the variable as it is (where it is set, every
run then compiles each module of a source tree from source).

``--cost`` checks that forked daemons run no slower than spawned ones once started:
alternating fork and spawn, the CPU per no-op task of the broker and the worker
processes (Linux scheduler statistics, so a busy machine weighs less than on wall time)
and the task rate, and a word count's wall time and tree CPU.

``--phases`` instead splits each pymapreduce run into the phases of the start-up budget
(docs/ARCHITECTURE.md, "Start-up and exit"): stamps taken in the client around the
cluster's steps, medians over ``--repeat`` runs of this tree and of ``--base``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.dirname(HERE)


def child(system: str, tree: str) -> dict:
    """What one fresh process runs; returns the counts (``sys.path`` starts with ``tree``
    and its benchmarks)."""
    from bench_seed import FILE

    if system == "plain":
        counts: dict = {}
        for record in FILE:
            for value in record.values():
                for char in value:
                    counts[char] = counts.get(char, 0) + 1
        return counts
    if system == "mrjob-inline":
        return _mrjob(FILE)
    os.environ["PYTHONPATH"] = tree  # (the daemons of a spawned cluster import this tree)
    from jobs import CharCount

    import pymapreduce

    assert pymapreduce.__file__.startswith(tree), (pymapreduce.__file__, tree)
    return dict(CharCount().run(FILE))


def phases_child(tree: str) -> None:
    """The seed's job with stamps around each step of the embedded cluster (the client's
    view): milliseconds per phase, from this process's start to the end of the run."""
    import json

    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    began = time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    stamps = [("python start", time.time())]

    def stamp(name: str) -> None:
        stamps.append((name, time.time()))

    os.environ["PYTHONPATH"] = tree
    from bench_seed import EXPECTED, FILE
    from jobs import CharCount

    import pymapreduce.local as local
    stamp("client imports")

    def around(cls, name: str, label: str, before: str | None = None) -> None:
        inner = getattr(cls, name)

        def wrapped(self, *args):
            if before:
                stamp(before)
            result = inner(self, *args)
            stamp(label)
            return result
        setattr(cls, name, wrapped)

    around(local.LocalCluster, "_read_ready", "broker ready", "cluster options, imports, forks")
    around(local.LocalCluster, "_wait_workers", "workers registered")
    around(local.LocalCluster, "close", "daemons stopped", "the job")
    result = CharCount().run(FILE)
    out, prev = {}, began
    for name, t in stamps:
        out[name] = (t - prev) * 1000
        prev = t
    print(json.dumps({"phases": out, "equal": dict(result) == EXPECTED}))


def phases(trees: list[tuple[str, str]], repeat: int) -> int:
    """Run ``phases_child`` alternately in each tree; print the median of each phase."""
    import json

    got: dict[str, dict[str, list[float]]] = {name: {} for name, _ in trees}
    walls: dict[str, list[float]] = {name: [] for name, _ in trees}
    warm = 0 if KEEP_BYTECODE_ENV else 1  # (a first round writes the bytecode caches)
    for round_ in range(warm + repeat):
        for name, tree in trees:
            env = child_env()
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "phases", "--tree", tree]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp")
            wall = (time.perf_counter() - t0) * 1000
            run = json.loads(proc.stdout.splitlines()[-1])
            assert run["equal"], f"{name}: a result different from the seed's"
            if round_ < warm:
                continue
            walls[name].append(wall)
            for phase, ms in run["phases"].items():
                got[name].setdefault(phase, []).append(ms)
    print(f"phases of the seed's example, ms, median of {repeat}; load (1 min) "
          f"{os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    names = [name for name, _ in trees]
    print(f"{'phase':<34}" + "".join(f"{n:>12}" for n in names))
    for phase in got[names[0]]:
        print(f"{phase:<34}" + "".join(
            f"{statistics.median(got[n].get(phase, [0])):12.1f}" for n in names))
    print(f"{'whole process (wall, from Popen)':<34}" + "".join(
        f"{statistics.median(walls[n]):12.1f}" for n in names))
    return 0


def cost(rounds: int, tasks: int, wc_mb: int) -> int:
    """Forked against spawned daemons, once started: per-task CPU and a word count."""
    import random

    sys.path[:0] = [TREE, HERE]
    from jobs import NoOp, WordCount
    from procs import children, sched_cpu_seconds

    from pymapreduce import Client, LocalCluster, read_text

    path = os.path.join(tempfile.gettempdir(), f"pmr-startup-wc-{wc_mb}mb.txt")
    if not os.path.exists(path):
        rng, words = random.Random(1), [f"w{i}" for i in range(5000)]
        with open(path + ".part", "w") as f:
            while f.tell() < wc_mb << 20:
                f.write(" ".join(rng.choice(words) for _ in range(12)) + "\n")
        os.replace(path + ".part", path)
    rows: dict[str, list[tuple[float, ...]]] = {"fork": [], "spawn": []}
    expected = None
    for _ in range(rounds):
        for method in rows:
            with LocalCluster(workers=2, start_method=method) as cluster, \
                    Client(cluster.address) as client:
                workers = children(cluster.worker_pid)
                client.submit(NoOp(), [(i, i) for i in range(100)], map_tasks=100,
                              reducers=0).result()  # (warm)
                b0 = sched_cpu_seconds(cluster.broker_pid)
                w0 = sum(map(sched_cpu_seconds, workers))
                t0 = time.perf_counter()
                client.submit(NoOp(), [(i, i) for i in range(tasks)], map_tasks=tasks,
                              reducers=0).result()
                rate = tasks / (time.perf_counter() - t0)
                broker = (sched_cpu_seconds(cluster.broker_pid) - b0) / tasks * 1e6
                work = (sum(map(sched_cpu_seconds, workers)) - w0) / tasks * 1e6
                pids = [cluster.broker_pid, *workers]
                c0, p0 = sum(map(sched_cpu_seconds, pids)), time.process_time()
                t0 = time.perf_counter()
                counts = dict(client.submit(WordCount(), read_text(path)).result())
                wc_wall = time.perf_counter() - t0
                wc_cpu = sum(map(sched_cpu_seconds, pids)) - c0 + time.process_time() - p0
                expected = expected or counts
                assert counts == expected, "word counts differ between start methods"
                rows[method].append((rate, broker, work, wc_wall, wc_cpu))
    print(f"forked against spawned daemons, {rounds} rounds alternating, {tasks} no-op tasks, "
          f"word count {wc_mb} MiB; load (1 min) {os.getloadavg()[0]:.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'start':<7}{'tasks/s':>9}{'broker us/task':>16}{'workers us/task':>17}"
          f"{'wc wall s':>11}{'wc tree CPU s':>15}  (medians)")
    for method, got in rows.items():
        med = [statistics.median(col) for col in zip(*got)]
        print(f"{method:<7}{med[0]:9.0f}{med[1]:16.1f}{med[2]:17.1f}{med[3]:11.2f}{med[4]:15.2f}")
    return 0


def _mrjob(records: list) -> dict:
    from mrjob.job import MRJob

    class MRCharCount(MRJob):
        def mapper(self, _, line):
            for char in line:
                yield char, 1

        def reducer(self, key, values):
            yield key, sum(values)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input.txt")
        with open(path, "w", encoding="utf-8") as f:
            for record in records:
                for value in record.values():
                    f.write(value + "\n")
        job = MRCharCount(["-r", "inline", "--no-conf", path])
        with job.make_runner() as runner:
            runner.run()
            counts = dict(job.parse_output(runner.cat_output()))
    counts.pop("\n", None)  # (the line ends: mrjob reads lines, the seed's records are texts)
    return counts


def systems(base: str | None) -> list[tuple[str, str, dict]]:
    """(name, tree, extra environment) of each system that can run here."""
    found = [("pymapreduce", TREE, {}),
             ("pymapreduce-spawn", TREE, {"PYMAPREDUCE_START_METHOD": "spawn"})]
    if base:
        found.append(("base", os.path.abspath(base), {}))
    try:
        import mrjob  # noqa: F401

        found.append(("mrjob-inline", TREE, {}))
    except ImportError:
        print("mrjob-inline: skipped (pip install mrjob)", file=sys.stderr)
    found.append(("plain", TREE, {}))
    return found


KEEP_BYTECODE_ENV = False  # --no-bytecode-cache


def child_env(extra: dict | None = None) -> dict:
    env = {**os.environ, **(extra or {})}
    env.pop("PYTHONPATH", None)  # (each child puts its own tree first)
    if not KEEP_BYTECODE_ENV:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_once(name: str, tree: str, extra: dict) -> tuple[float, bool]:
    env = child_env(extra)
    if name == "base":
        env.pop("PYMAPREDUCE_START_METHOD", None)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--tree", tree]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return wall, False
    return wall, proc.stdout.strip() == "EQUAL"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="fresh processes per system")
    ap.add_argument("--base", help="a pymapreduce tree to compare against (A/B)")
    ap.add_argument("--phases", action="store_true",
                    help="split pymapreduce's runs into start-up phases instead")
    ap.add_argument("--cost", action="store_true",
                    help="forked against spawned daemons once started (task CPU, word count)")
    ap.add_argument("--tasks", type=int, default=10_000, help="--cost: no-op tasks")
    ap.add_argument("--wc-mb", type=int, default=32, help="--cost: word count MiB")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="leave PYTHONDONTWRITEBYTECODE as it is (no warm-up run either)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=TREE, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path[:0] = [args.tree, os.path.join(args.tree, "benchmarks")]
        if args.child == "phases":
            phases_child(args.tree)
            return 0
        from bench_seed import EXPECTED

        got = child(args.child, args.tree)
        print("EQUAL" if got == EXPECTED else f"DIFFERENT {got}")
        return 0
    global KEEP_BYTECODE_ENV
    KEEP_BYTECODE_ENV = args.no_bytecode_cache
    if args.cost:
        return cost(args.repeat, args.tasks, args.wc_mb)
    if args.phases:
        return phases([("this tree", TREE)] + ([("base", os.path.abspath(args.base))]
                                              if args.base else []), args.repeat)
    found = systems(args.base)
    samples: dict[str, list[float]] = {name: [] for name, _, _ in found}
    equal = {name: True for name, _, _ in found}
    if not args.no_bytecode_cache:  # (writes the bytecode caches; not timed)
        for name, tree, extra in found:
            run_once(name, tree, extra)
    load = [os.getloadavg()[0]]
    for i in range(args.repeat):
        for name, tree, extra in found:
            wall, same = run_once(name, tree, extra)
            samples[name].append(wall)
            equal[name] = equal[name] and same
        load.append(os.getloadavg()[0])
        print(f"round {i + 1}/{args.repeat}: " + ", ".join(
            f"{n} {samples[n][-1]:.3f}" for n, _, _ in found), file=sys.stderr, flush=True)
    print(f"seed CountCharacters, whole fresh process, {args.repeat} runs each, alternating; "
          f"{os.cpu_count()} cores; load (1 min) {min(load):.2f}-{max(load):.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"python: {sys.executable} {sys.version.split()[0]}; bytecode caches "
          f"{'as the environment has them' if args.no_bytecode_cache else 'used'}")
    print(f"{'system':<20} {'median s':>9} {'min s':>7} {'max s':>7}  equal to the seed's dict")
    for name, _, _ in found:
        s = samples[name]
        print(f"{name:<20} {statistics.median(s):9.3f} {min(s):7.3f} {max(s):7.3f}  "
              f"{'yes' if equal[name] else 'NO'}")
    print("all: " + "; ".join(f"{n} " + " ".join(f"{x:.3f}" for x in samples[n])
                              for n, _, _ in found))
    return 0 if all(equal.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
