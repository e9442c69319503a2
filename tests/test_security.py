"""Authentication and hostile input, against real daemons and a real broker's sockets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import msgpack
import pytest
import zmq
import zmq.auth

from pymapreduce import AuthenticationFailed, Client, run_sequential
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import security
from pymapreduce.patterns.message import Message

from .conftest import ROOT, children, pmr, wait_workers
from .jobs import WordCount, WordCountCombined, read_lines

RECORDS = [(i, f"w{i % 17} x{i % 5}") for i in range(500)]


@pytest.fixture
def keys(tmp_path):
    return security.cluster_keys(str(tmp_path / "keys"))


@pytest.fixture
def secured(daemons, keys):
    _, address = daemons.broker("--keys", keys, "--heartbeat", "0.2", "--liveness", "1.0")
    daemons.worker(address, 2, "--keys", keys)
    wait_workers_secured(address, keys, 2)
    return address


def wait_workers_secured(address, keys, n, timeout=20.0):
    deadline = time.monotonic() + timeout
    with Client(address, keys=keys) as client:
        while client.info()["workers"] < n:
            assert time.monotonic() < deadline, "workers did not register"
            time.sleep(0.05)


def test_a_secured_cluster_runs_jobs_for_authorized_clients(secured, keys):
    with Client(secured, keys=keys) as client:
        assert client.submit(WordCountCombined(), RECORDS).result(30) == run_sequential(
            WordCount(), RECORDS)


def other_keys(tmp_path, keys, name, broker_key=None):
    """A key directory with a fresh keypair ``name`` and (some) broker's public key."""
    directory = tmp_path / f"other-{name}"
    security.generate(str(directory), name)
    shutil.copy(broker_key or os.path.join(keys, "broker.key"), directory / "broker.key")
    return str(directory)


def test_refused_clients_get_a_clear_error_within_seconds(secured, keys, tmp_path):
    stranger = other_keys(tmp_path, keys, "client")
    impostor_broker = tmp_path / "impostor"
    security.generate(str(impostor_broker), "broker")
    wrong_server = other_keys(tmp_path, keys, "x", str(impostor_broker / "broker.key"))
    shutil.copy(os.path.join(keys, "client.key_secret"), os.path.join(wrong_server, "client.key_secret"))
    cases = [
        (dict(keys=stranger), "not in the broker's allowlist"),
        (dict(), "requires CURVE keys"),
        (dict(keys=wrong_server), "does not match the broker"),
        (dict(keys=keys, key_name="worker"), "a worker key may not send"),
    ]
    for kwargs, reason in cases:
        start = time.monotonic()
        with Client(secured, timeout=30, **kwargs) as client:
            with pytest.raises(AuthenticationFailed, match=reason):
                client.submit(WordCount(), RECORDS)
        assert time.monotonic() - start < 5, reason  # not the 30 s request timeout


def test_a_worker_with_a_refused_key_exits_with_its_own_code(secured, keys, tmp_path):
    stranger = other_keys(tmp_path, keys, "worker")
    for args in (["--keys", stranger], ["--keys", keys, "--key-name", "client"]):
        proc = subprocess.run(pmr("worker", "--connect", secured, "--processes", "1", *args),
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 77, proc.stderr
        assert "refused" in proc.stderr or "may not send" in proc.stderr
    with Client(secured, keys=keys) as client:
        assert client.info()["workers"] == 2  # neither got in


def test_keys_authorized_while_the_broker_runs_are_let_in(secured, keys, tmp_path):
    newcomer = other_keys(tmp_path, keys, "client")
    with Client(secured, keys=newcomer, timeout=30) as client:
        with pytest.raises(AuthenticationFailed):
            client.info()
    proc = subprocess.run(pmr("keys", "authorize", keys, "client",
                              os.path.join(newcomer, "client.key")),
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 10
    while True:  # the broker re-reads its allowlists every heartbeat
        try:
            with Client(secured, keys=newcomer, timeout=5) as client:
                assert client.submit(WordCount(), [(0, "in at last")]).result(30) == {
                    "at": 1, "in": 1, "last": 1}
            break
        except AuthenticationFailed:
            assert time.monotonic() < deadline, "the new key was never let in"
            time.sleep(0.2)


def test_the_broker_never_unpickles_what_it_is_sent(daemons, tmp_path):
    """A job whose code, when unpickled, writes the pid of the process that unpickled it."""
    import pickle

    marker = tmp_path / "unpickled-by"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'a').write(str(__import__('os').getpid()) + "
                           "'\\n')",))

    payload = pickle.dumps(Evil())
    broker, address = daemons.broker()
    worker = daemons.worker(address, 1)
    wait_workers(address, 1)
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        evil_records = pickle.dumps(Evil())  # as an input chunk, too
        sock.send_multipart(Message(P.SUBMIT, {
            "job_id": "evil", "req": 1, "reducers": 1, "splits": 2},
            (payload, evil_records, msgpack.packb([["mem", 1]]))).encode())
        assert sock.poll(5000)
        assert Message.decode(sock.recv_multipart()).command == P.ACCEPTED
        deadline = time.monotonic() + 20
        # (a whole line: the file exists as soon as the payload opened it, before its write)
        while not (marker.exists() and marker.read_text().endswith("\n")) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ctx.destroy(0)
    pids = {int(x) for x in marker.read_text().split()}
    assert pids  # the payload did run: on a worker, which runs user code by design
    assert broker.pid not in pids
    assert pids <= set(children(worker.pid))  # and only there


def test_insecure_beyond_loopback_warns_at_start_and_on_every_job(daemons):
    proc = subprocess.Popen(pmr("broker", "--bind", "tcp://0.0.0.0:0", "--insecure"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    daemons.procs.append(proc)
    from .conftest import READY, read_line

    address = read_line(proc, READY).group(1)
    with Client(address) as client:
        client.submit(WordCount(), [(0, "a")])
        client.submit(WordCount(), [(0, "b")])
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    err = err.decode()
    assert "WITHOUT authentication (--insecure)" in err
    assert err.count("runs on a broker WITHOUT authentication") == 2


def test_oversized_messages_are_refused_and_the_broker_goes_on(daemons):
    from pymapreduce import InputError

    _, address = daemons.broker("--max-message-mb", "1")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    big = [(i, "x" * 1000) for i in range(2000)]  # about 2 MiB of in-memory input
    with Client(address) as client:
        with pytest.raises(InputError, match="more than the broker accepts"):
            client.submit(WordCount(), big)
    ctx = zmq.Context()
    try:  # a peer that sends one anyway is cut off by ZeroMQ; the broker serves the others
        rogue = ctx.socket(zmq.DEALER)
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.connect(address)
        rogue.send_multipart([b"\x00" * (2 << 20)])
        assert not rogue.poll(500)
    finally:
        ctx.destroy(0)
    with Client(address) as client:
        assert client.submit(WordCount(), [(0, "still here")]).result(30) == {
            "here": 1, "still": 1}


def test_a_revoked_worker_key_is_cut_off_at_once(daemons, keys):
    _, address = daemons.broker("--keys", keys, "--heartbeat", "0.2", "--liveness", "1.0")
    worker = daemons.worker(address, 1, "--keys", keys)
    wait_workers_secured(address, keys, 1)
    os.unlink(os.path.join(keys, "workers", "worker.key"))
    assert worker.wait(20) == 77  # its next heartbeat is refused: it stops, it does not retry
    with Client(address, keys=keys) as client:
        assert client.info()["workers"] == 0


def test_authorizing_two_keys_with_the_same_file_name_keeps_both(tmp_path):
    broker_dir = str(tmp_path / "broker")
    security.generate(broker_dir, "broker")
    for host in ("a", "b"):
        security.generate(str(tmp_path / host), "worker")
        security.authorize(broker_dir, "worker", str(tmp_path / host / "worker.key"))
    lists = security.Allowlists(broker_dir)
    for host in ("a", "b"):
        public, _ = zmq.auth.load_certificate(str(tmp_path / host / "worker.key"))
        assert lists.roles[public] == "worker"
    names = os.listdir(os.path.join(broker_dir, "workers"))
    assert len(names) == 2 and "worker.key" in names
    assert os.stat(tmp_path / "a" / "worker.key_secret").st_mode & 0o077 == 0


def test_cli_with_keys_and_the_broker_logs_the_key_of_each_job(tmp_path, keys, corpus):
    from .conftest import READY, read_line, stop

    log_path = tmp_path / "broker.log"
    with open(log_path, "w") as log_file:
        broker = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--keys", keys,
                                      "--log-level", "INFO"),
                                  stdout=subprocess.PIPE, stderr=log_file, cwd=ROOT)
    worker = None
    try:
        address = read_line(broker, READY).group(1)
        worker = subprocess.Popen(pmr("worker", "--connect", address, "--processes", "1",
                                      "--keys", keys), stdout=subprocess.DEVNULL, cwd=ROOT)
        wait_workers_secured(address, keys, 1)
        run = subprocess.run(pmr("run", "examples/wordcount.py:WordCount", *corpus,
                                 "--connect", address, "--keys", keys),
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        assert len(run.stdout.splitlines()) == len(run_sequential(WordCount(), read_lines(corpus)))
        status = subprocess.run(pmr("status", "--connect", address, "--keys", keys),
                                capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert status.returncode == 0 and "workers (1)" in status.stdout
        denied = subprocess.run(pmr("status", "--connect", address),
                                capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert denied.returncode == 77 and "requires CURVE keys" in denied.stderr
    finally:
        for proc in (worker, broker):
            if proc is not None:
                stop(proc)
    client_key = security.PeerKeys.load(keys, "client").public.decode()
    # (named with the allowlist file the operator gave it as well)
    log = log_path.read_text()
    assert re.search(f"key {re.escape(client_key)} \\(clients/client.key\\): job \\S+ .* "
                     "accepted", log), log
    worker_key = security.PeerKeys.load(keys, "worker").public.decode()
    assert f"key {worker_key} (workers/worker.key): worker" in log, log


def test_a_peer_that_resets_mid_handshake_is_not_taken_for_a_refusal():
    """A broker killed mid-handshake looks like a failed handshake once: that is no reason
    to give up as if the key were refused (a worker would exit for good)."""
    import socket as pysocket
    import struct
    import threading

    from pymapreduce import BrokerUnavailable, Client

    server = pysocket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    resets = []

    def serve_once() -> None:
        conn, _ = server.accept()
        conn.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.recv(64)
        conn.close()  # RST mid-handshake
        resets.append(1)
        server.close()  # then nobody listens: as a broker that died

    t = threading.Thread(target=serve_once, daemon=True)
    t.start()
    with Client(f"tcp://127.0.0.1:{port}", timeout=1.5) as client:
        with pytest.raises(BrokerUnavailable):
            client.info()
    t.join(5)
    assert resets == [1]


def test_a_worker_or_client_given_a_keyed_broker_s_data_address_is_told_it_may_be_that(
        daemons, keys):
    # the data address of the ready line is a CURVE socket too: there, the handshake fails
    # as for a wrong broker.key, so the message must name that mistake as well
    proc = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--keys", keys,
                                "--log-level", "WARNING", "--parent-pid", str(os.getpid())),
                            stdout=subprocess.PIPE, cwd=ROOT)
    daemons.procs.append(proc)
    line = proc.stdout.readline().decode()
    data = re.search(r"\(data (tcp://\S+?);", line).group(1)
    worker = subprocess.run(pmr("worker", "--connect", data, "--processes", "1",
                                "--keys", keys), capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert worker.returncode == 77, worker.stderr
    assert "not its data address" in worker.stderr, worker.stderr
    with Client(data, keys=keys, timeout=30) as client:
        with pytest.raises(AuthenticationFailed, match="not its data address"):
            client.info()


def test_keys_given_a_key_file_or_a_missing_directory_say_which(keys, tmp_path):
    # --keys DIR/client.key (the file, not its directory) and a mistyped directory
    for given, expected in (
            (os.path.join(keys, "client.key"), f"{keys}/client.key is a file, not a key "
             f"directory; give the directory that holds it ({keys})"),
            (str(tmp_path / "kyes"), f"there is no directory {tmp_path / 'kyes'} (a typo?")):
        for args in (["status", "--connect", "tcp://127.0.0.1:1"],
                     ["worker", "--connect", "tcp://127.0.0.1:1", "--processes", "1"]):
            proc = subprocess.run(pmr(*args, "--keys", given), capture_output=True,
                                  text=True, timeout=60, cwd=ROOT)
            assert proc.returncode == 2, proc.stderr
            assert expected in proc.stderr, proc.stderr


def test_state_directories_are_private_and_shared_ones_or_keys_are_warned_of(keys, tmp_path):
    """A broker's or a sink's state directory holds every job's code and data: one the
    daemon makes is its user's only (0700); one that other users may read, and a secret
    key file they may read, are named in a warning that says what to do."""
    from pymapreduce.broker.journal import Journal

    new = tmp_path / "made" / "state"
    Journal(str(new)).close()
    assert os.stat(new).st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    os.chmod(os.path.join(keys, "worker.key_secret"), 0o644)
    script = ("import logging, sys; logging.basicConfig(level=logging.WARNING);"
              "from pymapreduce.broker.journal import Journal;"
              "from pymapreduce.sinks.store import SegmentStore;"
              "from pymapreduce.patterns.security import PeerKeys;"
              "Journal(sys.argv[1]).close(); SegmentStore(sys.argv[2]).close();"
              "PeerKeys.load(sys.argv[3], 'worker')")
    proc = subprocess.run([sys.executable, "-c", script, str(shared), str(tmp_path / "sink"),
                           keys], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (f"state directory {shared} can be read by other users of this host (mode 755): "
            f"it holds every journaled job's code, in-memory inputs and outputs; make it "
            f"private with chmod 700 {shared}") in proc.stderr
    secret = os.path.join(keys, "worker.key_secret")
    assert (f"secret key file {secret} can be read by other users of this host (mode 644)"
            ) in proc.stderr and f"chmod 600 {secret}" in proc.stderr
    assert os.stat(tmp_path / "sink").st_mode & 0o777 == 0o700
    assert "sink state directory" not in proc.stderr  # (made private: nothing to say)
    assert proc.stderr.count("can be read by other users") == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_state_directory_or_secret_key_of_another_user_is_warned_of(keys, tmp_path, caplog):
    """A directory another user made first (a root daemon's --state-dir /tmp/pmr, made
    0700 by whoever got there first) is that user's to read, whatever its mode."""
    shared = tmp_path / "theirs"
    shared.mkdir(mode=0o700)
    os.chown(shared, 65534, 65534)
    secret = os.path.join(keys, "worker.key_secret")
    os.chown(secret, 65534, 65534)
    with caplog.at_level("WARNING", logger="pymapreduce"):
        security.private_dir(str(shared), "state directory", "every job's data")
        security.PeerKeys.load(keys, "worker")
    assert (f"state directory {shared} belongs to another user (uid 65534), who can read "
            f"it: it holds every job's data") in caplog.text, caplog.text
    assert f"secret key file {secret} belongs to another user (uid 65534)" in caplog.text
