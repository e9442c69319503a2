"""The task path made cheaper (issue 13): small blobs sharing a frame, forged layouts
refused; a worker whose task capture stays installed still keeps each attempt's output
apart and puts back what a task did to ``sys.stdout``; attempt ids from the pooled random
source; against real daemons where it matters."""

from __future__ import annotations

import logging
import sys

import msgpack
import pytest
import zmq

from pymapreduce import Client, Job
from pymapreduce.broker.tasks import ATTEMPT_BITS, ATTEMPT_RANDOM_BITS, JobState
from pymapreduce.errors import ProtocolError
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import BROKER_LIMITS, PACK_BELOW, Message

from .conftest import FAST, wait_workers


def _forged(layout: bytes, *frames: bytes) -> list:
    header = msgpack.packb([P.PROTOCOL_VERSION, P.DONE, {"results": []}, layout],
                           use_bin_type=True)
    return [header, *frames]


def _ints(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little", signed=True) for v in values)


def test_small_blobs_share_a_frame_and_come_back_in_order():
    big = b"B" * PACK_BELOW
    blobs = (b"a", b"", big, b"cc", memoryview(b"dd"), b"e" * (PACK_BELOW - 1))
    frames = Message(P.DONE, {"results": []}, blobs).encode()
    assert len(frames) == 3 and frames[2] is big  # header, the small ones, the big one
    back = Message.decode(frames, BROKER_LIMITS).blobs
    assert [bytes(b) for b in back] == [bytes(b) for b in blobs]
    # one small blob, or none, keeps the plain layout (nothing to share)
    assert len(Message(P.DONE, {}, (b"a", big)).encode()) == 3
    assert len(Message(P.DONE, {}, (big, big)).encode()) == 3


@pytest.mark.parametrize("frames", [
    _forged(_ints(2, 2), b"abc"),           # the lengths do not add up to the frame
    _forged(_ints(5), b"ab"),               # a blob past the frame's end
    _forged(_ints(1, -2), b"a"),            # a negative length
    _forged(_ints(1, -1), b"a"),            # a blob of its own frame that is not there
    _forged(_ints(1), b"a", b"extra"),      # a frame no blob names
    _forged(b"\x01\x00\x00", b"a"),         # not a whole number of int32
    _forged(_ints(1)),                      # no shared frame at all
    [msgpack.packb([P.PROTOCOL_VERSION, P.DONE, {}, "a string"], use_bin_type=True), b"a"],
])
def test_a_forged_layout_is_refused(frames):
    with pytest.raises(ProtocolError):
        Message.decode(frames, BROKER_LIMITS)


def test_a_layout_of_too_many_blobs_is_refused_before_they_are_made():
    n = BROKER_LIMITS.blobs + 1
    with pytest.raises(ProtocolError, match="blobs"):
        Message.decode(_forged(_ints(*([0] * n)), b""), BROKER_LIMITS)


def test_the_broker_drops_a_forged_layout_and_serves_on(daemons):
    _, address = daemons.broker(*FAST)
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        for frames in (_forged(_ints(3, 3), b"ab"), _forged(_ints(-7), b"")):
            sock.send_multipart(frames)
            assert sock.poll(10_000)
            reply = Message.decode(sock.recv_multipart())
            assert reply.command == P.ERROR and reply.body["code"] == "malformed"
        sock.send_multipart(Message(P.HELLO, {"req": 1}).encode())  # still serving
        assert sock.poll(10_000)
        assert Message.decode(sock.recv_multipart()).body.get("req") == 1
        sock.close()
    finally:
        ctx.term()


class Rewires(Job):
    """Each task prints, logs, and (task 1) leaves ``sys.stdout`` pointing elsewhere."""

    def map(self, key, value):
        print(f"task {key} printed")
        logging.getLogger("rewires").warning("task %s logged", key)
        if key == 1:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 (left behind on purpose)
        yield key, value


def test_each_attempt_keeps_its_own_output_when_the_capture_stays_installed(daemons):
    _, address = daemons.broker(*FAST, "--backup-after", "off")
    daemons.worker(address, 1)  # one process: every task runs after the one before
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(Rewires(), [(i, i) for i in range(4)], map_tasks=4,
                               reducers=0)
        assert sorted(handle.result(60)) == [(i, i) for i in range(4)]
        logs = {e["task"]: e["text"] for e in handle.logs()}
    for i in range(4):  # task 1's rewiring did not swallow tasks 2 and 3's output
        text = logs[f"map-{i}"]
        assert f"task {i} printed\n" in text and f"task {i} logged" in text
        assert all(f"task {j} " not in text for j in range(4) if j != i)


def test_attempt_ids_carry_fresh_random_bits():
    job = JobState("j", "j", b"code", [["mem", b""]] * 2000, 0, True, None, 0.0)
    ids = [t.start(b"w") for t in job.maps]
    assert len(set(ids)) == len(ids)
    assert all(i & ((1 << ATTEMPT_BITS) - 1) == 1 for i in ids)  # the attempt's number
    assert max(ids).bit_length() <= ATTEMPT_BITS + ATTEMPT_RANDOM_BITS
    assert len({i >> ATTEMPT_BITS for i in ids}) == len(ids)  # (2000: several refills)


def test_blobs_cut_from_a_received_view_are_copies_of_their_own_bytes():
    blobs = tuple(bytes([i % 256]) * (i % 900) for i in range(200))
    frames = Message(P.DONE, {}, blobs).encode()
    received = [frames[0], zmq.Frame(frames[1]).buffer]  # as ZeroMQ hands a big frame over
    back = Message.decode(received, BROKER_LIMITS).blobs
    assert back == blobs
    assert all(type(b) is bytes for b in back)  # none pins the whole frame


def _tasks_message(items: list, blobs: tuple) -> Message:
    """A TASKS message as the worker receives it (through the wire encoding)."""
    body = {"job": "j", "reducers": 0, "map_only": True, "code": 0, "tasks": items}
    return Message.decode(Message(P.TASKS, body, blobs).encode())


def test_a_worker_queues_each_well_formed_task_and_drops_the_malformed_ones(caplog):
    """The worker reads a TASKS message's items without an object per item in the common
    form, and hands any other form to ``TaskItem.from_wire``: both agree, and a malformed
    item (of any type, an unhashable kind included) is dropped with a warning while the
    others are queued."""
    import cloudpickle

    from pymapreduce.patterns.wire import AttemptKey, TaskItem
    from pymapreduce.workers.worker import Worker

    from .jobs import WordCount

    items = [["map", 0, 4097, ["mem", 1]],
             ["map", 1, 4098, ["mem", 1], [3, 5]],  # with records to skip
             [["map"], 2, 1, ["mem", 1]],  # an unhashable kind
             ["map", "3", 1, ["mem", 1]], ["map", 4, 1.5, ["mem", 1]],
             ["map", 5, 1, "mem"], ["sort", 6, 1, []], ["map", 7, 1], "map", None,
             ["reduce", 8, 4099, ["segs", 1, 0]]]
    worker = Worker(connect="tcp://127.0.0.1:1")
    try:
        with caplog.at_level(logging.WARNING, logger="pymapreduce.worker"):
            worker._enqueue(_tasks_message(items, (cloudpickle.dumps(WordCount()), b"")))
        queued = list(worker.queue)
        assert [q.key for q in queued] == [AttemptKey("j", "map", 0, 4097),
                                           AttemptKey("j", "map", 1, 4098),
                                           AttemptKey("j", "reduce", 8, 4099)]
        for q, raw in zip(queued, (items[0], items[1], items[10])):
            item = TaskItem.from_wire(raw)
            assert (q.split, q.skip) == (item.split, item.skip)
            assert type(q.key) is AttemptKey and q.key.index == item.index
        # a map of a map-only job and a reduce: both reach the client
        assert [q.safe_output for q in queued] == [True, True, True]
        assert sum("malformed task" in r.getMessage() for r in caplog.records) == 8
    finally:  # (as Worker.run ends)
        worker.watch.close()
        worker.ctl.close(0)
        worker.job_dirs.close()
        worker.ctx.term()


def test_an_attempt_never_sees_an_earlier_attempts_output():
    """An attempt that wrote nothing leaves its log to the next (no new log per task);
    one that wrote something leaves a fresh log for the next, and keeps its own text."""
    from pymapreduce.workers.capture import Capture

    capture = Capture()
    first = capture.begin()
    capture.end()
    second = capture.begin()
    print("from the second attempt")
    capture.end()
    assert second is first and second.getvalue() == b"from the second attempt\n"
    third = capture.begin()
    capture.end()
    assert third is not second and third.getvalue() == b""
    assert second.getvalue() == b"from the second attempt\n"


class EvenOnly(Job):
    """Most tasks write no pairs (a filter): their outputs are kept nowhere."""

    def map(self, key, value):
        if value % 4 == 0:
            yield value, key

    def reduce(self, key, values):
        return values[0] if len(values) == 1 else values


def test_outputs_of_no_pairs_come_back_as_none_beside_real_ones(daemons):
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    expected = [(i, i) for i in range(0, 40, 4)]
    with Client(address) as client:
        handle = client.submit(EvenOnly(), [(i, i) for i in range(40)], map_tasks=40,
                               reducers=0)
        assert sorted(handle.result(60)) == expected
        assert sorted(handle.results()) == expected
        # reduce tasks of which most get no key (their outputs empty), the result whole
        reduced = client.submit(EvenOnly(), [(i, i) for i in range(40)], map_tasks=4,
                                reducers=16)
        assert reduced.result(60) == dict(expected)
