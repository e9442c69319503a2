"""Word count with 1, 2, ... workers: how pymapreduce scales against multiprocessing.Pool.

    python benchmarks/bench_scaling.py --size-mb 256 --workers 1,2,3,4 --repeat 3 \\
        --json benchmarks/results/scaling.json

The same corpus and job as bench_wordcount.py. Each system runs with each worker count in
turn (interleaved, so the machine's drift hits all alike); every result is checked equal to
the single-process loop's. Only the job is timed, not starting the cluster or the pool.
On a machine of C cores, more than C workers cannot run faster: the figures past C show
what the extra processes cost.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from contextlib import ExitStack
from typing import Any

import common
from bench_wordcount import run_mp as wordcount_mp
from bench_wordcount import run_single
from common import MIB, log, stopwatch
from corpus import build_corpus
from jobs import WordCount

SYSTEMS = ("pymapreduce", "mp")


def run_pymapreduce(job: Any, files: list[str], workers: int) -> tuple[dict, float]:
    """pymapreduce on an embedded LocalCluster of ``workers`` processes."""
    from pymapreduce import Client, LocalCluster, read_text

    with ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster(workers=workers))
        client = stack.enter_context(Client(cluster.address))
        with stopwatch() as t:
            result = client.submit(job, read_text(files)).result()
    return result, t[0]


def run_mp(job: Any, files: list[str], workers: int) -> tuple[dict, float]:
    """multiprocessing.Pool(workers): bench_wordcount.py's ``mp`` (map+combine a share of
    the files in each worker, merge and reduce in the parent), the pool's start untimed."""
    result, seconds, _ = wordcount_mp(job, files, workers)
    return result, seconds


RUNNERS = {"pymapreduce": run_pymapreduce, "mp": run_mp}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="corpus size in MiB (default 256)")
    ap.add_argument("--workers", default="1,2,3,4",
                    help="comma list of worker counts (default 1,2,3,4)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma list of " + ",".join(SYSTEMS))
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the best is shown")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not counts or min(counts) < 1:
        ap.error("--workers: give counts of at least 1")
    if set(systems) - set(SYSTEMS):
        ap.error(f"unknown systems: {', '.join(sorted(set(systems) - set(SYSTEMS)))}")

    info = common.print_machine(f"word count scaling, {args.size_mb} MiB, workers {counts}")
    # scaling is what other load on the machine spoils first: say how loaded it was
    info["load_average"] = os.getloadavg()
    print(f"load    : {info['load_average'][0]:.2f} (1 min), {os.cpu_count()} cores; "
          "above the core count, the figures measure the other load, not the scaling\n")
    files = build_corpus(common.corpus_dir(args.size_mb, args.corpus_root), args.size_mb)
    mib = sum(os.path.getsize(p) for p in files) / MIB
    job = WordCount()
    log("running the single-process reference ...")
    reference, single_s, _ = run_single(job, files)
    samples: dict[tuple[str, int], list[float]] = {(s, n): [] for s in systems for n in counts}
    equal = dict.fromkeys(samples, True)
    for rep in range(args.repeat):
        for n in counts:
            for name in systems:
                log(f"run {rep + 1}: {name} with {n} workers ...")
                gc.collect()
                result, seconds = RUNNERS[name](job, files, n)
                samples[name, n].append(seconds)
                equal[name, n] &= result == reference
                del result
    records = []
    for (name, n), times in samples.items():
        best = min(times)
        records.append({"system": name, "workers": n, "seconds": best,
                        "mib_per_s": mib / best, "samples_s": times,
                        "speedup_vs_single": single_s / best, "equal": equal[name, n]})
    for r in records:  # against the same system with the fewest workers
        base = next(x for x in records if x["system"] == r["system"]
                    and x["workers"] == min(counts))
        r["speedup_vs_fewest"] = base["seconds"] / r["seconds"]
    print()
    common.print_table(["system", "workers", "seconds", "MiB/s", "x single", "x fewest",
                        "equal"],
                       [[r["system"], r["workers"], r["seconds"], r["mib_per_s"],
                         r["speedup_vs_single"], r["speedup_vs_fewest"], r["equal"]]
                        for r in records])
    print(f"\nsingle-process loop: {single_s:.3g}s; seconds: best of {args.repeat}; "
          f"x fewest: against the same system with {min(counts)} worker(s)")
    info["load_average_after"] = os.getloadavg()
    common.write_json(args.json, {"benchmark": "scaling", "machine": info, "size_mib": mib,
                                  "single_s": single_s, "results": records})
    return 0 if all(r["equal"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
