"""The seed's example end to end, cluster start-up included: pymapreduce against Dask.

    python benchmarks/bench_seed.py --repeat 5

Times ``CharCount().run(FILE)``, which starts an embedded LocalCluster, runs and tears it down,
against starting a ``distributed.LocalCluster(n_workers=2)``, a bag-based character count and
closing it; a plain loop in this process is shown for scale. Every result is checked against
the dict the seed's README prints.
"""

from __future__ import annotations

import argparse
import sys

import common
from common import log, median_min, stopwatch
from jobs import CharCount

# The seed's CountCharacters input, copied verbatim (000_9001a7b181d3276c.txt).
FILE = [
    {'1': 'MapReduce implemented with Python'},
    {'2': 'This is a Python package named pyMapReduce'},
    {'3': 'MapReduce is a programming model and an associated implementation for processing and generating large data sets. Users specify a map function that processes a key/value pair to generate a set of intermediate key/value pairs, and a reduce function that merges all intermediate values associated with the same intermediate key. Many real world tasks are expressible in this model, as shown in the paper.'},
    {'4': 'Programs written in this functional style are automatically parallelized and executed on a large cluster of commodity machines. The runtime system takes care of the details of partitioning the input data, scheduling the program’s execution across a set of machines, handling machine failures, and managing the required intermachine communication. This allows programmers without any experience with parallel and distributed systems to easily utilize the resources of a large distributed system.'},
    {'5': 'Our implementation of MapReduce runs on a large cluster of commodity machines and is highly scalable: a typical MapReduce computation processes many terabytes of data on thousands of machines. Programmers find the system easy to use: hundreds of MapReduce programs have been implemented and upwards of one thousand MapReduce jobs are executed on Google’s clusters every day.'},
    {'6': 'The computation takes a set of input key/value pairs, and produces a set of output key/value pairs. The user of the MapReduce library expresses the computation as two functions: Map and Reduce.'},
    {'7': 'Map, written by the user, takes an input pair and produces a set of intermediate key/value pairs. The MapReduce library groups together all intermediate values associated with the same intermediate key I and passes them to the Reduce function.'}
]

# What the seed's README prints for it.
EXPECTED = {'M': 12, 'a': 149, 'p': 53, 'R': 11, 'e': 198, 'd': 64, 'u': 61, 'c': 54, ' ': 265, 'i': 97, 'm': 54, 'l': 52, 'n': 89, 't': 122, 'w': 12, 'h': 47, 'P': 4, 'y': 32, 'o': 81, 'T': 6, 's': 108, 'k': 12, 'g': 26, 'r': 83, 'f': 25, '.': 12, 'U': 1, '/': 5, 'v': 9, ',': 8, 'x': 6, 'b': 10, 'z': 2, '’': 2, 'q': 1, 'O': 1, ':': 3, 'j': 1, 'G': 1, 'I': 1}

TEXTS = [value for record in FILE for value in record.values()]


def run_single() -> dict:
    """The same count in a plain loop in this process (no cluster): the floor."""
    job, groups = CharCount(), {}
    for record in FILE:
        for key, value in record.items():
            for k, v in job.map(key, value):
                groups.setdefault(k, []).append(v)
    return {k: job.reduce(k, vs) for k, vs in groups.items()}


def run_pymapreduce() -> dict:
    """``Job.run`` with no address: start an embedded cluster, run, tear down."""
    return CharCount().run(FILE)


def run_dask() -> dict:
    """Start a Dask LocalCluster with 2 worker processes, count with a bag, close."""
    import dask.bag as db
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, host="127.0.0.1", dashboard_address=None) as cluster:
        with Client(cluster):
            return dict(db.from_sequence(TEXTS, npartitions=2).flatten().frequencies().compute())


def available() -> dict:
    """The systems that can run here; Dask is optional."""
    systems = {"single": run_single, "pymapreduce": run_pymapreduce}
    try:
        import dask.bag  # noqa: F401  imported before timing, as for pymapreduce
        import distributed  # noqa: F401

        systems["dask"] = run_dask
    except ImportError as exc:
        print(f"dask: skipped: {exc}; pip install 'dask[distributed]'")
    return systems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per system (default 5)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    import pymapreduce  # noqa: F401  import cost is not part of a run

    info = common.print_machine(f"seed CountCharacters end to end, {args.repeat} runs each")
    rows, records = [], []
    for name, run in available().items():
        samples, equal = [], True
        for i in range(args.repeat):
            log(f"{name} run {i + 1}/{args.repeat}")
            with stopwatch() as t:
                result = run()
            samples.append(t[0])
            equal = equal and result == EXPECTED
        rows.append([name, *median_min(samples), max(samples), equal])
        records.append({"system": name, "samples_s": samples, "equal": equal})
    common.print_table(["system", "median s", "min s", "max s", "equal to seed"], rows)
    common.write_json(args.json, {"machine": info, "repeat": args.repeat, "results": records})
    return 0 if all(r["equal"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
