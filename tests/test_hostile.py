"""Hostile peers against real daemons: floods that never read, forged reports, other
tenants' jobs, odd statistics, and messages built to make the broker hold much more than
they weigh. Each was an attack that once worked; each is kept here as a regression test."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from pymapreduce import Client, JobNotFound, PyMapReduceError, run_sequential
from pymapreduce.broker import Broker, BrokerConfig
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import security
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.records import pack, unpack

from .conftest import FAST, rss, wait_workers
from .jobs import WordCount

RECORDS = [(i, f"w{i % 13} x{i % 4}") for i in range(300)]
FLOOD = 50_000
MiB = 1 << 20




def dealer(ctx: zmq.Context, address: str, keys: str | None = None, name: str = "client",
           kind: int = zmq.DEALER) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)  # the flooder queues all it sends on its own side
    if keys:
        security.PeerKeys.load(keys, name).apply(sock)
    sock.connect(address)
    return sock


def flood(sock: zmq.Socket, messages: list[list[bytes]], count: int) -> None:
    for i in range(count):
        sock.send_multipart(messages[i % len(messages)], zmq.NOBLOCK)


def small_job(address: str, keys: str | None = None) -> None:
    with Client(address, timeout=30, keys=keys) as client:
        assert client.submit(WordCount(), RECORDS, map_tasks=4).result(60) == run_sequential(
            WordCount(), RECORDS)


@pytest.fixture
def keys(tmp_path):
    return security.cluster_keys(str(tmp_path / "keys"))


def secured_cluster(daemons, keys, *extra):
    _, address = daemons.broker("--keys", keys, *FAST, *extra)
    daemons.worker(address, 2, "--keys", keys)
    deadline = time.monotonic() + 20
    with Client(address, keys=keys, timeout=20) as client:
        while client.info()["workers"] < 2:
            assert time.monotonic() < deadline, "workers did not register"
            time.sleep(0.02)
    return address


@pytest.mark.parametrize("secured", [False, True], ids=["plain", "curve"])
def test_a_client_that_floods_and_never_reads_costs_no_one_else(daemons, keys, secured):
    if secured:
        address = secured_cluster(daemons, keys)
        broker = daemons.procs[0]
    else:
        broker, address = daemons.broker(*FAST)
        daemons.worker(address, 2)
        wait_workers(address, 2)
    small_job(address, keys if secured else None)  # warm: the first job imports things
    before = rss(broker.pid)
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, address, keys if secured else None)
        # answered requests (each an ERROR or a STATUS the flooder never reads), garbage,
        # and heartbeats of a worker that never registered (each answered RECONNECT)
        messages = [Message(P.STATUS, {"job_id": "nope", "req": 1}).encode(),
                    [b"\x93\x01garbage"],
                    Message(P.HELLO, {"req": 2}).encode(),
                    Message(P.JOBS, {"req": 3}).encode()]
        flood(sock, messages, FLOOD)
        small_job(address, keys if secured else None)  # while the flood is being read
        assert broker.poll() is None
        assert rss(broker.pid) - before < 50 * MiB
        sock.close(0)
        small_job(address, keys if secured else None)
    finally:
        ctx.destroy(0)


def test_a_worker_key_that_floods_heartbeats_without_reading_is_dropped(daemons, keys):
    address = secured_cluster(daemons, keys)
    broker = daemons.procs[0]
    before = rss(broker.pid)
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, address, keys, name="worker")
        sock.send_multipart(Message(P.READY, {"credit": 4, "name": "flooder"}).encode())
        flood(sock, [Message(P.HEARTBEAT).encode()], FLOOD)
        small_job(address, keys)
        deadline = time.monotonic() + 20
        with Client(address, keys=keys, timeout=20) as client:
            while "flooder" in {w["name"] for w in client.workers()}:
                assert time.monotonic() < deadline, "a worker that never reads stays"
                time.sleep(0.05)
        assert broker.poll() is None and rss(broker.pid) - before < 50 * MiB
    finally:
        ctx.destroy(0)


def test_a_flood_on_the_data_plane_costs_no_one_else(daemons):
    broker, address = daemons.broker(*FAST)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    small_job(address)
    before = rss(broker.pid)
    ctx = zmq.Context()
    try:
        probe = dealer(ctx, address)
        probe.send_multipart(Message(P.READY, {"credit": 1}).encode())
        assert probe.poll(5000)
        sink = Message.decode(probe.recv_multipart()).body["sink"]
        probe.send_multipart(Message(P.BYE).encode())
        push = dealer(ctx, sink, kind=zmq.PUSH)
        bogus = Message(P.OUTPUT, {"job": "nope", "kind": "map", "index": 0, "attempt": 1},
                        (b"x" * 100,)).encode()
        flood(push, [bogus, [b"garbage"]], FLOOD)
        small_job(address)
        assert broker.poll() is None and rss(broker.pid) - before < 50 * MiB
    finally:
        ctx.destroy(0)


# -- reports on attempts the sender does not hold ---------------------------------------


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def start_broker(ctx, **config) -> Broker:
    config = {"heartbeat_interval": 0.2, "liveness": 1.0, **config}
    b = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", **config), context=ctx)
    b.bind()
    thread = threading.Thread(target=b.serve_forever, daemon=True)
    thread.start()
    b._test_thread = thread
    return b


def stop_broker(b: Broker) -> None:
    b.stop()
    b._test_thread.join(5)


class Peer:
    def __init__(self, ctx, address, keys=None, name="worker"):
        self.sock = dealer(ctx, address, keys, name)

    def send(self, command, body=None, blobs=()):
        self.sock.send_multipart(Message(command, body or {}, tuple(blobs)).encode())

    def recv(self, timeout=5.0, want=None):
        deadline = time.monotonic() + timeout
        while self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            msg = Message.decode(self.sock.recv_multipart())
            if msg.command in (want or (P.TASKS, P.WELCOME, P.ERROR, P.ACCEPTED, P.PART)):
                return msg
        return None


def submit(client: Peer, job_id: str, records: list, reducers: int = 1) -> None:
    blobs = [b"opaque job code", pack([[k, v] for k, v in records]),
             msgpack.packb([["mem", 1]])]
    client.send(P.SUBMIT, {"job_id": job_id, "req": 1, "reducers": reducers, "splits": 2},
                blobs)
    assert client.recv().command == P.ACCEPTED


def map_output(pairs):
    return pack([[k for k, _ in pairs], [[v] for _, v in pairs]])


@pytest.mark.parametrize("secured", [False, True], ids=["plain", "curve"])
def test_reports_on_attempts_the_sender_does_not_hold_are_refused(ctx, tmp_path, secured):
    keys = None
    if secured:
        keys = security.cluster_keys(str(tmp_path / "keys"))
        security.generate(keys, "rogue")
        security.authorize(keys, "worker", f"{keys}/rogue.key")
    # the owner sends no heartbeats of its own: a liveness long enough that a slow CURVE
    # handshake cannot expire it mid-test (then its map would rightly be handed to the rogue)
    b = start_broker(ctx, keys_dir=keys, liveness=10.0)
    try:
        client = Peer(ctx, b.address, keys, "client")
        submit(client, "j1", [(0, "mine")])
        owner, rogue = Peer(ctx, b.address, keys, "worker"), Peer(ctx, b.address, keys, "rogue")
        owner.send(P.READY, {"credit": 1})
        assert owner.recv().command == P.WELCOME
        task = owner.recv()
        _, index, attempt, _ = task.body["tasks"][0]
        rogue.send(P.READY, {"credit": 1})
        assert rogue.recv().command == P.WELCOME
        owner_id = owner.sock.getsockopt(zmq.IDENTITY)
        forged = map_output([(0, "forged")])
        # a forged DONE (inline output), a FAILED, and beats that keep the owner "alive"
        rogue.send(P.DONE, {"results": [["j1", "map", index, attempt, {}, 1]]}, [forged])
        rogue.send(P.FAILED, {"job": "j1", "kind": "map", "index": index, "attempt": attempt,
                              "error": "forged"})
        rogue.send(P.HEARTBEAT, {"worker": owner_id})
        # nothing of it counted: no reduce task, and no retry of the map handed out
        assert rogue.recv(timeout=0.5) is None and owner.recv(timeout=0.2) is None
        owner.send(P.DONE, {"results": [["j1", "map", index, attempt, {}, 1]]},
                   [map_output([(0, "mine")])])
        reduce_task = owner.recv() or rogue.recv()
        assert reduce_task.body["tasks"][0][0] == "reduce", reduce_task.body
        segs = reduce_task.body["tasks"][0][3]
        assert unpack(reduce_task.blobs[segs[1]]) == [[0], [["mine"]]]  # not "forged"
        # attempt identifiers cannot be guessed from the last one
        assert reduce_task.body["tasks"][0][2] >> 12 != attempt >> 12
    finally:
        stop_broker(b)


def test_a_malformed_report_fails_its_attempt_and_never_hangs_the_job(ctx):
    b = start_broker(ctx)
    try:
        client = Peer(ctx, b.address, name="client")
        submit(client, "j2", [(0, "a")])
        worker = Peer(ctx, b.address)
        worker.send(P.READY, {"credit": 1})
        assert worker.recv().command == P.WELCOME
        bad_stats = [{"counters": {"n": "many"}}, {"counters": {"": 1}}, {"records": -1},
                     {"counters": {"x": 1 << 62}}, "not a map", {"secs": "slow"}]
        assert b.config.max_attempts == 4
        for stats in bad_stats[:4]:  # each fails its attempt; the fourth, the job
            task = worker.recv()
            assert task is not None, f"no retry after a report with stats {stats!r}"
            _, index, attempt, _ = task.body["tasks"][0]
            worker.send(P.DONE, {"results": [["j2", "map", index, attempt, stats, 1]]},
                        [map_output([(0, "a")])])
        status = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            client.send(P.STATUS, {"job_id": "j2", "req": 9})
            status = client.recv(want=(P.STATUS,))
            if status.body["state"] == P.JOB_FAILED:
                break
            time.sleep(0.05)
        assert status.body["state"] == P.JOB_FAILED
        assert "malformed report" in status.body["error"]["message"]
    finally:
        stop_broker(b)


# -- tenants ------------------------------------------------------------------------------


def test_jobs_belong_to_the_key_that_submitted_them(daemons, keys):
    security.generate(keys, "other")
    security.authorize(keys, "client", f"{keys}/other.key")
    security.generate(keys, "root")
    security.authorize(keys, "admin", f"{keys}/root.key")
    _, address = daemons.broker("--keys", keys, *FAST)  # no worker: jobs stay queued
    with Client(address, keys=keys) as alice, \
            Client(address, keys=keys, key_name="other") as bob, \
            Client(address, keys=keys, key_name="root") as admin:
        handle = alice.submit(WordCount(), RECORDS)
        job_id = handle.job_id
        for act in (lambda: bob.job(job_id).status(), lambda: bob.job(job_id).cancel()):
            with pytest.raises(JobNotFound, match="belongs to another client key"):
                act()
        with pytest.raises(JobNotFound, match="belongs to another client key"):
            bob.job(job_id).release()
        with pytest.raises(PyMapReduceError, match="taken by another client"):
            bob._request(P.SUBMIT, {"job_id": job_id, "splits": 1},
                         (b"code", msgpack.packb([["mem", 1]])))
        assert job_id not in {j["job_id"] for j in bob.jobs()}
        assert job_id in {j["job_id"] for j in alice.jobs()}
        assert job_id in {j["job_id"] for j in admin.jobs()}
        assert handle.status()["state"] == P.JOB_QUEUED  # untouched by bob
        admin.job(job_id).cancel()
        assert handle.status()["state"] == P.JOB_CANCELLED


def test_one_client_cannot_take_every_job_slot(daemons, keys):
    security.generate(keys, "other")
    security.authorize(keys, "client", f"{keys}/other.key")
    _, address = daemons.broker("--keys", keys, *FAST, "--max-jobs-per-client", "2",
                                "--max-mb-per-client", "1")
    with Client(address, keys=keys) as greedy, \
            Client(address, keys=keys, key_name="other") as modest:
        greedy.submit(WordCount(), RECORDS)
        greedy.submit(WordCount(), RECORDS)
        with pytest.raises(PyMapReduceError, match="max-jobs-per-client"):
            greedy.submit(WordCount(), RECORDS)
        modest.submit(WordCount(), RECORDS)  # the other client is not refused
        big = [(i, "x" * 1000) for i in range(2000)]  # 2 MB of in-memory input
        with pytest.raises(PyMapReduceError, match="max-mb-per-client"):
            modest.submit(WordCount(), big)


def test_a_split_of_a_million_byte_ranges_costs_about_its_own_size(daemons):
    broker, address = daemons.broker(*FAST)  # no worker: the job stays queued
    ctx = zmq.Context()
    try:
        splits = [["files", [["/data/input.txt", i, i + 1] for i in range(50_000)]]
                  for _ in range(20)]
        blob = msgpack.packb(splits)
        client = dealer(ctx, address)
        before = rss(broker.pid)
        client.send_multipart(Message(P.SUBMIT, {"job_id": "ranges", "req": 2, "splits": 1},
                                      (b"code", blob)).encode())
        assert client.poll(30_000)
        assert Message.decode(client.recv_multipart()).command == P.ACCEPTED
        grown = rss(broker.pid) - before
        # the message itself, the splits kept packed, one split unpacked at a time
        assert grown < 3 * len(blob) + 16 * MiB, (grown, len(blob))
    finally:
        ctx.destroy(0)


def test_submit_and_cancel_in_a_loop_does_not_grow_the_broker(daemons, keys):
    broker_proc, address = daemons.broker("--keys", keys, *FAST, "--max-jobs-per-client", "2",
                                          "--max-mb-per-client", "64")  # no worker
    big = [(0, "x" * (8 << 20))]  # 8 MiB of in-memory input per job
    with Client(address, keys=keys, timeout=30) as client:
        client.submit(WordCount(), big).cancel()  # warm
        before = rss(broker_proc.pid)
        for _ in range(15):  # 120 MiB submitted; each job's inputs go when it ends
            client.submit(WordCount(), big).cancel()
        assert rss(broker_proc.pid) - before < 48 * MiB


def test_finished_jobs_held_for_one_client_are_bounded(ctx, monkeypatch):
    from pymapreduce.broker import client_api

    monkeypatch.setattr(client_api, "MAX_HELD_PER_CLIENT", 3)
    b = start_broker(ctx)
    try:
        client = Peer(ctx, b.address, name="client")
        for n in range(6):
            submit(client, f"j{n}", [(0, "a")])
            client.send(P.CANCEL, {"job_id": f"j{n}", "req": 2})
            reply = client.recv(want=(P.STATUS,))
            while reply.body.get("req") != 2:  # (status events of the job come too)
                reply = client.recv(want=(P.STATUS,))
            assert reply.body["state"] == P.JOB_CANCELLED
        client.send(P.JOBS, {"req": 3})
        listed = [j["job_id"] for j in client.recv(want=(P.LISTING,)).body["jobs"]]
        assert listed == ["j3", "j4", "j5"]  # the oldest finished ones were released
    finally:
        stop_broker(b)


def test_a_busy_broker_is_asked_again_and_answers_busy_rather_than_copying(ctx, monkeypatch):
    from pymapreduce import BrokerBusy
    from pymapreduce.broker.sink import StoreBusy
    from pymapreduce.client.client import JobHandle

    class Flaky:  # a client whose broker is busy twice, then answers
        timeout = 5.0
        calls = 0

        def _request(self, command, body, patient=False):
            Flaky.calls += 1
            if Flaky.calls <= 2:
                raise BrokerBusy("busy")
            return Message(P.PART, {"part": 0}, (b"",))

    assert JobHandle(Flaky(), "j", None)._fetch({"part": 0}, False).command == P.PART
    assert Flaky.calls == 3
    # the broker's side: a FETCH it cannot serve without copying more is answered "busy"
    b = start_broker(ctx)
    try:
        client = Peer(ctx, b.address, name="client")
        submit(client, "jb", [(0, "a")])
        worker = Peer(ctx, b.address)
        worker.send(P.READY, {"credit": 1})
        assert worker.recv().command == P.WELCOME
        for kind, output in (("map", map_output([(0, "a")])), ("reduce", pack([[0], [1]]))):
            task = worker.recv(want=(P.TASKS,))
            _, index, attempt, _ = task.body["tasks"][0]
            worker.send(P.DONE, {"results": [["jb", kind, index, attempt, {}, 1]]}, [output])
        deadline = time.monotonic() + 5
        while b.jobs["jb"].state != P.JOB_SUCCEEDED and time.monotonic() < deadline:
            time.sleep(0.02)

        def busy(key, refusable=False):
            raise StoreBusy("fetch this output again later")

        monkeypatch.setattr(b.store, "get", busy)
        client.send(P.FETCH, {"job_id": "jb", "part": 0, "req": 7})
        reply = client.recv(want=(P.ERROR, P.PART))
        assert reply.command == P.ERROR and reply.body["code"] == "busy"
        assert b._stopping is False and b._test_thread.is_alive()
    finally:
        stop_broker(b)
