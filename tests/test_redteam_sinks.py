"""Sinks attacked as a hostile or broken peer would: real sink processes on loopback, driven
by a hand-made broker (a ROUTER that answers SINK with WELCOME and ASSIGN) and hand-made
workers (DEALERs speaking PUT/GET), plus the worker's SinkClient against a lying sink and
the store against damaged state directories (sinks/, workers/shuffle.py; docs/sinks.md).

What each test asserts is what a user relies on: a sink stays up whatever a peer sends, a
malformed request gets an error (never silence), a reducer never takes a wrong or short
answer for a right one, and a damaged state directory costs segments, never wrong bytes."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import zmq

from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message

from .conftest import ROOT, pmr, read_line

SINK_READY = re.compile(r"pymapreduce sink ready: (\S+)")
JOB = "job-redteam"
PARTS = 8  # the assigned step's partitions (a PUT beyond them is refused)


class FakeBroker:
    """A ROUTER posing as the broker: welcomes every sink and assigns it step 0 of JOB."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.registrations: list[dict] = []

    def serve(self, until: int = 1, timeout_ms: int = 20000) -> None:
        """Answer SINKs until ``until`` registrations have come."""
        while len(self.registrations) < until:
            assert self.sock.poll(timeout_ms), "no sink registered"
            route, *frames = self.sock.recv_multipart()
            msg = Message.decode(frames)
            if msg.command == P.SINK:
                self.registrations.append(msg.body)
                for reply in (Message(P.WELCOME, {"running": [JOB]}),
                              Message(P.ASSIGN, {"steps": [[JOB, 0, PARTS]]})):
                    self.sock.send_multipart([route, *reply.encode()])


class Peer:
    """A hand-made worker: one DEALER to a sink."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    def ask(self, *frames, timeout_ms: int = 10000) -> Message:
        self.sock.send_multipart(list(frames))
        assert self.sock.poll(timeout_ms), "the sink did not answer"
        return Message.decode(self.sock.recv_multipart())

    def put(self, req: int, map_index: int, attempt: int, parts: list, blobs: tuple,
            job: str = JOB, step: int = 0) -> Message:
        return self.ask(*Message(P.PUT, {"req": req, "job": job, "step": step,
                                         "map": map_index, "attempt": attempt,
                                         "parts": parts}, blobs).encode())

    def get(self, req: int, part: int, segs: list, job: str = JOB) -> Message:
        return self.ask(*Message(P.GET, {"req": req, "job": job, "step": 0, "part": part,
                                         "segs": segs}).encode())


@pytest.fixture
def sink(tmp_path):
    """A real sink daemon for a fake broker: (process, its address, the fake broker, ctx,
    its stderr log path, a function to start another sink)."""
    ctx = zmq.Context()
    broker = FakeBroker(ctx)
    procs: list[subprocess.Popen] = []

    def start(*extra: str) -> tuple[subprocess.Popen, str]:
        log = open(tmp_path / f"sink{len(procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(pmr("sink", "--connect", broker.address, "--log-level",
                                    "WARNING", "--parent-pid", str(os.getpid()), *extra),
                                stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        log.close()
        procs.append(proc)
        address = read_line(proc, SINK_READY).group(1)
        broker.serve(until=len(broker.registrations) + 1)
        return proc, address

    proc, address = start()
    try:
        yield proc, address, broker, ctx, start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        ctx.destroy(linger=0)  # (every socket a test made)


def round_trip(peer: Peer, map_index: int = 7, attempt: int = 1234) -> None:
    """The sink still stores and serves a well-formed PUT/GET (the assigned step)."""
    assert peer.put(900 + map_index, map_index, attempt, [3], (b"payload",)).command \
        == P.STORED
    reply = peer.get(950 + map_index, 3, [[map_index, attempt]])
    assert reply.command == P.SEGS and [bytes(b) for b in reply.blobs] == [b"payload"]


# -- malformed requests -----------------------------------------------------------------
@pytest.mark.parametrize("body,blobs", [
    ({"req": 1, "job": JOB, "step": 0, "map": 1 << 32, "attempt": 1, "parts": [0]},
     (b"x",)),  # a map number past the index record's 32 bits
    ({"req": 1, "job": JOB, "step": 0, "map": (1 << 63) - 1, "attempt": 1, "parts": [0]},
     (b"x",)),
    ({"req": 1, "job": JOB, "step": 0, "map": 0, "attempt": -1, "parts": [0]}, (b"x",)),
    ({"req": 1, "job": JOB, "step": 0, "map": 0, "attempt": 1, "parts": [1 << 40]}, (b"x",)),
    ({"req": 1, "job": JOB, "step": 0, "map": 0, "attempt": 1, "parts": [True]}, (b"x",)),
    ({"req": 1, "job": JOB, "step": 0, "map": 0, "attempt": 1, "parts": [0, 1]}, (b"x",)),
    ({"req": 1, "job": JOB, "step": 0, "map": 0, "attempt": 1, "parts": [0]}, (b"x", b"y")),
    ({"req": 1, "job": JOB, "step": 0, "map": 0, "attempt": 1, "parts": "0"}, (b"x",)),
    ({"req": 1, "job": JOB, "step": 0, "map": "0", "attempt": 1, "parts": [0]}, (b"x",)),
    ({"req": 1, "job": 7, "step": 0, "map": 0, "attempt": 1, "parts": [0]}, (b"x",)),
    ({"req": 1, "job": JOB, "step": 1.5, "map": 0, "attempt": 1, "parts": [0]}, (b"x",)),
])
def test_a_malformed_put_gets_an_error_and_the_sink_stays_up(sink, body, blobs):
    proc, address, _, ctx, _ = sink
    peer = Peer(ctx, address)
    reply = peer.ask(*Message(P.PUT, body, blobs).encode())
    assert reply.command == P.ERROR, reply
    assert proc.poll() is None, "the sink died"
    round_trip(peer)
    assert proc.poll() is None


@pytest.mark.parametrize("segs", [
    [[0]], [[0, 1, 2]], [["0", 1]], [[0, "1"]], [0], "segs", [[0, 1.5]], [[None, None]],
    [[True, 1]], [[0, -1]], [[-1, 1]], [[0, 1]] * 5000, [{"0": 1}],
])
def test_a_malformed_get_gets_an_error_or_missing_and_the_sink_stays_up(sink, segs):
    proc, address, _, ctx, _ = sink
    peer = Peer(ctx, address)
    reply = peer.ask(*Message(P.GET, {"req": 1, "job": JOB, "step": 0, "part": 0,
                                      "segs": segs}).encode())
    assert reply.command in (P.ERROR, P.SEGS), reply
    if reply.command == P.SEGS:  # (only well-formed pairs may be answered "missing")
        assert not reply.blobs
    assert proc.poll() is None, "the sink died"
    round_trip(peer)


@pytest.mark.parametrize("frames", [
    [b""], [b"\x93\x01\xa3PUT\x80"], [b"\x93\x01\xa3GET\xc0"], [b"\x90"],
    [b"\x93\x63\xa3PUT\x80"], [b"\xdd\xff\xff\xff\xff"], [b"\x93\x01\xa3GET\x81\xa3req\xcb"],
])
def test_garbage_frames_get_an_error_and_the_sink_stays_up(sink, frames):
    proc, address, _, ctx, _ = sink
    peer = Peer(ctx, address)
    assert peer.ask(*frames).command == P.ERROR
    assert proc.poll() is None
    round_trip(peer)


def test_a_peer_that_floods_gets_and_never_reads_costs_no_one_else(sink):
    proc, address, _, ctx, _ = sink
    peer = Peer(ctx, address)
    round_trip(peer, 1, 11)
    big = b"z" * (4 << 20)
    for m in range(4):
        assert peer.put(100 + m, 20 + m, 5, [3], (big,)).command == P.STORED
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.setsockopt(zmq.RCVHWM, 1)
    flood.setsockopt(zmq.RCVBUF, 4096)
    flood.connect(address)
    try:
        get_ = Message(P.GET, {"req": 1, "job": JOB, "step": 0, "part": 3,
                               "segs": [[20 + m, 5] for m in range(4)]})
        for _ in range(400):
            flood.send_multipart(get_.encode())
        # a well-behaved reducer is still answered, whole
        reply = peer.get(2, 3, [[20 + m, 5] for m in range(4)])
        assert reply.command == P.SEGS and reply.body["got"] >= 1
        assert all(bytes(b) == big for b in reply.blobs)
        round_trip(peer, 2, 12)
    finally:
        flood.close(0)
    assert proc.poll() is None


def test_a_put_under_a_forged_attempt_does_not_change_what_the_real_attempt_reads(sink):
    proc, address, _, ctx, _ = sink
    honest, rogue = Peer(ctx, address), Peer(ctx, address)
    assert honest.put(1, 4, 777, [0, 2], (b"honest-0", b"honest-2")).command == P.STORED
    for attempt in (776, 778, 0, (1 << 63) - 1):
        assert rogue.put(2, 4, attempt, [0, 2], (b"forged", b"forged")).command == P.STORED
    reply = honest.get(3, 0, [[4, 777]])
    assert [bytes(b) for b in reply.blobs] == [b"honest-0"]
    reply = honest.get(4, 2, [[4, 777], [4, 779]])
    assert [bytes(b) for b in reply.blobs] == [b"honest-2"] and reply.body["missing"] == [4]


def test_a_put_for_a_partition_the_step_does_not_have_is_refused(sink):
    """The broker names each assigned step's partitions: a peer cannot make the sink
    create files for a million partitions of a step that has eight."""
    _, address, _, ctx, _ = sink
    peer = Peer(ctx, address)
    for part in (PARTS, 1 << 19):
        reply = peer.put(40, 0, 5, [0, part], (b"a", b"b"))
        assert reply.command == P.ERROR and reply.body["code"] == "not-assigned"
    round_trip(peer)


def test_an_index_record_cut_short_is_dropped_and_later_records_stay_aligned(tmp_path):
    """A sink killed while writing an index record: the restarted one truncates the
    partial record, so what it appends after is read back at the next restart too."""
    from pymapreduce.sinks.store import SegmentStore

    root = str(tmp_path / "state")
    store = SegmentStore(root)
    store.put("j", 0, 1, 11, 0, b"first")
    store.close()
    [idx] = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".idx")]
    with open(idx, "ab") as f:
        f.write(b"\x01" * 13)  # a record cut short
    store = SegmentStore(root)
    store.put("j", 0, 2, 22, 0, b"second")
    store.close()
    store = SegmentStore(root)
    try:
        assert store.get("j", 0, 0, 1, 11) == b"first"
        assert store.get("j", 0, 0, 2, 22) == b"second"
    finally:
        store.close()
