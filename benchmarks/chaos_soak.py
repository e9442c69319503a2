"""Chaos soak: word counts on a real cluster while its processes are killed, frozen and restarted.

    python benchmarks/chaos_soak.py --minutes 5 --seed 1 --size-mb 16

The long version of the fault tests (tests/test_faults.py, tests/test_restart.py). It starts
one broker journaling to a state directory (``--state-dir`` in a temporary folder, fast
liveness: ``--heartbeat 0.2 --liveness 1.0``) and a few worker daemons on loopback, then,
until ``--minutes`` have passed, runs the benchmarks' word count over the corpus files
(``corpus.py``, ``read_text``) again and again. The first run is clean and measures how long
a job takes; during every later run a seeded RNG injects 1 to ``--faults-per-run`` faults at
random moments, each one of:

- ``kill-worker``: ``kill -9`` of one worker process (a child of a worker daemon; the
  supervisor restarts it);
- ``kill-daemon``: ``kill -9`` of a whole worker daemon (supervisor and its children), and
  a replacement daemon started at once;
- ``freeze-worker``: SIGSTOP of one worker process for 1.5-5 s, then SIGCONT;
- ``kill-broker``: ``kill -9`` of the broker mid-map or mid-reduce (the phase and the
  fraction of its tasks done are drawn at random), and a restart on the same address and
  state directory after 0-1.5 s; the client blocked in ``result()`` and the workers must
  reconnect by themselves;
- ``kill-sink`` (with ``--sinks N``): ``kill -9`` of one sink daemon (docs/sinks.md) and a
  fresh one (no state) started at once; the maps that fed it must run again.

A fault whose moment comes after the job ended is counted as missed, not injected. Every
result must equal the single-process count of ``bench_wordcount.py`` (computed once); each
run is bounded by ``--run-timeout``. Between runs the soak waits until every worker process
has registered again, and replaces (and reports as "daemons lost") a worker daemon that
exited although no fault killed it. At the end it prints a table per fault kind, the totals,
and one JSON line; the exit status is 1 if any run was wrong, failed or hung (or the harness
itself met an error), else 0. Every process it started is stopped (it makes itself a child
subreaper, so the orphans of killed daemons are reaped too), and its temporary folder
removed; ``--keep-logs DIR`` keeps the daemons' stderr logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import common
from bench_wordcount import describe_difference, run_single
from common import MIB, log
from corpus import build_corpus
from jobs import WordCount
from procs import (
    alive,
    become_subreaper,
    children,
    our_children,
    parent_of,
    proc_state,
    read_ready,
    reap,
    signal_pid,
    wait_dead,
)

from pymapreduce import Client, PyMapReduceError, read_text

FAULT_KINDS = ("kill-worker", "kill-daemon", "freeze-worker", "kill-broker", "kill-sink")
FAST = ["--heartbeat", "0.2", "--liveness", "1.0"]
BROKER_READY = re.compile(r"pymapreduce broker ready: (\S+)")
WORKER_READY = re.compile(r"pymapreduce worker ready")
SINK_READY = re.compile(r"pymapreduce sink ready")
POLL = 0.05  # seconds between progress polls while waiting for a broker kill's moment


@dataclass
class Daemon:
    proc: subprocess.Popen
    processes: int
    name: str


@dataclass
class Cluster:
    """One broker with a state dir, and worker daemons; every process started is tracked."""

    root: str
    max_attempts: int
    broker: subprocess.Popen | None = None
    address: str = "tcp://127.0.0.1:0"
    daemons: list[Daemon] = field(default_factory=list)
    sinks: list[subprocess.Popen] = field(default_factory=list)
    sink_count: int = 0
    started: list[subprocess.Popen] = field(default_factory=list)
    frozen: set[int] = field(default_factory=set)
    incarnations: int = 0
    daemon_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def state_dir(self) -> str:
        return os.path.join(self.root, "state")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        errlog = open(os.path.join(self.root, f"{name}.log"), "ab")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pymapreduce", *args, "--log-level", "WARNING",
                 "--parent-pid", str(os.getpid())],
                stdout=subprocess.PIPE, stderr=errlog, cwd=common.REPO_ROOT,
                start_new_session=True)  # Ctrl-C reaches us only; our finally stops them
        finally:
            errlog.close()
        self.started.append(proc)
        return proc

    def start_broker(self) -> str:
        self.incarnations += 1
        proc = self._spawn(f"broker-{self.incarnations}",
                           ["broker", "--bind", self.address, "--state-dir", self.state_dir,
                            "--max-attempts", str(self.max_attempts), *FAST])
        self.broker = proc
        address = read_ready(proc, BROKER_READY).group(1)
        if self.address.endswith(":0"):
            self.address = address  # the port the OS chose; every restart binds it again
        elif address != self.address:
            raise RuntimeError(f"restarted broker is on {address}, not {self.address}")
        return address

    def kill_broker(self) -> None:
        assert self.broker is not None
        self.broker.kill()  # SIGKILL: nothing flushed, nobody told
        self.broker.wait()

    def start_daemon(self, processes: int) -> Daemon:
        self.daemon_count += 1
        name = f"worker-{self.daemon_count}"
        proc = self._spawn(name, ["worker", "--connect", self.address,
                                  "--processes", str(processes)])
        read_ready(proc, WORKER_READY)
        daemon = Daemon(proc, processes, name)
        self.daemons.append(daemon)
        return daemon

    def start_sink(self) -> subprocess.Popen:
        self.sink_count += 1
        proc = self._spawn(f"sink-{self.sink_count}", ["sink", "--connect", self.address])
        read_ready(proc, SINK_READY)
        self.sinks.append(proc)
        return proc

    def kill_daemon(self, daemon: Daemon) -> list[int]:
        """``kill -9`` the supervisor and each of its worker processes; returns survivors."""
        kids = children(daemon.proc.pid)
        daemon.proc.kill()
        for pid in kids:
            signal_pid(pid, signal.SIGKILL)
        daemon.proc.wait()
        self.daemons.remove(daemon)
        self.frozen.difference_update(kids)
        return wait_dead(kids, 5.0)

    def worker_pids(self) -> list[tuple[Daemon, int]]:
        """(daemon, pid) of every worker process of the live daemons."""
        return [(d, pid) for d in self.daemons if d.proc.poll() is None
                for pid in children(d.proc.pid) if alive(pid)]

    def reap_orphans(self) -> None:
        """Collect the adopted orphans (worker processes of killed daemons) that died."""
        mine = {p.pid for p in self.started}
        for pid in our_children():
            if pid not in mine and proc_state(pid) == "Z":
                reap(pid)

    def slots(self) -> int:
        return sum(d.processes for d in self.daemons)

    def thaw(self, pid: int) -> None:
        """SIGCONT a frozen worker process, if it is still one of our daemons' children."""
        self.frozen.discard(pid)
        ours = {d.proc.pid for d in self.daemons}
        if parent_of(pid) in ours:
            signal_pid(pid, signal.SIGCONT)

    def thaw_all(self) -> None:
        for pid in list(self.frozen):
            self.thaw(pid)

    def close(self) -> list[int]:
        """Stop everything we started; returns the pids that would not die."""
        kids = [pid for p in self.started if p.poll() is None for pid in children(p.pid)]
        for pid in kids:  # a frozen process cannot act on SIGTERM
            signal_pid(pid, signal.SIGCONT)
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in self.started:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in wait_dead(kids, 5.0):
            signal_pid(pid, signal.SIGKILL)
        for proc in self.started:
            if proc.stdout:
                proc.stdout.close()
        left = wait_dead(kids, 5.0)
        self.reap_orphans()
        return left

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the stderr logs of the last two brokers and of the live worker
        daemons, for a failure report."""
        out = []
        names = [f"broker-{i}" for i in (self.incarnations - 1, self.incarnations) if i > 0]
        for name in [*names, *(d.name for d in self.daemons)]:
            path = os.path.join(self.root, f"{name}.log")
            if not os.path.exists(path):
                continue
            with open(path, errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
            if tail:
                out.append(f"--- {name}.log (last {len(tail)} lines)")
                out.extend(tail)
        return "\n".join(out)


# -- faults --------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: float  # seconds after submit (kill-broker: when it starts watching for its moment)
    phase: str = ""  # kill-broker: "map" or "reduce"
    fraction: float = 0.0  # kill-broker: share of the phase's tasks done before the kill
    injected: bool = False
    moment: float = 0.0  # seconds after submit when it was injected
    detail: str = ""


def plan_faults(rng: random.Random, horizon: float, most: int, kinds: list[str]) -> list[Fault]:
    faults = []
    for _ in range(rng.randint(1, most)):
        kind = rng.choice(kinds)
        fault = Fault(kind, rng.uniform(0.0, horizon))
        if kind == "kill-broker":
            fault.at = 0.0
            fault.phase = rng.choice(("map", "reduce"))
            fault.fraction = rng.random()
        faults.append(fault)
    return sorted(faults, key=lambda f: f.at)


class Chaos:
    """Injects one run's faults, each from a thread of its own, while the main thread waits
    for the result; injections are serialised by the cluster's lock."""

    def __init__(self, cluster: Cluster, rng: random.Random, faults: list[Fault],
                 job_id: str, start: float) -> None:
        self.cluster = cluster
        self.faults = faults
        self.job_id = job_id
        self.start_time = start
        self.done = threading.Event()
        self.errors: list[str] = []
        self.broker_restarts = 0
        # each fault draws its own numbers up front, so the plan does not depend on timing
        self.threads = [threading.Thread(target=self._run, args=(f, random.Random(rng.random())),
                                         name=f"chaos-{f.kind}", daemon=True)
                        for f in faults]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout: float) -> bool:
        """Tell the threads the job is over; True if they all ended within ``timeout``."""
        self.done.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _run(self, fault: Fault, rng: random.Random) -> None:
        try:
            if self.done.wait(max(0.0, self.start_time + fault.at - time.monotonic())):
                return
            if fault.kind == "kill-broker" and not self._await_moment(fault):
                return
            if not self.done.is_set():
                self._inject(fault, rng)
        except Exception:  # reported as a harness error; the run is not trusted
            self.errors.append(f"{fault.kind}: {traceback.format_exc()}")

    def _await_moment(self, fault: Fault) -> bool:
        """Poll the job until its ``fault.phase`` has ``fault.fraction`` of its tasks done."""
        with Client(self.cluster.address, timeout=3.0) as client:
            while not self.done.is_set():
                try:
                    status = client.job(self.job_id).status()
                except PyMapReduceError:
                    status = {}
                phase = status.get("phase")
                done, total = status.get("maps" if fault.phase == "map" else "reduces", [0, 0])
                if phase == fault.phase and done >= int(fault.fraction * total):
                    fault.detail = f"{phase} {done}/{total} done"
                    return True
                if phase == "done" or (fault.phase == "map" and phase == "reduce"):
                    return False  # the moment passed: missed
                self.done.wait(POLL)
        return False

    def _inject(self, fault: Fault, rng: random.Random) -> None:
        cluster = self.cluster
        thaw_after = None
        with cluster.lock:
            if self.done.is_set():
                return
            moment = time.monotonic() - self.start_time
            if fault.kind == "kill-worker":
                pids = cluster.worker_pids()
                if not pids:
                    return
                daemon, pid = rng.choice(pids)
                signal_pid(pid, signal.SIGKILL)
                cluster.frozen.discard(pid)
                fault.detail = f"pid {pid} of {daemon.name}"
            elif fault.kind == "freeze-worker":
                pids = [(d, p) for d, p in cluster.worker_pids() if p not in cluster.frozen]
                if not pids:
                    return
                daemon, pid = rng.choice(pids)
                thaw_after = rng.uniform(1.5, 5.0)
                signal_pid(pid, signal.SIGSTOP)
                cluster.frozen.add(pid)
                fault.detail = f"pid {pid} of {daemon.name} for {thaw_after:.1f}s"
            elif fault.kind == "kill-daemon":
                live = [d for d in cluster.daemons if d.proc.poll() is None]
                if not live:
                    return
                daemon = rng.choice(live)
                pid = daemon.proc.pid
                survivors = cluster.kill_daemon(daemon)
                if survivors:
                    raise RuntimeError(f"children {survivors} of killed daemon {pid} live on")
                new = cluster.start_daemon(daemon.processes)
                fault.detail = f"{daemon.name} (pid {pid}) -> {new.name} (pid {new.proc.pid})"
            elif fault.kind == "kill-sink":
                live = [p for p in cluster.sinks if p.poll() is None]
                if not live:
                    return
                victim = rng.choice(live)
                victim.kill()
                victim.wait()
                cluster.sinks.remove(victim)
                new = cluster.start_sink()
                fault.detail = f"sink pid {victim.pid} -> pid {new.pid}"
            elif fault.kind == "kill-broker":
                pid = cluster.broker.pid if cluster.broker else None
                cluster.kill_broker()
                down = rng.uniform(0.0, 1.5)
                time.sleep(down)
                cluster.start_broker()
                self.broker_restarts += 1
                fault.detail += f", pid {pid} down {down:.1f}s"
            fault.injected = True
        fault.moment = moment
        log(f"    {fault.kind:13s} at {moment:5.2f}s: {fault.detail}")
        if thaw_after is not None:
            self.done.wait(thaw_after)  # the job's end thaws it at once
            with cluster.lock:
                cluster.thaw(pid)


# -- runs ----------------------------------------------------------------------------------


@dataclass
class Run:
    index: int
    faults: list[Fault]
    seconds: float = 0.0
    correct: bool = False
    error: str = ""
    broker_restarts: int = 0
    recovered: int = 0


def settle(cluster: Cluster, timeout: float) -> str:
    """Wait until every worker process (and sink) is registered with the broker; '' or a
    note."""
    want = cluster.slots()
    deadline = time.monotonic() + timeout
    seen = -1
    with Client(cluster.address, timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                info = client.info()
                seen = int(info["workers"])
                sinks = int(info.get("sinks", 0))
            except PyMapReduceError:
                seen = sinks = -1
            if seen == want and sinks == len(cluster.sinks):
                return ""
            time.sleep(0.1)
    return (f"{seen} workers and {sinks} sinks registered, {want} and {len(cluster.sinks)} "
            f"expected, after {timeout:g}s")


def run_once(cluster: Cluster, run: Run, files: list[str], split_bytes: int, reducers: int,
             reference: dict, timeout: float, rng: random.Random) -> None:
    client = Client(cluster.address, timeout=30.0)  # tolerates a broker restart's silence
    chaos: Chaos | None = None
    handle = None
    try:
        start = time.monotonic()
        handle = client.submit(WordCount(), read_text(files, split_bytes=split_bytes),
                               reducers=reducers)
        if run.faults:
            chaos = Chaos(cluster, rng, run.faults, handle.job_id, start)
            chaos.start()
        try:
            result = handle.result(timeout=timeout)
        except PyMapReduceError as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            result = None
        run.seconds = time.monotonic() - start
        if chaos is not None:
            stopped = chaos.stop(60)
            run.broker_restarts = chaos.broker_restarts
            if not stopped:
                run.error = run.error or "the chaos threads did not stop within 60 s"
            elif chaos.errors:
                run.error = run.error or "harness error while injecting:\n" + "\n".join(
                    chaos.errors)
        if result is not None:
            run.correct = result == reference
            if not run.correct:
                run.error = f"wrong result: {describe_difference(reference, result)}"
            with contextlib.suppress(PyMapReduceError):
                run.recovered = int(handle.status().get("recovered", 0))
        if run.error:
            run.correct = False
    finally:
        if chaos is not None:
            chaos.stop(30)
        if handle is not None:
            with contextlib.suppress(PyMapReduceError):
                if not run.correct:
                    handle.cancel()
                handle.release()
        client.close()


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # cleaned up and summed up as Ctrl-C is


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0,
                    help="start runs until this much time has passed (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault RNG (default 1)")
    ap.add_argument("--size-mb", type=int, default=16, help="corpus size in MiB (default 16)")
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--daemons", type=int, default=3, help="worker daemons (default 3)")
    ap.add_argument("--processes", default="1,2",
                    help="worker processes per daemon, a comma list cycled over the daemons "
                         "(default 1,2: daemons of 1, 2, 1 processes)")
    ap.add_argument("--split-mb", type=float, default=1.0,
                    help="MiB per map task (default 1: 16 map tasks on 16 MiB)")
    ap.add_argument("--reducers", type=int, default=8, help="reduce tasks (default 8)")
    ap.add_argument("--sinks", type=int, default=0,
                    help="sink daemons (default 0: the broker is the sink); adds kill-sink "
                         "to the fault mix")
    ap.add_argument("--faults-per-run", type=int, default=2,
                    help="each faulty run gets 1 to this many faults (default 2)")
    ap.add_argument("--kinds", default=",".join(FAULT_KINDS),
                    help="comma list of fault kinds among " + ",".join(FAULT_KINDS))
    ap.add_argument("--max-attempts", type=int, default=4,
                    help="the broker's --max-attempts (default 4, its own default)")
    ap.add_argument("--run-timeout", type=float, default=120.0,
                    help="a run not done after this many seconds has hung (default 120)")
    ap.add_argument("--keep-logs", metavar="DIR",
                    help="copy the daemons' stderr logs (WARNING and up) to DIR at the end")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.sinks and "kill-sink" in kinds:
        kinds.remove("kill-sink")  # (no sink to kill)
    if not kinds or set(kinds) - set(FAULT_KINDS):
        ap.error(f"--kinds: choose among {', '.join(FAULT_KINDS)}")
    per_daemon = [int(x) for x in args.processes.split(",") if x.strip()]
    if not per_daemon or min(per_daemon) < 1 or args.daemons < 1:
        ap.error("--daemons and --processes must be at least 1")

    info = common.print_machine(f"chaos soak, {args.minutes:g} min, seed {args.seed}")
    files = build_corpus(common.corpus_dir(args.size_mb, args.corpus_root), args.size_mb)
    mib = sum(os.path.getsize(p) for p in files) / MIB
    split_bytes = max(1, int(args.split_mb * MIB))
    print(f"corpus  : {len(files)} files, {mib:.1f} MiB in {os.path.dirname(files[0])}")
    log("computing the reference (single process) ...")
    reference, ref_seconds, _ = run_single(WordCount(), files)
    print(f"reference: {len(reference)} distinct words, {ref_seconds:.1f}s single process")

    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, _terminate)  # so that `kill PID` still cleans up
    become_subreaper()
    root = tempfile.mkdtemp(prefix="pmr-chaos-")
    cluster = Cluster(root, args.max_attempts)
    runs: list[Run] = []
    notes: list[str] = []
    lost: list[str] = []  # worker daemons that exited although no fault killed them
    leftovers: list[int] = []
    interrupted = False
    soak_start = time.monotonic()
    try:
        cluster.start_broker()
        for i in range(args.daemons):
            cluster.start_daemon(per_daemon[i % len(per_daemon)])
        for _ in range(args.sinks):
            cluster.start_sink()
        note = settle(cluster, 30.0)
        if note:
            raise RuntimeError(f"the cluster did not come up: {note}")
        print(f"cluster : broker {cluster.address} (state dir in {root}), {args.daemons} "
              f"daemons, {cluster.slots()} worker processes, heartbeat 0.2s, liveness 1.0s\n")
        end = soak_start + args.minutes * 60
        horizon = None
        while not runs or time.monotonic() < end:
            index = len(runs)
            faults = [] if horizon is None else plan_faults(
                rng, horizon, args.faults_per_run, kinds)
            run = Run(index, faults)
            runs.append(run)
            log(f"run {index}: " + (", ".join(f.kind for f in faults) or "no faults"))
            run_once(cluster, run, files, split_bytes, args.reducers, reference,
                     args.run_timeout, rng)
            if horizon is None and run.correct:
                horizon = run.seconds  # faults land anywhere in a clean run's span
            injected = [f.kind for f in faults if f.injected]
            verdict = "ok" if run.correct else (
                "WRONG" if run.error.startswith("wrong result") else "FAILED")
            print(f"run {index:3d}: {verdict:6s} {run.seconds:6.2f}s "
                  f"faults {len(injected)}/{len(faults)} {','.join(injected) or '-'}"
                  f"{f' recovered {run.recovered}' if run.broker_restarts else ''}", flush=True)
            if run.error:
                print(f"  error: {run.error}")
                print(cluster.log_tail())
            if horizon is None:
                break  # the clean run failed: the cluster is not usable
            with cluster.lock:
                cluster.thaw_all()
                cluster.reap_orphans()
            if cluster.broker is None or cluster.broker.poll() is not None:
                notes.append(f"after run {index}: the broker is gone; restarting it")
                cluster.start_broker()
            for daemon in list(cluster.daemons):
                if daemon.proc.poll() is not None:  # nobody killed it: the engine gave up
                    lost.append(f"after run {index}: {daemon.name} (pid {daemon.proc.pid}) "
                                f"exited by itself with code {daemon.proc.returncode}")
                    notes.append(lost[-1] + "; replaced")
                    print(f"  note: {notes[-1]}")
                    with open(os.path.join(root, f"{daemon.name}.log"), errors="replace") as f:
                        print("\n".join(f.read().splitlines()[-5:]))
                    cluster.daemons.remove(daemon)
                    cluster.start_daemon(daemon.processes)
            note = settle(cluster, 20.0)
            if note:
                notes.append(f"after run {index}: {note}")
                print(f"  note: {note}")
    except KeyboardInterrupt:
        interrupted = True
        if runs and not runs[-1].correct and not runs[-1].error:
            runs.pop()  # the run under way when interrupted: no verdict
        notes.append("interrupted: the runs so far are summed up")
        print(f"\n{notes[-1]}")
    except Exception:
        notes.append("harness error: " + traceback.format_exc())
        print(notes[-1])
        if os.path.isdir(root):
            print(cluster.log_tail())
    finally:
        with cluster.lock:
            leftovers = cluster.close()
        if args.keep_logs and os.path.isdir(root):
            os.makedirs(args.keep_logs, exist_ok=True)
            for name in os.listdir(root):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(root, name), args.keep_logs)
        shutil.rmtree(root, ignore_errors=True)
    wall = time.monotonic() - soak_start

    faulty = runs[1:]
    scheduled = Counter(f.kind for r in faulty for f in r.faults)
    injected = Counter(f.kind for r in faulty for f in r.faults if f.injected)
    broker_moments = Counter(f.phase for r in faulty for f in r.faults
                             if f.kind == "kill-broker" and f.injected)
    correct = sum(r.correct for r in runs)
    job_times = [r.seconds for r in runs if r.correct]
    failed = [r for r in runs if not r.correct]
    print()
    common.print_table(["fault", "scheduled", "injected", "missed (job over)"],
                       [[k, scheduled[k], injected[k], scheduled[k] - injected[k]]
                        for k in FAULT_KINDS])
    print(f"\nkill-broker moments: {broker_moments['map']} mid-map, "
          f"{broker_moments['reduce']} mid-reduce\n")
    summary = {
        "runs": len(runs),
        "runs_correct": correct,
        "runs_failed": [{"run": r.index, "error": r.error.splitlines()[0] if r.error else "",
                         "faults": [f"{f.kind} at {f.moment:.2f}s: {f.detail}"
                                    for f in r.faults if f.injected]}
                        for r in failed],
        "faults_injected": {k: injected[k] for k in FAULT_KINDS},
        "faults_missed": {k: scheduled[k] - injected[k] for k in FAULT_KINDS},
        "broker_restarts": sum(r.broker_restarts for r in runs),
        "daemons_exited_by_themselves": len(lost),
        "tasks_recovered": sum(r.recovered for r in runs),
        "wall_s": round(wall, 1),
        "mean_job_s": round(sum(job_times) / len(job_times), 3) if job_times else None,
        "clean_job_s": round(runs[0].seconds, 3) if runs and runs[0].correct else None,
        "notes": notes,
        "leftover_pids": leftovers,
        "seed": args.seed,
        "size_mib": round(mib, 1),
        "worker_processes": cluster.slots(),
    }
    common.print_table(
        ["runs", "correct", "faults injected", "broker restarts", "tasks recovered",
         "daemons lost", "wall s", "mean job s", "clean job s"],
        [[summary["runs"], correct, sum(injected.values()), summary["broker_restarts"],
          summary["tasks_recovered"], len(lost), wall, summary["mean_job_s"],
          summary["clean_job_s"]]])
    for note in notes:
        print(f"note: {note.splitlines()[0]}")
    if leftovers:
        print(f"LEFT RUNNING: {leftovers}")
    common.write_json(args.json, {"machine": info, **summary})
    print(json.dumps(summary, default=str))
    ok = runs and not failed and not leftovers and not any(
        n.startswith("harness error") for n in notes)
    if interrupted:
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
