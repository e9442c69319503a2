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
import random
import statistics
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


def run_cli(module: str, files: list[str], out: str, tree: str = "") -> float:
    """Seconds for ``pymapreduce run mr_job.py FILES > out`` (embedded cluster included);
    ``tree``: a checkout of pymapreduce to run it from (first on ``PYTHONPATH``, the
    command run from /tmp so that no checkout is its current directory)."""
    argv = [sys.executable, "-m", "pymapreduce", "run", os.path.join(EXAMPLES, f"{module}.py"),
            "--workers", str(WORKERS), *files]
    env = None
    if tree:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    with open(out, "wb") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.DEVNULL, check=True, env=env,
                       cwd="/tmp" if tree else None)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=64, help="corpus size in MiB (default 64)")
    ap.add_argument("--jobs", default="mr_word_freq_count,mr_wc,mr_most_used_word",
                    help="comma list of mrjob.examples modules")
    ap.add_argument("--skip-local", action="store_true", help="leave out mrjob -r local")
    ap.add_argument("--skip-inline", action="store_true",
                    help="leave out mrjob -r inline (the slowest; then pymapreduce's outputs "
                         "are checked to be the local runner's lines, and to be one another's "
                         "bytes)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds per job, the systems in a shuffled order each round; with "
                         "2 or more, medians, and the command's speed over the local "
                         "runner's from the rounds' sums with a 95%% interval (default 1)")
    ap.add_argument("--json", help="write the figures to this file too")
    ap.add_argument("--cli-trees", default="",
                    help="comma list of checkouts: the command run from each as well, as "
                         "system cli@TREE (a before/after of the command in one run)")
    args = ap.parse_args()
    trees = [t for t in args.cli_trees.split(",") if t]
    machine = common.print_machine("mrjob example jobs: pymapreduce vs mrjob's runners")
    files = build_corpus(common.corpus_dir(args.size_mb), args.size_mb)
    total = sum(os.path.getsize(p) for p in files)
    log(f"corpus: {len(files)} files, {total / MIB:.1f} MiB")
    rows, figures, ratios = [], {}, {}
    rng = random.Random(7)
    if args.skip_inline and args.skip_local:
        raise SystemExit("--skip-inline needs the local runner's output to check against")
    systems = [*(() if args.skip_inline else ("inline",)),
               *(() if args.skip_local else ("local",)), "pmr", "cli",
               *(f"cli@{t}" for t in trees)]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        start = time.perf_counter()
        cluster = stack.enter_context(LocalCluster(workers=WORKERS))
        cluster_start = time.perf_counter() - start
        log(f"embedded cluster of {WORKERS} workers started in {cluster_start:.2f}s")
        for module in args.jobs.split(","):
            cls = getattr(__import__(f"mrjob.examples.{module}", fromlist=["x"]), JOBS[module])
            samples: dict[str, list[float]] = {name: [] for name in systems}
            outs = {name: os.path.join(tmp, f"{module}.{n}") for n, name in enumerate(systems)}
            for round_ in range(args.repeat):
                order = list(systems)
                rng.shuffle(order)
                for name in order:
                    log(f"{module} round {round_ + 1}: {name}")
                    if name in ("inline", "local"):
                        samples[name].append(run_mrjob(module, name, files, outs[name]))
                    elif name == "cli":
                        samples[name].append(run_cli(module, files, outs[name]))
                    elif name.startswith("cli@"):
                        samples[name].append(run_cli(module, files, outs[name], name[4:]))
                    else:
                        start = time.perf_counter()
                        done = adapter.run(cls, files, address=cluster.address)
                        with open(outs["pmr"], "wb") as f:
                            f.write(done.output)
                        samples[name].append(time.perf_counter() - start)
                _check(module, outs, tmp, "local" in samples)
            times = {name: statistics.median(v) for name, v in samples.items()}
            figures[module] = {"median": times, "samples": samples}
            local = times.get("local")
            inline = times.get("inline", float("nan"))
            rows.append([module, f"{inline:.2f}",
                         f"{local:.2f}" if local else "-",
                         f"{times['pmr']:.2f}", f"{times['cli']:.2f}",
                         f"{inline / times['cli']:.1f}x",
                         f"{local / times['cli']:.1f}x" if local else "-",
                         f"{inline / times['pmr']:.1f}x",
                         f"{local / times['pmr']:.1f}x" if local else "-",
                         f"{total / MIB / times['pmr']:.1f}"])
            if local and args.repeat >= 2:
                est, lo, hi = common.interval(samples["cli"], samples["local"])
                ratios[module] = (1 + est, 1 + lo, 1 + hi)
            for name in systems[systems.index("cli") + 1:]:
                vs = (f", {local / times[name]:.2f}x the local runner's speed" if local
                      else "")
                print(f"{module}: `pymapreduce run` from {name[4:]}: median "
                      f"{times[name]:.3f}s ({' '.join(f'{x:.2f}' for x in samples[name])})"
                      f"{vs}")
    common.print_table(["job", "inline s", "local s", "pymapreduce s (warm)",
                        "pmr run (CLI) s", "run vs inline", "run vs local", "warm vs inline",
                        "warm vs local", "warm MiB/s"], rows)
    print(f"(warm: on an embedded cluster started beforehand, in {cluster_start:.2f}s; "
          "mrjob's times include its interpreter's start"
          + (f"; medians of {args.repeat} rounds)" if args.repeat > 1 else ")"))
    for module, (est, lo, hi) in ratios.items():
        print(f"{module}: `pymapreduce run` {est:.2f}x the speed of mrjob's local runner "
              f"(sums of {args.repeat} rounds; 95% interval {lo:.2f}x to {hi:.2f}x)")
    print(("outputs: pymapreduce's the same bytes every run" if args.skip_inline else
           "outputs: pymapreduce's byte-identical to mrjob inline's")
          + ("" if args.skip_local else "; local's the same lines") + ", every round")
    common.write_json(args.json, {"machine": machine, "size_mb": args.size_mb,
                                  "workers": WORKERS, "cluster_start_s": cluster_start,
                                  "repeat": args.repeat, "seconds": figures,
                                  "run_vs_local": ratios})
    return 0


def _check(module: str, outs: dict, tmp: str, with_local: bool) -> None:
    """pymapreduce's outputs (the warm job's and the command's) byte-identical to the
    inline runner's; the local runner's the same lines."""
    ours = [open(path, "rb").read() for name, path in outs.items()
            if name == "pmr" or name.startswith("cli")]
    # (without the inline runner: ours are one another's bytes and the local runner's lines)
    inline = open(outs["inline"], "rb").read() if "inline" in outs else ours[0]
    same = all(out == inline for out in ours)
    if with_local:
        local = open(outs["local"], "rb").read()
        same = same and sorted(local.splitlines()) == sorted(inline.splitlines())
    if not same:
        raise SystemExit(f"{module}: outputs differ (see {tmp})")


if __name__ == "__main__":
    sys.exit(main())
