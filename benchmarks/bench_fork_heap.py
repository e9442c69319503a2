"""What a forked embedded cluster's workers pay for the caller's heap.

    python benchmarks/bench_fork_heap.py --size-mb 256 --repeat 2

Runs, each in a fresh child process, the 256 MiB word count on an embedded cluster of 2
workers after one of: nothing (``clean``); the single-process loop of
``bench_wordcount.py`` run first in the same process, its 466,103-key result kept
(``after-loop``); the same, the result freed and the heap trimmed (``after-loop-freed``);
the loop, its result kept, and the cluster started with ``start_method="spawn"``
(``after-loop-spawn``); a dict of ``--dict`` compact small objects held (``big-dict``).
Prints the job's seconds and each worker process's CPU seconds and minor faults over the
job (/proc/PID/stat), medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common  # noqa: F401 (this folder and the checkout on sys.path)

MODES = ("clean", "after-loop", "after-loop-freed", "after-loop-spawn", "big-dict")


def stat(pid: int) -> tuple[int, float]:
    """Minor faults and CPU seconds (user + system) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(mode: str, size_mb: int, dict_size: int) -> dict:
    import gc

    import procs
    from corpus import build_corpus
    from jobs import WordCount

    from pymapreduce import Client, LocalCluster, read_text

    files = build_corpus(os.path.join("/tmp", f"pmr-corpus-{size_mb}"), size_mb)
    held = None
    if mode.startswith("after-loop"):
        import bench_wordcount

        held, _, _ = bench_wordcount.run_single(WordCount(), files)
        if mode == "after-loop-freed":
            held = None
            gc.collect()
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
    elif mode == "big-dict":
        held = {f"word{i}": i for i in range(dict_size)}
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    method = "spawn" if mode == "after-loop-spawn" else "fork"
    with LocalCluster(workers=2, start_method=method) as cluster, \
            Client(cluster.address) as client:
        time.sleep(0.3)
        pids = procs.children(cluster.worker_pid)
        before = {p: stat(p) for p in pids}
        t0 = time.perf_counter()
        client.submit(WordCount(), read_text(files)).result()
        secs = time.perf_counter() - t0
        after = {p: stat(p) for p in pids}
    del held
    return {"seconds": secs, "caller_rss_mib": rss,
            "worker_cpu_s": [after[p][1] - before[p][1] for p in pids],
            "worker_minflt": [after[p][0] - before[p][0] for p in pids]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--dict", type=int, default=500_000, dest="dict_size")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.size_mb, args.dict_size)))
        return
    runs: dict[str, list[dict]] = {m: [] for m in args.modes.split(",")}
    for _ in range(args.repeat):
        for mode in runs:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode,
                                  "--size-mb", str(args.size_mb), "--dict",
                                  str(args.dict_size)], capture_output=True, text=True,
                                 check=True, cwd="/tmp")
            line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
            runs[mode].append(json.loads(line[7:]))
            print(mode, runs[mode][-1], flush=True)
    print("\n| caller before the cluster | caller RSS MiB | job s | worker CPU s (each) "
          "| worker minor faults (each) |")
    print("|---|---|---|---|---|")
    for mode, rs in runs.items():
        med = statistics.median
        print(f"| {mode} | {med(r['caller_rss_mib'] for r in rs):.0f} | "
              f"{med(r['seconds'] for r in rs):.2f} | "
              f"{med(x for r in rs for x in r['worker_cpu_s']):.2f} | "
              f"{med(x for r in rs for x in r['worker_minflt']):,.0f} |")


if __name__ == "__main__":
    main()
