"""What the broker's observability costs: word count and task rate, with and without it.

    python benchmarks/bench_observe.py --size-mb 64 --tasks 5000 --repeats 5
    python benchmarks/bench_observe.py --size-mb 16 --tasks 10000 --repeats 40 --aa
    python benchmarks/bench_observe.py --pool run1.json,run2.json   # their rounds together

Three embedded clusters run side by side in the same run:
- "no events": a broker started with ``--no-events`` (``LocalCluster(events=False)``),
  which keeps no event log: the baseline;
- "events": the default broker, which keeps the event log;
- "events+http": a broker that also serves HTTP (``LocalCluster(http=True)``), read by
  a scraper that fetches ``/metrics`` and ``/api/jobs`` every 0.5 s, as Prometheus and an
  open dashboard would. The scraper is a process of its own, as Prometheus is (a thread
  in this process would hold the client's interpreter lock while it parses each answer).
  It runs during every cluster's runs, not only its broker's (stopped with SIGSTOP
  between rounds): on these 2 cores its own load costs whatever cluster runs beside it,
  and a scraper that read another server, not the broker, made the word count 8% slower
  with the broker's CPU unchanged (benchmarks/RESULTS.md). So the clusters differ only
  in whether their own broker serves the scrapes. ``--scrape-own`` scrapes during the
  HTTP cluster's runs only, as earlier runs did, which charges the scraper's own load to
  the broker.
The runs alternate between them, in a shuffled order each round (so drift of a shared
machine hits all alike), on new clusters every ``--fresh`` rounds (by default every
round, each cluster warmed by a small job of each kind first): a cluster keeps for as
long as it runs whatever its start gave it (which core its processes share, how their
memory is laid out), which new clusters turn into noise the rounds average over, not a
difference that holds for a whole run. The medians are compared; with three rounds or
more, also the sums of the rounds, with a 95% interval from resampling the rounds.
Besides wall time, each run reads the broker process's CPU seconds (from the
scheduler's statistics in /proc), which a busy neighbour disturbs much less: the cost of
the event log is also given as broker CPU microseconds per task. The bar (issue 12):
under 5% of throughput and task rate. ``--aa`` runs three alike clusters (the default
broker) instead: what the method reads as a cost where there is none, its noise floor.

Run to run, a broker's CPU per no-op task varies by 10-20% (how many attempts share a
message and a loop turn depends on timing), more than the cost being measured. ``--spy``
also measures that cost directly: py-spy (``pip install py-spy``; needs ptrace, as root)
samples each broker process, every Python thread of it, during its runs, and the share
of its busy samples spent in ``pymapreduce/observe/`` (the event log, and with
``--http`` the server and the metrics) is printed per cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from contextlib import ExitStack

import common
from common import MIB, stopwatch
from corpus import build_corpus
from jobs import NoOp, WordCount
from procs import cpu_seconds, sched_cpu_seconds

WORKERS = 2
SCRAPE_EVERY = 0.5


class Scraper(threading.Thread):
    """Reads /metrics and /api/jobs every SCRAPE_EVERY seconds while ``active`` is set,
    until stopped. It is active only during its own cluster's runs: scraping during the
    plain cluster's runs would load the same 2 cores (its thread, the HTTP broker's
    threads) and charge the cost of scraping to both sides of the comparison."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopped = threading.Event()
        self.active = threading.Event()
        self.scrapes = 0
        self.errors = 0

    def run(self) -> None:
        while not self.stopped.wait(SCRAPE_EVERY):
            if not self.active.is_set():
                continue
            for path in ("metrics", "api/jobs"):
                try:
                    with urllib.request.urlopen(self.url + path, timeout=10) as reply:
                        reply.read()
                    self.scrapes += 1
                except OSError:
                    self.errors += 1


class ScraperProcess:
    """:class:`Scraper`'s loop in a process of its own, stopped (SIGSTOP) except while
    ``resume()``d: it loads the machine's cores as a scraper elsewhere would load its own,
    and shares no interpreter lock with the client."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--scrape", url],
            stdout=subprocess.PIPE, text=True)
        self.proc.send_signal(signal.SIGSTOP)
        self.scrapes = 0
        self.errors = 0

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        """End it and read its counts (``scrapes errors`` on its last line)."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            self.errors += 1
        lines = (out or "").split()
        if len(lines) >= 2:
            self.scrapes, self.errors = int(lines[-2]), self.errors + int(lines[-1])
        else:
            self.errors += 1


def scrape(url: str) -> int:
    """The scraper process's loop (``--scrape URL``): until SIGTERM, then its counts."""
    scraper = Scraper(url)
    scraper.active.set()
    signal.signal(signal.SIGTERM, lambda *_: scraper.stopped.set())
    scraper.run()
    print(scraper.scrapes, scraper.errors, flush=True)
    return 0


class Spy:
    """py-spy recording one broker process into a file of sampled stacks, started and
    stopped around that broker's runs (``--nonblocking``: the broker is never paused)."""

    def __init__(self, pid: int, path: str) -> None:
        self.pid, self.path = pid, path
        self.proc: subprocess.Popen | None = None
        self.files: list[str] = []

    def start(self) -> None:
        out = f"{self.path}.{len(self.files)}"
        self.files.append(out)
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(self.pid), "--rate", "1000", "--format", "raw",
             "--nonblocking", "--threads", "--output", out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # (py-spy writes its file on SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def shares(self) -> tuple[int, float]:
        """Busy samples in all, and the share of them in pymapreduce/observe/ modules."""
        total = observe = 0
        for path in self.files:
            if not os.path.exists(path):
                continue
            with open(path) as f:
                for line in f:
                    stack, _, n = line.rstrip().rpartition(" ")
                    if not n.isdigit():
                        continue
                    total += int(n)
                    if "pymapreduce/observe/" in stack:
                        observe += int(n)
        return total, (observe / total if total else 0.0)


def pooled(paths: list[str]) -> int:
    """``--pool``: the rounds of earlier runs (their JSON files, of the same modes) taken
    together, the first mode the baseline: on a noisy machine one run's interval is
    wider than the cost, and more rounds narrow it."""
    runs: dict[str, list[float]] = {}
    modes: list[str] = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if "runs" not in data:
            print(f"{path}: no runs' figures in it (written before --pool was)")
            return 2
        modes = modes or list(data["figures"])
        if list(data["figures"]) != modes:
            print(f"{path}: other modes ({', '.join(data['figures'])})")
            return 2
        for key, values in data["runs"].items():
            runs.setdefault(key, []).extend(values)
    rounds = len(runs[f"{modes[0]} tasks"])
    print(f"{len(paths)} runs, {rounds} rounds; against {modes[0]}, from the rounds' sums:")
    for mode in modes[1:]:
        for what, label in (("wordcount", "word count time"), ("tasks", "task time"),
                            ("cpu_all", "broker CPU, all its threads")):
            est, lo, hi = common.interval(runs[f"{modes[0]} {what}"], runs[f"{mode} {what}"])
            print(f"  {mode}: {label}: {100 * est:+.1f}% (95% interval {100 * lo:+.1f}% "
                  f"to {100 * hi:+.1f}%)")
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--scrape":
        return scrape(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "--pool":
        return pooled(sys.argv[2].split(","))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=64, help="word-count corpus (default 64)")
    ap.add_argument("--tasks", type=int, default=5000, help="no-op map tasks (default 5000)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each (default 5)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--fresh", type=int, default=1,
                    help="new clusters every this many rounds (default 1; 0: one set "
                         "for the whole run)")
    ap.add_argument("--scrape-own", action="store_true",
                    help="scrape only during the HTTP cluster's own runs (its scraper's "
                         "load on the machine then counts as the broker's cost)")
    ap.add_argument("--aa", action="store_true",
                    help="three alike clusters (the default broker): what the method "
                         "reads as a cost where there is none")
    ap.add_argument("--spy", action="store_true",
                    help="also sample each broker with py-spy: observe/'s share of its CPU")
    args = ap.parse_args()
    if args.spy and shutil.which("py-spy") is None:
        ap.error("--spy needs py-spy on the PATH (pip install py-spy)")
    spy_dir = tempfile.mkdtemp(prefix="pmr-spy-") if args.spy else ""
    from pymapreduce import Client, LocalCluster, read_text

    info = common.print_machine(f"observability cost: word count {args.size_mb} MiB and "
                                f"{args.tasks} no-op tasks, {WORKERS} workers, "
                                f"{args.repeats} runs each")
    files = build_corpus(common.corpus_dir(args.size_mb), args.size_mb)
    size = sum(os.path.getsize(f) for f in files)
    records = [(i, i) for i in range(args.tasks)]
    # (mode, events kept, HTTP served with a scraper); --aa: three alike, the noise floor
    kinds = ([("events A", True, False), ("events B", True, False), ("events C", True, False)]
             if args.aa else [("no events", False, False), ("events", True, False),
                              ("events+http", True, True)])
    modes = tuple(k[0] for k in kinds)
    secs: dict[tuple[str, str], list[float]] = {(m, w): [] for m in modes
                                                for w in ("wordcount", "tasks", "cpu", "cpu_all")}
    spies = {mode: Spy(0, os.path.join(spy_dir, str(i)))
             for i, mode in enumerate(modes)} if args.spy else {}
    tally = {"scrapes": 0, "errors": 0}

    def stopped(scraper: ScraperProcess) -> None:
        scraper.stop()
        tally["scrapes"] += scraper.scrapes
        tally["errors"] += scraper.errors

    expected = None
    rng = random.Random(7)
    done = 0
    while done < args.repeats:
        block = min(args.fresh or args.repeats, args.repeats - done)
        done += block
        # new clusters for each block of rounds (started in a shuffled order): a cluster's
        # processes keep what luck they had at their start (which core, what memory
        # layout) for as long as they run (see the module's text)
        with ExitStack() as stack:
            clients, scrapers, brokers = {}, {}, {}
            for mode, events, http in rng.sample(kinds, len(kinds)):
                cluster = stack.enter_context(LocalCluster(workers=WORKERS, http=http,
                                                           events=events))
                brokers[mode] = cluster.broker_pid
                if mode in spies:
                    spies[mode].pid = cluster.broker_pid
                clients[mode] = stack.enter_context(Client(cluster.address))
                # (a first small job of each kind, not timed: the workers' first
                # unpickling of each job's code and its imports)
                clients[mode].submit(WordCount(), [(0, "warm up")]).result()
                clients[mode].submit(NoOp(), records[:100], map_tasks=100,
                                     reducers=0).result()
                if http:
                    scraper = ScraperProcess(cluster.http_url)
                    stack.callback(stopped, scraper)
                    scrapers[mode] = scraper
            for _ in range(block):
                # alternating, in a shuffled order each round: a noisy neighbour hits
                # each alike, and none always runs right after another
                for mode in rng.sample(modes, len(modes)):
                    client = clients[mode]
                    scraper = (scrapers.get(mode) if args.scrape_own
                               else next(iter(scrapers.values()), None))
                    if scraper is not None:
                        scraper.resume()
                    if mode in spies:
                        spies[mode].start()
                    with stopwatch() as t:
                        result = client.submit(WordCount(), read_text(files)).result()
                    expected = expected if expected is not None else result
                    if result != expected:
                        print(f"{mode}: word count differs between the runs")
                        return 1
                    secs[(mode, "wordcount")].append(t[0])
                    cpu = sched_cpu_seconds(brokers[mode])
                    ticks = cpu_seconds(brokers[mode]) or 0.0
                    with stopwatch() as t:
                        client.submit(NoOp(), records, map_tasks=args.tasks,
                                      reducers=0).result()
                    secs[(mode, "tasks")].append(t[0])
                    secs[(mode, "cpu")].append(sched_cpu_seconds(brokers[mode]) - cpu)
                    # (the process's own count, in 10 ms ticks, has every thread's;
                    # summed over the rounds)
                    secs[(mode, "cpu_all")].append((cpu_seconds(brokers[mode]) or 0.0)
                                                    - ticks)
                    if mode in spies:
                        spies[mode].stop()
                    if scraper is not None:
                        scraper.pause()
    med = {k: statistics.median(v) for k, v in secs.items()}
    rows, figures = [], {}
    for mode in modes:
        mbs = size / MIB / med[(mode, "wordcount")]
        rate = args.tasks / med[(mode, "tasks")]
        us = 1e6 * med[(mode, "cpu")] / args.tasks
        figures[mode] = {"wordcount_mb_s": mbs, "tasks_per_s": rate, "broker_cpu_us_task": us}
        rows.append([mode, med[(mode, "wordcount")], mbs, med[(mode, "tasks")], rate, us])
    common.print_table(["broker", "word count s", "MB/s", "tasks s", "tasks/s",
                        "broker CPU us/task"], rows)
    base = figures[modes[0]]
    costs = {}
    for mode in modes[1:]:
        f = figures[mode]
        costs[mode] = {"wordcount": 1 - f["wordcount_mb_s"] / base["wordcount_mb_s"],
                       "tasks": 1 - f["tasks_per_s"] / base["tasks_per_s"],
                       "broker_cpu": f["broker_cpu_us_task"] / base["broker_cpu_us_task"] - 1}
        print(f"cost of {mode} against {modes[0]}: word count {100 * costs[mode]['wordcount']:+.1f}%, "
              f"task rate {100 * costs[mode]['tasks']:+.1f}%, broker CPU per task "
              f"{100 * costs[mode]['broker_cpu']:+.1f}% (medians; bar: under 5%)")
        if args.repeats > 2:  # the same from the rounds' sums, with 95% intervals
            for what, label in (("wordcount", "word count time"), ("tasks", "task time"),
                                ("cpu_all", "broker CPU, all its threads")):
                est, lo, hi = common.interval(secs[(modes[0], what)], secs[(mode, what)])
                costs[mode][f"{what}_sums"] = {"cost": est, "low": lo, "high": hi}
                print(f"  {label}: {100 * est:+.1f}% (95% interval {100 * lo:+.1f}% to "
                      f"{100 * hi:+.1f}%)")
    sampled = {}
    for mode, spy in spies.items():
        busy, share = spy.shares()
        sampled[mode] = {"busy_samples": busy, "observe_share": share}
        print(f"{mode}: py-spy, {busy} busy samples of the broker's threads, "
              f"{100 * share:.1f}% of them in pymapreduce/observe/")
    if spy_dir:
        shutil.rmtree(spy_dir, ignore_errors=True)
    scrapes, errors = tally["scrapes"], tally["errors"]
    print(f"scrapes every {SCRAPE_EVERY}s: {scrapes}, {errors} failed")
    common.write_json(args.json, {"machine": info, "size_mb": args.size_mb,
                                  "tasks": args.tasks, "repeats": args.repeats,
                                  "fresh": args.fresh, "aa": args.aa,
                                  "scrape_own": args.scrape_own,
                                  "figures": figures, "costs": costs, "sampled": sampled,
                                  "scrapes": scrapes,
                                  "scrape_errors": errors,
                                  "runs": {f"{m} {w}": v for (m, w), v in secs.items()}})
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
