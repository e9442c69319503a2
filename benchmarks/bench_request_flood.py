"""What a flood of costly requests costs the jobs a broker runs: the task rate of a job of
no-op tasks, alone and while other processes send the broker requests as fast as it
takes them, over HTTP and over its client socket.

    python benchmarks/bench_request_flood.py                        # this tree
    python benchmarks/bench_request_flood.py --trees /tmp/before,.  # before/after

The broker (an embedded cluster of 2 worker processes, ``--http``) first runs a job of
``--big`` no-op tasks and keeps it (a finished job's page then lists thousands of
attempts: the dearest answer the server has). Then, ``--rounds`` times, a job of
``--tasks`` no-op tasks is timed quiet, then under each attack, in that order:

- ``page``: ``--attackers`` processes each open a connection, send
  ``GET /api/jobs/BIG`` and close it at once, over and over (5 ms apart): a reader that
  never reads, asking for the same costly answer;
- ``events``: the same with ``GET /api/events?format=json&job=BIG&since=N``, ``N`` drawn
  at random each time: costly answers that differ, so that nothing can be reused;
- ``client-events``: ``--attackers`` clients on the broker's client socket (ZeroMQ
  DEALERs) each send EVENTS requests for the kept job from cursor 0, 20 at a time every
  10 ms, reading the replies as they come;
- ``client-status``: the same with STATUS requests for the kept job;
- ``worker-beats``: ``--attackers`` connections each register as a worker (READY with no
  credit) and send HEARTBEATs, 50 every 2 ms, reading the answers as they come.

Figures: tasks/s, the median over the rounds, and each attack's rate over the quiet rate
of the same tree. The attackers run on the same 2 cores as the broker and its workers,
so part of what an attack costs is their own CPU: compare trees, not an attack's rate
against the quiet one alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import socket
import statistics
import sys
import time

import common

ATTACKS = ("page", "events", "client-events", "client-status", "worker-beats")
WORKERS = 2


def _attacker(host: str, port: int, paths: list[str], stop_at: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.time() < stop_at:
        path = rng.choice(paths) if len(paths) > 1 else paths[0]
        if "{n}" in path:
            path = path.replace("{n}", str(rng.randrange(1, 40_000)))
        try:
            s = socket.create_connection((host, port), timeout=2)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            s.close()
        except OSError:
            pass
        time.sleep(0.005)


def _client_attacker(address: str, job_id: str, command: str, stop_at: float) -> None:
    import zmq

    from pymapreduce.patterns import protocol as P
    from pymapreduce.patterns.message import Message

    sock = zmq.Context().socket(zmq.DEALER)
    sock.connect(address)
    body = {"since": 0, "job": job_id} if command == P.EVENTS else {"job_id": job_id}
    burst, pause = 20, 0.01
    if command == P.HEARTBEAT:  # a worker's: registered first, then beats only
        sock.send_multipart(Message(P.READY, {"credit": 0, "name": "beats", "pid": 1}).encode())
        body, burst, pause = {}, 50, 0.002
    n = 0
    while time.time() < stop_at:
        for _ in range(burst):
            n += 1
            try:
                sock.send_multipart(Message(command, {**body, "req": n}).encode(), zmq.NOBLOCK)
            except zmq.Again:
                pass
        time.sleep(pause)
        while sock.poll(0):
            sock.recv_multipart()


def child(tree: str, out: str, argv: list[str]) -> int:
    """Run in a process importing pymapreduce from ``tree``; pickles the samples."""
    import pickle

    common.import_tree(tree)
    from jobs import NoOp

    from pymapreduce import Client, LocalCluster

    big_tasks, tasks, rounds, attackers = map(int, argv)
    samples: dict[str, list[float]] = {"quiet": [], **{a: [] for a in ATTACKS}}
    with LocalCluster(workers=WORKERS, http=True) as cluster:
        hostport = cluster.http_url.split("//", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        with Client(cluster.address) as client:
            big = client.submit(NoOp(), [(i, i) for i in range(big_tasks)],
                                map_tasks=big_tasks, reducers=0)
            big.result()
            paths = {"page": [f"/api/jobs/{big.job_id}"],
                     "events": [f"/api/events?format=json&job={big.job_id}&since={{n}}"]}
            from pymapreduce.patterns import protocol as P
            records = [(i, i) for i in range(tasks)]
            client.submit(NoOp(), records[:500], map_tasks=500, reducers=0).result()  # warm
            ctx = multiprocessing.get_context("fork")
            for _ in range(rounds):
                for case in ("quiet", *ATTACKS):
                    procs = []
                    stop_at = time.time() + 120
                    if case in paths:
                        procs = [ctx.Process(target=_attacker, daemon=True,
                                             args=(host, int(port), paths[case], stop_at, k))
                                 for k in range(attackers)]
                    elif case != "quiet":
                        command = {"client-events": P.EVENTS, "client-status": P.STATUS,
                                   "worker-beats": P.HEARTBEAT}[case]
                        procs = [ctx.Process(target=_client_attacker, daemon=True,
                                             args=(cluster.address, big.job_id, command,
                                                   stop_at))
                                 for _ in range(attackers)]
                    if procs:
                        for p in procs:
                            p.start()
                        time.sleep(0.5)  # (the flood under way)
                    try:
                        t = time.perf_counter()
                        client.submit(NoOp(), records, map_tasks=tasks, reducers=0).result()
                        samples[case].append(time.perf_counter() - t)
                    finally:
                        for p in procs:
                            p.kill()
                            p.join()
                    time.sleep(1.0)  # (what the flood left queued is answered first)
    with open(out, "wb") as f:
        pickle.dump(samples, f)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=20_000, help="tasks of the kept job")
    ap.add_argument("--tasks", type=int, default=5000, help="tasks of each timed job")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--attackers", type=int, default=2, help="attacking processes")
    ap.add_argument("--trees", default=common.REPO_ROOT,
                    help="comma list of source trees (default: this checkout)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.child_out, args.rest)
    info = common.print_machine(
        f"task rate under an HTTP flood: {args.tasks} no-op tasks, {WORKERS} workers, "
        f"a kept job of {args.big} tasks, {args.attackers} attackers")
    rows, results = [], {}
    for tree in args.trees.split(","):
        common.log(f"running {tree} ...")
        samples = common.run_tree_child(
            __file__, tree, [str(args.big), str(args.tasks), str(args.rounds),
                             str(args.attackers)])
        rates = {case: args.tasks / statistics.median(secs) for case, secs in samples.items()}
        results[tree] = {"samples": samples, "rates": rates}
        for case in ("quiet", *ATTACKS):
            rows.append([tree, case, rates[case], rates[case] / rates["quiet"],
                         " / ".join(f"{args.tasks / s:,.0f}" for s in samples[case])])
    print()
    common.print_table(["tree", "case", "tasks/s (median)", "x quiet", "samples (tasks/s)"],
                       rows)
    common.write_json(args.json, {**info, "command": " ".join(sys.argv), "args": vars(args),
                                  "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
