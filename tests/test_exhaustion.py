"""The broker's memory and file descriptors are bounded by what it holds, not by how often or
how many times a peer asks.

- Unread FETCHes: an output served from a file (spilled beyond --memory-budget-mb, or
  reloaded by a restarted --state-dir broker) is mapped once and shared by every reply that
  carries it, so a client that asks hundreds of times and never reads costs one copy.
- Idle connections: a TCP connection that never finishes its ZeroMQ handshake is closed by
  the broker after a few seconds, so a peer with no key that opens more connections than
  the broker has descriptors locks nobody out for long; the broker raises its soft limit on
  open files to the hard one at start.

The first tests drive the Store alone; the others run real broker subprocesses.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import subprocess
import time

import pytest
import zmq
import zmq.auth

from pymapreduce import Client, Job, run_sequential
from pymapreduce.broker import sink
from pymapreduce.broker.sink import Store, StoreBusy
from pymapreduce.errors import OutputDamaged
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import security
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.sockets import HANDSHAKE_MS

from .conftest import FAST, READY, ROOT, pmr, read_line, rss, stop, wait_workers
from .delayproxy import DelayProxy
from .jobs import Lengths, WordCount

MiB = 1 << 20
PART_MB = 5


def blob(size: int, fill: int) -> bytes:
    return bytes([fill]) * size


# -- the Store: one mapping per file, shared while in use ----------------------------------


def test_reads_of_a_file_backed_output_share_one_mapping_while_held(tmp_path):
    store = Store(0, str(tmp_path / "spill"))  # a budget of 0: every blob goes to a file
    store.put("k", blob(MiB, 7))
    first, second = store.get("k"), store.get("k")
    assert first.readonly and bytes(first) == blob(MiB, 7)
    assert first.obj is second.obj  # one mapping, not a copy per reply
    del first, second
    assert "k" not in store._maps  # gone with its last holder; the next read maps again
    assert bytes(store.get("k")) == blob(MiB, 7)


def test_a_durable_file_damaged_on_disk_is_detected_when_it_is_mapped_again(tmp_path):
    damaged: list = []
    store = Store(0)
    store.on_damage = lambda key, message: damaged.append(key)
    path = str(tmp_path / "outputs" / "1" / "o0")
    crc = store.put("k", blob(MiB, 1), path)
    assert crc is not None
    view = store.get("k")
    assert bytes(view[:4]) == b"\x01" * 4
    del view
    with open(path, "r+b") as f:  # a bad sector, as the disk would hand it back
        f.seek(MiB // 2)
        f.write(b"\x02")
    with pytest.raises(OutputDamaged, match="o0"):
        store.get("k")
    assert damaged == ["k"]


def test_a_held_view_survives_its_output_being_replaced_or_released(tmp_path):
    store = Store(0)
    path = str(tmp_path / "outputs" / "1" / "o0")
    store.put("k", blob(MiB, 3), path)
    held = store.get("k")  # a reply still queued to a slow client
    store.put("k", blob(MiB, 4), path)  # the same file name written again
    assert bytes(held) == blob(MiB, 3)  # not truncated under the mapping (no SIGBUS)
    assert bytes(store.get("k")) == blob(MiB, 4)
    again = store.get("k")
    store.discard("k")  # the job released: the file is unlinked while mapped
    assert not os.path.exists(path)
    assert bytes(again) == blob(MiB, 4)


def test_mappings_beyond_the_descriptor_cap_are_shared_copies(tmp_path):
    store = Store(0, str(tmp_path / "spill"))
    store.max_maps = 2
    for i in range(5):
        store.put(i, blob(256 * 1024, i))
    views = [store.get(i) for i in range(5)]
    assert len(store._file_maps) == 2  # each live file mapping holds a descriptor
    assert [bytes(v) for v in views] == [blob(256 * 1024, i) for i in range(5)]
    assert store.get(4).obj is views[4].obj  # a copy, but still one for all its readers


def test_copies_beyond_their_budget_are_refused_to_clients_not_to_workers(tmp_path,
                                                                          monkeypatch):
    """Past the mapping cap and COPY_BUDGET bytes of copies held by unsent replies, a
    client's FETCH is refused (it may ask again) instead of copying one more output."""
    monkeypatch.setattr(sink, "COPY_BUDGET", 3 * MiB)
    store = Store(0, str(tmp_path / "spill"))
    store.max_maps = 1
    for i in range(6):
        store.put(i, blob(MiB, i))
    held = [store.get(i, refusable=True) for i in range(4)]  # 1 mapping, 3 MiB of copies
    with pytest.raises(StoreBusy, match="fetch this output again later"):
        store.get(4, refusable=True)
    assert bytes(store.get(0, refusable=True)[:2]) == b"\x00\x00"  # held ones are shared
    task_input = store.get(5)  # a worker's task inputs are always sent
    assert bytes(task_input) == blob(MiB, 5)
    del held, task_input  # the replies were sent (or dropped): the copies go with them
    assert bytes(store.get(4, refusable=True)) == blob(MiB, 4)


def test_the_mapping_cap_follows_the_open_files_limit(monkeypatch):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1000, hard))
    if sink.TRACKS_FD:  # each mapping holds a descriptor: half the limit, not 256
        assert sink.map_cap() == 500
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1 << 20, hard))
    assert sink.map_cap() >= 4096  # a quarter of vm.max_map_count (65,530 by default)


# -- a real broker: unread FETCHes of a spilled output ---------------------------------------


class Big(Job):
    """One record in, one value of PART_MB MiB out: a single large partition."""

    def map(self, key, value):
        yield key, "z" * (PART_MB * MiB)




def deaf_reader(ctx: zmq.Context, address: str) -> zmq.Socket:
    """A client socket that asks, and never reads a reply (its queues as small as can be)."""
    reader = ctx.socket(zmq.DEALER)
    reader.setsockopt(zmq.RCVHWM, 1)
    reader.setsockopt(zmq.RCVBUF, 4096)
    reader.setsockopt(zmq.LINGER, 0)
    reader.connect(address)
    return reader


@pytest.mark.timeout(120)
def test_unread_fetches_of_a_spilled_output_cost_the_broker_one_copy(daemons, tmp_path):
    broker, address = daemons.broker(*FAST, "--memory-budget-mb", "1", "--spill-dir",
                                     str(tmp_path))
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address, timeout=60) as client:
        handle = client.submit(Big(), [(0, 0)], map_tasks=1, reducers=1)
        handle.wait(60)
        job_id = handle.job_id
    ctx = zmq.Context()
    reader = deaf_reader(ctx, address)
    try:
        before = rss(broker.pid)
        for i in range(300):  # 1.5 GiB of replies if each held its own copy
            reader.send_multipart(Message(P.FETCH, {"job_id": job_id, "part": 0,
                                                    "req": i}).encode())
        peak = before
        with Client(address, timeout=30) as client:
            # the broker reads the FETCHes as fast as it can: give it a few seconds, and
            # stop early once its memory has not moved for a second (nothing left to read)
            deadline, still_since = time.monotonic() + 8, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - still_since < 1.5:
                client.info()  # (the broker is alive and answering meanwhile)
                now = rss(broker.pid)
                if now > peak + MiB:
                    still_since = time.monotonic()
                peak = max(peak, now)
                time.sleep(0.1)
            assert peak - before < 100 * MiB, (
                f"300 unread FETCHes of a {PART_MB} MiB output took the broker from "
                f"{before // MiB} to {peak // MiB} MiB")
            # and a client that does read still gets the output whole
            assert dict(client.job(job_id).results()) == dict(run_sequential(Big(), [(0, 0)]))
    finally:
        reader.close()
        ctx.term()


class Mib(Job):
    """One record in, one value of 1 MiB out: as many distinct outputs as records."""

    def map(self, key, value):
        yield key, "y" * MiB


DISTINCT = 400  # distinct outputs: more than the 256 mappings the broker used to allow


@pytest.mark.timeout(240)
def test_unread_fetches_of_many_distinct_outputs_cost_the_broker_no_copies(daemons, tmp_path):
    """A client FETCHes each of its job's 400 spilled 1 MiB outputs once and reads no
    reply: past 256 live mappings each further output used to be copied into the broker's
    memory (+144 MiB here; 1000 such outputs of 2 MiB: +1.5 GiB). Now every one is mapped
    (the cap follows the open-files limit), and memory does not grow with them."""
    broker, address = daemons.broker(*FAST, "--memory-budget-mb", "1", "--spill-dir",
                                     str(tmp_path))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    records = [(i, i) for i in range(DISTINCT)]
    with Client(address, timeout=60) as client:
        handle = client.submit(Mib(), records, map_tasks=DISTINCT, reducers=0)
        handle.wait(180)
        job_id = handle.job_id
    ctx = zmq.Context()
    reader = deaf_reader(ctx, address)
    try:
        with Client(address, timeout=30) as client:
            client.info()
            before = rss(broker.pid)
            for i in range(DISTINCT):
                reader.send_multipart(Message(P.FETCH, {"job_id": job_id, "part": i,
                                                        "count": 1, "req": i}).encode())
            # the broker reads the FETCHes as fast as it can: watch its memory until it
            # has not moved for 1.5 s (nothing left to read), 30 s at most
            deadline = time.monotonic() + 30
            peak, still_since = before, time.monotonic()
            while time.monotonic() - still_since < 1.5 and time.monotonic() < deadline:
                now = rss(broker.pid)
                if now > peak + MiB:
                    still_since = time.monotonic()
                peak = max(peak, now)
                time.sleep(0.1)
            assert peak - before < 64 * MiB, (
                f"{DISTINCT} unread FETCHes of distinct 1 MiB outputs took the broker from "
                f"{before // MiB} to {peak // MiB} MiB")
            # a client that reads gets every output whole, while those replies still wait
            assert dict(client.job(job_id).results()) == dict(run_sequential(Mib(), records))
    finally:
        reader.close()
        ctx.term()


# -- a real broker: connections that never say hello -----------------------------------------


def limits(pid: int) -> tuple[int, int]:
    """(soft, hard) limit on open files of a process, from /proc."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open-file limit for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


HARD = 256  # the broker's hard limit on open files in this test
IDLE = 320  # idle connections: more than the broker has descriptors


@pytest.mark.timeout(120)
def test_idle_connections_without_a_key_are_dropped_and_keyed_clients_get_in(tmp_path):
    """A peer with no key opens more TCP connections than the broker has descriptors and
    never sends a byte; the broker closes each after its handshake interval (not ZeroMQ's
    30 s), and a keyed client's job then runs, while the attacker still holds its ends."""
    keys = security.cluster_keys(str(tmp_path / "keys"))

    def low_limit() -> None:  # soft below hard: the broker raises it to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, HARD))

    broker = subprocess.Popen(
        pmr("broker", "--bind", "tcp://127.0.0.1:0", "--keys", keys, *FAST, "--log-level",
            "WARNING", "--parent-pid", str(os.getpid())),
        stdout=subprocess.PIPE, cwd=ROOT, preexec_fn=low_limit)
    worker = None
    conns: list[socket.socket] = []
    try:
        address = read_line(broker, READY).group(1)
        assert limits(broker.pid) == (HARD, HARD)
        worker = subprocess.Popen(
            pmr("worker", "--connect", address, "--processes", "1", "--keys", keys,
                "--log-level", "WARNING", "--parent-pid", str(os.getpid())),
            stdout=subprocess.PIPE, cwd=ROOT)
        wait_workers_keyed(address, keys)
        host, port = address[len("tcp://"):].rsplit(":", 1)
        for _ in range(IDLE):
            conn = socket.socket()
            conn.settimeout(5)
            conn.connect((host, int(port)))  # the kernel's backlog completes it, at least
            conns.append(conn)
        # ZeroMQ's default handshake interval is 30 s: within 25 s, every connection must
        # have been accepted and dropped (those waiting in the backlog once fds came free)
        deadline = time.monotonic() + 25
        open_ones = list(conns)
        while open_ones:
            assert time.monotonic() < deadline, (
                f"{len(open_ones)} of {IDLE} idle connections still open after 25 s "
                f"(handshake interval {HANDSHAKE_MS} ms); broker fds {open_fds(broker.pid)}")
            open_ones = [c for c in open_ones if not closed_by_peer(c)]
            time.sleep(0.2)
        assert open_fds(broker.pid) < HARD // 2
        with Client(address, keys=keys, timeout=20) as client:
            records = [(i, f"w{i % 7} v{i % 3}") for i in range(200)]
            result = client.submit(WordCount(), records, map_tasks=4, reducers=2).result(60)
        assert result == run_sequential(WordCount(), records)
    finally:
        for conn in conns:
            conn.close()
        if worker is not None:
            stop_daemon(worker)
        stop(broker)


@pytest.mark.timeout(120)
def test_a_keyed_client_on_a_slow_link_gets_through_the_handshake_interval(daemons, tmp_path):
    """Over a link with 1 s round trips (a relay holding every byte 0.5 s each way), a CURVE
    handshake takes the broker's side about 3 s: within HANDSHAKE_MS, so the job runs."""
    keys = security.cluster_keys(str(tmp_path / "keys"))
    _, address = daemons.broker(*FAST, "--keys", keys)
    daemons.worker(address, 1, "--keys", keys)
    wait_workers_keyed(address, keys)
    host, port = address[len("tcp://"):].rsplit(":", 1)
    proxy = DelayProxy((host, int(port)), delay=0.5)
    try:
        records = [(i, f"w{i % 7} v{i % 3}") for i in range(100)]
        with Client(proxy.address, keys=keys, timeout=30) as client:
            result = client.submit(WordCount(), records, map_tasks=2, reducers=1).result(60)
        assert result == run_sequential(WordCount(), records)
    finally:
        proxy.close()


def test_allowlists_that_cannot_be_read_stay_as_they_were(tmp_path, monkeypatch):
    """With no descriptor left, the key directory cannot be listed; read as empty, that
    revoked every key (the keyed worker of the test above was cut off that way)."""
    keys = security.cluster_keys(str(tmp_path / "keys"))
    allow = security.Allowlists(keys)
    worker = security.PeerKeys.load(keys, "worker").public.decode()
    assert allow.allows(worker, security.WORKER)

    def no_fds(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    with monkeypatch.context() as m:
        m.setattr(os, "scandir", no_fds)
        with pytest.raises(OSError):
            allow.reload(force=True)
    with monkeypatch.context() as m:  # listed, but a key file cannot be opened
        m.setattr(zmq.auth, "load_certificate", no_fds)
        with pytest.raises(OSError):
            allow.reload(force=True)
    assert allow.allows(worker, security.WORKER)
    assert allow.reload(force=True)  # and once it can be read, it is


def closed_by_peer(conn: socket.socket) -> bool:
    """Whether the other end closed (EOF or reset); never blocks."""
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def wait_workers_keyed(address: str, keys: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with Client(address, keys=keys, timeout=timeout) as client:
        while client.info()["workers"] < 1:
            assert time.monotonic() < deadline, "the worker did not register"
            time.sleep(0.05)


def stop_daemon(proc: subprocess.Popen) -> None:
    """Stop a worker daemon and, should any outlive it, its processes."""
    from .conftest import children, wait_dead

    kids = children(proc.pid)
    stop(proc)
    for pid in wait_dead(kids, 5):
        os.kill(pid, 9)


# -- a real broker: the journal keeps what a restart needs, not finished jobs' inputs --------


def state_size(state) -> int:
    """Bytes the files of a state directory take (the journal, its log, the outputs)."""
    total = 0
    for root, _, files in os.walk(state):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:
                pass
    return total


@pytest.mark.timeout(180)
def test_finished_jobs_inputs_leave_the_journal_and_a_restart_still_knows_them(
        daemons, tmp_path):
    """Submit and cancel, round after round, a job with a few MiB of in-memory input: the
    journal used to keep each one's code and inputs until its result TTL (the disk filled
    and every tenant's SUBMIT was refused). Now the state directory holds about one job's
    inputs, and a broker killed and restarted on it knows every job as it was."""
    state = tmp_path / "state"
    rounds, records = 16, [(i, "x" * MiB) for i in range(3)]  # 3 MiB: one split
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    with Client(address, timeout=30) as client:
        cancelled = []
        for _ in range(rounds):
            handle = client.submit(Lengths(), records, map_tasks=1)
            handle.cancel()
            cancelled.append(handle.job_id)
        running = client.submit(Lengths(), records, map_tasks=1).job_id  # no worker yet
    size = state_size(state)
    assert size < rounds * 3 * MiB // 3, (
        f"{rounds} cancelled jobs of 3 MiB left a state directory of {size // MiB} MiB")
    broker.kill()
    broker.wait()
    for _ in range(2):  # the running job ends after the first restart, and is hollowed
        broker, address = daemons.broker(*FAST, "--state-dir", str(state), bind=address)
        worker = daemons.worker(address, 1)
        with Client(address, timeout=30) as client:
            states = {j["job_id"]: j["state"] for j in client.jobs()}
            assert all(states[j] == "cancelled" for j in cancelled), states
            assert client.job(running).result(60) == run_sequential(Lengths(), records)
        stop_daemon(worker)
        broker.kill()
        broker.wait()
    assert state_size(state) < rounds * 3 * MiB // 3
