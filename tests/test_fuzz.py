"""Hostile input: 100,000 random and mutated frames at a live broker, then a real job."""

from __future__ import annotations

import random
import time

import msgpack
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pymapreduce import Client, run_sequential
from pymapreduce.patterns import protocol as P

from .conftest import FAST, wait_workers
from .jobs import WordCount

COMMANDS = [P.READY, P.DONE, P.FAILED, P.HEARTBEAT, P.BYE, P.HELLO, P.SUBMIT, P.WATCH,
            P.STATUS, P.FETCH, P.CANCEL, P.RELEASE, P.OUTPUT, "NOPE", ""]
FIELDS = ["job_id", "job", "kind", "index", "attempt", "results", "splits", "part", "count",
          "credit", "reducers", "map_only", "worker", "req", "wait", "name", "error"]
MESSAGES_PER_EXAMPLE = 25
EXAMPLES = 125
# each generated message is also sent 31 times mutated: 100,000 messages in all (drawing a
# message takes hypothesis ~7 ms, a mutant ~10 us: 400 x 25 x 10 spent 70 s drawing)
MUTANTS = 31

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                    st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6)


@st.composite
def hostile_message(draw) -> list[bytes]:
    kind = draw(st.integers(0, 4))
    if kind == 0:  # raw garbage
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=3))
    version = draw(st.sampled_from([P.PROTOCOL_VERSION] * 4 + [0, 2, "1", None]))
    header = [version, draw(st.sampled_from(COMMANDS)), draw(bodies)]
    if kind == 1:  # a well-formed header of the wrong shape
        header = draw(st.sampled_from([header[:2], header + [1], {"v": header}, header[1]]))
    frame = msgpack.packb(header, use_bin_type=True)
    if kind == 2 and frame:  # a valid header with bytes flipped or cut
        cut = draw(st.integers(0, len(frame)))
        flip = draw(st.integers(0, 255))
        frame = frame[:cut] + bytes([flip]) + frame[cut + 1:]
    blobs = draw(st.lists(st.binary(max_size=32), max_size=3))
    return [frame, *blobs]


def mutate(frames: list[bytes], rng: random.Random) -> list[bytes]:
    """A copy of a message with one frame's byte flipped, cut or grown, or frames shuffled."""
    frames = list(frames)
    i = rng.randrange(len(frames))
    frame = bytearray(frames[i])
    how = rng.randrange(4)
    if how == 0 and frame:
        frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
    elif how == 1:
        frame = frame[: rng.randrange(len(frame) + 1)]
    elif how == 2:
        frame += rng.randbytes(rng.randrange(1, 16))
    else:
        rng.shuffle(frames)
        return frames
    frames[i] = bytes(frame)
    return frames


def test_the_broker_survives_100k_hostile_messages_and_then_runs_a_job(daemons):
    broker, address = daemons.broker(*FAST)
    rng = random.Random(1234)
    ctx = zmq.Context()
    sent = [0]
    try:
        control = ctx.socket(zmq.DEALER)
        data_address = _data_address(address)
        data = ctx.socket(zmq.PUSH)
        for sock in (control, data):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDTIMEO, 20_000)  # a broker that stops reading fails the test
        control.connect(address)
        data.connect(data_address)

        # generate only: shrinking a failure by replaying it at a live broker means nothing
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(hostile_message(), min_size=MESSAGES_PER_EXAMPLE,
                        max_size=MESSAGES_PER_EXAMPLE))
        def throw(messages):
            for i, frames in enumerate(messages):
                for variant in (frames, *(mutate(frames, rng) for _ in range(MUTANTS))):
                    (data if i % 5 == 0 else control).send_multipart(variant)
                    sent[0] += 1
            while control.poll(0):  # answers (ERRORs mostly): read and drop them
                control.recv_multipart()

        throw()
        assert sent[0] >= 100_000
        assert broker.poll() is None  # still running
        # it still answers, and a real job on it is right
        with Client(address, timeout=30) as client:
            assert client.info()["workers"] >= 0
        time.sleep(1.5)  # fuzzed READYs registered fake workers: let liveness remove them
        daemons.worker(address, 2)
        wait_workers(address, 2)
        records = [(i, f"a{i % 7} b{i % 3}") for i in range(300)]
        with Client(address, timeout=30) as client:
            assert client.submit(WordCount(), records, map_tasks=6).result(60) == (
                run_sequential(WordCount(), records))
    finally:
        ctx.destroy(0)


def _data_address(address: str) -> str:
    """The sink's address, as the broker tells a worker in WELCOME."""
    from pymapreduce.patterns.message import Message

    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        sock.send_multipart(Message(P.READY, {"credit": 1}).encode())
        assert sock.poll(5000)
        welcome = Message.decode(sock.recv_multipart())
        sock.send_multipart(Message(P.BYE).encode())
        return welcome.body["sink"]
    finally:
        ctx.destroy(0)
