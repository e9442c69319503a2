"""Sink daemons on a cluster with CURVE keys: a sink registers only under a key in the
broker's sinks allowlist, workers reach it only under the key the broker names for it, and
the sink lets in worker keys only (docs/sinks.md, "Security")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import zmq

from pymapreduce import Client, read_text
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import security
from pymapreduce.patterns.message import Message

from .conftest import ROOT, pmr, read_line
from .test_security import wait_workers_secured
from .test_sinks import SINK_READY, Tally, expected, records

FAST = ["--heartbeat", "0.2", "--liveness", "1.0"]


def keyed_sink(daemons, address: str, keys: str, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(pmr("sink", "--connect", address, "--keys", keys, "--log-level",
                                "WARNING", "--parent-pid", str(os.getpid()), *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    daemons.procs.append(proc)
    return proc, read_line(proc, SINK_READY).group(1)


def wait_sinks(address: str, keys: str, n: int) -> list[dict]:
    deadline = time.monotonic() + 20
    with Client(address, keys=keys) as client:
        while len(client.sinks()) != n:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return client.sinks()


def test_a_cluster_with_keys_shuffles_through_its_sinks(daemons, tmp_path):
    keys = security.cluster_keys(str(tmp_path / "keys"))
    _, address = daemons.broker("--keys", keys, *FAST)
    for _ in range(2):
        keyed_sink(daemons, address, keys)
    daemons.worker(address, 2, "--keys", keys)
    wait_workers_secured(address, keys, 2)
    wait_sinks(address, keys, 2)
    recs = records(6000)
    path = tmp_path / "in.txt"
    path.write_text("".join(line + "\n" for _, line in recs))
    with Client(address, keys=keys) as client:
        assert dict(client.submit(Tally(), read_text(str(path))).result(timeout=60)) == \
            expected(recs)
        deadline = time.monotonic() + 10
        while not all(s["in"] > 0 for s in client.sinks()):  # both carried its share
            assert time.monotonic() < deadline, client.sinks()
            time.sleep(0.05)


def test_only_sink_keys_register_and_only_worker_keys_reach_a_sink(daemons, tmp_path):
    keys = security.cluster_keys(str(tmp_path / "keys"))
    _, address = daemons.broker("--keys", keys, *FAST)
    _, sink_address = keyed_sink(daemons, address, keys)
    wait_sinks(address, keys, 1)

    # a sink without keys, or with a worker's key, is refused at once, saying so
    worker_as_sink = tmp_path / "worker-as-sink"
    worker_as_sink.mkdir()
    for name in ("worker.key", "worker.key_secret", "broker.key"):
        shutil.copy(os.path.join(keys, name), worker_as_sink / name)
    for args, says in ((["--connect", address], "CURVE"),
                       (["--connect", address, "--keys", str(worker_as_sink), "--key-name",
                         "worker"], "may not send this request")):
        ran = subprocess.run(pmr("sink", *args), capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
        assert ran.returncode != 0 and says in ran.stderr, (args, ran.stderr)
    assert len(wait_sinks(address, keys, 1)) == 1

    # at the sink: a client's key, or no key, never gets an answer; a worker's key does
    ctx = zmq.Context()
    try:
        sink_key = wait_sinks(address, keys, 1)[0]
        assert sink_key["address"] == sink_address
        server = open(os.path.join(keys, "sink.key")).read()
        server = re.search(r'public-key = "(.+)"', server).group(1).encode()
        answers = {}
        for who in ("client", "worker", None):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if who is not None:
                public, secret = zmq.auth.load_certificate(
                    os.path.join(keys, f"{who}.key_secret"))
                sock.curve_publickey, sock.curve_secretkey = public, secret
                sock.curve_serverkey = server
            sock.connect(sink_address)
            get = Message(P.GET, {"req": 1, "job": "j", "step": 0, "part": 0,
                                  "segs": [[0, 1]]})
            sock.send_multipart(get.encode())
            answers[who] = Message.decode(sock.recv_multipart()).command \
                if sock.poll(3000) else None
            sock.close(0)
        assert answers == {"client": None, "worker": P.SEGS, None: None}
    finally:
        ctx.term()
