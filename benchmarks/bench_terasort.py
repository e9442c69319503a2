"""TeraSort: sort N 100-byte records by their 10-byte keys; pymapreduce against the
alternatives, same machine, same run.

    python benchmarks/bench_terasort.py --records 10000000 --systems sorted,pymapreduce,spark

The input is like teragen's ASCII records (gensort -a): a line of a 10-character key, an
89-character value and a newline, from a fixed seed. Each system reads the input file
and writes the sorted records as part files (pymapreduce: a ``total_order`` job with no
``reduce``, i.e. the identity, writing ``part-*`` through ``output_dir``; PySpark:
``sortByKey`` and ``saveAsTextFile``; ``sorted``: one process, ``sorted()`` by key, one
file). Each output is then checked, untimed, as valsort does: the part files read in
order are globally sorted by key, and hold the same records as the input (their count and
the sum of their CRC-32s, which does not depend on order).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import common
from common import MIB, log, stopwatch

from pymapreduce import Job

WORKERS = 2
SYSTEMS = ("sorted", "pymapreduce", "spark")
KEY = 10  # bytes of a record's key
VALUE = 89  # bytes of its value, before the newline: 100 bytes a record
PRINTABLE = bytes(range(0x21, 0x7F))  # the key alphabet: no space, no newline


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
    """Count, order-free checksum (sum of CRC-32s), and whether keys never went down."""

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


def parts_in(folder: str) -> list[str]:
    """The part files of an output folder, in part order."""
    return sorted(glob.glob(os.path.join(folder, "part-*")))


# -- systems --------------------------------------------------------------------------------


def run_sorted(path: str, out: str, reducers: int) -> tuple[list[str], float, float]:
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
    return [target], t[0], 0.0


def run_pymapreduce(path: str, out: str, reducers: int) -> tuple[list[str], float, float]:
    """pymapreduce on an embedded LocalCluster, ``total_order`` and ``output_dir``."""
    from pymapreduce import Client, LocalCluster, read_text

    with ExitStack() as stack:
        with stopwatch() as start:
            cluster = stack.enter_context(LocalCluster(workers=WORKERS))
        client = stack.enter_context(Client(cluster.address))
        with stopwatch() as t:
            client.submit(TeraSort(), read_text(path), reducers=reducers,
                          output_dir=out).wait()
    return parts_in(out), t[0], start[0]


def pymapreduce_lines(paths: list[str]) -> Iterator[str]:
    """Records back from pymapreduce's JSON-lines part files."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, value = json.loads(line)
                yield key + value


def run_spark(path: str, out: str, reducers: int) -> tuple[list[str], float, float]:
    """PySpark local[2]: textFile, keyBy the first 10 characters, sortByKey,
    saveAsTextFile."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise Skipped(f"pyspark cannot be imported ({exc}); pip install -e '.[bench]'") from exc
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise Skipped("no java on PATH and no JAVA_HOME")
    from bench_wordcount import _stop_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with stopwatch() as start:
        spark = (SparkSession.builder.master(f"local[{WORKERS}]").appName("terasort")
                 .config("spark.driver.host", "127.0.0.1")
                 .config("spark.driver.bindAddress", "127.0.0.1")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.driver.memory", "4g")
                 .getOrCreate())
        sc = spark.sparkContext
        sc.setLogLevel("ERROR")
        sc.parallelize(range(WORKERS), WORKERS).count()
    target = os.path.join(out, "spark")
    try:
        with stopwatch() as t:
            (sc.textFile(path)
             .map(lambda line: (line[:KEY], line[KEY:]))
             .sortByKey(numPartitions=reducers)
             .map(lambda kv: kv[0] + kv[1])
             .saveAsTextFile(target))
    finally:
        _stop_spark(spark)
    return parts_in(target), t[0], start[0]


RUNNERS = {"sorted": run_sorted, "pymapreduce": run_pymapreduce, "spark": run_spark}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000_000, help="records (default 10M)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma list of " + ",".join(SYSTEMS))
    ap.add_argument("--reducers", type=int, default=8,
                    help="reduce partitions of pymapreduce and Spark (default 8)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--data-root", default="/tmp/pmr-terasort")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")

    info = common.print_machine(f"TeraSort, {args.records} records of 100 bytes, "
                                f"{WORKERS} workers")
    path = input_file(args.records, args.seed, args.data_root)
    print(f"input   : {path}, {os.path.getsize(path) / MIB:.1f} MiB\n")
    reference = summarize(lines_of([path]))

    rows: list[list[Any]] = []
    figures: dict[str, Any] = {}
    notes: list[str] = []
    base = None
    for name in systems:
        out = tempfile.mkdtemp(prefix=f"terasort-{name}-", dir=args.data_root)
        try:
            log(f"running {name}")
            parts, secs, startup = RUNNERS[name](path, os.path.join(out, "out"), args.reducers)
        except Skipped as exc:
            notes.append(f"{name}: skipped ({exc})")
            rows.append([name, None, None, None, None, None, None])
            continue
        log(f"validating {name}")
        got = summarize((pymapreduce_lines if name == "pymapreduce" else lines_of)(parts))
        valid = got.sorted and got.same_records(reference)
        shutil.rmtree(out, ignore_errors=True)
        rate = args.records / secs
        base = base or (rate if name == "sorted" else None)
        rows.append([name, secs, rate, rate / base if base else None, startup or None,
                     len(parts), valid])
        figures[name] = {"seconds": secs, "records_per_s": rate, "startup_s": startup,
                         "parts": len(parts), "valid": valid, "sorted": got.sorted,
                         "count": got.count}
    print()
    common.print_table(["system", "seconds", "records/s", "x sorted", "start-up s", "parts",
                        "valid"], rows)
    for note in notes:
        print(f"- {note}")
    common.write_json(args.json, {"machine": info, "records": args.records,
                                  "reducers": args.reducers, "systems": figures})
    return 0 if all(f["valid"] for f in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
