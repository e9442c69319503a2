"""Messages built to cost the receiver far more than they weigh: headers of tiny msgpack
containers, messages of many frames, messages over --max-message-mb in many frames. The
broker reads every message within a budget and decodes headers within limits; a worker
cuts its reports into messages the broker accepts. Units first, then real daemons."""

from __future__ import annotations

import struct
import time

import msgpack
import pytest
import zmq

from pymapreduce import Client, Job, JobFailed, ProtocolError, run_sequential
from pymapreduce.broker.submission import MAX_RANGES, MAX_TASKS
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import security
from pymapreduce.patterns.message import BROKER_LIMITS, BROKER_MAX_FRAMES, PEER_LIMITS, Message
from pymapreduce.patterns.sockets import Oversized, recv_frames
from pymapreduce.workers.reporting import GROUP_HEADER, done_messages

from .conftest import FAST, rss, wait_workers
from .jobs import WordCount

MiB = 1 << 20
RECORDS = [(i, f"w{i % 13} x{i % 4}") for i in range(300)]


def empty_arrays(n: int) -> bytes:
    """``[2, "HELLO", {"x": [[], [], ...]}]``: n empty arrays of one byte each."""
    return (b"\x93" + msgpack.packb(P.PROTOCOL_VERSION) + b"\xa5HELLO\x81\xa1x\xdd"
            + struct.pack(">I", n) + b"\x90" * n)


def nested_empties(size: int) -> bytes:
    """A header of about ``size`` bytes of empty arrays, 1024 to an array (each within
    any array-length limit): the densest way to make a decoder build many objects."""
    inner = b"\xdc" + struct.pack(">H", 1024) + b"\x90" * 1024
    n = size // len(inner)
    return (b"\x93" + msgpack.packb(P.PROTOCOL_VERSION) + b"\xa5HELLO\x81\xa1x\xdd"
            + struct.pack(">I", n) + inner * n)


# -- decoding limits (no sockets) ---------------------------------------------------------


def test_a_header_over_the_cap_is_refused_before_decoding():
    frame = nested_empties(BROKER_LIMITS.header + 8192)
    assert len(frame) > BROKER_LIMITS.header
    with pytest.raises(ProtocolError) as info:
        Message.decode([frame], BROKER_LIMITS)
    assert info.value.cause == "too-large" and info.value.size == len(frame)
    # clients and workers accept larger headers from the broker
    assert Message.decode([frame]).command == P.HELLO


@pytest.mark.parametrize(("header", "what"), [
    (nested_empties(BROKER_LIMITS.header - 4096), "arrays and maps"),  # counted containers
    (b"\x93\x02\xa5HELLO\x81\xa1x\xdd" + struct.pack(">I", 5000) + b"\x90" * 5000, "5000"),
    (b"\x93\x02\xa5HELLO\xdf" + struct.pack(">I", 5000)
     + b"".join(msgpack.packb(i) + b"\xc0" for i in range(5000)), "5000"),
    (b"\x93\x02\xa5HELLO\x81\xa1x\xd4\x01\x00", "ext"),  # ext types never appear in headers
])
def test_the_broker_decodes_headers_within_its_limits(header, what):
    assert len(header) <= BROKER_LIMITS.header
    with pytest.raises(ProtocolError) as info:
        Message.decode([header], BROKER_LIMITS)
    assert what in str(info.value) or "ext" in info.value.cause.lower()


def test_a_tasks_message_with_a_split_of_100k_ranges_still_decodes_on_a_worker():
    ranges = [[f"/data/corpus/shard-{i // 1000:04d}/file-{i:07d}.txt", 0, 4096 + i]
              for i in range(MAX_RANGES)]
    body = {"job": "j1", "reducers": 4, "map_only": False,
            "tasks": [["map", 0, 1, ["files", ranges, {"encoding": "utf-8"}]],
                      ["map", 1, 1, ["files", ranges[:10]]]]}
    frames = Message(P.TASKS, body, (b"code",)).encode()
    assert len(frames[0]) > BROKER_LIMITS.header  # far more than the broker would take
    msg = Message.decode(frames, PEER_LIMITS)
    assert msg.body["tasks"][0][3][1][-1] == ranges[-1] and len(msg.body["tasks"][0][3][1]) \
        == MAX_RANGES


def test_the_frame_budget_fits_every_legitimate_message():
    # a SUBMIT of MAX_TASKS in-memory splits: header, code, split list, one blob each
    assert BROKER_MAX_FRAMES >= MAX_TASKS + 3
    # an OUTPUT of MAX_TASKS reducers: header and one partition each
    assert BROKER_MAX_FRAMES >= MAX_TASKS + 1


# -- a worker's reports, cut to fit (no sockets) --------------------------------------------


def report(i: int, counters: int = 0, name_len: int = 200, nblobs: int = 0) -> list:
    stats = {"records": 1, "bytes": 10, "secs": 0.001}
    if counters:
        stats["counters"] = {f"{i}-{c}-".ljust(name_len, "é"): c for c in range(counters)}
    return ["job-1", "map", i, 1, stats, nblobs]


def test_reports_with_many_counters_go_in_several_done_messages_the_broker_accepts():
    reports = [report(i, counters=1000, nblobs=1) for i in range(64)]  # ~300 KB each
    blobs = [f"out-{i}".encode() for i in range(64)]
    messages = done_messages(reports, blobs, 1 << 30)
    assert len(messages) > 1
    seen, outs = [], []
    for msg in messages:
        frames = msg.encode()
        assert len(frames[0]) <= BROKER_LIMITS.header
        decoded = Message.decode(frames, BROKER_LIMITS)  # the broker takes every one
        assert decoded.command == P.DONE
        results = decoded.body["results"]
        assert len(decoded.blobs) == sum(r[5] for r in results)
        seen += [r[2] for r in results]
        outs += list(decoded.blobs)
    assert seen == list(range(64)) and outs == blobs  # in order, each with its outputs
    # small reports still share one message
    assert len(done_messages([report(i, nblobs=1) for i in range(64)], blobs, 1 << 30)) == 1


def test_reports_are_cut_by_frames_and_bytes_too():
    # two map tasks of 100,000 reducers, every partition inline (and empty)
    reports = [report(0, nblobs=MAX_TASKS), report(1, nblobs=MAX_TASKS)]
    messages = done_messages(reports, [b""] * (2 * MAX_TASKS), 1 << 30)
    assert [len(m.blobs) for m in messages] == [MAX_TASKS] * 2
    for m in messages:  # (the small ones share a frame; the broker takes each)
        assert len(Message.decode(m.encode(), BROKER_LIMITS).blobs) == MAX_TASKS
    # a broker started with a small --max-message-mb: 64 KiB of inline outputs each
    blobs = [b"x" * 60_000 for _ in range(64)]
    messages = done_messages([report(i, nblobs=1) for i in range(64)], blobs, MiB)
    assert len(messages) > 1
    assert all(sum(len(f) for f in m.encode()) <= MiB for m in messages)
    assert sum(len(m.body["results"]) for m in messages) == 64


def test_a_report_too_large_for_any_message_fails_its_task_with_the_reason():
    reports = [report(0), report(1, counters=2000, name_len=300), report(2)]
    messages = done_messages(reports, [], 1 << 30)
    assert [m.command for m in messages] == [P.FAILED, P.DONE]
    failed = messages[0].body
    assert failed["index"] == 1 and "more than the broker accepts" in failed["error"]
    assert [r[2] for r in messages[1].body["results"]] == [0, 2]
    assert GROUP_HEADER < BROKER_LIMITS.header


# -- reading within a budget (real sockets on loopback) ------------------------------------


@pytest.fixture
def pair():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    yield push, pull
    ctx.destroy(0)


def test_a_message_over_the_budget_is_counted_and_dropped_and_the_next_one_is_whole(pair):
    push, pull = pair
    push.send_multipart([b"head"] + [b""] * 50_000)
    push.send_multipart([b"head", b"a" * 600_000, b"b" * 600_000])
    push.send_multipart([b"next", b"small", b"z" * 10_000])
    assert pull.poll(10_000)
    with pytest.raises(Oversized) as info:
        recv_frames(pull, max_frames=1000, max_bytes=MiB)
    assert info.value.frames == 50_001 and info.value.head.bytes == b"head"
    assert pull.poll(10_000)
    with pytest.raises(Oversized) as info:
        recv_frames(pull, max_frames=1000, max_bytes=MiB)
    assert info.value.frames == 3 and info.value.size == 1_200_004
    assert pull.poll(10_000)
    route, frames = recv_frames(pull, max_frames=1000, max_bytes=MiB)
    assert route == [] and [bytes(f.buffer if hasattr(f, "buffer") else f) for f in frames] \
        == [b"next", b"small", b"z" * 10_000]
    # the header stays a zmq.Frame (its peer's key is read from it); tiny frames are bytes
    assert isinstance(frames[0], zmq.Frame) and type(frames[1]) is bytes
    assert isinstance(frames[2], zmq.Frame)


# -- against a real broker -------------------------------------------------------------------


def hwm(pid: int) -> int:
    """Peak resident bytes of a process so far (Linux /proc)."""
    return _status(pid, "VmHWM:")




def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def dealer(ctx: zmq.Context, address: str, keys: str | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    if keys:
        security.PeerKeys.load(keys, "client").apply(sock)
    sock.connect(address)
    return sock


def reply(sock: zmq.Socket, timeout: float = 60.0) -> Message:
    assert sock.poll(int(timeout * 1000)), "the broker did not answer"
    return Message.decode(sock.recv_multipart())


def small_job(address: str, keys: str | None = None) -> None:
    with Client(address, timeout=30, keys=keys) as client:
        assert client.submit(WordCount(), RECORDS, map_tasks=4).result(60) == run_sequential(
            WordCount(), RECORDS)


@pytest.fixture
def zctx():
    c = zmq.Context()
    yield c
    c.destroy(0)


@pytest.mark.timeout(180)
def test_headers_of_empty_arrays_cost_the_broker_little_and_are_refused(daemons, zctx):
    broker, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    for header, code in [(empty_arrays(8 * MiB), "too-large"),  # 1 byte each on the wire
                         (nested_empties(BROKER_LIMITS.header - 4096), "malformed")]:
        before = rss(broker.pid)
        attacker = dealer(zctx, address)
        attacker.send(header)
        answer = reply(attacker)
        assert answer.command == P.ERROR and answer.body["code"] == code
        # unbounded, these cost ~64 bytes of broker memory per byte sent (8 MiB: 600 MiB)
        assert hwm(broker.pid) - before < 64 * MiB
        attacker.close()
    assert broker.poll() is None
    small_job(address)


@pytest.mark.timeout(180)
def test_a_message_of_many_empty_frames_is_dropped_unbuilt(daemons, zctx):
    broker, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    frames = 2 * BROKER_MAX_FRAMES
    before = rss(broker.pid)
    attacker = dealer(zctx, address)
    attacker.send_multipart([Message(P.HELLO, {"req": "many"}).encode()[0]] + [b""] * frames)
    answer = reply(attacker)
    assert answer.command == P.ERROR and answer.body["code"] == "too-large"
    assert answer.body["req"] == "many" and f"{frames + 1} frames" in answer.body["message"]
    # ZeroMQ itself holds the message whole until it is read (64 bytes a frame: ~13 MiB);
    # a zmq.Frame per frame cost ~200 bytes more each
    assert hwm(broker.pid) - before < 64 * MiB
    # the same on the data plane, where no one can be answered
    probe = dealer(zctx, address)
    probe.send_multipart(Message(P.READY, {"credit": 1}).encode())
    sink = reply(probe).body["sink"]
    probe.send_multipart(Message(P.BYE).encode())
    push = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(sink)
    push.send_multipart([Message(P.OUTPUT, {"job": "x"}).encode()[0]] + [b""] * frames)
    small_job(address)
    assert broker.poll() is None and hwm(broker.pid) - before < 64 * MiB


@pytest.mark.parametrize("secured", [False, True], ids=["plain", "curve"])
def test_max_message_mb_bounds_a_whole_message_not_each_frame(daemons, zctx, tmp_path, secured):
    keys = security.cluster_keys(str(tmp_path / "keys")) if secured else None
    extra = ("--keys", keys) if keys else ()
    broker, address = daemons.broker(*FAST, "--max-message-mb", "1", *extra)
    daemons.worker(address, 1, *extra)
    wait_workers_keyed(address, 1, keys)
    attacker = dealer(zctx, address, keys)
    blob = b"y" * (9 * MiB // 10)  # each frame under the limit, the message 36 MiB
    attacker.send_multipart(Message(P.HELLO, {"req": "big"}, (blob,) * 40).encode())
    answer = reply(attacker)
    assert answer.command == P.ERROR and answer.body["code"] == "too-large"
    assert answer.body["req"] == "big" and "max-message-mb" in answer.body["message"]
    small_job(address, keys)  # jobs whose messages fit still run
    assert broker.poll() is None


def wait_workers_keyed(address: str, n: int, keys: str | None) -> None:
    deadline = time.monotonic() + 20
    with Client(address, keys=keys, timeout=20) as client:
        while client.info()["workers"] < n:
            assert time.monotonic() < deadline, "workers did not register"
            time.sleep(0.02)


# -- legitimate jobs near the limits --------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_job_whose_reports_carry_1000_long_counters_each_completes(daemons):
    class ManyCounters(Job):
        def map(self, key, value):
            for c in range(1000):
                self.count(f"{c:04d}".ljust(200, "é"), 1)  # 200 characters, ~400 bytes
            yield value % 7, 1

        def reduce(self, key, values):
            return sum(values)

    records = [(i, i) for i in range(48)]
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    with Client(address, timeout=60) as client:
        # 48 reports of ~400 KB: a single DONE would be refused by the broker
        handle = client.submit(ManyCounters(), records, map_tasks=48, reducers=2)
        assert handle.result(120) == run_sequential(ManyCounters(), records)
        counters = handle.counters
    assert len(counters) == 1000 and set(counters.values()) == {48}


@pytest.mark.timeout(120)
def test_task_output_over_max_message_fails_the_job_with_the_reason(daemons):
    class Big(Job):
        def map(self, key, value):
            yield key, "x" * (2 * MiB)

    _, address = daemons.broker(*FAST, "--max-message-mb", "1")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address, timeout=30) as client:
        handle = client.submit(Big(), [(1, 1)], map_tasks=1, reducers=1)
        with pytest.raises(JobFailed, match="more than the broker accepts in one message"):
            handle.result(60)
