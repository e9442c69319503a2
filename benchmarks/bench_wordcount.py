"""Word count on a text corpus: pymapreduce against the alternatives, same machine, same run.

    python benchmarks/bench_wordcount.py --size-mb 256 --systems single,pymapreduce,mp,dask,spark
    python benchmarks/bench_wordcount.py --size-mb 64 --systems single,pymapreduce \
        --trees /tmp/before,. --repeat 5            # pymapreduce from two source trees

Every system counts the same files and its result is checked equal to the single-process one.
Only the job is timed; starting a cluster (pymapreduce, Dask, Spark's JVM) is reported apart.
Runs go in rounds, every system once per round, so that each round sees the same load on a
shared machine; ``--trees`` runs the pymapreduce side once per source tree (a child
process each, importing pymapreduce from that tree, its own embedded cluster).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import common
from common import MIB, log, stopwatch
from corpus import build_corpus
from jobs import WordCount

WORKERS = 2
SYSTEMS = ("single", "single-nogc", "halves", "pymapreduce", "mp", "dask", "spark")


class Skipped(Exception):
    """A system that cannot run here (not installed, no Java)."""


# -- the plain-Python loop every baseline shares -------------------------------------------


def read_records(path: str) -> Iterator[tuple[int, str]]:
    """Yield (byte offset, line without its newline) for each line of a file, as read_text does."""
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace")
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield offset, line
            offset += len(raw)


def group_map_output(job: Any, records: Iterable[tuple[Any, Any]], groups: dict) -> dict:
    """Call ``job.map`` on each record and append each value to ``groups[key]``."""
    get = groups.get
    for key, value in records:
        for k, v in job.map(key, value):
            values = get(k)
            if values is None:
                groups[k] = [v]
            else:
                values.append(v)
    return groups


def append_pairs(groups: dict, pairs: Iterable[tuple[Any, Any]]) -> dict:
    """Append each value to ``groups[key]``: how partial results are merged before reduce."""
    get = groups.get
    for k, v in pairs:
        values = get(k)
        if values is None:
            groups[k] = [v]
        else:
            values.append(v)
    return groups


def reduce_groups(job: Any, groups: dict) -> dict:
    """Call ``job.reduce`` once per key."""
    return {k: job.reduce(k, vs) for k, vs in groups.items()}


# -- the systems: each returns (result, job seconds, start-up seconds or None) -----------------


def run_single(job: Any, files: list[str]) -> tuple[dict, float, None]:
    """One process: map every line, group in a dict of lists, reduce per key."""
    with stopwatch() as t:
        groups: dict = {}
        for path in files:
            group_map_output(job, read_records(path), groups)
        result = reduce_groups(job, groups)
    return result, t[0], None


def run_single_nogc(job: Any, files: list[str]) -> tuple[dict, float, None]:
    """The single-process loop with the garbage collector off, as pymapreduce's workers run
    their tasks: shows how much of the ratio is that, and how much is parallelism."""
    gc.disable()
    try:
        return run_single(job, files)
    finally:
        gc.enable()


def share_files(files: list[str], n: int) -> list[list[str]]:
    """Split files into at most ``n`` shares of about equal bytes (largest file first)."""
    shares: list[list[str]] = [[] for _ in range(n)]
    loads = [0] * n
    for path in sorted(files, key=os.path.getsize, reverse=True):
        i = loads.index(min(loads))
        shares[i].append(path)
        loads[i] += os.path.getsize(path)
    return [s for s in shares if s]


def _mp_map_share(args: tuple[Any, list[str]]) -> dict:
    """Worker side: map a share of the files and combine the output per key."""
    job, paths = args
    groups: dict = {}
    for path in paths:
        group_map_output(job, read_records(path), groups)
    return {k: job.combine(k, vs) for k, vs in groups.items()}


def run_mp(job: Any, files: list[str], workers: int = WORKERS) -> tuple[dict, float, float]:
    """multiprocessing.Pool: map+combine in the workers, merge and reduce in the parent.

    One task per worker, each a share of the files of equal bytes: with a large vocabulary
    (this corpus has ~470k distinct words) the parent's merge is the bottleneck, and one
    combined dict per worker instead of one per file cut 256 MiB from 15.2 s to 9.8 s.
    """
    with stopwatch() as start:
        pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        with stopwatch() as t:
            groups: dict = {}
            shares = [(job, share) for share in share_files(files, workers)]
            for part in pool.imap_unordered(_mp_map_share, shares):
                append_pairs(groups, part.items())
            result = reduce_groups(job, groups)
    finally:
        pool.close()
        pool.join()
    return result, t[0], start[0]


def _half(args: tuple) -> tuple[dict, float]:
    """One of ``run_halves``' processes: the single-process loop over its share, started
    when both are ready; its CPU-bound seconds, and its keys' groups for the merge."""
    job, paths, barrier = args
    barrier.wait()
    with stopwatch() as t:
        groups: dict = {}
        for path in paths:
            group_map_output(job, read_records(path), groups)
        result = reduce_groups(job, groups)
    return result, t[0]


def run_halves(job: Any, files: list[str], workers: int = WORKERS) -> tuple[dict, float, None]:
    """The machine's own ceiling for ``workers`` processes: ``single``'s loop run by each
    of them over a share of the files of equal bytes, all started at once, and timed by
    the slowest; nothing is sent between them while they run. Their results are merged
    after the clock stops (untimed), so the counts are checked like every system's. The
    job time of an engine on as many processes cannot be shorter than this: it does the
    same work, and more (shuffle, merge); "x single" of this row is how much faster than
    one loop any engine can be here."""
    ctx = multiprocessing.get_context("fork")
    shares = share_files(files, workers)
    with ctx.Manager() as manager, ctx.Pool(len(shares)) as pool:
        barrier = manager.Barrier(len(shares))
        parts = pool.map(_half, [(job, share, barrier) for share in shares])
    merged: dict = {}
    for result, _ in parts:  # (a word of both shares: its counts added, as reduce would)
        for k, v in result.items():
            merged[k] = job.reduce(k, [merged[k], v]) if k in merged else v
    return merged, max(secs for _, secs in parts), None


def run_pymapreduce(job: Any, files: list[str]) -> tuple[dict, float, float]:
    """pymapreduce on an embedded LocalCluster; cluster start-up timed apart."""
    from pymapreduce import Client, LocalCluster, read_text

    with ExitStack() as stack:
        with stopwatch() as start:
            cluster = stack.enter_context(LocalCluster(workers=WORKERS))
        client = stack.enter_context(Client(cluster.address))
        with stopwatch() as t:
            result = client.submit(job, read_text(files)).result()
    return result, t[0], start[0]


def run_tree(tree: str, files: list[str]) -> tuple[dict, float, float]:
    """:func:`run_pymapreduce` in a child process importing pymapreduce from ``tree``."""
    return common.run_tree_child(__file__, tree, files)


def child(tree: str, out: str, files: list[str]) -> int:
    """The ``--trees`` child: pymapreduce from ``tree`` (not the checkout of this script)."""
    common.import_tree(tree, also=("jobs",))  # (jobs: its WordCount subclasses the tree's Job)
    from jobs import WordCount as Reloaded

    with open(out, "wb") as f:
        pickle.dump(run_pymapreduce(Reloaded(), files), f)
    return 0


def _dask_count_partition(lines: Iterable[str], job: Any) -> Counter:
    """Map and combine one Dask partition with the job's own methods.

    Returns a Counter, not a plain dict: distributed serialises a plain dict value by value
    (a frame per key), which made a word-count dict take seconds to move between processes.
    """
    groups = group_map_output(job, ((None, line.rstrip("\n")) for line in lines), {})
    out = Counter()
    for k, vs in groups.items():
        out[k] = job.combine(k, vs)
    return out


def _dask_merge(parts: Iterable[Counter], job: Any) -> Counter:
    """Merge the per-partition outputs and reduce per key (a tree of these if many parts)."""
    groups: dict = {}
    for part in parts:
        append_pairs(groups, part.items())
    out = Counter()
    for k, vs in groups.items():
        out[k] = job.reduce(k, vs)
    return out


def run_dask(job: Any, files: list[str]) -> tuple[dict, float, float]:
    """dask.bag on a distributed LocalCluster of 2 single-threaded worker processes."""
    try:
        import dask.bag as db
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise Skipped(f"dask not installed ({exc}); pip install 'dask[distributed]'") from exc
    with stopwatch() as start:
        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    try:
        with stopwatch() as t:
            bag = db.read_text(files, blocksize=None)  # one partition per file, as Pool gets
            result = bag.reduction(lambda p: _dask_count_partition(p, job),
                                   lambda parts: _dask_merge(parts, job)).compute()
            result = dict(result)
    finally:
        client.close()
        cluster.close()
    return result, t[0], start[0]


def run_spark(job: Any, files: list[str]) -> tuple[dict, float, float]:
    """PySpark local[2]: textFile, flatMap(split), map((w, 1)), reduceByKey(add)."""
    import shutil
    from operator import add

    try:
        from pyspark.sql import SparkSession  # noqa: F401 (here: whether it imports)
    except ImportError as exc:
        raise Skipped(f"pyspark not installed ({exc}); pip install pyspark") from exc
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise Skipped("no java on PATH and no JAVA_HOME")
    spark, startup = start_spark("wordcount")
    sc = spark.sparkContext
    try:
        with stopwatch() as t:
            result = (sc.textFile(",".join(files))
                      .flatMap(lambda line: line.split())
                      .map(lambda w: (w, 1))
                      .reduceByKey(add)
                      .collectAsMap())
    finally:
        _stop_spark(spark)
    return dict(result), t[0], startup


def start_spark(app: str, workers: int = WORKERS) -> tuple[Any, float]:
    """A PySpark session on ``local[workers]`` (loopback only, no UI, 4 GiB driver), and
    the seconds it took to start: the JVM's start, plus one tiny job so that its Python
    workers exist before the timed work (the caller checked pyspark and java exist)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with stopwatch() as start:
        spark = (SparkSession.builder.master(f"local[{workers}]").appName(app)
                 .config("spark.driver.host", "127.0.0.1")
                 .config("spark.driver.bindAddress", "127.0.0.1")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.driver.memory", "4g")
                 .getOrCreate())
        sc = spark.sparkContext
        sc.setLogLevel("ERROR")
        sc.parallelize(range(workers), workers).count()
    return spark, start[0]


def _stop_spark(spark: Any) -> None:
    """Stop Spark and its JVM now, so it holds no memory while the next system runs."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    spark.stop()
    proc = getattr(gateway, "proc", None)
    if gateway is not None:
        gateway.shutdown()
        SparkContext._gateway = SparkContext._jvm = None
    if proc is not None:  # the JVM exits when its stdin closes
        proc.stdin.close()
        proc.wait(timeout=60)


RUNNERS: dict[str, Callable[[Any, list[str]], tuple]] = {
    "single": run_single, "single-nogc": run_single_nogc, "halves": run_halves,
    "pymapreduce": run_pymapreduce, "mp": run_mp,
    "dask": run_dask, "spark": run_spark,
}


def describe_difference(ref: dict, got: Any) -> str:
    """A one-line account of how ``got`` differs from the reference result."""
    if not isinstance(got, dict):
        return f"result is a {type(got).__name__}, not a dict"
    missing = ref.keys() - got.keys()
    extra = got.keys() - ref.keys()
    wrong = [k for k in ref.keys() & got.keys() if ref[k] != got[k]]
    sample = wrong[:3] and [(k, ref[k], got[k]) for k in wrong[:3]]
    return (f"{len(missing)} keys missing, {len(extra)} extra, {len(wrong)} differ"
            f"{' e.g. (key, expected, got) ' + repr(sample) if sample else ''}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="corpus size in MiB (default 256)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma list of " + ",".join(SYSTEMS))
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--repeat", type=int, default=1, help="runs per system; the best is shown")
    ap.add_argument("--trees", help="comma list of source trees to run pymapreduce from "
                                    "(default: this checkout, in this process)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.child_out, args.files)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")

    info = common.print_machine(f"word count, {args.size_mb} MiB, {WORKERS} workers")
    files = build_corpus(common.corpus_dir(args.size_mb, args.corpus_root), args.size_mb)
    mib = sum(os.path.getsize(p) for p in files) / MIB
    print(f"corpus  : {len(files)} files, {mib:.1f} MiB in {os.path.dirname(files[0])}\n")

    systems.sort(key=lambda name: name != "single")  # the reference runs first
    job = WordCount()
    runners: dict[str, Callable[[], tuple]] = {}
    for name in systems:
        if name == "pymapreduce" and args.trees:
            for tree in args.trees.split(","):
                runners[f"pymapreduce ({tree})"] = lambda t=tree: run_tree(t, files)
        else:
            runners[name] = lambda name=name: RUNNERS[name](job, files)
    # Rounds of every system in turn, not every run of one system and then the next: on a
    # shared machine the load changes by the minute, and each round sees the same load.
    reference = None
    samples: dict = {name: [] for name in runners}
    startups: dict = {name: [] for name in runners}
    equal = dict.fromkeys(runners, True)
    words: dict = {}
    failed: dict = {}
    for i in range(args.repeat):
        for name, runner in runners.items():
            if name in failed:
                continue
            log(f"running {name} ({i + 1}/{args.repeat}) ...")
            gc.collect()
            try:
                result, seconds, startup = runner()
            except Skipped as why:
                print(f"{name}: skipped: {why}")
                failed[name] = None
                continue
            except Exception as exc:  # one system failing must not hide the others' figures
                print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
                failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            samples[name].append(seconds)
            startups[name].append(startup)
            if reference is None:
                reference = result
            if result != reference:
                equal[name] = False
                print(f"{name}: result differs: {describe_difference(reference, result)}")
            words[name] = len(result)
            del result
    records = []
    for name in runners:
        if failed.get(name):
            records.append({"system": name, "error": failed[name], "equal": False})
        if not samples[name]:
            continue
        best = min(samples[name])  # the least disturbed run; all runs are in the JSON
        records.append({"system": name, "seconds": best, "mib_per_s": mib / best,
                        "startup_s": startups[name][samples[name].index(best)],
                        "samples_s": samples[name], "startups_s": startups[name],
                        "equal": equal[name], "distinct_words": words[name]})

    timed_ok = [r for r in records if "seconds" in r]
    single = next((r for r in timed_ok if r["system"] == "single"), None)
    for r in timed_ok:
        r["speedup_vs_single"] = single["seconds"] / r["seconds"] if single else None
        if single and len(single["samples_s"]) == len(r["samples_s"]):
            # the ratio in each round, the same load on both sides: their median
            ratios = sorted(s / x for s, x in zip(single["samples_s"], r["samples_s"]))
            r["median_round_ratio"] = ratios[len(ratios) // 2]
    print()
    common.print_table(["system", "seconds", "MiB/s", "x single", "median x", "start-up s",
                        "equal"],
                       [[r["system"], r["seconds"], r["mib_per_s"], r["speedup_vs_single"],
                         r.get("median_round_ratio"), r["startup_s"], r["equal"]]
                        for r in timed_ok])
    for r in timed_ok:
        print(f"{r['system']}: " + " / ".join(f"{x:.2f}" for x in r["samples_s"]))
    print(f"\nseconds: best of {args.repeat}; equal: same dict as {next(iter(runners))};"
          " x single: single's best / the system's best; median x: the median over rounds"
          " of single / system in the same round; start-up (cluster, pool, JVM) is apart")
    common.write_json(args.json, {"machine": info, "size_mib": mib, "files": len(files),
                                  "workers": WORKERS, "results": records})
    return 0 if all(r["equal"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
