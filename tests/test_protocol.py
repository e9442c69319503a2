"""Layer 1: the message codec."""

from __future__ import annotations

import msgpack
import pytest

from pymapreduce import ProtocolError
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import PACK_BELOW, Message


def test_message_round_trip_keeps_blobs_untouched():
    big = b"\x80\x04opaque" * PACK_BELOW
    msg = Message(P.SUBMIT, {"job_id": "j1", "n": [1, 2]}, (big, b""))
    frames = msg.encode()
    assert frames[1] is msg.blobs[0]  # large blobs are not copied or re-encoded
    assert Message.decode(frames) == msg
    small = Message(P.SUBMIT, {"job_id": "j1"}, (b"\x80\x04opaque", b"", big, b"x"))
    frames = small.encode()
    assert len(frames) == 3 and frames[2] is big  # the small ones share one frame
    assert Message.decode(frames) == small


@pytest.mark.parametrize(
    ("frames", "cause"),
    [
        ([], "no frames"),
        ([b"\xc1garbage"], "undecodable"),
        ([msgpack.packb({"not": "a list"})], "shape"),
        ([msgpack.packb([99, "READY", {}])], "version"),
        ([msgpack.packb([P.PROTOCOL_VERSION, 5, {}])], "types"),
        ([msgpack.packb([P.PROTOCOL_VERSION, "READY", []])], "types"),
    ],
)
def test_bad_frames_raise_a_typed_error_with_size_and_cause(frames, cause):
    with pytest.raises(ProtocolError) as info:
        Message.decode(frames)
    assert info.value.size == (len(frames[0]) if frames else 0)
    assert cause in info.value.cause or cause in str(info.value)


@pytest.mark.parametrize("bad", ["tcp://127.0.0.1:99999", "tcp://127.0.0.1", "http://h:1",
                                 "tcp://:5", "tcp://h:port"])
def test_bad_addresses_are_config_errors(bad):
    from pymapreduce import ConfigError
    from pymapreduce.patterns.sockets import check_endpoint

    with pytest.raises(ConfigError, match="tcp://HOST:PORT"):
        check_endpoint(bad)


def test_the_attempt_carrying_parts_of_messages_round_trip_and_refuse_bad_fields():
    from pymapreduce.patterns.wire import (
        AttemptKey,
        Failure,
        Report,
        TaskItem,
        abandon_body,
        abandoned,
    )

    key = AttemptKey("job-1", "map", 3, (12345 << 12) | 2)
    assert AttemptKey.from_body(key.body()) == key
    for bad in (["j", "map", "3", 1], ["j", "shuffle", 3, 1], [["j"], "map", 3, 1], "j"):
        assert AttemptKey.parse(bad) is None
    item = TaskItem("map", 3, key.attempt, ["mem", 0], [7])
    wire = Message.decode(Message(P.TASKS, {"tasks": [item.wire()]}).encode()).body["tasks"]
    assert TaskItem.from_wire(wire[0]) == item and item.key("job-1") == key
    assert TaskItem.from_wire(TaskItem("reduce", 0, 1, ["segs", 0, 2]).wire()).skip == []
    with pytest.raises(ValueError):
        TaskItem.from_wire(["map", 3, 1])
    report = Report(key, {"records": 4}, 1)
    assert Report.from_wire(report.wire(), blobs_left=1) == report
    with pytest.raises(ValueError, match="output blobs"):
        Report.from_wire(report.wire(), blobs_left=0)
    failure = Failure(key, "E" * 5000, "T" * 30000, {"split": 3, "path": ["x"] * 999})
    back = Failure.from_body(failure.body())
    assert back.key == key and len(back.error) == 2000 and len(back.traceback) == 20000
    assert isinstance(back.position["path"], str) and len(back.position["path"]) <= 200
    assert abandoned(abandon_body("job-1", [key])) == {key}
    assert abandoned({"job": "job-1", "tasks": [["map", "x", 1], 5, None]}) == set()
