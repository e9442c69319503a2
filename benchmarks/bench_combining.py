"""In-mapper combining: a word count that counts into a Counter per map task and yields it
from ``map_final``, on pymapreduce, against ``multiprocessing.Pool(2)`` running the same
Counter kernel over the same file splits, in one run.

    python benchmarks/bench_combining.py --size-mb 256 --repeat 3
    python benchmarks/bench_combining.py --size-mb 64 --trees /work/main,.   # before/after

Both sides get the same splits (pymapreduce's own plan for the job's ``split_bytes``), read
the same bytes line by line with the same rule (a line belongs to the split its first byte
lies in; decoded as UTF-8, invalid bytes replaced), call ``counts.update(line.split())``
per line, and merge their Counters; the Pool merges in the parent, pymapreduce in its
reduce tasks. The Pool reads each split with a plain Python loop over the file's lines
(``pool``), and, to isolate the engine from the reader, with pymapreduce's own line reader
(``pool-lines``). Every result is checked equal to the Pool's. ``--trees`` runs the
pymapreduce side once per source tree (a child process each, its own embedded cluster).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import pickle
import random
import sys
from collections import Counter

import common
from common import MIB, log, stopwatch
from corpus import build_corpus

WORKERS = 2
SPLIT_BYTES = 8 * MIB  # pymapreduce's default largest split, given to both sides explicitly
CORPUS_ROOT = "/tmp/pmr-corpus-1file"  # one generated text file per size


# -- the job ------------------------------------------------------------------------------


def _job_class():
    """The job, made only once pymapreduce is importable from the tree under test."""
    from pymapreduce import Job

    class CounterWordCount(Job):
        """Word count with in-mapper combining: one Counter per map task."""

        def map_init(self):
            self.counts = Counter()

        def map(self, key, line):
            self.counts.update(line.split())

        def map_final(self):
            return self.counts.items()

        def reduce(self, word, counts):
            return sum(counts)

    return CounterWordCount


# -- the Pool side: the same kernel over the same splits ----------------------------------


def plain_lines(path: str, start: int, end: int):
    """The lines that start in ``[start, end)`` of a file, as a user would read them: the
    line in progress at ``start`` belongs to the split before."""
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            f.readline()
        pos = f.tell()
        for raw in f:
            if pos >= end:
                break
            pos += len(raw)
            yield raw.decode("utf-8", "replace")


def count_plain(ranges: list) -> Counter:
    counts = Counter()
    update = counts.update
    for path, start, end in ranges:
        for line in plain_lines(path, start, end):
            update(line.split())
    return counts


def count_lines(ranges: list) -> Counter:
    from pymapreduce.lines import read_split

    counts = Counter()
    update = counts.update
    for _, line in read_split([tuple(r) for r in ranges]):
        update(line.split())
    return counts


def plan_splits(files: list[str]) -> list[list]:
    """The splits pymapreduce cuts these files into for this benchmark's job."""
    from pymapreduce import read_text
    from pymapreduce.inputs import plan_file_splits

    splits, _ = plan_file_splits(read_text(files, split_bytes=SPLIT_BYTES), WORKERS)
    return [s.describe() for s in splits]


def run_pool(files: list[str], kernel) -> tuple[dict, float, float]:
    with stopwatch() as start:
        pool = multiprocessing.get_context("fork").Pool(WORKERS)
    try:
        with stopwatch() as t:
            total = Counter()
            for part in pool.imap_unordered(kernel, plan_splits(files)):
                total.update(part)
            result = dict(total)
    finally:
        pool.close()
        pool.join()
    return result, t[0], start[0]


def run_pymapreduce(files: list[str], per_word: bool = False) -> tuple[dict, float, float]:
    """The in-mapper combining job (``per_word``: the classic word count instead, a pair
    per word and a combiner) on an embedded cluster of WORKERS processes."""
    from pymapreduce import Client, LocalCluster, read_text

    if per_word:
        from jobs import WordCount

        job = WordCount()
    else:
        job = _job_class()()
    with stopwatch() as start:
        cluster = LocalCluster(workers=WORKERS).start()
    try:
        with Client(cluster.address) as client, stopwatch() as t:
            result = client.submit(job, read_text(files, split_bytes=SPLIT_BYTES)).result()
    finally:
        cluster.close()
    return result, t[0], start[0]


def run_tree(tree: str, files: list[str]) -> tuple[dict, float, float]:
    """The pymapreduce side in a child process importing pymapreduce from ``tree``."""
    return common.run_tree_child(__file__, tree, files)


def child(tree: str, out: str, files: list[str]) -> int:
    common.import_tree(tree)
    with open(out, "wb") as f:
        pickle.dump(run_pymapreduce(files), f)
    return 0


def _cpu(fn, *args):
    """``fn(*args)`` and the CPU seconds it took."""
    import time

    start = time.process_time()
    out = fn(*args)
    return out, time.process_time() - start


def _read_and_map(job, ranges: list) -> None:
    """A map task's record loop alone: read the split, call ``map`` per line."""
    from pymapreduce.lines import read_split

    job.map_init()
    mapper = job.map
    for key, line in read_split(ranges):
        mapper(key, line)


def profile(files: list[str]) -> list[tuple[str, str, float]]:
    """CPU seconds of each step of both sides, run one after the other in this process
    (no sockets, no parallelism): where the time goes, robust to a busy machine in a way
    that wall-clock figures are not. Returns ``(side, step, seconds)`` rows."""
    from pymapreduce.kernels import finish_map_packed, map_grouped, merge_segments, reduce_groups
    from pymapreduce.lines import read_split
    from pymapreduce.patterns.records import pack, paused_gc, unpack, unpack_columns

    rows: dict = {}

    def add(side: str, step: str, seconds: float) -> None:
        rows[(side, step)] = rows.get((side, step), 0.0) + seconds

    job = _job_class()()
    pickles, segments = [], []  # per split: the Pool's Counter; the map task's partitions
    with paused_gc():  # as pymapreduce's tasks run
        for split in plan_splits(files):
            ranges = [tuple(r) for r in split]
            counts, t = _cpu(count_plain, split)
            add("pool", "read, count lines (worker)", t)
            blob, t = _cpu(pickle.dumps, counts)
            add("pool", "pickle the Counter (worker)", t)
            pickles.append(blob)
            _, loop = _cpu(_read_and_map, job, ranges)
            add("pymapreduce", "read, call map per line (map task)", loop)
            groups, t = _cpu(map_grouped, job, read_split(ranges))
            add("pymapreduce", "group map_final's pairs (map task)", max(0.0, t - loop))
            # (as a map task does it: partitioned and packed, in one pass where it can)
            blobs, t = _cpu(finish_map_packed, job, groups, WORKERS)
            add("pymapreduce", "partition and encode (map task)", t)
            segments.append(blobs)

        def merge_pool(pickles):
            total = Counter()
            for blob in pickles:
                total.update(pickle.loads(blob))
            return dict(total)
        reference, t = _cpu(merge_pool, pickles)
        add("pool", "unpickle, merge Counters (parent)", t)
        result: dict = {}
        for p in range(WORKERS):
            decoded, t = _cpu(lambda p: [unpack(b[p], allow_pickle=True) for b in segments], p)
            add("pymapreduce", "decode segments (reduce task)", t)
            groups, t = _cpu(merge_segments, decoded, False)
            add("pymapreduce", "merge segments (reduce task)", t)
            columns, t = _cpu(reduce_groups, job, groups)
            add("pymapreduce", "sort keys, call reduce (reduce task)", t)
            blob, t = _cpu(pack, list(columns))
            add("pymapreduce", "encode output (reduce task)", t)
            _, t = _cpu(lambda blob: result.update(zip(*unpack_columns(blob))), blob)
            add("pymapreduce", "decode, build the dict (client)", t)
    assert result == reference, "the two sides' counts differ"
    return [(side, step, seconds) for (side, step), seconds in rows.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="text file size in MiB")
    ap.add_argument("--repeat", type=int, default=1, help="runs per system; the best is shown")
    ap.add_argument("--systems", default="pool,pool-lines,pymapreduce,per-word",
                    help="pool (a plain line loop), pool-lines (pymapreduce's line reader), "
                         "pymapreduce (the in-mapper combining job), per-word (pymapreduce "
                         "running the classic word count: a pair per word, a combiner)")
    ap.add_argument("--trees", help="comma list of source trees to run pymapreduce from "
                                    "(default: this checkout, in this process)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--profile", action="store_true",
                    help="also time each step of both sides in CPU seconds, in this process")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.child_out, args.files)

    info = common.print_machine(f"in-mapper combining word count, {args.size_mb} MiB, "
                                f"{WORKERS} workers")
    files = build_corpus(os.path.join(CORPUS_ROOT, f"{args.size_mb}mb"), args.size_mb, files=1)
    mib = sum(os.path.getsize(p) for p in files) / MIB
    print(f"input   : {files[0]}, {mib:.1f} MiB, {len(plan_splits(files))} splits\n")

    runners = {}
    for name in args.systems.split(","):
        if name == "pool":
            runners[name] = lambda: run_pool(files, count_plain)
        elif name == "pool-lines":
            runners[name] = lambda: run_pool(files, count_lines)
        elif name == "per-word":
            runners[name] = lambda: run_pymapreduce(files, per_word=True)
        elif name == "pymapreduce":
            for tree in (args.trees.split(",") if args.trees else [None]):
                label = "pymapreduce" + (f" ({tree})" if tree else "")
                runners[label] = ((lambda t=tree: run_tree(t, files)) if tree
                                  else (lambda: run_pymapreduce(files)))
        else:
            ap.error(f"unknown system {name!r}")
    wanted = list(runners)
    # Rounds of every system in turn, not every run of one system and then the next: on a
    # shared machine the load changes by the minute, and each round sees the same load.
    reference = None
    samples: dict = {name: [] for name in wanted}
    startups: dict = {name: [] for name in wanted}
    equal = dict.fromkeys(wanted, True)
    rng = random.Random(7)
    for i in range(args.repeat):
        # in a shuffled order each round: none always runs right after another
        for name in rng.sample(wanted, len(wanted)):
            log(f"running {name} ({i + 1}/{args.repeat}) ...")
            gc.collect()
            result, seconds, startup = runners[name]()
            samples[name].append(seconds)
            startups[name].append(startup)
            if reference is None:
                reference = result
            if result != reference:
                equal[name] = False
                print(f"{name}: result differs from the first run's")
            del result
    records = []
    for name in wanted:
        best = min(samples[name])
        records.append({"system": name, "seconds": best, "mib_per_s": mib / best,
                        "startup_s": startups[name][samples[name].index(best)],
                        "samples_s": samples[name], "equal": equal[name]})
    print()
    common.print_table(["system", "seconds", "MiB/s", "start-up s", "equal"],
                       [[r["system"], r["seconds"], r["mib_per_s"], r["startup_s"],
                         r["equal"]] for r in records])
    for r in records:
        print(f"{r['system']}: " + " / ".join(f"{x:.2f}" for x in r["samples_s"]))
    print(f"\nseconds: best of {args.repeat} rounds, the job alone (cluster or pool start-up "
          f"apart); equal: the same counts as the first run's; {len(reference or ())} distinct words")
    ratios = {}
    if "pool" in samples and args.repeat > 2:
        # the bar's figure: the Pool's time over each pymapreduce system's, from the sums of
        # the rounds, with a 95% interval from resampling them (each round's pair together)
        for name in wanted:
            if name.startswith(("pymapreduce", "per-word")):
                est, lo, hi = common.interval(samples[name], samples["pool"])
                ratios[name] = {"speed_vs_pool": 1 + est, "low": 1 + lo, "high": 1 + hi}
                print(f"{name}: {1 + est:.3f}x the Pool's speed (95% interval {1 + lo:.3f}x "
                      f"to {1 + hi:.3f}x; bar: 1x or more)")
    steps = []
    if args.profile:
        log("profiling each step in this process ...")
        steps = profile(files)
        print()
        common.print_table(["side", "step", "CPU s"], steps)
        for side in ("pool", "pymapreduce"):
            total = sum(s for who, _, s in steps if who == side)
            print(f"{side}: {total:.2f} CPU s in all ({mib / total:.1f} MiB per CPU second)")
    common.write_json(args.json, {"profile": steps, "machine": info, "size_mib": mib, "workers": WORKERS,
                                  "split_bytes": SPLIT_BYTES, "results": records,
                                  "speed_vs_pool": ratios})
    return 0 if all(r["equal"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
