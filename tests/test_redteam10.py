"""Red team of issue 10's features: side files, task logs, shipped sources, total order and
process state, attacked as a hostile client, a hostile worker or a careless user would,
against real daemons. Each test is an attack that worked before its fix."""

from __future__ import annotations

import time

import zmq

from pymapreduce import Client, Job
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message

from .conftest import FAST, rss, wait_workers

MiB = 1 << 20


class Loud(Job):
    """Each map task prints ~60 KiB: 64 tasks fill most of a job's 4 MiB of kept logs."""

    def map(self, key, value):
        print(f"task {key} " + "x" * 60_000)
        yield key, 1


def test_unread_logs_replies_do_not_pile_up_in_the_broker(daemons):
    """A client asks for a job's 4 MiB of logs hundreds of times and never reads the
    replies: the broker holds a bounded amount of them (the rest are answered busy), not
    a copy per request; the owner's own reader still gets every log."""
    broker, address = daemons.broker(*FAST, "--backup-after", "off")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(Loud(), [(i, i) for i in range(64)], map_tasks=64)
        handle.result(120)
        assert len(handle.logs()) == 64
        job_id = handle.job_id
        marker = client.submit(Loud(), [(0, 0)])  # released by the flooder, last
        marker.result(60)
    before = rss(broker.pid)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)  # reads nothing: the broker's queue holds it all
    try:
        sock.connect(address)
        for req in range(300):
            sock.send_multipart(Message(P.LOGS, {"job_id": job_id, "req": req}).encode())
        sock.send_multipart(Message(P.RELEASE, {"job_id": marker.job_id}).encode())
        with Client(address) as probe:
            while not probe.job(marker.job_id).status().get("released"):
                time.sleep(0.05)  # (the broker handles one connection's requests in order)
            grown = rss(broker.pid) - before
            assert grown < 150 * MiB, f"the broker grew {grown >> 20} MiB"
    finally:
        sock.close()
        ctx.term()
    # the flooder gone, its queued replies go with it: the owner reads every log again
    with Client(address, timeout=60) as owner:
        logs = owner.job(job_id).logs()
        assert len(logs) == 64 and "x" * 60_000 in logs[0]["text"]
