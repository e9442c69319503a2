"""Legitimate jobs never hang: bad counters fail clearly, a task holding the GIL is not
taken for dead, an endless line is refused, and read_text's encoding reaches the workers."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from pymapreduce import Client, ConfigError, InputError, Job, JobFailed, LocalCluster, read_text
from pymapreduce.client.submit import build_submission
from pymapreduce.inputs import read_file_split
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message
from pymapreduce.workers.voucher import Voucher, process_state

from .conftest import FAST, wait_workers
from .jobs import WordCount, note

GIL_HOLD = 3  # seconds of GIL held per map call: three times the FAST liveness (1 s)


class GilHog(Job):
    """Each map call holds the GIL for ``secs`` in one C call (libc sleep through PyDLL,
    which keeps the GIL: like ``sum(range(10**9))``, without burning a shared core)."""

    def __init__(self, secs: int, log_path: str) -> None:
        self.secs = secs
        self.log_path = log_path

    def map(self, key, value):
        note(self.log_path, key)
        ctypes.PyDLL(None).sleep(self.secs)
        yield value, 1

    def reduce(self, key, counts):
        return sum(counts)


class CountsBadly(Job):
    def __init__(self, name, n=1):
        self.name = name
        self.n = n

    def map(self, key, value):
        self.count(self.name, self.n)
        yield key, value


def runs(path) -> list[int]:
    with open(path) as f:
        return sorted(int(x) for x in f.read().split())


# -- counters ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, n, error, says", [
    (("a", "b"), 1, TypeError, "counter names are str"),
    (1, 1, TypeError, "counter names are str"),
    ("", 1, ValueError, "1 to 200 characters"),
    ("x" * 201, 1, ValueError, "1 to 200 characters"),
    ("ok", 1.5, TypeError, "n must be an int"),
    ("ok", "1", TypeError, "n must be an int"),
    ("ok", 1 << 63, ValueError, "64-bit"),
])
def test_a_bad_counter_raises_in_user_code_naming_it(name, n, error, says):
    job = Job()
    with pytest.raises(error, match=says):
        job.count(name, n)
    assert job._take_counters() == {}  # nothing half-recorded


def test_counters_take_bools_and_integer_types_and_at_most_1000_names_a_task():
    job = Job()
    job.count("hits", True)
    job.count("hits", False)
    job.count("hits", 2)

    class Integral:  # numpy.int64 and the like: integers by __index__
        def __index__(self):
            return -1

    job.count("hits", Integral())
    for i in range(999):
        job.count(f"c{i}")
    job.count("hits")  # a name it has: still fine
    with pytest.raises(ValueError, match="at most 1000 distinct counter names"):
        job.count("one too many")
    assert job._take_counters()["hits"] == 3


def test_a_job_with_a_bad_counter_fails_with_its_traceback_instead_of_hanging(daemons, tmp_path):
    _, address = daemons.broker(*FAST, "--state-dir", str(tmp_path / "state"))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    with Client(address) as client:
        for job, says in [(CountsBadly(("a", "b")), "counter names are str, got tuple"),
                          (CountsBadly(1), "counter names are str, got int"),
                          (CountsBadly("n", 0.5), "n must be an int")]:
            with pytest.raises(JobFailed) as failed:
                client.submit(job, [(1, "x"), (2, "y")], map_tasks=2).result(60)
            assert says in str(failed.value)
            assert "self.count(self.name, self.n)" in failed.value.remote_traceback
        # and good counters still add up, journaled and all
        handle = client.submit(CountsBadly("seen"), [(i, "x") for i in range(5)], map_tasks=3)
        handle.result(60)
        assert handle.counters == {"seen": 5}


# -- liveness while user code holds the GIL -------------------------------------------------


def test_a_map_holding_the_gil_past_the_liveness_runs_once_on_a_cluster(daemons, tmp_path):
    _, address = daemons.broker(*FAST)  # silent for 1 s: dead, unless vouched for
    daemons.worker(address, 2)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    with Client(address) as client:
        handle = client.submit(GilHog(GIL_HOLD, str(log)), [(0, "a"), (1, "a")], map_tasks=2)
        assert handle.result(60) == {"a": 2}
        assert client.info()["workers"] == 2  # neither was purged
    assert runs(log) == [0, 1]  # each record ran once: no attempt was lost


def test_a_map_holding_the_gil_succeeds_embedded_with_the_daemons_liveness(tmp_path):
    log = tmp_path / "runs"
    job = GilHog(GIL_HOLD, str(log))
    assert job.run([(0, "a")], workers=1, heartbeat_interval=0.2, liveness=1.0,
                   timeout=60) == {"a": 1}
    assert runs(log) == [0]


def test_the_embedded_cluster_takes_the_daemons_liveness_settings():
    with LocalCluster(workers=1, heartbeat_interval=0.2, liveness=1.0) as cluster:
        argv = cluster.broker_args  # (forked, its /proc cmdline is ours)
        assert argv[argv.index("--liveness") + 1] == "1.0"
        assert argv[argv.index("--heartbeat") + 1] == "0.2"
    with pytest.raises(ConfigError, match="heartbeat_interval < liveness"):
        LocalCluster(heartbeat_interval=2.0, liveness=1.0)
    with pytest.raises(ConfigError, match="embedded cluster"):
        WordCount().run({1: "a"}, address="tcp://127.0.0.1:1", liveness=1.0)


def test_process_state_tells_a_stopped_process_from_a_running_one():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_state(proc.pid) in "RS"
        os.kill(proc.pid, signal.SIGSTOP)
        assert _wait_state(proc.pid, "T")
        os.kill(proc.pid, signal.SIGCONT)
        assert _wait_state(proc.pid, "RS")
    finally:
        proc.kill()
    assert _wait_state(proc.pid, "Z")  # dead, not yet reaped: not alive either
    proc.wait()
    assert process_state(proc.pid) == ""


def _wait_state(pid: int, states: str) -> bool:
    deadline = time.monotonic() + 10
    while process_state(pid) not in states:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_supervisor_vouches_for_running_children_and_not_for_stopped_ones():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    voucher = Voucher(f"tcp://127.0.0.1:{port}")
    sleeper = "import time; time.sleep(60)"
    running = subprocess.Popen([sys.executable, "-c", sleeper])
    frozen = subprocess.Popen([sys.executable, "-c", sleeper])
    try:
        os.kill(frozen.pid, signal.SIGSTOP)
        assert _wait_state(frozen.pid, "T")
        voucher.open()
        children = {running.pid: b"running-id", frozen.pid: b"frozen-id"}
        now = 0.0
        while not router.poll(100):  # until connected: beats are never queued before
            now += 10.0  # the clock, by hand: every call is a new interval
            voucher.beat(now, children)
            assert now < 1000, "the voucher never reached the broker's socket"
        now += 10.0
        voucher.beat(now, children)  # one more round, both children looked at again
        time.sleep(0.2)
        beats = []
        while router.poll(0):
            beats.append(Message.decode(router.recv_multipart()[1:]))
        assert beats and all(m.command == P.HEARTBEAT for m in beats)
        assert {m.body["worker"] for m in beats} == {b"running-id"}
    finally:
        for proc in (running, frozen):
            proc.kill()
            proc.wait()
        voucher.close()
        router.close()
        ctx.term()


# -- long lines and encodings --------------------------------------------------------------


def test_lines_up_to_the_limit_are_read_whatever_the_cut_points(tmp_path):
    lines = [("x" * ((i * 37) % 301)) for i in range(400)]
    path = tmp_path / "lines.txt"
    path.write_bytes("\n".join(lines).encode())
    expected, offset = [], 0
    for line in lines:
        expected.append((offset, line))
        offset += len(line) + 1
    size = path.stat().st_size
    for step in (7, 300, 1000, size):
        got = [rec for s in range(0, size, step)
               for rec in read_file_split(str(path), s, min(size, s + step), max_line_bytes=300)]
        assert got == expected
    with pytest.raises(InputError, match="longer than 299 bytes"):
        list(read_file_split(str(path), 0, size, max_line_bytes=299))


def test_a_line_over_the_limit_fails_the_job_naming_file_and_offset(cluster, tmp_path):
    path = tmp_path / "endless.txt"
    path.write_bytes(b"short line\n" * 10 + b"z" * 5000 + b"\nafter\n")
    job = WordCount()
    job.skip_bad_records = True  # an unreadable input is not a bad record to skip
    with Client(cluster) as client:
        with pytest.raises(JobFailed) as failed:
            client.submit(job, read_text(str(path), max_line_bytes=1000)).result(60)
        assert f"{path}: the line at byte 110 is longer than 1000 bytes" in str(failed.value)
        # the same file with a limit above its longest line is read whole
        result = client.submit(WordCount(), read_text(str(path), max_line_bytes=5000)).result(60)
        assert result == {"short": 10, "line": 10, "z" * 5000: 1, "after": 1}


def test_read_text_refuses_settings_it_cannot_honour():
    with pytest.raises(InputError, match="max_line_bytes"):
        read_text("x.txt", max_line_bytes=0)
    with pytest.raises(InputError, match="unknown encoding"):
        read_text("x.txt", encoding="no-such-codec")
    with pytest.raises(InputError, match="0x0A"):
        read_text("x.txt", encoding="utf-16")


def test_default_reading_settings_keep_the_split_description_as_it_was(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("a b\n")
    plain = build_submission(WordCount(), read_text(str(path)), slots=1, map_tasks=None,
                             reducers=None, name=None)
    def splits(sub):  # the splits travel as a msgpack blob the body names
        return msgpack.unpackb(sub.blobs[sub.body["splits"]])

    assert [len(d) for d in splits(plain)] == [2]
    latin = build_submission(WordCount(), read_text(str(path), encoding="latin-1"), slots=1,
                             map_tasks=None, reducers=None, name=None)
    assert splits(latin)[0][2] == {"encoding": "latin-1"}


def test_read_text_encoding_reaches_the_workers(cluster, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café naïve\nÿes café\n".encode("latin-1"))
    with Client(cluster) as client:
        result = client.submit(WordCount(), read_text(str(path), encoding="latin-1")).result(60)
        assert result == {"café": 2, "naïve": 1, "ÿes": 1}
        # read as UTF-8 (the default) the same bytes are not those words: the setting matters
        assert client.submit(WordCount(), read_text(str(path))).result(60) != result
