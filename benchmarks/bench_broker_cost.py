"""What one broker costs: CPU per task, per control message, per idle worker, per shuffled byte.

    python benchmarks/bench_broker_cost.py                          # 1, 4, 16, 24 workers
    python benchmarks/bench_broker_cost.py --workers 1,24 --modes events --tasks 1000

A real ``pymapreduce broker`` daemon and real ``pymapreduce worker`` daemons (supervisors of
at most ``--per-supervisor`` processes) on loopback. For each broker mode the broker is
started once with no worker, then worker processes are added level by level (1, 4, 16,
24 by default) and at each level, with every worker registered:
- idle: the broker's CPU over ``--idle`` seconds with N idle workers (level 0: none), so
  the heartbeat cost per worker per second is its rate less level 0's, over N;
- tasks: a map-only job of ``--tasks`` no-op map tasks (one record each), handed out in
  batches: broker CPU per task and control messages per task;
- long: ``--long-per-worker`` tasks per worker that sleep ``--long-ms`` ms, long enough to
  go out one per TASKS message, as on a large cluster: CPU per task and per message;
- word count: a small word count (``--wc-mb`` MiB, checked exact);
- shuffle: ``--shuffle-mb`` MiB of map output in pieces of ``--piece-kb`` KiB, read by 4
  reducers, no combiner: every byte goes to the broker and back out to a reducer; broker
  CPU per shuffled MiB (checked exact by the reducers' byte counter).
Every job's CPU and messages are taken net of the idle background (the level's idle rates
times the job's wall time).
Broker modes: ``no-events`` (``--no-events``), ``events`` (the default broker) and
``counted`` (the default broker with ``--http``, whose ``/metrics`` gives the control and
data messages and bytes the broker received and sent; it also builds the dashboard's
snapshot, so its CPU is a little higher). The message and byte counts of the ``counted``
run at a level are used for the other modes at that level: the protocol is the same.

Only the broker's own CPU time is measured (its threads' scheduler statistics in /proc),
never wall time: on a machine with fewer cores than processes the broker shares the cores
with the workers, so wall times measure the machine, not the broker. Then the model
(broker CPU = a x tasks + b x messages + h x idle workers x seconds + c x shuffled bytes),
fitted on the levels up to ``--fit-upto`` workers, predicts the broker's CPU at the larger
ones, beside what was measured there (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import common
from common import MIB, log
from corpus import build_corpus
from jobs import NoOp, WordCount
from procs import become_subreaper, children, read_ready, sched_cpu_seconds, wait_dead

from pymapreduce import Client, Job, read_text, run_sequential

BROKER_READY = re.compile(r"pymapreduce broker ready: (\S+)(.*)")
HTTP_URL = re.compile(r"http (http://\S+/)")
WORKER_READY = re.compile(r"pymapreduce worker ready")
MODES = {"no-events": ["--no-events"], "events": [], "counted": ["--http", "127.0.0.1:0"]}
METRIC = re.compile(r'^(pymapreduce_(?:received|sent)_(?:messages|bytes))_total'
                    r'\{plane="(\w+)"\} (\S+)$', re.M)
SHUFFLE_REDUCERS = 4
PHASES = ("tasks", "long", "wordcount", "shuffle")


class Pause(Job):
    """A map that sleeps ``secs`` and emits nothing: tasks long enough that the broker
    hands out one per message, as it does to a large cluster of real tasks."""

    def __init__(self, secs: float) -> None:
        self.secs = secs

    def map(self, key: Any, value: Any) -> Any:
        time.sleep(self.secs)
        return ()


class Shuffle(Job):
    """Each map task emits ``pieces`` strings of ``size`` characters under distinct keys
    (no combiner: every byte is shuffled); reduce returns their total length."""

    def map(self, key: Any, value: Any) -> Any:
        pieces, size = value
        piece = "x" * size
        self.count("bytes_mapped", pieces * size)
        for i in range(pieces):
            yield f"{key}-{i}", piece

    def reduce(self, key: str, values: list) -> int:
        n = sum(len(v) for v in values)
        self.count("bytes_reduced", n)
        return n


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of processes and their children (the worker supervisors)."""
    total = 0.0
    for pid in pids:
        for p in [pid, *children(pid)]:
            try:
                total += sched_cpu_seconds(p)
            except OSError:  # gone
                pass
    return total


def scrape(url: str | None) -> dict[str, float]:
    """The broker's message and byte counters from /metrics ({} without --http)."""
    if not url:
        return {}
    with urllib.request.urlopen(url + "metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {f"{name}.{plane}": float(value) for name, plane, value in METRIC.findall(text)}


def control_messages(before: dict, after: dict) -> float | None:
    """Control messages the broker received and sent between two scrapes."""
    if not after:
        return None
    keys = ("pymapreduce_received_messages.control", "pymapreduce_sent_messages.control")
    return sum(after.get(k, 0) - before.get(k, 0) for k in keys)


def broker_bytes(before: dict, after: dict) -> float | None:
    """Bytes into (both planes) and out of the broker between two scrapes."""
    if not after:
        return None
    keys = ("pymapreduce_received_bytes.control", "pymapreduce_received_bytes.data",
            "pymapreduce_sent_bytes.control")
    return sum(after.get(k, 0) - before.get(k, 0) for k in keys)


class Cluster:
    """A broker daemon in one mode, and worker daemons added on demand; every process is
    killed by its PID at the end."""

    def __init__(self, mode: str, per_supervisor: int) -> None:
        self.per_supervisor = per_supervisor
        self.procs: list[subprocess.Popen] = []
        self.supervisors: list[int] = []
        self.processes = 0
        self.broker = self._start(["broker", "--bind", "tcp://127.0.0.1:0", *MODES[mode]])
        m = read_ready(self.broker, BROKER_READY)
        url = HTTP_URL.search(m.group(2))
        self.address, self.http = m.group(1), url.group(1) if url else None

    def _start(self, args: list[str]) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "pymapreduce", *args, "--log-level", "ERROR",
               "--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=common.REPO_ROOT)
        self.procs.append(proc)
        return proc

    def grow(self, client: Client, processes: int) -> None:
        """Add supervisors until ``processes`` worker processes are registered."""
        while self.processes < processes:
            k = min(self.per_supervisor, processes - self.processes)
            sup = self._start(["worker", "--connect", self.address, "--processes", str(k)])
            read_ready(sup, WORKER_READY)
            self.supervisors.append(sup.pid)
            self.processes += k
        deadline = time.monotonic() + 120
        while client.info()["workers"] < processes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{processes} workers did not all register in 120 s")
            time.sleep(0.1)

    def close(self) -> None:
        pids = [p.pid for p in self.procs]
        kids = [k for pid in self.supervisors for k in children(pid)]
        for proc in reversed(self.procs):
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
        for pid in kids:  # they die with their supervisor; make sure, by PID
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        wait_dead(kids + pids, 10)


def measure(cluster: Cluster, client: Client, run) -> dict[str, Any]:
    """Broker CPU, workers' CPU, wall time and the broker's counters around ``run()``."""
    before = scrape(cluster.http)
    cpu0 = sched_cpu_seconds(cluster.broker.pid)
    wcpu0 = tree_cpu_seconds(cluster.supervisors)
    t0 = time.perf_counter()
    extra = run() or {}
    wall = time.perf_counter() - t0
    cpu = sched_cpu_seconds(cluster.broker.pid) - cpu0
    wcpu = tree_cpu_seconds(cluster.supervisors) - wcpu0
    after = scrape(cluster.http)
    return {"wall": wall, "cpu": cpu, "workers_cpu": wcpu,
            "messages": control_messages(before, after),
            "bytes": broker_bytes(before, after), **extra}


def run_job(client: Client, job: Job, inputs: Any, **kw: Any) -> dict[str, Any]:
    handle = client.submit(job, inputs, **kw)
    result = handle.result(timeout=600)
    status = handle.status()
    handle.release()  # the broker drops its outputs: the next phase starts clean
    return {"tasks": status["maps"][1] + status["reduces"][1], "result": result,
            "counters": handle.counters}


def level(cluster: Cluster, client: Client, args: argparse.Namespace, files: list[str],
          expect_wc: dict | None) -> dict[str, Any]:
    """Every phase at the cluster's current size."""
    n = cluster.processes
    out: dict[str, Any] = {"workers": n}
    time.sleep(1.0)  # registration's messages settle
    out["idle"] = measure(cluster, client, lambda: time.sleep(args.idle))
    if n == 0:
        return out
    records = [(i, i) for i in range(args.tasks)]
    out["tasks"] = measure(cluster, client, lambda: run_job(
        client, NoOp(), records, map_tasks=args.tasks, reducers=0))
    long_tasks = args.long_per_worker * n
    out["long"] = measure(cluster, client, lambda: run_job(
        client, Pause(args.long_ms / 1000), [(i, i) for i in range(long_tasks)],
        map_tasks=long_tasks, reducers=0))
    out["wordcount"] = wc = measure(cluster, client, lambda: run_job(
        client, WordCount(), read_text(files, split_bytes=args.split_kb << 10)))
    wc["exact"] = expect_wc is None or wc["result"] == expect_wc
    pieces = max(1, (args.shuffle_mb << 10) // args.piece_kb // args.shuffle_maps)
    shuffle_in = [(i, (pieces, args.piece_kb << 10)) for i in range(args.shuffle_maps)]
    out["shuffle"] = sh = measure(cluster, client, lambda: run_job(
        client, Shuffle(), shuffle_in, map_tasks=args.shuffle_maps,
        reducers=SHUFFLE_REDUCERS))
    shuffled = args.shuffle_maps * pieces * (args.piece_kb << 10)
    sh["shuffled"] = shuffled
    sh["exact"] = (sum(sh["result"].values()) == shuffled
                   and sh["counters"].get("bytes_reduced") == shuffled)
    for phase in PHASES:
        out[phase].pop("result", None)
    return out


def sweep(mode: str, args: argparse.Namespace, files: list[str], expect_wc: dict | None
          ) -> list[dict[str, Any]]:
    cluster = Cluster(mode, args.per_supervisor)
    try:
        with Client(cluster.address, timeout=120) as client:
            rows = []
            for n in [0, *args.workers]:
                cluster.grow(client, n)
                log(f"{mode}: {n} worker processes ({len(cluster.supervisors)} supervisors)")
                rows.append(level(cluster, client, args, files, expect_wc))
            return rows
    finally:
        cluster.close()


def per(x: float | None, n: float | None, scale: float = 1e6) -> float | None:
    return None if x is None or not n else scale * x / n


def figures(rows: list[dict], counted: list[dict] | None, idle_s: float) -> list[dict]:
    """Per-level figures, net of the idle background: a phase's broker CPU less the idle
    rate times its wall time, its messages less the idle message rate (heartbeats) times
    its wall time. Message and byte counts come from the counted run at the same level
    when this mode has none."""
    base = rows[0]["idle"]["cpu"] / idle_s  # broker CPU s/s with no worker
    out = []
    for i, row in enumerate(rows[1:], 1):
        ref = counted[i] if counted else row
        n = row["workers"]
        idle_rate = row["idle"]["cpu"] / idle_s
        idle_msgs = (ref["idle"]["messages"] or 0) / idle_s
        f: dict[str, Any] = {"workers": n, "idle_cpu_per_s": idle_rate, "base_cpu_per_s": base,
                             "hb_us_per_worker_s": 1e6 * (idle_rate - base) / n,
                             "idle_msgs_per_worker_s": idle_msgs / n if idle_msgs else None}
        for phase in PHASES:
            r, msgs = row[phase], ref[phase]["messages"]
            net = r["cpu"] - idle_rate * r["wall"]
            net_msgs = None if msgs is None else msgs - idle_msgs * r["wall"]
            f[phase] = {"tasks": r["tasks"], "wall": r["wall"], "cpu": r["cpu"], "net_cpu": net,
                        "workers_cpu": r["workers_cpu"], "broker_busy": r["cpu"] / r["wall"],
                        "us_task": per(net, r["tasks"]), "messages": net_msgs,
                        "msgs_task": per(net_msgs, r["tasks"], 1), "us_msg": per(net, net_msgs),
                        "wire_bytes": ref[phase]["bytes"], "exact": r.get("exact", True)}
        f["shuffle"]["shuffled"] = row["shuffle"]["shuffled"]
        out.append(f)
    return out


def fit(fig: list[dict], upto: int) -> dict[str, float] | None:
    """The model's constants from the levels with at most ``upto`` workers: broker CPU of
    a job (net of idle) = a x tasks + b x messages (least squares over the no-op and the
    long-task jobs, whose messages per task differ tenfold); h: CPU per idle worker per
    second; c: CPU per shuffled byte, what the shuffle job cost beyond a and b."""
    small = [f for f in fig if f["workers"] <= upto]
    pts = [(f[p]["tasks"], f[p]["messages"], f[p]["net_cpu"]) for f in small
           for p in ("tasks", "long") if f[p]["messages"] is not None]
    if len(pts) < 2:
        return None
    sxx = sum(t * t for t, m, y in pts)
    sxy = sum(t * m for t, m, y in pts)
    syy = sum(m * m for t, m, y in pts)
    bx = sum(t * y for t, m, y in pts)
    by = sum(m * y for t, m, y in pts)
    det = sxx * syy - sxy * sxy
    a, b = (bx * syy - by * sxy) / det, (by * sxx - bx * sxy) / det
    h = sum(f["hb_us_per_worker_s"] for f in small) / len(small) / 1e6
    c = sum((f["shuffle"]["net_cpu"] - a * f["shuffle"]["tasks"] - b * f["shuffle"]["messages"])
            / f["shuffle"]["shuffled"] for f in small) / len(small)
    return {"a": a, "b": b, "h": h, "c": c, "base": small[0]["base_cpu_per_s"]}


def predict(m: dict[str, float], f: dict, phase: str, idle_s: float) -> float:
    """Broker CPU seconds the model predicts for a phase at the level of ``f``."""
    idle_rate = m["base"] + m["h"] * f["workers"]
    if phase == "idle":
        return idle_rate * idle_s
    p = f[phase]
    cpu = m["a"] * p["tasks"] + m["b"] * p["messages"] + idle_rate * p["wall"]
    return cpu + m["c"] * p.get("shuffled", 0)


def check_model(fig: list[dict], model: dict | None, upto: int, idle_s: float) -> list[list]:
    """Predicted against measured broker CPU (ms) at the levels above ``upto``."""
    rows = []
    for f in fig:
        if model is None or f["workers"] <= upto:
            continue
        for phase in ("idle", "tasks", "long", "shuffle"):
            got = f["idle_cpu_per_s"] * idle_s if phase == "idle" else f[phase]["cpu"]
            want = predict(model, f, phase, idle_s)
            rows.append([f["workers"], phase, 1e3 * want, 1e3 * got, f"{100 * (got / want - 1):+.0f}%"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,4,16,24",
                    help="worker process counts, ascending (default 1,4,16,24)")
    ap.add_argument("--modes", default="no-events,events,counted",
                    help="broker modes: no-events, events, counted (default all three)")
    ap.add_argument("--per-supervisor", type=int, default=8,
                    help="worker processes per worker daemon (default 8)")
    ap.add_argument("--tasks", type=int, default=10000, help="no-op map tasks (default 10000)")
    ap.add_argument("--long-per-worker", type=int, default=50,
                    help="long tasks per worker process (default 50)")
    ap.add_argument("--long-ms", type=float, default=60, help="long task ms (default 60)")
    ap.add_argument("--idle", type=float, default=4.0, help="idle seconds (default 4)")
    ap.add_argument("--wc-mb", type=int, default=16, help="word count MiB (default 16)")
    ap.add_argument("--split-kb", type=int, default=1024, help="word count split (default 1024)")
    ap.add_argument("--shuffle-mb", type=int, default=128, help="shuffled MiB (default 128)")
    ap.add_argument("--shuffle-maps", type=int, default=32, help="shuffle map tasks (default 32)")
    ap.add_argument("--piece-kb", type=int, default=256, help="map output value KiB (default 256)")
    ap.add_argument("--fit-upto", type=int, default=4,
                    help="the model is fitted on levels with at most this many workers")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    args.workers = sorted({int(x) for x in args.workers.split(",")})
    modes = [m.strip() for m in args.modes.split(",")]
    if any(m not in MODES for m in modes) or args.workers[0] < 1:
        ap.error(f"modes are {', '.join(MODES)}; worker counts are at least 1")
    modes.sort(key=lambda m: m != "counted")  # counted first: the others use its counts
    become_subreaper()
    info = common.print_machine(
        f"broker cost: {args.tasks} no-op tasks, {args.long_per_worker} tasks of "
        f"{args.long_ms:g} ms per worker, word count {args.wc_mb} MiB, shuffle "
        f"{args.shuffle_mb} MiB; workers {args.workers}; broker modes {modes}")
    files = build_corpus(common.corpus_dir(args.wc_mb), args.wc_mb)
    expect_wc: dict = {}
    for path in files:  # (word count's keys ignore the line offsets)
        with open(path) as f:
            for word, n in run_sequential(WordCount(), enumerate(f)).items():
                expect_wc[word] = expect_wc.get(word, 0) + n
    raw = {m: sweep(m, args, files, expect_wc) for m in modes}
    counted = raw.get("counted")
    figs = {m: figures(raw[m], counted, args.idle) for m in modes}
    models = {m: fit(figs[m], args.fit_upto) for m in modes}
    ok = True
    for mode in modes:
        print(f"\n### broker mode: {mode} (the broker's own CPU; us: microseconds of it)")
        rows = []
        for f in figs[mode]:
            t, lo, wc, sh = f["tasks"], f["long"], f["wordcount"], f["shuffle"]
            ok &= wc["exact"] and sh["exact"]
            rows.append([f["workers"], t["us_task"], t["msgs_task"], t["broker_busy"],
                         lo["us_task"], lo["msgs_task"], lo["us_msg"], wc["us_task"],
                         f["hb_us_per_worker_s"], f["idle_msgs_per_worker_s"],
                         per(sh["net_cpu"], sh["shuffled"] / MIB), wc["exact"] and sh["exact"]])
        common.print_table(["workers", "no-op us/task", "msgs/task", "broker busy",
                            "long us/task", "msgs/task", "us/msg", "wc us/task",
                            "hb us/worker/s", "hb msgs/worker/s", "shuffle us/MiB", "exact"],
                           rows)
        m = models[mode]
        if m is None:
            continue
        print(f"model (fitted on <= {args.fit_upto} workers): {1e6 * m['a']:.1f} us per task + "
              f"{1e6 * m['b']:.1f} us per control message + {1e6 * m['h']:.0f} us per idle "
              f"worker per second + {1e6 * m['c'] * MIB:.0f} us per shuffled MiB "
              f"({1 / (m['c'] * MIB) if m['c'] > 0 else float('nan'):.0f} MiB/s per core)")
        check = check_model(figs[mode], m, args.fit_upto, args.idle)
        if check:
            print("predicted against measured broker CPU (ms) on the larger levels:")
            common.print_table(["workers", "phase", "predicted", "measured", "error"], check)
    common.write_json(args.json, {"machine": info, "args": vars(args), "raw": raw,
                                  "figures": figs, "models": models})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
