"""Peak memory of the client and the broker against the size of a read_text input.

    python benchmarks/bench_memory.py --sizes 32,256

read_text inputs are file byte ranges that workers read themselves, so neither the client nor
the broker should hold the input: their peaks should stay flat as the corpus grows. Each size
runs in a fresh subprocess, so one size's peak does not carry into the next. The smallest
default size (32 MiB) already holds the whole source text the corpus repeats, so every size
has the same vocabulary and the same result size.

Two jobs: a character count with a combiner, whose map output is a few hundred keys per task, isolates the
input (the broker's peak must not move); the word count's map output is the whole
vocabulary (~470k words) per map task, and the broker holds every map task's output until
the reduce phase, so its peak grows with the number of map tasks, not with input bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from contextlib import ExitStack

import common
from common import MIB, log, stopwatch
from corpus import build_corpus
from procs import status_mib

WORKERS = 2


def peak_rss_mib(pid: int) -> float | None:
    """A live process's peak resident set (VmHWM) in MiB, or None if it cannot be read."""
    return status_mib(pid, "VmHWM")


def own_peak_mib() -> float:
    """This process's peak resident set in MiB.

    VmHWM of /proc/self, falling back to ru_maxrss: on Linux ru_maxrss survives exec, so a
    fresh child started from a big parent would report the parent's size at fork time.
    """
    peak = peak_rss_mib(os.getpid())
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(size_mb: int, corpus_root: str, job_name: str) -> dict:
    """Run one job on a fresh LocalCluster and measure; runs in its own process."""
    import jobs

    from pymapreduce import Client, LocalCluster, read_text

    job = {"wordcount": jobs.WordCount, "charcount": jobs.CharCountCombined}[job_name]()
    files = build_corpus(common.corpus_dir(size_mb, corpus_root), size_mb)  # cached by the parent
    with ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster(workers=WORKERS))
        client = stack.enter_context(Client(cluster.address))
        before = own_peak_mib()
        with stopwatch() as t:
            handle = client.submit(job, read_text(files))
            result = handle.result()
            map_tasks = handle.status()["maps"][1]
        broker_pid = cluster.broker_pid
        broker = peak_rss_mib(broker_pid)  # before shutdown: VmHWM goes with the process
    return {
        "job": job_name,
        "map_tasks": map_tasks,
        "size_mb": size_mb,
        "input_mib": sum(os.path.getsize(p) for p in files) / MIB,
        "distinct_keys": len(result),
        "seconds": t[0],
        "client_peak_before_job_mib": before,
        "client_peak_mib": own_peak_mib(),
        "broker_peak_mib": broker,
        "broker_in_client_process": broker_pid == os.getpid(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,256", help="corpus sizes in MiB (default 32,256)")
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--jobs", default="charcount,wordcount", help="charcount,wordcount")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: one measurement
    ap.add_argument("--child-job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.corpus_root, args.child_job)))
        return 0

    info = common.print_machine(f"client and broker peak memory, {WORKERS} workers")
    rows, records = [], []
    runs = [(job, int(size)) for job in args.jobs.split(",") for size in args.sizes.split(",")]
    for job, size in runs:
        build_corpus(common.corpus_dir(size, args.corpus_root), size)  # here, not in the child
        log(f"measuring {job} on {size} MiB ...")
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--child-job", job,
             "--corpus-root", args.corpus_root], stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print(f"{job} {size} MiB: measurement failed (exit {proc.returncode})")
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        records.append(m)
        rows.append([job, size, m["input_mib"], m["map_tasks"], m["distinct_keys"], m["seconds"],
                     m["client_peak_before_job_mib"], m["client_peak_mib"], m["broker_peak_mib"]])
        if m["broker_in_client_process"]:
            print("note: the broker runs inside the client process; its peak is the client's")
    common.print_table(["job", "size MiB", "input MiB", "map tasks", "distinct keys", "job s",
                        "client peak before job MiB", "client peak MiB", "broker peak MiB"], rows)
    common.write_json(args.json, {"machine": info, "workers": WORKERS, "results": records})
    return 0 if len(records) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
