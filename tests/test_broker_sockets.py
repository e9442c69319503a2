"""Layer 2: a real broker on loopback sockets, driven by hand-made peers."""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq

from pymapreduce.broker import Broker, BrokerConfig
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.records import pack, unpack


@pytest.fixture
def broker():
    b = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", heartbeat_interval=0.2, liveness=1.0))
    b.bind()
    thread = threading.Thread(target=b.serve_forever, daemon=True)
    thread.start()
    try:
        yield b
    finally:
        b.stop()
        thread.join(5)


class Peer:
    """A DEALER speaking the protocol by hand."""

    def __init__(self, ctx, address, identity=None):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.connect(address)

    def send(self, command, body=None, blobs=()):
        self.sock.send_multipart(Message(command, body or {}, tuple(blobs)).encode())

    def recv(self, timeout=5.0, skip=(P.STATUS, P.HEARTBEAT)):
        """The next message not in ``skip`` (None after ``timeout``)."""
        while self.sock.poll(int(timeout * 1000)):
            msg = Message.decode(self.sock.recv_multipart())
            if msg.command not in skip:
                return msg
        return None

    def wait_state(self, job_id, state, timeout=5.0):
        while self.sock.poll(int(timeout * 1000)):
            msg = Message.decode(self.sock.recv_multipart())
            if msg.command == P.STATUS and msg.body.get("state") == state:
                return msg.body
        raise AssertionError(f"{job_id} never reached {state}")


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def submit(client, job_id, chunks, reducers=1):
    blobs = [b"opaque job code"] + [pack([[k, v] for k, v in c]) for c in chunks]
    blobs.append(msgpack.packb([["mem", i + 1] for i in range(len(chunks))]))
    client.send(P.SUBMIT, {"job_id": job_id, "req": 1, "name": "t", "reducers": reducers,
                           "map_only": False, "splits": len(blobs) - 1}, blobs)
    reply = client.recv()
    assert reply.command == P.ACCEPTED
    return reply


def map_output(records):
    """What a worker would send for a word-count map task with one reducer."""
    groups = {}
    for _, line in records:
        for w in line.split():
            groups.setdefault(w, []).append(1)
    return pack([list(groups), list(groups.values())])


def test_tasks_go_only_to_workers_that_announced_credit(broker, ctx):
    client = Peer(ctx, broker.address)
    silent = Peer(ctx, broker.address)  # connected, never says READY
    silent.send(P.HEARTBEAT)  # even talking is not asking for work
    submit(client, "j1", [[(0, "a b")], [(1, "b")], [(2, "c")]])
    assert silent.recv(timeout=0.5, skip=(P.RECONNECT, P.HEARTBEAT)) is None

    worker = Peer(ctx, broker.address)
    worker.send(P.READY, {"credit": 1})
    assert worker.recv().command == P.WELCOME
    tasks = worker.recv()
    assert tasks.command == P.TASKS
    assert len(tasks.body["tasks"]) == 1  # credit 1: one task, not three
    assert tasks.blobs[tasks.body["code"]] == b"opaque job code"
    assert worker.recv(timeout=0.3) is None  # nothing more until it reports


def test_first_committed_attempt_wins_and_stale_reports_are_dropped(broker, ctx):
    client = Peer(ctx, broker.address)
    submit(client, "j2", [[(0, "x y")]])
    w1 = Peer(ctx, broker.address)
    w1.send(P.READY, {"credit": 1})
    w1.recv()  # WELCOME
    task = w1.recv()
    _, index, attempt, _ = task.body["tasks"][0]
    # a report for an attempt that was never handed out is ignored
    w1.send(P.DONE, {"results": [["j2", "map", index, attempt + 5, {}, 1]]},
            [map_output([(0, "bogus")])])
    w1.send(P.DONE, {"results": [["j2", "map", index, attempt, {"records": 1}, 1]]},
            [map_output([(0, "x y")])])
    reduce_task = w1.recv()
    assert reduce_task.body["tasks"][0][0] == "reduce"
    segs = reduce_task.body["tasks"][0][3]
    merged = [unpack(reduce_task.blobs[segs[1] + i]) for i in range(segs[2])]
    assert merged == [[["x", "y"], [[1], [1]]]]  # the bogus report left no trace
    _, r_index, r_attempt, _ = reduce_task.body["tasks"][0]
    out = pack([["x", "y"], [1, 1]])
    w1.send(P.DONE, {"results": [["j2", "reduce", r_index, r_attempt, {}, 1]]}, [out])
    # a late duplicate of the same commit changes nothing
    w1.send(P.DONE, {"results": [["j2", "reduce", r_index, r_attempt, {}, 1]]},
            [pack([["x"], [999]])])
    status = client.wait_state("j2", "succeeded")
    assert status["records"] == 1
    client.send(P.FETCH, {"job_id": "j2", "part": 0, "req": 2})
    part = client.recv()
    assert part.command == P.PART and unpack(part.blobs[0]) == [["x", "y"], [1, 1]]


def test_a_silent_worker_loses_its_tasks_to_another(broker, ctx):
    client = Peer(ctx, broker.address)
    submit(client, "j3", [[(0, "a")]])
    dead = Peer(ctx, broker.address)
    dead.send(P.READY, {"credit": 1})
    dead.recv()
    first = dead.recv()
    assert first.command == P.TASKS
    live = Peer(ctx, broker.address)
    live.send(P.READY, {"credit": 1})
    live.recv()
    # `dead` never speaks again; `live` keeps beating until the task comes to it
    for _ in range(30):
        live.send(P.HEARTBEAT)
        msg = live.recv(timeout=0.2)
        if msg is not None and msg.command == P.TASKS:
            break
    else:
        raise AssertionError("the silent worker's task was never re-queued")
    again, before = msg.body["tasks"][0][2], first.body["tasks"][0][2]
    assert again != before and again & 0xFFF == (before & 0xFFF) + 1  # a new attempt
    # the silent worker, back from the dead, is told to register again
    dead.send(P.DONE, {"results": [["j3", "map", 0, 1, {}, 1]]}, [map_output([(0, "a")])])
    assert dead.recv(skip=(P.HEARTBEAT, P.STATUS)).command == P.RECONNECT


@pytest.mark.parametrize(
    "frames",
    [
        [b"\xc1\xc1garbage"],
        [b""],
        [Message("NOPE", {}).encode()[0]],
        [b"\x93\x63\xa5READY\x80"],  # protocol version 99
    ],
)
def test_malformed_messages_get_an_error_and_the_broker_keeps_serving(broker, ctx, frames):
    rogue = Peer(ctx, broker.address)
    rogue.sock.send_multipart(frames)
    reply = rogue.recv()
    assert reply.command == P.ERROR
    client = Peer(ctx, broker.address)
    client.send(P.HELLO, {"req": 7})
    info = client.recv()
    assert info.command == P.INFO and info.body["req"] == 7


def test_requests_about_unknown_jobs_are_refused_clearly(broker, ctx):
    client = Peer(ctx, broker.address)
    for command in (P.STATUS, P.WATCH, P.FETCH, P.CANCEL):
        client.send(command, {"job_id": "nope", "part": 0, "req": 3})
        reply = client.recv()
        assert reply.command == P.ERROR and reply.body["code"] == "no-such-job"
    client.send(P.SUBMIT, {"job_id": "bad", "req": 4, "splits": 1})  # no blobs
    reply = client.recv()
    assert reply.command == P.ERROR and "no job code" in reply.body["message"]


def test_on_a_secured_broker_only_the_attempts_worker_may_deliver_its_output(ctx, tmp_path):
    from pymapreduce.patterns import security

    keys = security.cluster_keys(str(tmp_path / "keys"))
    security.generate(keys, "other")
    security.authorize(keys, "worker", f"{keys}/other.key")
    b = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", keys_dir=keys), context=ctx)
    b.bind()
    thread = threading.Thread(target=b.serve_forever, daemon=True)
    thread.start()
    try:
        def peer(kind, name):
            sock = ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            security.PeerKeys.load(keys, name).apply(sock)
            return sock

        client = Peer(ctx, b.address)
        client.sock.close()
        client.sock = peer(zmq.DEALER, "client")
        client.sock.connect(b.address)
        submit(client, "j9", [[(0, "mine")]])
        owner, thief = Peer(ctx, b.address), Peer(ctx, b.address)
        for p, name in ((owner, "worker"), (thief, "other")):
            p.sock.close()
            p.sock = peer(zmq.DEALER, name)
            p.sock.connect(b.address)
        owner.send(P.READY, {"credit": 1})
        sink = owner.recv().body["sink"]
        task = owner.recv()
        _, index, attempt, _ = task.body["tasks"][0]
        thief.send(P.READY, {"credit": 1})
        assert thief.recv().command == P.WELCOME
        header = {"job": "j9", "kind": "map", "index": index, "attempt": attempt}
        stolen = peer(zmq.PUSH, "other")
        stolen.connect(sink)
        stolen.send_multipart(Message(P.OUTPUT, header, (map_output([(0, "forged")]),)).encode())
        owner.send(P.DONE, {"results": [["j9", "map", index, attempt, {}, -1]]})
        assert owner.recv(timeout=0.5) is None and thief.recv(timeout=0.1) is None  # no commit
        real = peer(zmq.PUSH, "worker")
        real.connect(sink)
        real.send_multipart(Message(P.OUTPUT, header, (map_output([(0, "mine")]),)).encode())
        reduce_task = owner.recv(timeout=2) or thief.recv(timeout=2)
        segs = reduce_task.body["tasks"][0][3]
        assert unpack(reduce_task.blobs[segs[1]]) == [["mine"], [[1]]]
    finally:
        b.stop()
        thread.join(5)


def test_a_data_plane_message_is_not_held_by_the_broker_once_handled(broker):
    """A sink's OUTPUT is read whole at once (the data plane has no shares): the broker
    must keep nothing of it once handled. Its frames (up to --max-message-mb) used to stay
    referenced from the broker until its next message, all the time it was idle, after
    the store had sent them on or spilled them."""
    handled = threading.Event()
    on_data = broker._on_data

    def observed(*args):
        try:
            on_data(*args)
        finally:
            handled.set()

    broker._on_data = observed  # (_drain looks it up for each batch)
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(broker.data_address)
        push.send_multipart(Message(P.OUTPUT, {"job": "none"},
                                    (b"x" * 100_000, b"y" * 10, b"z" * 10)).encode())
        assert handled.wait(30)
        assert broker._whole is None
        push.close(0)
    finally:
        ctx.destroy(0)
