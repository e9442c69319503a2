"""Compressed data-plane frames (patterns/compress.py, broker/codecs.py): the same results
with compression on, off and between mixed peers; decompression bombs and damaged frames
from a hostile worker or client get a clear error and cost the receiver nothing big."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import tracemalloc

import pytest
import zmq
import zstandard

from pymapreduce import Client, Job, JobFailed, UndecodableValue, run_sequential
from pymapreduce.broker import Broker, BrokerConfig
from pymapreduce.broker.codecs import CodecCensus, decide
from pymapreduce.client import client as client_module
from pymapreduce.patterns import compress as C
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.records import pack, unpack

from .conftest import rss, wait_workers
from .jobs import Lengths, WordCount

MiB = 1 << 20
OFF = {C.ENV: "off"}
# enough distinct words that a map task's partitions are well over MIN_SIZE
RECORDS = [(i, " ".join(f"w{(i * 7 + j) % 20000}" for j in range(12))) for i in range(6000)]


def zstd_frame(data: bytes, claim: int | None = None, **options) -> bytes:
    """A compressed frame of ``data`` whose header claims ``claim`` raw bytes."""
    payload = zstandard.ZstdCompressor(level=1, **options).compress(data)
    return C.HEADER.pack(C.MAGIC, C.ZSTD, len(data) if claim is None else claim) + payload


# -- the codec, without sockets ----------------------------------------------------------

def test_frames_round_trip_and_small_or_incompressible_ones_stay_plain():
    blob = pack([[f"w{i}" for i in range(20000)], list(range(20000))])
    framed = C.compress(blob, "zstd")
    assert C.is_compressed(framed) and len(framed) < len(blob) / 1.5
    assert C.raw_size(framed) == len(blob)
    assert bytes(C.decompress(memoryview(framed), len(blob))) == blob
    small = pack([["a"], [1]])
    assert C.compress(small, "zstd") is small  # under MIN_SIZE
    noise = os.urandom(2 * MiB)  # past PROBE_FROM: the probe alone says it does not pay
    assert C.compress(noise, "zstd") is noise
    assert C.compress(blob, None) is blob
    for plain in (blob, b"", small):  # plain frames pass through uncopied
        assert C.decompress(plain, 10) is plain
    # outputs over the per-message limit stay plain: their task fails for its size as before
    assert C.compress_all([blob], "zstd", len(blob) - 1) == [blob]
    assert C.is_compressed(C.compress_all([blob, b""], "zstd", len(blob))[0])


def test_degenerate_data_past_the_ratio_travels_plain_and_still_decodes():
    blob = pack([["k"] * 200_000, [1] * 200_000])  # 7,000x with zstd: past MAX_RATIO
    assert C.compress(blob, "zstd") is blob
    assert unpack(C.decompress(blob, MiB)) == [["k"] * 200_000, [1] * 200_000]


@pytest.mark.parametrize("case", ["over-limit", "ratio", "lying-header", "unstated-size",
                                  "damaged", "unknown-codec", "short"])
def test_hostile_frames_are_refused_with_a_clear_error_before_anything_big(case):
    zeros = b"\0" * (256 * MiB)
    frame, expect = {
        # the header claims more than the receiver accepts per frame
        "over-limit": (zstd_frame(b"x" * 100, claim=8 << 30), "more than the"),
        # 256 MiB of zeros in a few KiB: within the limit, far past any honest ratio
        "ratio": (zstd_frame(zeros), "decompression bomb"),
        # the header claims 1 KiB, the zstd frame 256 MiB (zstd would allocate those)
        "lying-header": (zstd_frame(zeros, claim=1024), "states 268435456"),
        # no size in the zstd frame: only the library's bound would stop it
        "unstated-size": (zstd_frame(zeros[:MiB], claim=1024, write_content_size=False),
                          "states no decompressed size"),
        "damaged": (None, "damaged"),
        "unknown-codec": (C.HEADER.pack(C.MAGIC, 99, 10) + b"x" * 10, "codec 99"),
        "short": (bytes([C.MAGIC, 1]), "too short"),
    }[case]
    if case == "damaged":  # a flipped bit in the payload: zstd's checksum catches it
        good = bytearray(C.compress(pack([[f"w{i}" for i in range(9000)], [1] * 9000]),
                                    "zstd"))
        good[len(good) // 2] ^= 0x10
        frame = bytes(good)
    del zeros
    tracemalloc.start()
    try:
        with pytest.raises(C.CompressedFrameError, match=expect) as err:
            C.decompress(frame, 1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(err.value, UndecodableValue)
    assert peak < 2 * MiB, f"refusing the frame cost {peak} bytes"


def test_a_process_without_the_package_says_what_to_install(monkeypatch):
    framed = C.compress(pack([[f"w{i}" for i in range(9000)], [1] * 9000]), "zstd")

    def missing():
        raise ImportError("no zstandard")

    monkeypatch.setattr(C, "_zstd", missing)
    assert C.available() == []
    with pytest.raises(C.CompressedFrameError, match="install the zstandard package"):
        C.decompress(framed, 1 << 30)


def test_a_task_reads_its_compressed_inputs_lazily_one_at_a_time():
    blobs = [C.compress(pack([[f"k{i}-{j}" for j in range(5000)], [i] * 5000]), "zstd")
             for i in range(3)]
    lazy = C.Inflating([b"", *blobs], 1 << 30)
    segments = lazy[1:4]
    assert isinstance(segments, C.Inflating) and len(segments) == 3
    assert [unpack(s)[1][0] for s in segments] == [0, 1, 2]
    assert lazy[0] == b""


def test_the_broker_names_a_codec_only_where_every_reader_decodes_it(monkeypatch):
    monkeypatch.delenv(C.ENV, raising=False)
    census = CodecCensus()
    zstd = frozenset({"zstd"})
    census.joined(b"a", zstd)
    client_zstd = {"codecs": ["zstd"]}
    assert census.fields(zstd, client_zstd, True, False) == {"codec": "zstd"}
    assert census.fields(zstd, client_zstd, False, True) == {"codec_client": "zstd"}
    assert census.fields(zstd, {}, False, True) == {}  # an older client: plain results
    assert census.fields(frozenset(), client_zstd, True, True) == {}  # a plain worker
    census.joined(b"old", frozenset())  # a worker that cannot decode: map outputs plain
    assert census.fields(zstd, client_zstd, True, True) == {"codec_client": "zstd"}
    census.left(b"old")
    assert census.fields(zstd, client_zstd, True, False) == {"codec": "zstd"}
    monkeypatch.setenv(C.ENV, "off")
    assert CodecCensus().fields(zstd, client_zstd, True, True) == {}


def test_by_default_only_a_broker_that_listens_beyond_loopback_names_codecs(monkeypatch):
    monkeypatch.delenv(C.ENV, raising=False)
    config = BrokerConfig  # where it pays: bytes that cross a network, not a copy in memory
    assert not decide(config(bind="tcp://127.0.0.1:0"))
    assert not decide(config(bind="ipc:///tmp/pmr-broker"))
    assert decide(config(bind="tcp://*:5555")) and decide(config(bind="tcp://10.1.2.3:5555"))
    assert not decide(config(bind="tcp://127.0.0.1:0", data_bind="tcp://127.0.0.1:0"))
    assert decide(config(bind="tcp://127.0.0.1:0", compression="on"))
    assert not decide(config(bind="tcp://*:5555", compression="off"))
    monkeypatch.setenv(C.ENV, "on")  # the environment overrides the setting
    assert decide(config(bind="tcp://127.0.0.1:0", compression="off"))
    monkeypatch.setenv(C.ENV, "off")
    assert not decide(config(bind="tcp://*:5555", compression="on"))


# -- real daemons --------------------------------------------------------------------------

@pytest.fixture
def broker():
    """A broker in this process (its store is watched), on a loopback port."""
    ctx = zmq.Context()
    b = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", heartbeat_interval=0.2, liveness=1.0,
                            compression="on"), context=ctx)  # (auto: off on loopback)
    b.bind()
    puts: list[tuple[tuple, bool]] = []
    put = b.store.put

    def watched(key, blob, path=None):
        buf = blob.buffer if hasattr(blob, "buffer") else blob
        puts.append((key, C.is_compressed(buf)))
        return put(key, blob, path)

    b.store.put = watched
    b.puts = puts
    thread = threading.Thread(target=b.serve_forever, daemon=True)
    thread.start()
    try:
        yield b
    finally:
        b.stop()
        thread.join(5)
        ctx.destroy(linger=0)


def stored(b: Broker, kind: str) -> set[bool]:
    """Whether the outputs of ``kind`` ("map", "out") the broker stored were compressed."""
    return {compressed for key, compressed in b.puts if key[1] == kind}


@pytest.mark.parametrize("mode", ["on", "off", "mixed", "old-client"])
def test_results_are_the_same_with_compression_on_off_and_between_mixed_peers(
        daemons, broker, monkeypatch, mode):
    daemons.worker(broker.address, 2, env=OFF if mode == "off" else None)
    if mode == "mixed":  # a second daemon whose workers neither compress nor decompress
        daemons.worker(broker.address, 1, env=OFF)
    wait_workers(broker.address, 3 if mode == "mixed" else 2)
    if mode == "old-client":  # a client that lists no codec in its SUBMIT
        monkeypatch.setenv(C.ENV, "off")
    with Client(broker.address, timeout=60) as client:
        result = client.submit(WordCount(), RECORDS, map_tasks=3, reducers=2).result(120)
    assert result == run_sequential(WordCount(), RECORDS)
    maps, outs = stored(broker, "map"), stored(broker, "out")
    # map outputs: compressed when every worker decodes them; results when the client does
    assert maps == ({True} if mode in ("on", "old-client") else {False})
    if mode == "on":
        assert outs == {True}
    elif mode in ("off", "old-client"):
        assert outs == {False}


class ByLength(Job):
    def map(self, word, count):
        yield len(word), count

    def reduce(self, length, counts):
        return sum(counts)


class TwoSteps(Job):
    """Word count, then its result regrouped: the first step's output is read by workers."""

    def steps(self):
        return [WordCount(), ByLength()]


class Sort(Job):
    """Sorted runs (rangesort.py) instead of groups: records by their text."""

    total_order = True

    def map(self, key, line):
        yield line, key


@pytest.mark.parametrize("job", [TwoSteps(), Sort()], ids=["steps", "total-order"])
def test_multi_step_and_sorted_jobs_read_compressed_frames_between_workers(
        daemons, broker, job):
    daemons.worker(broker.address, 2)
    wait_workers(broker.address, 2)
    with Client(broker.address, timeout=60) as client:
        result = client.submit(job, RECORDS, map_tasks=3, reducers=2).result(120)
    assert result == run_sequential(job, RECORDS)
    if isinstance(job, TwoSteps):
        assert stored(broker, "s") == {True}  # the first step's output, for the second
        assert True in stored(broker, "map")  # (the second step's: a few bytes, plain)
    else:
        assert stored(broker, "map") == {True}


class Bomb(Lengths):
    """A map-only job; the worker that takes its task below answers with a forged frame."""


def fake_worker(address: str, ctx: zmq.Context) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    sock.send_multipart(Message(P.READY, {"credit": 1, "codecs": ["zstd"]}).encode())
    return sock


def next_tasks(sock: zmq.Socket, timeout: float = 10.0) -> Message:
    deadline = time.monotonic() + timeout
    while sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
        msg = Message.decode(sock.recv_multipart())
        if msg.command == P.TASKS:
            return msg
    raise AssertionError("no task was handed out")


@pytest.mark.parametrize("forged", ["ratio", "over-limit"])
def test_a_worker_sending_a_decompression_bomb_gets_the_client_a_clear_error(broker, forged):
    # 256 MiB of zeros claimed by a 10 KiB frame; or 8 GiB claimed outright (made before
    # the rogue registers: it sends no heartbeats)
    frame = (zstd_frame(b"\0" * (256 * MiB)) if forged == "ratio"
             else zstd_frame(b"\0" * MiB, claim=8 << 30))
    ctx = zmq.Context()
    try:
        rogue = fake_worker(broker.address, ctx)
        with Client(broker.address, timeout=30) as client:
            handle = client.submit(Bomb(), [(0, "x")], map_tasks=1)
            task = next_tasks(rogue)
            assert task.body.get("codec_client") == "zstd"  # the client said it decodes zstd
            _, index, attempt, _ = task.body["tasks"][0]
            rogue.send_multipart(Message(P.DONE, {"results": [
                [handle.job_id, "map", index, attempt, {}, 1]]}, (frame,)).encode())
            before = rss(os.getpid())
            with pytest.raises(UndecodableValue, match="output partition 0: .*refused unread"):
                handle.result(30)
            assert rss(os.getpid()) - before < 64 * MiB
    finally:
        ctx.destroy(linger=0)


def test_a_client_sending_a_decompression_bomb_fails_its_job_not_the_worker(
        daemons, broker, monkeypatch):
    worker = daemons.worker(broker.address, 1)
    wait_workers(broker.address, 1)
    build = client_module.build_submission

    def with_bomb(*args, **kwargs):  # the in-memory split swapped for a forged frame
        sub = build(*args, **kwargs)
        blobs = list(sub.blobs)
        blobs[1] = zstd_frame(b"\0" * (256 * MiB))
        return dataclasses.replace(sub, blobs=tuple(blobs))

    monkeypatch.setattr(client_module, "build_submission", with_bomb)
    with Client(broker.address, timeout=30) as client:
        with pytest.raises(JobFailed, match="decompression bomb"):
            client.submit(WordCount(), RECORDS[:10], map_tasks=1).result(60)
    monkeypatch.setattr(client_module, "build_submission", build)
    kids = [int(p) for p in open(f"/proc/{worker.pid}/task/{worker.pid}/children").read().split()]
    assert kids and all(rss(k) < 400 * MiB for k in kids)
    with Client(broker.address, timeout=30) as client:  # and the worker works on
        assert client.submit(WordCount(), RECORDS[:50]).result(60) == run_sequential(
            WordCount(), RECORDS[:50])


def test_a_damaged_compressed_segment_fails_the_reduce_with_a_clear_error_never_a_wrong_answer(
        daemons, broker):
    ctx = zmq.Context()
    try:
        rogue = fake_worker(broker.address, ctx)
        with Client(broker.address, timeout=30) as client:
            handle = client.submit(WordCount(), RECORDS, map_tasks=2, reducers=1)
            task = next_tasks(rogue)
            assert task.body.get("codec") == "zstd"  # every worker decodes zstd
            _, index, attempt, _ = task.body["tasks"][0]
            words = [f"w{i}" for i in range(20000)]
            segment = bytearray(C.compress(pack([words, [[1]] * len(words)]), "zstd"))
            segment[len(segment) // 2] ^= 0x10  # one flipped bit, as a bad NIC or disk
            rogue.send_multipart(Message(P.DONE, {"results": [
                [handle.job_id, "map", index, attempt, {}, 1]]}, (bytes(segment),)).encode())
            rogue.send_multipart(Message(P.BYE, {}).encode())
            daemons.worker(broker.address, 1)  # the other map task, and the reduce
            # retried (another attempt may read another copy), then failed: never a result
            with pytest.raises(JobFailed, match=r"reduce-0 failed 4 times; .*damaged"):
                handle.result(60)
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("flag", [None, "on", "off"])
def test_the_broker_daemon_s_compression_flag(daemons, flag):
    _, address = daemons.broker("--heartbeat", "0.2", "--liveness", "5",
                                *(["--compression", flag] if flag else []))
    ctx = zmq.Context()
    try:
        rogue = fake_worker(address, ctx)
        with Client(address, timeout=30) as client:
            assert client.info()["codecs"] == (["zstd"] if flag == "on" else [])
            client.submit(WordCount(), RECORDS[:10], map_tasks=1, reducers=1)
            task = next_tasks(rogue)
        # (the default, auto, is off here: the broker listens on loopback only)
        assert task.body.get("codec") == ("zstd" if flag == "on" else None)
    finally:
        ctx.destroy(linger=0)


def test_compressed_outputs_survive_a_broker_restart_from_their_checksummed_files(
        daemons, tmp_path):
    state = tmp_path / "state"
    fast = ("--heartbeat", "0.2", "--liveness", "1.0", "--compression", "on")
    broker, address = daemons.broker(*fast, "--state-dir", str(state))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    with Client(address, timeout=30) as client:
        job_id = client.submit(WordCount(), RECORDS, map_tasks=3, reducers=2).job_id
        client.job(job_id).wait(120)
    files = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs
             if f.startswith("o") and not f.endswith(".tmp")]
    assert files and all(open(f, "rb").read(1) == bytes([C.MAGIC]) for f in files)
    broker.kill()
    broker.wait()
    daemons.broker(*fast, "--state-dir", str(state), bind=address)  # adopts them by CRC
    with Client(address, timeout=30) as client:
        assert client.job(job_id).result(60) == run_sequential(WordCount(), RECORDS)
