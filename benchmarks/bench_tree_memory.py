"""Peak memory of the whole process tree of a word count: pymapreduce against
multiprocessing.Pool(2) and a single process, same corpus, same run.

    python benchmarks/bench_tree_memory.py --size-mb 256 --repeat 3
    python benchmarks/bench_tree_memory.py --size-mb 256 --systems \\
        pymapreduce@/tmp/ab_base_memory,pymapreduce,mp,single --repeat 3   # A/B of two trees

Each run is a fresh child process (``--child``) that runs one system on the corpus; this
process samples the child and all its descendants (the embedded broker, the worker
supervisor and its forked worker processes, or the Pool's workers) every ``--interval``
ms and sums them. Three sums per sample:

- RSS: resident pages of each process, summed. Forked processes share their parent's
  pages until written, so RSS counts those pages once per process: an upper bound.
- PSS (``/proc/PID/smaps_rollup``): each shared page divided among its sharers. Summed
  over the tree it is what the tree costs the machine (pages shared with processes outside
  the tree, such as the C library, are counted in part).
- USS: each process's private pages only (Private_Clean + Private_Dirty): a lower bound.

The peak of each sum over the run is reported, and the per-process figures at the RSS
peak, labelled by role (client, broker, supervisor, worker process, pool worker), so the
table says who holds what. Issue 13's bar (600 MiB) is on the RSS sum; PSS is shown
beside it. ``system@TREE`` runs that system with ``TREE`` (a checkout holding
``pymapreduce/``) first on the path: an A/B of two versions in one run. Runs alternate
(A B C A B C ...) and the median of each figure over ``--repeat`` runs is shown.
Every result is checked equal to the single process's (an order-free checksum of the
(word, count) pairs, so checking adds no memory to the measured run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zlib

import common
from common import MIB, log
from corpus import build_corpus

SYSTEMS = ("pymapreduce", "mp", "single")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


# -- sampling the tree ----------------------------------------------------------------------


def tree_pids(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of ``root`` and every descendant (children of every thread)."""
    out, todo = [], [(root, 0)]
    while todo:
        pid, parent = todo.pop()
        out.append((pid, parent))
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend((int(c), pid) for c in f.read().split())
            except OSError:
                pass
    return out


def rss_bytes(pid: int) -> int:
    """Resident bytes of ``pid`` from /proc/PID/statm (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds ``pid`` has used so far (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def pss_uss_bytes(pid: int) -> tuple[int, int]:
    """(PSS, USS) bytes of ``pid`` from /proc/PID/smaps_rollup ((0, 0) if it is gone)."""
    pss = uss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                    uss += int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return pss, uss


def role(pid: int, parent: int, root: int, roles: dict[int, str]) -> str:
    """Who ``pid`` is in the tree: client, broker, supervisor, worker, sink, pool-worker."""
    if pid == root:
        return "client"
    if parent in roles and roles[parent] == "supervisor":
        return "worker"
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:  # a forked daemon: its cmdline is ours
            comm = f.read().strip()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    forked = {b"pmr-broker": "broker", b"pmr-worker": "supervisor", b"pmr-sink": "sink"}
    if comm in forked:
        return forked[comm]
    for word, name in ((b"broker", "broker"), (b"worker", "supervisor"), (b"sink", "sink")):
        if b"pymapreduce" in argv and word in argv:
            return name
    return "pool-worker" if parent == root else "child"


def exited(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie not reaped yet, so that wait4 still gives its
    resource use)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] in "ZX"
    except (OSError, IndexError):
        return True


def sample_tree(proc: subprocess.Popen, interval: float, smaps: bool) -> dict:
    """Sample ``proc``'s tree until it exits: peaks of the RSS, PSS and USS sums, and each
    process's figures at the RSS peak (by role)."""
    roles: dict[int, str] = {}
    peak = {"rss": 0, "pss": 0, "uss": 0}
    at_peak: list[tuple[str, int, int]] = []
    timeline: list[tuple[float, dict[str, int]]] = []
    cpu_seen: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU s when last seen)
    start = time.perf_counter()
    while not exited(proc.pid):
        now = time.perf_counter() - start
        pids = tree_pids(proc.pid)
        rows = []
        for pid, parent in pids:
            if roles.get(pid) in (None, "pool-worker", "child", "?"):
                # again until it is known: a daemon is a fork of the client until it execs
                roles[pid] = role(pid, parent, proc.pid, roles)
            rows.append((roles[pid], rss_bytes(pid), pss_uss_bytes(pid) if smaps else (0, 0)))
            cpu = cpu_seconds(pid)
            if cpu is not None:
                cpu_seen[pid] = (roles[pid], cpu)
        rss = sum(r[1] for r in rows)
        pss = sum(r[2][0] for r in rows)
        uss = sum(r[2][1] for r in rows)
        if rss > peak["rss"]:
            peak["rss"] = rss
            at_peak = [(name, r, p) for name, r, (p, _) in rows]
        peak["pss"] = max(peak["pss"], pss)
        peak["uss"] = max(peak["uss"], uss)
        by_role: dict[str, int] = {}
        for name, r, _ in rows:
            by_role[name] = by_role.get(name, 0) + r
        timeline.append((round(now, 3), by_role))
        time.sleep(interval)
    cpu_by_role: dict[str, float] = {}  # (as last sampled: a process's last moments lost)
    for name, cpu in cpu_seen.values():
        cpu_by_role[name] = round(cpu_by_role.get(name, 0.0) + cpu, 2)
    return {"peak_rss_mib": peak["rss"] / MIB, "peak_pss_mib": peak["pss"] / MIB,
            "peak_uss_mib": peak["uss"] / MIB,
            "at_rss_peak": [(n, r / MIB, p / MIB) for n, r, p in at_peak],
            "samples": len(timeline), "timeline": timeline, "cpu_by_role": cpu_by_role}


# -- the child: one system, one run ---------------------------------------------------------


def checksum(result: dict) -> int:
    """An order-free checksum of a {word: count} dict (no copy of it is made)."""
    total = 0
    for k, v in result.items():
        total = (total + zlib.crc32(f"{k}\t{v}".encode("utf-8", "surrogatepass"))) & (2**64 - 1)
    return total


def child(system: str, size_mb: int, corpus_root: str) -> dict:
    """Run ``system`` once on the corpus (already built by the parent)."""
    import bench_wordcount as wc  # (after the path is set: it imports pymapreduce)

    files = build_corpus(common.corpus_dir(size_mb, corpus_root), size_mb)
    runner = {"pymapreduce": wc.run_pymapreduce, "mp": wc.run_mp, "single": wc.run_single}
    result, seconds, startup = runner[system](wc.WordCount(), files)
    return {"seconds": seconds, "startup_s": startup, "words": len(result),
            "checksum": checksum(result)}


def run_once(system: str, tree: str | None, args: argparse.Namespace) -> dict:
    """One fresh child running ``system`` (with ``tree`` first on its path), sampled."""
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join((tree, env.get("PYTHONPATH", "")))
    cmd = [sys.executable, __file__, "--child", system, "--size-mb", str(args.size_mb),
           "--corpus-root", args.corpus_root] + (["--tree", tree] if tree else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        figures = sample_tree(proc, args.interval / 1000, not args.no_smaps)
        out = proc.stdout.read() if proc.stdout else ""
        # the CPU of the whole tree: the child's own and that of every descendant it
        # (or the supervisor, for its workers) waited for
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}"}
    figures.update(json.loads(out.strip().splitlines()[-1]))
    figures["tree_cpu_s"] = usage.ru_utime + usage.ru_stime
    return figures


def summarise(at_peak: list[tuple[str, float, float]]) -> str:
    """'client 120 + broker 80 + ...' (RSS MiB by role at the RSS peak)."""
    by: dict[str, list[float]] = {}
    for name, rss, _ in at_peak:
        by.setdefault(name, []).append(rss)
    return " + ".join(f"{n} {'/'.join(f'{x:.0f}' for x in v)}" for n, v in by.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="corpus size in MiB (256)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma list of pymapreduce, mp, single; NAME@TREE runs NAME with "
                         "the checkout TREE first on the path (an A/B)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each system, alternated")
    ap.add_argument("--interval", type=float, default=25, help="sampling period, ms (25)")
    ap.add_argument("--no-smaps", action="store_true", help="RSS only (cheaper sampling)")
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--json", help="also write the figures (and timelines) to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.tree:  # this tree's pymapreduce before the one common.py put first
            sys.path.insert(0, args.tree)
        print(json.dumps(child(args.child, args.size_mb, args.corpus_root)))
        return 0

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s.split("@", 1)[0] not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    info = common.print_machine(f"word count {args.size_mb} MiB, whole-tree peak memory")
    files = build_corpus(common.corpus_dir(args.size_mb, args.corpus_root), args.size_mb)
    print(f"corpus  : {len(files)} files, {sum(map(os.path.getsize, files)) / MIB:.1f} MiB;"
          f" load {os.getloadavg()[0]:.2f}\n")
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for i in range(args.repeat):
        for s in systems:
            name, _, tree = s.partition("@")
            log(f"{s} ({i + 1}/{args.repeat}) ...")
            m = run_once(name, tree or None, args)
            runs[s].append(m)
            if "error" not in m:
                log(f"  {s}: RSS {m['peak_rss_mib']:.0f} MiB, PSS {m['peak_pss_mib']:.0f},"
                    f" {m['seconds']:.2f} s, CPU {m['tree_cpu_s']:.1f} s {m['cpu_by_role']}:"
                    f" {summarise(m['at_rss_peak'])}")
    ref = next((m["checksum"] for s in systems for m in runs[s]
                if s == "single" and "error" not in m), None)
    rows, records, ok = [], [], True
    for s in systems:
        good = [m for m in runs[s] if "error" not in m]
        if len(good) < len(runs[s]):
            ok = False
            print(f"{s}: {len(runs[s]) - len(good)} runs failed")
        if not good:
            continue
        med = {k: statistics.median(m[k] for m in good)
               for k in ("peak_rss_mib", "peak_pss_mib", "peak_uss_mib", "seconds",
                         "tree_cpu_s")}
        equal = all(m["checksum"] == (ref if ref is not None else good[0]["checksum"])
                    for m in good)
        ok = ok and equal
        best = min(good, key=lambda m: abs(m["peak_rss_mib"] - med["peak_rss_mib"]))
        smaps = None if args.no_smaps else True  # (not sampled: shown as -)
        rows.append([s, med["peak_rss_mib"], smaps and med["peak_pss_mib"],
                     smaps and med["peak_uss_mib"],
                     med["seconds"], med["tree_cpu_s"], equal,
                     summarise(best["at_rss_peak"])])
        records.append({"system": s, "median": med, "equal": equal,
                        "runs": [{k: v for k, v in m.items() if k != "timeline"} for m in good],
                        "timelines": [m["timeline"] for m in good]})
    print()
    common.print_table(["system", "peak RSS sum MiB", "peak PSS sum MiB", "peak USS sum MiB",
                        "job s", "tree CPU s", "equal", "RSS MiB by process at the RSS peak (median run)"],
                       rows)
    print(f"\nmedians of {args.repeat} runs; sampled every {args.interval:g} ms; equal: same"
          " (word, count) pairs as single; RSS counts pages shared by forked processes once"
          " per process, PSS divides them")
    common.write_json(args.json, {"machine": info, "size_mb": args.size_mb,
                                  "interval_ms": args.interval, "results": records})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
