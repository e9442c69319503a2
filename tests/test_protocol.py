"""Layer 1: the message codec."""

from __future__ import annotations

import msgpack
import pytest

from pymapreduce import ProtocolError
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message


def test_message_round_trip_keeps_blobs_untouched():
    msg = Message(P.SUBMIT, {"job_id": "j1", "n": [1, 2]}, (b"\x80\x04opaque", b""))
    frames = msg.encode()
    assert frames[1] is msg.blobs[0]  # blobs are not copied or re-encoded
    assert Message.decode(frames) == msg


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
