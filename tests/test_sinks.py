"""Sink daemons with real processes: the shuffle goes through them and not the broker, a
killed sink costs re-run maps and never a wrong result, a sink with a state directory
survives its restart, and a hostile peer cannot make one store or serve what it should
not (sinks/, broker/sinkplan.py, workers/shuffle.py)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from pymapreduce import Client, Job, LocalCluster, read_text
from pymapreduce.errors import ConfigError
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message

from .conftest import FAST, ROOT, pmr, read_line, wait_workers
from .test_observe import get, start_broker

SINK_READY = re.compile(r"pymapreduce sink ready: (\S+)")
KEYS = 6  # distinct words: a shuffle much larger than the result


class Tally(Job):
    """Counts a few words with no combiner: every occurrence crosses the shuffle, the
    result is KEYS numbers. ``slow_map`` / ``slow_reduce`` seconds per task attempt."""

    reducers = 4
    map_tasks = 8

    def __init__(self, slow_map: float = 0.0, slow_reduce: float = 0.0) -> None:
        self.slow_map = slow_map
        self.slow_reduce = slow_reduce

    def map_init(self):
        time.sleep(self.slow_map)

    def map(self, key, line):
        self.count("lines")
        for word in line.split():
            yield word, 1

    def reduce_init(self):
        time.sleep(self.slow_reduce)

    def reduce(self, key, values):
        return sum(values)


def records(n: int = 20000) -> list[tuple[int, str]]:
    return [(i, " ".join(f"w{(i + j) % KEYS}" for j in range(8))) for i in range(n)]


def expected(recs) -> dict:
    return dict(Counter(w for _, line in recs for w in line.split()))


def start_sink(daemons, address: str, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(pmr("sink", "--connect", address, "--log-level", "WARNING",
                                "--parent-pid", str(os.getpid()), *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    daemons.procs.append(proc)
    return proc, read_line(proc, SINK_READY).group(1)


def wait_sinks(address: str, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with Client(address) as client:
        while len(client.sinks()) != n:
            assert time.monotonic() < deadline, f"not {n} sinks"
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(http: str) -> dict:
    status, text = get(f"{http}metrics")
    assert status == 200
    samples: dict = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_the_shuffle_goes_through_the_sinks_and_no_byte_of_it_through_the_broker(daemons,
                                                                                tmp_path):
    address, http = start_broker(daemons, *FAST)
    for _ in range(2):
        start_sink(daemons, address)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    wait_sinks(address, 2)
    recs = records()
    path = tmp_path / "in.txt"
    path.write_text("".join(line + "\n" for _, line in recs))
    with Client(address) as client:
        handle = client.submit(Tally(), read_text(str(path)))
        assert dict(handle.result(timeout=60)) == expected(recs)
        deadline = time.monotonic() + 10
        # both carried a share, and served all they took (as their heartbeats count it)
        while not all(s["in"] > 0 and s["out"] >= s["in"] for s in client.sinks()):
            assert time.monotonic() < deadline, client.sinks()
            time.sleep(0.05)
        sinks = client.sinks()
    took = sum(s["in"] for s in sinks)
    listed = subprocess.run(pmr("status", "--connect", address), capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert "sinks (2)" in listed.stdout and sinks[0]["address"] in listed.stdout
    assert took >= 160_000  # 160,000 values crossed the shuffle, a byte each at least
    received = metrics(http)["pymapreduce_received_bytes_total"]
    assert received[(("plane", "data"),)] == 0
    # the control plane carried the job, its file ranges and the tiny result, not the
    # shuffle (reports and heartbeats are a few hundred bytes each; on a loaded machine
    # the job takes longer and the heartbeats add up: about took / 4 at worst seen)
    assert received[(("plane", "control"),)] < took / 2


@pytest.mark.parametrize("when", ["map", "reduce"])
def test_killing_a_sink_mid_shuffle_re_runs_its_maps_and_the_result_is_exact(daemons, when):
    _, address = daemons.broker(*FAST)
    sinks = [start_sink(daemons, address)[0] for _ in range(2)]
    daemons.worker(address, 2)
    wait_workers(address, 2)
    wait_sinks(address, 2)
    recs = records(8000)
    job = Tally(slow_map=0.15, slow_reduce=0.6)
    with Client(address) as client:
        handle = client.submit(job, recs)
        deadline = time.monotonic() + 60
        while True:
            status = handle.status()
            if (when == "map" and status["maps"][0] >= 3) or (
                    when == "reduce" and status["phase"] == "reduce"):
                break
            assert status["state"] in ("queued", "running") and time.monotonic() < deadline
            time.sleep(0.01)
        sinks[0].send_signal(signal.SIGKILL)
        assert dict(handle.result(timeout=60)) == expected(recs)
        status = handle.status()
        assert status["reruns"] >= 1  # the maps that fed it ran again
        assert status["maps"] == [8, 8]
        # each committed map counted once, though some committed twice
        assert status["records"] == len(recs)
        assert status["counters"] == {"lines": len(recs)}
        assert len(client.sinks()) == 1


def test_a_sink_with_a_state_directory_survives_its_own_restart(daemons, tmp_path):
    _, address = daemons.broker("--heartbeat", "0.2", "--liveness", "8")
    bind = f"tcp://127.0.0.1:{free_port()}"
    state = str(tmp_path / "sink")
    sink, _ = start_sink(daemons, address, "--bind", bind, "--state-dir", state)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    wait_sinks(address, 1)
    recs = records(4000)
    with Client(address) as client:
        handle = client.submit(Tally(slow_reduce=0.4), recs)
        deadline = time.monotonic() + 60
        while handle.status()["reduces"][0] < 1:  # its segments are all at the sink
            assert time.monotonic() < deadline
            time.sleep(0.01)
        sink.send_signal(signal.SIGKILL)
        sink.wait()
        start_sink(daemons, address, "--bind", bind, "--state-dir", state)
        assert dict(handle.result(timeout=60)) == expected(recs)
        assert handle.status()["reruns"] == 0  # nothing was lost
    assert not os.listdir(state) or set(os.listdir(state)) == {"identity"}  # dropped at end


def test_a_sink_stores_only_what_the_broker_assigned_and_serves_only_what_it_holds(daemons):
    _, address = daemons.broker(*FAST)
    sink, sink_address = start_sink(daemons, address)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    wait_sinks(address, 1)
    ctx = zmq.Context()
    peer = ctx.socket(zmq.DEALER)
    peer.connect(sink_address)
    try:
        def ask(*frames):
            peer.send_multipart(list(frames))
            # (20 s: a loaded CI machine once kept a reply from coming within 5 s; a sink
            # that died or hangs still fails here, saying which)
            if not peer.poll(20000):
                alive = sink.poll() is None
                if not alive:
                    raise AssertionError(f"the sink ended ({sink.returncode}): "
                                         f"{sink.stderr.read()[-2000:]!r}")
                raise AssertionError("the sink, still running, did not answer in 20 s")
            return Message.decode(peer.recv_multipart())

        put = Message(P.PUT, {"req": 1, "job": "not-a-job", "step": 0, "map": 0,
                              "attempt": 5, "parts": [0]}, (b"x" * 1000,))
        reply = ask(*put.encode())
        assert reply.command == P.ERROR and reply.body["code"] == "not-assigned"
        for garbage in ([b"\xc1garbage"], Message(P.PUT, {"req": 2, "job": "j"}).encode(),
                        Message(P.GET, {"req": 3, "job": "j", "step": 0, "part": 0,
                                        "segs": [["a", 1]]}).encode(),
                        Message("EXEC", {"req": 4}).encode()):
            assert ask(*garbage).command == P.ERROR
        get_ = Message(P.GET, {"req": 5, "job": "not-a-job", "step": 0, "part": 0,
                               "segs": [[0, 5], [1, 6]]})
        reply = ask(*get_.encode())
        assert reply.command == P.SEGS and reply.body["missing"] == [0, 1] and not reply.blobs
        # a real job still runs through it, and a guess of its attempts finds nothing
        recs = records(2000)
        with Client(address) as client:
            handle = client.submit(Tally(slow_reduce=0.5), recs)
            while handle.status()["phase"] != "reduce":
                time.sleep(0.01)
            guess = Message(P.GET, {"req": 6, "job": handle.job_id, "step": 0, "part": 0,
                                    "segs": [[m, a] for m in range(8) for a in range(1, 4)]})
            reply = ask(*guess.encode())
            assert not reply.blobs and len(reply.body["missing"]) == 24
            assert dict(handle.result(timeout=60)) == expected(recs)
    finally:
        peer.close(0)
        ctx.term()
    assert sink.poll() is None  # still up


def test_a_sink_refuses_addresses_workers_cannot_use_or_an_open_network(daemons):
    _, address = daemons.broker(*FAST)
    for bind, words in (("tcp://0.0.0.0:0", "wildcard"),
                        ("tcp://192.0.2.1:0", "beyond loopback")):
        ran = subprocess.run(pmr("sink", "--connect", address, "--bind", bind),
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert ran.returncode == 2 and words in ran.stderr, ran.stderr
    with pytest.raises(ConfigError, match="sinks must be a count"):
        LocalCluster(1, sinks=-1)


def test_an_embedded_cluster_with_sinks_runs_a_multi_step_job(tmp_path):
    class Twice(Job):
        def steps(self):
            return [Tally(), Regroup()]

    recs = records(3000)
    with LocalCluster(2, sinks=2) as cluster:
        got = Twice().run(recs, address=cluster.address)
        assert dict(got) == {n: sorted(w for w, c in expected(recs).items() if c == n)
                             for n in set(expected(recs).values())}
        with Client(cluster.address) as client:
            assert len(client.sinks()) == 2


class Regroup(Job):
    reducers = 2

    def map(self, word, count):
        yield count, word

    def reduce(self, count, words):
        return sorted(words)


@pytest.mark.parametrize("sink_back", [True, False])
def test_a_restarted_broker_reads_where_the_segments_are_from_its_journal(daemons, tmp_path,
                                                                           sink_back):
    """kill -9 of the broker mid-reduce: the restarted broker knows from its journal which
    sink holds each map's segments, and when the sink comes back no map runs again; a sink
    that does not come back within the liveness period is lost, and its maps run again."""
    from .test_restart import Waiter, committed, wait_for

    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    sink, _ = start_sink(daemons, address)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    wait_sinks(address, 1)
    recs = records(4000)
    waiter = Waiter(address, Tally(slow_reduce=0.5), recs)
    waiter.start()
    wait_for(lambda: len(committed(state, "reduce")) >= 1, what="a committed reduce task")
    broker.kill()
    broker.wait()
    assert len(committed(state)) == 8
    if not sink_back:
        sink.kill()
        sink.wait()
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    waiter.join(120)
    assert waiter.error is None, waiter.error
    assert dict(waiter.result) == expected(recs)
    status = waiter.handle.status()
    if sink_back:
        assert status["reruns"] == 0 and status["recovered"] >= 9
    else:
        assert status["reruns"] >= 1  # the maps whose segments went with the sink
    waiter.client.close()


def test_a_hot_key_read_at_a_sink_reaches_reduce_as_a_stream_under_a_budget(daemons,
                                                                              tmp_path):
    """A reduce task under --memory reads its partition's segments from the sink one reply
    at a time and lets each go once read, so a key with more values than fit reaches
    ``reduce`` as a one-pass stream, exact."""
    from .test_spill import BUDGET, Hot, _lines

    lines = _lines(tmp_path / "in.txt", 150_000, width=200)
    _, address = daemons.broker("--heartbeat", "0.5", "--liveness", "30")
    start_sink(daemons, address)
    daemons.worker(address, 2, "--memory", str(BUDGET), "--spill-dir", str(tmp_path / "s"))
    wait_workers(address, 2)
    wait_sinks(address, 1)
    with Client(address, timeout=60) as client:
        result = client.submit(Hot(), read_text(str(tmp_path / "in.txt")), map_tasks=4,
                               reducers=1).result(timeout=240)
        deadline = time.monotonic() + 10
        while sum(s["out"] for s in client.sinks()) < sum(len(x) for x in lines):
            assert time.monotonic() < deadline, client.sinks()  # its values, via the sink
            time.sleep(0.05)
    assert result == {"hot": ["ValuesStream", len(lines), sum(len(x) for x in lines)]}


def test_a_sink_drops_what_it_holds_of_jobs_the_broker_no_longer_runs(daemons, tmp_path):
    """Segments kept in a state directory for a job that ended (or that a broker restarted
    without its state never knew) while the sink was away are deleted when it registers."""
    from pymapreduce.sinks import SegmentStore

    state = tmp_path / "sink"
    store = SegmentStore(str(state))
    store.put("gone-job", 0, 0, 12345, 0, b"x" * 1000)
    store.close()
    assert len([d for d in os.listdir(state) if d != "identity"]) == 1
    _, address = daemons.broker(*FAST)
    start_sink(daemons, address, "--state-dir", str(state))
    wait_sinks(address, 1)
    deadline = time.monotonic() + 10
    while [d for d in os.listdir(state) if d != "identity"]:
        assert time.monotonic() < deadline, os.listdir(state)
        time.sleep(0.05)


def test_a_sort_whose_partition_does_not_fit_is_merged_from_spooled_segments(daemons,
                                                                             tmp_path):
    """A total_order sort under --memory reads its partition's runs from the sink into
    files of its own and merges them from there, a few buffers each: every record once,
    keys in order across the part files, ties in input order."""
    import json
    import random

    from .test_terasort import TeraSort

    rng = random.Random(7)
    lines = [f"{rng.choice('abcdefgh')}{rng.randrange(40):02d} row {i} " + "x" * 80
             for i in range(120_000)]  # 12 MB, 320 distinct keys: ties across map tasks
    path = tmp_path / "in.txt"
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    _, address = daemons.broker("--heartbeat", "0.5", "--liveness", "30")
    start_sink(daemons, address)
    daemons.worker(address, 2, "--memory", "32MB", "--spill-dir", str(tmp_path / "s"))
    wait_workers(address, 2)
    wait_sinks(address, 1)
    out = tmp_path / "out"
    with Client(address, timeout=60) as client:
        client.submit(TeraSort(), read_text(str(path), split_bytes=2_000_000), reducers=2,
                      output_dir=out, results=False).wait(timeout=240)
    pairs = [tuple(json.loads(line)) for i in range(2)
             for line in (out / f"part-{i:05d}").read_text(encoding="utf-8").splitlines()]
    assert [k for k, _ in pairs] == sorted(k for k, _ in pairs)
    assert sorted(k + v for k, v in pairs) == sorted(lines)
    by_key: dict = {}
    for k, v in pairs:
        by_key.setdefault(k, []).append(int(v.split()[1]))
    assert all(rows == sorted(rows) for rows in by_key.values())  # input order kept
