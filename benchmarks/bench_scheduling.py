"""Scheduling bars: a small job under load, two equal jobs at once, uneven tasks.

    python benchmarks/bench_scheduling.py                    # all three, 3 repeats each
    python benchmarks/bench_scheduling.py --size-mb 32 --pair-size-mb 16 --tasks 200 --repeat 1
    python benchmarks/bench_scheduling.py --scenarios latency --small-priority 10

A real cluster on this machine: ``LocalCluster(workers=2)`` (a broker daemon and a worker
daemon with 2 worker processes, as subprocesses), a fresh one for each scenario and repeat.
Every ratio is against a baseline measured in the same run of this script, and every
result is checked (the script exits 1 on a wrong result).

Scenarios (``--scenarios latency,pair,uneven``):

- ``latency``: the seed's character count (``jobs.CharCount`` over the seed's 7 records,
  ``bench_seed.FILE``) submitted on the idle cluster (``--idle-runs`` times after a warm-up;
  submit to result in hand, median), then submitted while a word count over the
  ``--size-mb`` corpus (default split size) keeps both workers busy: the first time once
  ``--start-at`` (20%) of the big job's map tasks are committed, then again after each
  answer (``--load-runs`` times, each a random 0-200 ms later) while the big job has more
  map tasks left than workers. ``--small-priority`` sets the small job's priority under
  load (the big job's is 1); ``--idle-after-load`` measures the idle latency after the big
  job instead of before it. A thread polls the broker's listing (``Client.workers()``,
  ``Client.jobs()``) every ``--poll-ms``: when each big map task was handed to a worker and
  when its commit reached the broker give each one's run time (a worker runs its tasks one
  at a time, in order), hence the median map-task duration; the mean is also derived as
  map phase seconds x worker processes / map tasks. The same polls show the most big tasks
  one worker held at once (running plus queued by prefetch). Bar: under-load latency
  (median) <= idle latency + median map-task duration, and < 1 s.
- ``pair``: a word count over the ``--pair-size-mb`` corpus alone (baseline), then two of
  them submitted back to back from two Clients. Finish time = the broker's ``elapsed`` of
  the job's final status (its own submission to its end). Bar: the later / the earlier
  <= 1.10.
- ``uneven``: ``--tasks`` map tasks (map-only) of one record each, whose map sleeps a
  duration drawn log-uniformly from ``--min-ms`` to ``--max-ms`` (seeded: ``--seed``): a
  sleeping map makes the 2 worker processes 2 units of capacity on any machine. Work = the
  sleep time the tasks measured (a counter; the nominal sum is shown too); ideal = max(work
  / workers, longest task). Bar: wall (submit to result) <= 1.15x ideal.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from typing import Any

import common
from bench_seed import EXPECTED, FILE
from common import log
from corpus import build_corpus
from jobs import CharCount, WordCount

WORKERS = 2
SCENARIOS = ("latency", "pair", "uneven")
LATENCY_LIMIT = 1.0  # seconds: a small job under load answers within this
PAIR_LIMIT = 1.10  # the later of two equal jobs finishes within 10% of the earlier
UNEVEN_LIMIT = 1.15  # wall time over the ideal schedule's


# -- jobs ------------------------------------------------------------------------------------


def _sleep_job() -> Any:
    """The uneven-task job (defined in __main__, so it travels to the workers by value)."""
    from pymapreduce import Job

    class SleepMap(Job):
        """Map-only: sleep ``value`` seconds, count the microseconds really slept, emit the
        record as it came."""

        def map(self, key: int, value: float):
            start = time.perf_counter()
            time.sleep(value)
            self.count("slept_us", int((time.perf_counter() - start) * 1e6))
            yield key, value

    return SleepMap()


def word_count_reference(files: list[str]) -> dict:
    """The word count of ``files`` computed directly: ``jobs.WordCount`` splits each line on
    whitespace, and newlines are whitespace, so splitting a whole file gives the same
    words (read as ``read_text`` reads it: UTF-8, invalid bytes replaced)."""
    counts: Counter = Counter()
    for path in files:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            counts.update(f.read().split())
    return dict(counts)


def describe_difference(ref: dict, got: Any) -> str:
    if not isinstance(got, dict):
        return f"result is a {type(got).__name__}, not a dict"
    wrong = [k for k in ref.keys() & got.keys() if ref[k] != got[k]]
    return (f"{len(ref.keys() - got.keys())} keys missing, {len(got.keys() - ref.keys())} "
            f"extra, {len(wrong)} differ, e.g. {[(k, ref[k], got[k]) for k in wrong[:3]]}")


# -- watching the broker ---------------------------------------------------------------------


class Poller:
    """A thread that polls the broker's listing of jobs and workers every ``interval``.

    It notes, for each task a worker holds, when it was first seen held and when it was
    first seen gone (a task leaves a worker's list when its commit reaches the broker);
    for each job, its map progress, when its map phase was first seen complete, and the
    most of its tasks one worker held at once (the one it runs plus those queued on it).
    Times are perf_counter().
    """

    def __init__(self, address: str, interval: float) -> None:
        self.address = address
        self.interval = interval
        self.held: dict[tuple[str, str], float] = {}  # (worker, task) -> first seen
        self.ended: list[tuple[str, str, float, float]] = []  # (worker, task, first, gone)
        self.maps: dict[str, list[int]] = {}  # job -> [done, total]
        self.map_end: dict[str, float] = {}  # job -> when all its maps were first seen done
        self.depth: dict[str, int] = {}  # job -> most of its tasks held by one worker
        self.polls = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from pymapreduce import Client

        try:
            with Client(self.address, timeout=30) as client:
                while not self._stop.is_set():
                    workers = client.workers()
                    jobs = client.jobs()
                    self._note(time.perf_counter(), workers, jobs)
                    self._stop.wait(self.interval)
        except BaseException as exc:  # reported by the scenario, never silently lost
            self.error = exc

    def _note(self, now: float, workers: list[dict], jobs: list[dict]) -> None:
        with self._lock:
            self.polls += 1
            seen = set()
            for w in workers:
                per_job = Counter(task.split(" ")[0] for task in w["tasks"])  # (first 8)
                for job_id, n in per_job.items():
                    self.depth[job_id] = max(self.depth.get(job_id, 0), n)
                for task in w["tasks"]:
                    key = (w["name"], task)
                    seen.add(key)
                    self.held.setdefault(key, now)
            for key in [k for k in self.held if k not in seen]:
                self.ended.append((*key, self.held.pop(key), now))
            for j in jobs:
                self.maps[j["job_id"]] = list(j["maps"])
                done, total = j["maps"]
                if done == total and j["job_id"] not in self.map_end:
                    self.map_end[j["job_id"]] = now

    def progress(self, job_id: str) -> tuple[int, int]:
        with self._lock:
            done, total = self.maps.get(job_id, (0, 0))
            return done, total

    def maps_started(self, job_id: str, t0: float, t1: float) -> int:
        """How many of the job's map tasks were handed out (first seen held) in [t0, t1]."""
        prefix = f"{job_id} map-"
        with self._lock:
            firsts = [first for _, task, first, _ in self.ended if task.startswith(prefix)]
            firsts += [first for (_, task), first in self.held.items()
                       if task.startswith(prefix)]
        return sum(1 for first in firsts if t0 <= first <= t1)

    def map_durations(self, job_id: str) -> list[float]:
        """Run time of each of the job's finished map tasks. A worker runs the tasks it
        holds one at a time, in the order it got them, so a task ran from when it was
        handed out or its worker's previous task ended, whichever came later, to its end."""
        prefix = f"{job_id} map-"
        with self._lock:
            ended = sorted(self.ended, key=lambda e: (e[0], e[3]))
        out, last_worker, last_gone = [], None, 0.0
        for worker, task, first, gone in ended:
            start = max(first, last_gone) if worker == last_worker else first
            if task.startswith(prefix):
                out.append(gone - start)
            last_worker, last_gone = worker, gone
        return out


# -- scenario 1: a small job's latency, idle and under load --------------------------------


def small_job(client: Any, expected: dict, priority: float = 1) -> tuple[float, bool]:
    """Submit the seed's character count; (seconds from submit to result, result correct)."""
    start = time.perf_counter()
    handle = client.submit(CharCount(), FILE, priority=priority)
    result = handle.result(120)
    seconds = time.perf_counter() - start
    handle.release()
    if result != expected:
        log(f"small job: WRONG RESULT: {describe_difference(expected, result)}")
    return seconds, result == expected


def scenario_latency(args: argparse.Namespace, files: list[str], reference: dict,
                     rng: random.Random) -> dict:
    from pymapreduce import Client, LocalCluster, read_text

    out: dict[str, Any] = {"correct": True}
    with LocalCluster(workers=args.workers) as cluster, \
            Poller(cluster.address, args.poll_ms / 1000) as poller, \
            Client(cluster.address, timeout=30) as client:
        idle: list[float] = []

        def measure_idle() -> None:
            _, ok = small_job(client, EXPECTED)  # warm-up: imports on the workers
            out["correct"] &= ok
            for _ in range(args.idle_runs):
                seconds, ok = small_job(client, EXPECTED)
                idle.append(seconds)
                out["correct"] &= ok

        if not args.idle_after_load:
            measure_idle()
        big: dict[str, Any] = {}
        submitted = threading.Event()

        def run_big() -> None:
            try:
                with Client(cluster.address, timeout=60) as big_client:
                    big["start"] = time.perf_counter()
                    handle = big_client.submit(WordCount(), read_text(files))
                    big["id"] = handle.job_id
                    submitted.set()
                    status = handle.wait(1800)
                    big["end"] = time.perf_counter()
                    big["elapsed"] = status["elapsed"]
                    big["maps"] = status["maps"][1]
                    result = handle.result(600)
                    big["correct"] = result == reference
                    if not big["correct"]:
                        log(f"big job: WRONG RESULT: {describe_difference(reference, result)}")
                    handle.release()
            except BaseException as exc:
                big["error"] = exc
                submitted.set()

        thread = threading.Thread(target=run_big, name="big-job", daemon=True)
        thread.start()
        if not submitted.wait(120) or "error" in big:
            raise RuntimeError(f"the big job was not submitted: {big.get('error')}")
        job_id = big["id"]
        deadline = time.monotonic() + 1800
        while True:  # the big job's map phase well under way
            done, total = poller.progress(job_id)
            if total and done >= math.ceil(args.start_at * total):
                break
            if time.monotonic() > deadline or not thread.is_alive() or poller.error:
                raise RuntimeError(f"the big job never reached {args.start_at:.0%} of its maps "
                                   f"({done}/{total}; poller: {poller.error!r})")
            time.sleep(0.005)
        loaded, started_between, mapping_at_answer = [], [], []
        while len(loaded) < args.load_runs:
            done, total = client.job(job_id).status()["maps"]
            if done >= args.stop_at * total or total - done <= args.workers:
                break  # near the end of the map phase a worker may run out of big tasks
            t0 = time.perf_counter()
            seconds, ok = small_job(client, EXPECTED, args.small_priority)
            t1 = time.perf_counter()
            out["correct"] &= ok
            loaded.append(seconds)
            # big map tasks handed out while the small job waited for its answer
            started_between.append(poller.maps_started(job_id, t0, t1))
            done, total = client.job(job_id).status()["maps"]
            mapping_at_answer.append(done < total)
            time.sleep(rng.uniform(0.0, 0.2))  # not always in step with a task's end
        thread.join(1800)
        if args.idle_after_load:
            measure_idle()
        out["idle_s"] = idle
        if "error" in big:
            raise RuntimeError(f"the big job failed: {big['error']!r}")
        if poller.error:
            raise RuntimeError(f"polling the broker failed: {poller.error!r}")
        if not loaded:
            raise RuntimeError("the big job's map phase ended before a small job could be "
                               "submitted under load: use a bigger --size-mb or a smaller "
                               "--start-at")
        out["correct"] &= big["correct"]
        durations = poller.map_durations(job_id)
        map_phase = poller.map_end.get(job_id, big["end"]) - big["start"]
        out.update(
            loaded_s=loaded, big_tasks_started=started_between,
            big_mapping_at_answer=mapping_at_answer,
            big_maps=big["maps"], big_elapsed_s=big["elapsed"], big_map_phase_s=map_phase,
            map_task_median_s=statistics.median(durations) if durations else None,
            map_task_durations_s=durations, polls=poller.polls,
            max_held=poller.depth.get(job_id, 0),
            map_task_mean_derived_s=map_phase * args.workers / big["maps"])
    out["idle_median_s"] = statistics.median(idle)
    out["loaded_median_s"] = statistics.median(loaded)
    per_task = out["map_task_median_s"] or out["map_task_mean_derived_s"]
    out["limit_s"] = min(out["idle_median_s"] + per_task, LATENCY_LIMIT)
    out["met"] = (out["loaded_median_s"] <= out["idle_median_s"] + per_task
                  and out["loaded_median_s"] < LATENCY_LIMIT)
    return out


# -- scenario 2: two equal jobs submitted together ------------------------------------------


def scenario_pair(args: argparse.Namespace, files: list[str], reference: dict) -> dict:
    from pymapreduce import Client, LocalCluster, read_text

    out: dict[str, Any] = {"correct": True}
    with LocalCluster(workers=args.workers) as cluster:
        with Client(cluster.address, timeout=60) as client:  # the baseline: one job alone
            handle = client.submit(WordCount(), read_text(files))
            result = handle.result(1800)
            out["alone_s"] = handle.status()["elapsed"]
            out["maps"] = handle.status()["maps"][1]
            if result != reference:
                out["correct"] = False
                log(f"pair job alone: WRONG RESULT: {describe_difference(reference, result)}")
            handle.release()
            del result
        clients = [Client(cluster.address, timeout=60) for _ in range(2)]
        try:
            handles = []
            for c in clients:  # back to back
                handles.append(c.submit(WordCount(), read_text(files)))
            submitted = time.perf_counter()
            finish: list[dict] = [{}, {}]

            def wait(i: int) -> None:
                try:
                    status = handles[i].wait(1800)
                    finish[i]["client_s"] = time.perf_counter() - submitted
                    finish[i]["elapsed"] = status["elapsed"]
                    result = handles[i].result(600)
                    finish[i]["correct"] = result == reference
                    if not finish[i]["correct"]:
                        log(f"pair job {i + 1}: WRONG RESULT: "
                            f"{describe_difference(reference, result)}")
                    handles[i].release()
                except BaseException as exc:
                    finish[i]["error"] = exc

            threads = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(3600)
        finally:
            for c in clients:
                c.close()
    for i, f in enumerate(finish):
        if "error" in f:
            raise RuntimeError(f"pair job {i + 1} failed: {f['error']!r}")
        out["correct"] &= f["correct"]
    out["finish_s"] = [f["elapsed"] for f in finish]
    out["client_s"] = [f["client_s"] for f in finish]
    out["ratio"] = max(out["finish_s"]) / min(out["finish_s"])
    out["later_vs_alone"] = max(out["finish_s"]) / out["alone_s"]
    out["met"] = out["ratio"] <= PAIR_LIMIT
    return out


# -- scenario 3: uneven tasks ----------------------------------------------------------------


def uneven_records(args: argparse.Namespace, seed: int) -> list[tuple[int, float]]:
    """Durations in seconds, log-uniform between --min-ms and --max-ms, seeded."""
    rng = random.Random(seed)
    lo, hi = math.log(args.min_ms / 1000), math.log(args.max_ms / 1000)
    return [(i, math.exp(rng.uniform(lo, hi))) for i in range(args.tasks)]


def scenario_uneven(args: argparse.Namespace, records: list[tuple[int, float]]) -> dict:
    from pymapreduce import Client, LocalCluster

    with LocalCluster(workers=args.workers) as cluster, \
            Client(cluster.address, timeout=60) as client:
        start = time.perf_counter()
        handle = client.submit(_sleep_job(), records, map_tasks=len(records), reducers=0)
        result = handle.result(3600)
        wall = time.perf_counter() - start
        status = handle.status()
        handle.release()
    got = sorted((k, v) for k, v in result)
    correct = got == records and status["maps"] == [len(records), len(records)]
    if not correct:
        log(f"uneven: WRONG RESULT: {len(result)} pairs, maps {status['maps']}")
    nominal = sum(d for _, d in records)
    slept = status["counters"].get("slept_us", 0) / 1e6
    longest = max(d for _, d in records)
    ideal = max(slept / args.workers, longest)
    return {"correct": correct, "tasks": len(records), "nominal_work_s": nominal,
            "work_s": slept, "longest_s": longest, "ideal_s": ideal, "wall_s": wall,
            "ratio": wall / ideal, "met": wall / ideal <= UNEVEN_LIMIT}


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma list of " + ",".join(SCENARIOS))
    ap.add_argument("--workers", type=int, default=WORKERS,
                    help=f"worker processes (default {WORKERS})")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each scenario (default 3)")
    ap.add_argument("--size-mb", type=int, default=256,
                    help="corpus of the big job under which the small one runs (default 256)")
    ap.add_argument("--pair-size-mb", type=int, default=64,
                    help="corpus of each of the two equal jobs (default 64)")
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--idle-runs", type=int, default=5,
                    help="small jobs on the idle cluster, after a warm-up (default 5)")
    ap.add_argument("--load-runs", type=int, default=3,
                    help="small jobs while the big job maps (default 3)")
    ap.add_argument("--start-at", type=float, default=0.2,
                    help="fraction of the big job's maps committed before the first small "
                         "job (default 0.2)")
    ap.add_argument("--stop-at", type=float, default=0.8,
                    help="no small job is submitted past this fraction (default 0.8)")
    ap.add_argument("--idle-after-load", action="store_true",
                    help="measure the idle latency after the big job instead of before it "
                         "(the broker then has seen no short task when the big job starts)")
    ap.add_argument("--small-priority", type=float, default=1.0,
                    help="priority of the small jobs submitted under load (default 1, as "
                         "the big job's)")
    ap.add_argument("--poll-ms", type=float, default=10.0,
                    help="how often the broker's listing is polled (default 10)")
    ap.add_argument("--tasks", type=int, default=1000, help="uneven map tasks (default 1000)")
    ap.add_argument("--min-ms", type=float, default=1.0, help="shortest task, ms (default 1)")
    ap.add_argument("--max-ms", type=float, default=100.0, help="longest task, ms (default 100)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if not 0 < args.min_ms <= args.max_ms:
        ap.error("need 0 < --min-ms <= --max-ms")
    import pymapreduce  # noqa: F401  import cost is not part of a run

    info = common.print_machine(f"scheduling bars, {args.workers} worker processes, "
                                f"{args.repeat} run(s) of each scenario")
    rng = random.Random(args.seed)
    report: dict[str, Any] = {"machine": info, "args": vars(args)}
    bars: list[list[Any]] = []
    correct = True

    if "latency" in wanted:
        files = build_corpus(common.corpus_dir(args.size_mb, args.corpus_root), args.size_mb)
        mib = sum(os.path.getsize(p) for p in files) / common.MIB
        log(f"latency: reference word count of {mib:.0f} MiB ...")
        reference = word_count_reference(files)
        runs = []
        for rep in range(args.repeat):
            log(f"latency run {rep + 1}/{args.repeat} ...")
            r = scenario_latency(args, files, reference, rng)
            runs.append(r)
            correct &= r["correct"]
            log(f"  idle {r['idle_median_s']:.3f}s, under load {r['loaded_s']}, "
                f"map task {r['map_task_median_s']}")
        del reference
        print(f"\n### Small job latency: the seed's CharCount, idle and under a "
              f"{mib:.0f} MiB word count (small job priority {args.small_priority:g}, big "
              "job 1)\n")
        common.print_table(
            ["run", "idle s (median)", "under load: answered while big job mapped / runs",
             "under load s (median)",
             "under load s (max)",
             "big map tasks started meanwhile", "big map task s (median)",
             "big map task s (derived mean)", "big map tasks", "most big tasks on a worker",
             "big job s",
             "limit s", "bar met", "results correct"],
            [[i + 1, r["idle_median_s"],
              f"{sum(r['big_mapping_at_answer'])}/{len(r['loaded_s'])}",
              r["loaded_median_s"], max(r["loaded_s"]),
              "/".join(map(str, r["big_tasks_started"])), r["map_task_median_s"],
              r["map_task_mean_derived_s"], r["big_maps"], r["max_held"], r["big_elapsed_s"],
              r["limit_s"],
              r["met"], r["correct"]] for i, r in enumerate(runs)])
        print(f"\nidle: median of {args.idle_runs} after a warm-up, "
              f"{'after' if args.idle_after_load else 'before'} the big job; under load: "
              f"up to {args.load_runs} submitted one after another from {args.start_at:.0%} "
              "of the big job's maps, each only while the big job has more map tasks left "
              "than workers; map task s: from "
              "its start (handed out, or its worker's previous task committed) to its "
              f"commit, polled every {args.poll_ms:g} ms; derived mean: map phase s x "
              f"{args.workers} / map tasks; limit: min(idle + median map task, "
              f"{LATENCY_LIMIT:g})")
        idle = statistics.median(r["idle_median_s"] for r in runs)
        loaded = statistics.median(r["loaded_median_s"] for r in runs)
        task = statistics.median(r["map_task_median_s"] or r["map_task_mean_derived_s"]
                                 for r in runs)
        bars.append([f"small job under load <= idle + median map task ({idle:.3f} + "
                     f"{task:.3f} s) and < {LATENCY_LIMIT:g} s", f"{loaded:.3f} s",
                     loaded <= idle + task and loaded < LATENCY_LIMIT])
        report["latency"] = runs

    if "pair" in wanted:
        files = build_corpus(common.corpus_dir(args.pair_size_mb, args.corpus_root),
                             args.pair_size_mb)
        mib = sum(os.path.getsize(p) for p in files) / common.MIB
        log(f"pair: reference word count of {mib:.0f} MiB ...")
        reference = word_count_reference(files)
        runs = []
        for rep in range(args.repeat):
            log(f"pair run {rep + 1}/{args.repeat} ...")
            r = scenario_pair(args, files, reference)
            runs.append(r)
            correct &= r["correct"]
        del reference
        print(f"\n### Two equal jobs submitted together: word count over {mib:.0f} MiB each\n")
        common.print_table(
            ["run", "map tasks per job", "alone s", "job 1 s", "job 2 s", "later / earlier",
             "later / alone", "bar met", "results correct"],
            [[i + 1, r["maps"], r["alone_s"], r["finish_s"][0], r["finish_s"][1], r["ratio"],
              r["later_vs_alone"], r["met"], r["correct"]] for i, r in enumerate(runs)])
        print("\nseconds: the broker's elapsed, each job's own submission to its end (job 1 "
              "submitted first); alone: one such job on the idle cluster; the results, "
              "fetched after, were checked")
        ratio = statistics.median(r["ratio"] for r in runs)
        bars.append([f"two equal jobs: later / earlier finish <= {PAIR_LIMIT:.2f}",
                     f"{ratio:.3f}", ratio <= PAIR_LIMIT])
        report["pair"] = runs

    if "uneven" in wanted:
        runs = []
        for rep in range(args.repeat):
            log(f"uneven run {rep + 1}/{args.repeat} ...")
            r = scenario_uneven(args, uneven_records(args, args.seed + rep))
            runs.append(r)
            correct &= r["correct"]
        print(f"\n### Uneven tasks: {args.tasks} map tasks sleeping {args.min_ms:g}-"
              f"{args.max_ms:g} ms (log-uniform), {args.workers} workers\n")
        common.print_table(
            ["run", "tasks", "work s (nominal)", "work s (slept)", "longest s", "ideal s",
             "wall s", "wall / ideal", "bar met", "results correct"],
            [[i + 1, r["tasks"], r["nominal_work_s"], r["work_s"], r["longest_s"],
              r["ideal_s"], r["wall_s"], r["ratio"], r["met"], r["correct"]]
             for i, r in enumerate(runs)])
        print(f"\nideal: max(slept / {args.workers}, longest); wall: submit to result; run "
              f"i draws its durations with seed {args.seed} + i - 1")
        ratio = statistics.median(r["ratio"] for r in runs)
        bars.append([f"uneven tasks: wall / ideal <= {UNEVEN_LIMIT:.2f}", f"{ratio:.3f}",
                     ratio <= UNEVEN_LIMIT])
        report["uneven"] = runs

    print(f"\n### Bars (median of {args.repeat} run(s))\n")
    common.print_table(["bar", "measured", "met"], bars)
    report["bars"] = [{"bar": b, "measured": m, "met": ok} for b, m, ok in bars]
    report["correct"] = correct
    common.write_json(args.json, report)
    if not correct:
        print("WRONG RESULTS: see the lines above")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
