"""mrjob's example jobs, unchanged: pymapreduce's adapter against mrjob's inline runner
(one process) and mrjob's local runner (a process per task, ``--num-cores``), same
files, same run.

    python benchmarks/bench_mrjob.py --size-mb 64 --jobs mr_word_freq_count,mr_wc

Each system's output is checked: pymapreduce's must equal mrjob's inline output byte for
byte (the inline runner runs with its part-file listing sorted, ``tests/mrjob_reference.py
--sorted-parts``, which does not change its work), the local runner's the same lines.
pymapreduce's time is the job's on a started cluster (its start is reported apart) and
the whole ``pymapreduce run`` command as a user types it, cluster start included; mrjob's
runners are timed as ``python mr_job.py -r RUNNER FILES > out``, interpreter start and
imports included. So the like-for-like ratios are the command's (``run vs inline``,
``run vs local``); the started cluster's (``warm vs ...``) leave out pymapreduce's start
but not mrjob's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

import common
import mrjob.examples
from common import MIB, log
from corpus import build_corpus

from pymapreduce import LocalCluster
from pymapreduce.adapters import mrjob as adapter

WORKERS = 2
EXAMPLES = os.path.dirname(mrjob.examples.__file__)
REFERENCE = os.path.join(common.REPO_ROOT, "tests", "mrjob_reference.py")
JOBS = {
    "mr_word_freq_count": "MRWordFreqCount",
    "mr_wc": "MRWordCountUtility",
    "mr_most_used_word": "MRMostUsedWord",
    "mr_next_word_stats": "MRNextWordStats",
    "mr_count_lines_by_file": "MRCountLinesByFile",
}


def run_mrjob(module: str, runner: str, files: list[str], out: str) -> float:
    """Seconds for mrjob's ``runner`` over ``files``, output to ``out``."""
    spec = f"mrjob.examples.{module}:{JOBS[module]}"
    argv = [sys.executable, REFERENCE, "--sorted-parts", spec, "-r", runner,
            "--num-cores", str(WORKERS), *files]
    start = time.perf_counter()
    with open(out, "wb") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def run_cli(module: str, files: list[str], out: str) -> float:
    """Seconds for ``pymapreduce run mr_job.py FILES > out`` (embedded cluster included)."""
    argv = [sys.executable, "-m", "pymapreduce", "run", os.path.join(EXAMPLES, f"{module}.py"),
            "--workers", str(WORKERS), *files]
    start = time.perf_counter()
    with open(out, "wb") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=64, help="corpus size in MiB (default 64)")
    ap.add_argument("--jobs", default="mr_word_freq_count,mr_wc,mr_most_used_word",
                    help=f"comma-separated, from {', '.join(JOBS)}")
    ap.add_argument("--skip-local", action="store_true", help="leave out mrjob -r local")
    ap.add_argument("--json", help="write the figures to this file too")
    args = ap.parse_args()
    machine = common.print_machine("mrjob example jobs: pymapreduce vs mrjob's runners")
    files = build_corpus(common.corpus_dir(args.size_mb), args.size_mb)
    total = sum(os.path.getsize(p) for p in files)
    log(f"corpus: {len(files)} files, {total / MIB:.1f} MiB")
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        start = time.perf_counter()
        cluster = stack.enter_context(LocalCluster(workers=WORKERS))
        cluster_start = time.perf_counter() - start
        log(f"embedded cluster of {WORKERS} workers started in {cluster_start:.2f}s")
        for module in args.jobs.split(","):
            cls = getattr(__import__(f"mrjob.examples.{module}", fromlist=["x"]), JOBS[module])
            times = {}
            outs = {name: os.path.join(tmp, f"{module}.{name}") for name in
                    ("inline", "local", "pmr", "cli")}
            log(f"{module}: mrjob inline")
            times["inline"] = run_mrjob(module, "inline", files, outs["inline"])
            if not args.skip_local:
                log(f"{module}: mrjob local")
                times["local"] = run_mrjob(module, "local", files, outs["local"])
            log(f"{module}: pymapreduce")
            start = time.perf_counter()
            done = adapter.run(cls, files, address=cluster.address)
            with open(outs["pmr"], "wb") as f:
                f.write(done.output)
            times["pmr"] = time.perf_counter() - start
            times["cli"] = run_cli(module, files, outs["cli"])
            inline = open(outs["inline"], "rb").read()
            same = done.output == inline and open(outs["cli"], "rb").read() == inline
            if "local" in times:
                local = open(outs["local"], "rb").read()
                same = same and sorted(local.splitlines()) == sorted(inline.splitlines())
            if not same:
                raise SystemExit(f"{module}: outputs differ (see {tmp})")
            figures[module] = times
            rows.append([module, f"{times['inline']:.2f}",
                         f"{times['local']:.2f}" if "local" in times else "-",
                         f"{times['pmr']:.2f}", f"{times['cli']:.2f}",
                         f"{times['inline'] / times['cli']:.1f}x",
                         f"{times['local'] / times['cli']:.1f}x" if "local" in times else "-",
                         f"{times['inline'] / times['pmr']:.1f}x",
                         f"{times['local'] / times['pmr']:.1f}x" if "local" in times else "-",
                         f"{total / MIB / times['pmr']:.1f}"])
    common.print_table(["job", "inline s", "local s", "pymapreduce s (warm)",
                        "pmr run (CLI) s", "run vs inline", "run vs local", "warm vs inline",
                        "warm vs local", "warm MiB/s"], rows)
    print(f"(warm: on an embedded cluster started beforehand, in {cluster_start:.2f}s; "
          "mrjob's times include its interpreter's start)")
    print("outputs: pymapreduce's byte-identical to mrjob inline's"
          + ("" if args.skip_local else "; local's the same lines"))
    common.write_json(args.json, {"machine": machine, "size_mb": args.size_mb,
                                  "workers": WORKERS, "cluster_start_s": cluster_start,
                                  "seconds": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
