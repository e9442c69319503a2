"""TeraSort: sort N 100-byte records by their 10-byte keys; pymapreduce against the
alternatives, same machine, same run.

    python benchmarks/bench_terasort.py --records 1000000 --systems sorted,pymapreduce,dask \
        --repeat 3                               # issue 13's row: 0.6x sorted(), 5x Dask
    python benchmarks/bench_terasort.py --records 10000000 --systems sorted,pymapreduce,spark
    python benchmarks/bench_terasort.py --records 1000000 --systems pymapreduce \\
        --trees /work/main,. --repeat 2          # two checkouts of pymapreduce, alternately
    python benchmarks/bench_terasort.py --records 10000000 --sinks 1 --memory 256MB \
        --systems sorted,pymapreduce,spark      # pymapreduce with a sink daemon, bounded

What is timed, for every system: the sort as its user writes it, on a started cluster
(starting one, pymapreduce's embedded cluster, Dask's LocalCluster, Spark's JVM, is
reported apart as "start-up"), from the input file to sorted part files on local disk,
committed; nothing of the output comes back into the program. pymapreduce: ``submit(...,
output_dir=out, results=False)`` and ``wait()`` (the reducers write the part files, the
client renames them into place); with ``--keep-results`` the default ``results=True``,
where the broker also keeps the output and ``wait()`` brings each partition's bytes home
to read its commit record. With ``--sinks N`` the cluster has N sink daemons
(docs/sinks.md); ``--memory`` is each worker process's budget.

The input is like teragen's ASCII records (gensort -a): a line of a 10-character key, an
89-character value and a newline, from a fixed seed. Each system reads the input file
and writes the sorted records as part files (pymapreduce: a ``total_order`` job with no
``reduce``, i.e. the identity, writing ``part-*`` through ``output_dir``; Dask:
``dask.bag.read_text`` in 8 MiB blocks, each line split into key and value, the bag made
a ``dask.dataframe`` and ``sort_values("key", npartitions=R)`` (Dask's range-partitioned
sort: it samples the key quantiles as TeraSort does), ``to_csv`` one file per partition,
on a distributed LocalCluster of 2 single-threaded worker processes (which import pandas
and dask.dataframe in the start-up); PySpark:
``sortByKey`` and ``saveAsTextFile``; ``sorted``: one process, ``sorted()`` by key, one
file). Each output is then checked, untimed, as valsort does: the part files read in
order are globally sorted by key, and hold the same records as the input (their count and
the sum of their CRC-32s, which does not depend on order).

Each run is a child process of its own (this script with ``--child``), so its peak memory
is its own and ``--trees`` can point the pymapreduce runs at other checkouts. For
pymapreduce the table splits the time into phases, from the job's status events (0.1 s
apart at most): ``submit`` (sampling the input for the key ranges, and sending the job),
``map``, ``reduce`` (to the job's end, after the last map task) and ``output`` (fetching
and decoding the partitions and writing the part files, in the client); and the peak
resident memory of each process: the client, the broker and the largest worker process.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import common
from common import MIB, log, stopwatch

TREE_ENV = "PMR_BENCH_TREE"  # a child run imports pymapreduce from this checkout
if os.environ.get(TREE_ENV):  # (before the import below; daemons inherit sys.path)
    sys.path.insert(0, os.path.abspath(os.environ[TREE_ENV]))

import procs  # noqa: E402

from pymapreduce import Job  # noqa: E402

WORKERS = 2
SYSTEMS = ("sorted", "pymapreduce", "dask", "spark")
SINKS_ENV, MEMORY_ENV = "PMR_BENCH_SINKS", "PMR_BENCH_MEMORY"  # (for the pymapreduce child)
KEEP_ENV = "PMR_BENCH_KEEP_RESULTS"  # pymapreduce keeps results (the default of submit)
DASK_BLOCK = 8 << 20  # Dask's input blocks: pymapreduce's own split size for this input
KEY = 10  # bytes of a record's key
VALUE = 89  # bytes of its value, before the newline: 100 bytes a record
PRINTABLE = bytes(range(0x21, 0x7F))  # the key alphabet: no space, no newline
PHASES = ("submit", "map", "reduce", "output")
RESULT = "RESULT "  # the prefix of a child's one line of figures on stdout


class Skipped(Exception):
    """A system that cannot run here (not installed, no Java)."""


class TeraSort(Job):
    """Identity map and (no) reduce, in one key order: the sort is the engine's."""

    total_order = True

    def map(self, offset: int, line: str):
        yield line[:KEY], line[KEY:]


# -- input and its checksum -----------------------------------------------------------------


def generate(path: str, n: int, seed: int) -> None:
    """Write ``n`` records: random printable keys, values naming their row (as teragen)."""
    rng = random.Random(seed)
    table = bytes(PRINTABLE[b % len(PRINTABLE)] for b in range(256))
    filler = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 3
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for start in range(0, n, 100_000):
            count = min(100_000, n - start)
            keys = rng.randbytes(KEY * count).translate(table)
            lines = []
            for i in range(count):
                row = b"%032X" % (start + i)
                lines.append(keys[i * KEY:(i + 1) * KEY] + row + filler[:VALUE - 32] + b"\n")
            f.write(b"".join(lines))
    os.replace(tmp, path)


def input_file(n: int, seed: int, root: str) -> str:
    """The input of ``n`` records, made once per size and seed and kept in ``root``."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"terasort-{n}-{seed}.txt")
    if not os.path.exists(path):
        log(f"generating {n} records in {path}")
        generate(path, n, seed)
    return path


class Summary:
    """Count, order-free checksum (sum of CRC-32s), and whether keys never went down
    (across the files, read in part order)."""

    def __init__(self) -> None:
        self.count = 0
        self.crc_sum = 0
        self.sorted = True
        self.last = ""

    def add(self, record: str) -> None:
        key = record[:KEY]
        if key < self.last:
            self.sorted = False
        self.last = key
        self.count += 1
        self.crc_sum += zlib.crc32(record.encode())

    def same_records(self, other: Summary) -> bool:
        return (self.count, self.crc_sum & 0xFFFFFFFFFFFFFFFF) == (
            other.count, other.crc_sum & 0xFFFFFFFFFFFFFFFF)


def summarize(records: Iterator[str]) -> Summary:
    s = Summary()
    for record in records:
        s.add(record)
    return s


def lines_of(paths: list[str]) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="ascii") as f:
            for line in f:
                yield line.rstrip("\n")


def csv_lines(paths: list[str]) -> Iterator[str]:
    """Records back from CSV part files of ``key,value`` rows (Dask's ``to_csv``; a key
    holding a quote or a comma is quoted there)."""
    import csv

    for path in paths:
        with open(path, encoding="ascii", newline="") as f:
            for row in csv.reader(f):
                key, value = row
                yield key + value if len(key) == KEY else "\x00" + key + value


def pymapreduce_lines(paths: list[str]) -> Iterator[str]:
    """Records back from pymapreduce's JSON-lines part files (a key must be the 10
    characters it was: a record cut elsewhere is not the same record)."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, value = json.loads(line)
                yield key + value if len(key) == KEY else "\x00" + key + value


def parts_in(folder: str) -> list[str]:
    """The part files of an output folder, in part order."""
    return sorted(glob.glob(os.path.join(folder, "part-*")))


# -- memory -------------------------------------------------------------------------------


class PeakMemory:
    """Peak resident MiB of this process (the client) and of the cluster's processes:
    the broker, the worker supervisor and its worker processes (sampled every
    ``interval`` seconds from /proc: VmHWM, each process's own peak, while it lives);
    and the CPU seconds of each role (``cpu``), as last sampled."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self.cpu: dict[int, tuple[str, float]] = {}
        self._pids: tuple[int | None, int | None] = (None, None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, broker_pid: int | None, supervisor_pid: int | None,
              sinks: tuple[int, ...] = ()) -> PeakMemory:
        self._pids = (broker_pid, supervisor_pid)
        self._sinks = tuple(sinks)  # sink daemons' pids (their peaks: role "sink")
        self._thread.start()
        return self

    def _sample(self) -> None:
        broker, supervisor = self._pids
        roles = [("broker", broker), ("supervisor", supervisor)]
        roles += [("worker", pid) for pid in procs.children(supervisor or 0)]
        roles += [("sink", pid) for pid in getattr(self, "_sinks", ())]
        for role, pid in roles:
            mib = procs.status_mib(pid, "VmHWM") if pid else None
            if mib is not None:
                self.peaks[role] = max(self.peaks.get(role, 0.0), mib)
            secs = procs.cpu_seconds(pid) if pid else None
            if secs is not None:
                self.cpu[pid] = (role, secs)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        self.peaks["client"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return dict(self.peaks)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of the broker and of all worker processes, since they started."""
        total: dict[str, float] = {}
        for role, secs in self.cpu.values():
            total[role] = total.get(role, 0.0) + secs
        return total


# -- systems (each runs in a child process) -----------------------------------------------


def run_sorted(path: str, out: str, reducers: int) -> dict[str, Any]:
    """One process: read the lines, ``sorted()`` by key, write one file."""
    with stopwatch() as t:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
        lines.sort(key=lambda line: line[:KEY])
        os.makedirs(out, exist_ok=True)
        target = os.path.join(out, "part-00000")
        with open(target, "w", encoding="ascii") as f:
            f.write("\n".join(lines))
            f.write("\n")
    return {"seconds": t[0], "startup": 0.0,
            "memory": {"client": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}


def run_pymapreduce(path: str, out: str, reducers: int) -> dict[str, Any]:
    """pymapreduce on an embedded LocalCluster, ``total_order`` and ``output_dir``; the
    phases from the job's status events as ``wait(progress=)`` hears them."""
    import pymapreduce
    from pymapreduce import Client, LocalCluster, read_text

    marks: dict[str, float] = {}

    def progress(status: dict) -> None:
        now = time.perf_counter()
        if status.get("phase") != "map" or status["maps"][0] >= status["maps"][1]:
            marks.setdefault("map", now)  # (the first status after the last map task)
        if status.get("state") == "succeeded":
            marks.setdefault("reduce", now)

    # --sinks / --memory of the parent (sink daemons, each worker's budget): with sinks,
    # the part files are written by the reducers and nothing comes home (results=False)
    sinks = int(os.environ.get(SINKS_ENV, "0"))
    budget = os.environ.get(MEMORY_ENV) or None
    keep = bool(os.environ.get(KEEP_ENV)) and not sinks
    with stopwatch() as start:
        cluster = LocalCluster(workers=WORKERS, sinks=sinks, memory=budget).start()
    try:
        memory = PeakMemory().watch(cluster.broker_pid, cluster.worker_pid,
                                    cluster.sink_pids)
        with Client(cluster.address) as client:
            t0 = time.perf_counter()
            handle = client.submit(TeraSort(), read_text(path), reducers=reducers,
                                   output_dir=out, results=keep)
            marks["submit"] = time.perf_counter()
            handle.wait(progress=progress)
            end = time.perf_counter()
        peaks = memory.stop()
    finally:
        cluster.close()
    cpu = memory.cpu_by_role()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu["client"] = usage.ru_utime + usage.ru_stime
    marks.setdefault("map", marks["reduce"])
    phases, before = {}, t0
    for name, at in (*((p, marks[p]) for p in PHASES[:3]), ("output", end)):
        phases[name], before = at - before, at
    return {"seconds": end - t0, "startup": start[0], "phases": phases, "memory": peaks,
            "cpu": cpu,
            "package": os.path.dirname(pymapreduce.__file__)}


def _dask_record(line: str) -> tuple[str, str]:
    return line[:KEY], line[KEY:].rstrip("\n")


def _dask_imports() -> None:
    import dask.dataframe  # noqa: F401
    import pandas  # noqa: F401


def run_dask(path: str, out: str, reducers: int) -> dict[str, Any]:
    """Dask on a distributed LocalCluster of 2 single-threaded worker processes: lines
    read as a bag, made a dataframe, ``sort_values`` by key, ``to_csv`` part files."""
    try:
        import dask.bag as db
        import dask.dataframe  # noqa: F401 (here: whether it imports, with pandas)
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise Skipped(f"dask cannot be imported ({exc}); pip install -e '.[bench]'") from exc
    with stopwatch() as start:
        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
        # (its workers import pandas and dask.dataframe now, as pymapreduce's workers
        # import pymapreduce when they start: the start-up, not the sort)
        client.run(_dask_imports)
    try:
        with stopwatch() as t:
            frame = (db.read_text(path, blocksize=DASK_BLOCK).map(_dask_record)
                     .to_dataframe(columns=["key", "value"]))
            (frame.sort_values("key", npartitions=reducers)
             .to_csv(os.path.join(out, "part-*.csv"), index=False, header=False))
    finally:
        client.close()
        cluster.close()
    return {"seconds": t[0], "startup": start[0]}


def run_spark(path: str, out: str, reducers: int) -> dict[str, Any]:
    """PySpark local[2]: textFile, keyBy the first 10 characters, sortByKey,
    saveAsTextFile."""
    try:
        from pyspark.sql import SparkSession  # noqa: F401 (here: whether it imports)
    except ImportError as exc:
        raise Skipped(f"pyspark cannot be imported ({exc}); pip install -e '.[bench]'") from exc
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise Skipped("no java on PATH and no JAVA_HOME")
    from bench_wordcount import _stop_spark, start_spark

    spark, startup = start_spark("terasort", WORKERS)
    sc = spark.sparkContext
    try:
        with stopwatch() as t:
            (sc.textFile(path)
             .map(lambda line: (line[:KEY], line[KEY:]))
             .sortByKey(numPartitions=reducers)
             .map(lambda kv: kv[0] + kv[1])
             .saveAsTextFile(out))
    finally:
        _stop_spark(spark)
    return {"seconds": t[0], "startup": startup}


RUNNERS = {"sorted": run_sorted, "pymapreduce": run_pymapreduce, "dask": run_dask,
           "spark": run_spark}


def child(system: str, path: str, out: str, reducers: int) -> int:
    """``--child``: run one system, print its figures as one JSON line."""
    try:
        figures = RUNNERS[system](path, out, reducers)
    except Skipped as exc:
        figures = {"skipped": str(exc)}
    print(RESULT + json.dumps(figures), flush=True)
    return 0


def run_child(system: str, tree: str | None, path: str, out: str,
              reducers: int) -> dict[str, Any]:
    """Run ``system`` in a child process (pymapreduce from ``tree`` if given)."""
    env = dict(os.environ)
    env.pop(TREE_ENV, None)
    if tree:
        env[TREE_ENV] = tree
    cmd = [sys.executable, os.path.abspath(__file__), "--child", system, "--input",
           os.path.abspath(path), "--out", os.path.abspath(out), "--reducers", str(reducers)]
    # run from elsewhere than a checkout: ``python -m pymapreduce`` (the daemons) imports
    # the package from its current directory before PYTHONPATH
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False,
                          cwd=os.path.dirname(os.path.abspath(out)))
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{system} run failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(RESULT):])


# -- the report ---------------------------------------------------------------------------


def plan(systems: list[str], trees: list[str], repeat: int) -> list[tuple[str, str | None]]:
    """The runs, in order: each system once per repeat; pymapreduce once per tree, the
    trees alternating within a repeat so that drift on a busy machine hits them alike."""
    runs: list[tuple[str, str | None]] = []
    for r in range(repeat):
        for name in systems:
            if name == "pymapreduce" and trees:
                order = trees if r % 2 == 0 else trees[::-1]
                runs += [(name, tree) for tree in order]
            else:
                runs.append((name, None))
    return runs


def label(name: str, tree: str | None) -> str:
    return f"{name}@{os.path.basename(os.path.abspath(tree))}" if tree else name


def median_rates(runs: list[dict[str, Any]]) -> dict[str, tuple[int, float]]:
    """Each system's (and tree's) valid runs: how many, and their median records/s."""
    import statistics

    rates: dict[str, list[float]] = {}
    for run in runs:
        if run["valid"]:
            rates.setdefault(label(run["system"], run["tree"]), []).append(run["records_per_s"])
    return {who: (len(r), statistics.median(r)) for who, r in rates.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000_000, help="records (default 10M)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma list of " + ",".join(SYSTEMS))
    ap.add_argument("--trees", default="",
                    help="comma list of pymapreduce checkouts to run in turn (default: this one)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (default 1)")
    ap.add_argument("--reducers", type=int, default=8,
                    help="reduce partitions of pymapreduce and Spark (default 8)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--sinks", type=int, default=0,
                    help="pymapreduce: sink daemons (default 0: the broker is the sink)")
    ap.add_argument("--memory", help="pymapreduce: each worker process's --memory")
    ap.add_argument("--keep-results", action="store_true",
                    help="pymapreduce: results=True (the broker also keeps the output)")
    ap.add_argument("--data-root", default="/tmp/pmr-terasort")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sinks:
        os.environ[SINKS_ENV] = str(args.sinks)
    if args.memory:
        os.environ[MEMORY_ENV] = args.memory
    if args.keep_results:
        os.environ[KEEP_ENV] = "1"
    if args.child:
        return child(args.child, args.input, args.out, args.reducers)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    trees = [t.strip() for t in args.trees.split(",") if t.strip()]

    info = common.print_machine(f"TeraSort, {args.records} records of 100 bytes, "
                                f"{WORKERS} workers")
    path = input_file(args.records, args.seed, args.data_root)
    print(f"input   : {path}, {os.path.getsize(path) / MIB:.1f} MiB\n")
    reference = summarize(lines_of([path]))

    rows: list[list[Any]] = []
    phase_rows: list[list[Any]] = []
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    base: float | None = None
    for name, tree in plan(systems, trees, args.repeat):
        who = label(name, tree)
        out = tempfile.mkdtemp(prefix=f"terasort-{name}-", dir=args.data_root)
        try:
            log(f"running {who}")
            fig = run_child(name, tree, path, os.path.join(out, "out"), args.reducers)
            if "skipped" in fig:
                notes.append(f"{who}: skipped ({fig['skipped']})")
                continue
            log(f"validating {who}" + (f" (pymapreduce from {fig['package']})"
                                         if "package" in fig else ""))
            parts = parts_in(os.path.join(out, "out"))
            reader = {"pymapreduce": pymapreduce_lines, "dask": csv_lines}.get(name, lines_of)
            got = summarize(reader(parts))
        finally:
            shutil.rmtree(out, ignore_errors=True)
        valid = got.sorted and got.same_records(reference)
        secs = fig["seconds"]
        rate = args.records / secs
        if name == "sorted":
            base = max(base or 0.0, rate)
        mem = fig.get("memory") or {}
        rows.append([who, secs, rate, rate, fig["startup"] or None,
                     len(parts), valid, mem.get("client"), mem.get("broker"),
                     mem.get("worker")])
        if "phases" in fig:
            cpu = fig.get("cpu") or {}
            phase_rows.append([who, *(fig["phases"][p] for p in PHASES), secs,
                               *(cpu.get(r) for r in ("client", "broker", "worker"))])
        runs.append({"system": name, "tree": tree, "records_per_s": rate, "parts": len(parts),
                     "valid": valid, "sorted": got.sorted, "count": got.count, **fig})
    for row in rows:  # against the best sorted() run (the quietest moment)
        row[3] = row[2] / base if base else None
    print()
    common.print_table(["system", "seconds", "records/s", "x sorted", "start-up s", "parts",
                        "valid", "client MiB", "broker MiB", "worker MiB"], rows)
    if phase_rows:
        print()
        common.print_table(["pymapreduce", *(f"{p} s" for p in PHASES), "total s",
                            "client CPU s", "broker CPU s", "workers CPU s"], phase_rows)
    medians = median_rates(runs)
    if len(medians) > 1:
        print()
        common.print_table(["median of", "runs", "records/s", "x sorted", "x dask"], [
            [who, n, rate, rate / medians["sorted"][1] if "sorted" in medians else None,
             rate / medians["dask"][1] if "dask" in medians else None]
            for who, (n, rate) in medians.items()])
    for note in notes:
        print(f"- {note}")
    common.write_json(args.json, {"machine": info, "records": args.records,
                                  "reducers": args.reducers, "runs": runs})
    return 0 if all(r["valid"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
