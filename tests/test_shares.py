"""A client's requests are answered from its share of the broker loop's time
(patterns/share.py, broker/daemon.py): one client asking for costly answers over and over
is told "busy" past its share, while another client and the workers are served; a client
told "busy" asks again by itself."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from pymapreduce import Client, JobFailed
from pymapreduce.broker import daemon as D
from pymapreduce.patterns import config as timing
from pymapreduce.patterns import message as message_module
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns import security
from pymapreduce.patterns.message import Message
from pymapreduce.patterns.records import pack
from pymapreduce.patterns.share import PeerShares, TimeBucket

from .test_hostile import Peer, ctx, start_broker, stop_broker, submit  # noqa: F401

COST = 0.2  # seconds of the fake clock each STATUS answer takes


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def costly_status(b, clock: FakeClock) -> None:
    """The broker's STATUS answers, each taking COST of ``clock`` (which moves only then)."""
    b._shares = PeerShares(D.CLIENT_SHARE, D.CLIENT_BURST, D.CLIENTS_SHARE, D.CLIENTS_BURST,
                           clock=clock)
    real = b._handlers[P.STATUS]

    def status(peer, msg, now):
        clock.now += COST
        return real(peer, msg, now)

    b._handlers[P.STATUS] = status


def replies(peer: Peer, n: int) -> list[str]:
    """The next ``n`` replies to requests (a submitter is also sent its job's status
    unasked: not those), each "status" or the error's code."""
    out = []
    while len(out) < n:
        msg = peer.recv(want=(P.STATUS, P.ERROR))
        assert msg is not None, out
        if msg.body.get("req") is None:
            continue
        out.append("status" if msg.command == P.STATUS else msg.body["code"])
    return out


def test_a_client_past_its_share_is_told_busy_and_others_are_served(ctx):  # noqa: F811
    clock = FakeClock()
    b = start_broker(ctx)
    costly_status(b, clock)
    try:
        greedy = Peer(ctx, b.address, name="greedy")
        submit(greedy, "j1", [(0, "a")])
        for req in range(10):  # ten costly requests at once
            greedy.send(P.STATUS, {"job_id": "j1", "req": 10 + req})
        # its share's burst (0.5 s) covers three answers of 0.2 (the third takes it below
        # empty), then it is told busy without an answer being built
        assert replies(greedy, 10) == ["status"] * 3 + ["busy"] * 7
        other = Peer(ctx, b.address, name="other")  # another client: its own share
        other.send(P.STATUS, {"job_id": "j1", "req": 1})
        assert replies(other, 1) == ["status"]
        worker = Peer(ctx, b.address)  # the workers' messages are never counted
        worker.send(P.READY, {"credit": 1})
        assert worker.recv(want=(P.WELCOME,)) is not None
        assert worker.recv(want=(P.TASKS,)) is not None
        greedy.send(P.STATUS, {"job_id": "j1", "req": 30})
        assert replies(greedy, 1) == ["busy"]  # the clock has not moved: still owing
        clock.now += 10.0  # refilled: 5% of 10 s (CLIENT_SHARE), up to the burst
        greedy.send(P.STATUS, {"job_id": "j1", "req": 31})
        assert replies(greedy, 1) == ["status"]
    finally:
        stop_broker(b)


def test_all_clients_together_have_a_share_too(ctx):  # noqa: F811
    """Many greedy connections do not make many shares of the loop: once all clients
    together have spent theirs, a client that spent its own waits even though its own
    is not empty; one that has asked little still goes ahead, until it has asked much."""
    clock = FakeClock()
    b = start_broker(ctx)
    costly_status(b, clock)
    try:
        greedy = [Peer(ctx, b.address, name=f"g{i}") for i in range(3)]
        submit(greedy[0], "j1", [(0, "a")])
        got = []
        for i, peer in enumerate(greedy):
            for n in range(2):
                peer.send(P.STATUS, {"job_id": "j1", "req": 100 + 2 * i + n})
            got += replies(peer, 2)
        # six answers of 0.2 spent the total's burst (1.0 s, refilled by 0.02 while each
        # was built: 10%); each greedy one's own share holds about 0.1 of its 0.5
        assert got == ["status"] * 6  # (the total's charge follows each reply's sending)
        for i, peer in enumerate(greedy):
            peer.send(P.STATUS, {"job_id": "j1", "req": 200 + i})
            assert replies(peer, 1) == ["busy"]
        newcomer = Peer(ctx, b.address, name="new")  # asked nothing yet: goes ahead
        for n in range(3):
            newcomer.send(P.STATUS, {"job_id": "j1", "req": 300 + n})
        assert replies(newcomer, 3) == ["status", "status", "busy"]
    finally:
        stop_broker(b)


def test_submitting_and_cancelling_jobs_in_a_loop_is_held_to_a_share(ctx):  # noqa: F811
    """A client that submits jobs and cancels them as fast as it can (each SUBMIT of a
    large job takes the loop a tenth of a second) is told busy past its share of the
    loop's time for making and ending jobs, and nothing is made of a SUBMIT so refused;
    another client still submits, and its reads have their own share."""
    clock = FakeClock()
    b = start_broker(ctx)
    b._job_shares = PeerShares(D.JOBS_SHARE, D.JOBS_BURST, D.ALL_JOBS_SHARE,
                               D.ALL_JOBS_BURST, clock=clock)
    for command in (P.SUBMIT, P.CANCEL):
        real = b._handlers[command]

        def costly(peer, msg, now, real=real):
            clock.now += 0.3  # what a job of tens of thousands of tasks costs
            return real(peer, msg, now)

        b._handlers[command] = costly
    try:
        greedy = Peer(ctx, b.address, name="greedy")
        blobs = [b"opaque job code", pack([[0, "a"]]), msgpack.packb([["mem", 1]])]
        for n in range(6):
            greedy.send(P.SUBMIT, {"job_id": f"g{n}", "req": 10 + n, "reducers": 1,
                                   "splits": 2}, blobs)
            greedy.send(P.CANCEL, {"job_id": f"g{n}", "req": 50 + n})
        got = []
        while len(got) < 12:
            msg = greedy.recv(want=(P.ACCEPTED, P.STATUS, P.ERROR))
            assert msg is not None, got
            if msg.body.get("req") is not None:
                got.append(msg.body.get("code", msg.command))
        # its burst (2 s, refilled by a quarter of each request's 0.3 s) covers nine
        # requests (the ninth takes it below empty); then it is told busy, and a SUBMIT
        # so refused makes no job. (The tenth, the CANCEL of g4, a job that runs, is acted
        # on past the share: a job ends once, and its SUBMIT paid.)
        assert "busy" not in got[:10] and got[10:] == ["busy"] * 2, got
        assert b.jobs["g4"].state == P.JOB_CANCELLED and "g5" not in b.jobs, sorted(b.jobs)
        other = Peer(ctx, b.address, name="other")  # its own share
        submit(other, "o1", [(0, "b")])
        other.send(P.STATUS, {"job_id": "o1", "req": 2})  # (reads: another share)
        assert replies(other, 1) == ["status"]
        clock.now += 20.0  # refilled (a quarter of the time that passes, up to the burst)
        greedy.send(P.SUBMIT, {"job_id": "g9", "req": 99, "reducers": 1, "splits": 2}, blobs)
        assert greedy.recv(want=(P.ACCEPTED, P.ERROR)).command == P.ACCEPTED
    finally:
        stop_broker(b)


def test_a_submit_past_the_share_is_refused_before_its_splits_are_unpacked(ctx, monkeypatch):  # noqa: F811
    """A SUBMIT's small splits travel packed in one frame, and unpacking 50,000 of them
    took the loop more than building the job did: done before the share was looked at,
    a client sending large SUBMITs past its share held the loop from other jobs with
    requests that were all refused. Past its share, a request is refused with only its
    header read; one acted on is unpacked then (and charged for it)."""
    clock = FakeClock()
    b = start_broker(ctx)
    b._job_shares = PeerShares(D.JOBS_SHARE, D.JOBS_BURST, D.ALL_JOBS_SHARE,
                               D.ALL_JOBS_BURST, clock=clock)
    unpacked = []
    real_unpack = message_module._unpack_blobs

    def counting(*args):
        unpacked.append(1)
        return real_unpack(*args)

    monkeypatch.setattr(message_module, "_unpack_blobs", counting)
    try:
        greedy = Peer(ctx, b.address, name="greedy")
        blobs = [b"opaque job code", *[pack([[n, "a"]]) for n in range(50)],
                 msgpack.packb([["mem", 1]] * 50)]
        body = {"reducers": 1, "splits": 51}
        greedy.send(P.SUBMIT, {**body, "job_id": "g0", "req": 1}, blobs)
        assert greedy.recv(want=(P.ACCEPTED, P.ERROR)).command == P.ACCEPTED
        assert len(unpacked) == 1  # (the small splits shared a frame)
        deadline = time.monotonic() + 20  # (its bucket is made once the SUBMIT is charged,
        while not b._job_shares.peers:     # after the reply that the client may read first)
            assert time.monotonic() < deadline, "the SUBMIT was never charged"
            time.sleep(0.005)
        b._job_shares.peers[next(iter(b._job_shares.peers))].level = -5.0  # spent
        greedy.send(P.SUBMIT, {**body, "job_id": "g1", "req": 2}, blobs)
        reply = greedy.recv(want=(P.ACCEPTED, P.ERROR))
        assert reply.body.get("code") == "busy" and reply.body.get("req") == 2, reply
        assert len(unpacked) == 1 and "g1" not in b.jobs
        # and a layout that does not match its frames, acted on, is still refused as such
        clock.now += 60.0
        greedy.sock.send_multipart([msgpack.packb(
            [P.PROTOCOL_VERSION, P.SUBMIT, {**body, "job_id": "g2", "req": 3},
             b"\x03\x00\x00\x00"], use_bin_type=True), b"ab"])
        reply = greedy.recv(want=(P.ACCEPTED, P.ERROR))
        assert reply.body.get("code") == "malformed" and reply.body.get("req") == 3, reply
        assert "g2" not in b.jobs
    finally:
        stop_broker(b)


def test_a_release_is_acted_on_past_the_share(ctx):  # noqa: F811
    """A RELEASE frees what a finished job left (once), and is what a client does last:
    refused past the share, `pymapreduce run` ended in BrokerBusy (an error exit) after
    the job's output was printed, when many clients of one key had spent its share.
    It is charged to the share, and acted on even past it; a SUBMIT still waits."""
    clock = FakeClock()
    b = start_broker(ctx)
    b._job_shares = PeerShares(D.JOBS_SHARE, D.JOBS_BURST, D.ALL_JOBS_SHARE,
                               D.ALL_JOBS_BURST, clock=clock)
    try:
        client = Peer(ctx, b.address, name="client")
        submit(client, "j1", [(0, "a")])
        deadline = time.monotonic() + 20  # (its bucket is made once the SUBMIT is charged,
        while not b._job_shares.peers:     # after the reply that the client may read first)
            assert time.monotonic() < deadline, "the SUBMIT was never charged"
            time.sleep(0.005)
        b._job_shares.peers[next(iter(b._job_shares.peers))].level = -5.0  # spent
        # a CANCEL of its running job is acted on (a Ctrl-C must not leave it running
        # unwatched); one of a job that has ended waits, as a read would
        client.send(P.CANCEL, {"job_id": "j1", "req": 2})
        assert replies(client, 1) == ["status"] and b.jobs["j1"].state == P.JOB_CANCELLED
        client.send(P.CANCEL, {"job_id": "j1", "req": 22})
        assert replies(client, 1) == ["busy"]
        client.send(P.RELEASE, {"job_id": "j1", "req": 3})
        assert replies(client, 1) == ["status"] and b.jobs["j1"].released
        client.send(P.SUBMIT, {"job_id": "j2", "req": 4, "reducers": 1, "splits": 2},
                    [b"opaque job code", pack([[0, "a"]]), msgpack.packb([["mem", 1]])])
        reply = client.recv(want=(P.ACCEPTED, P.ERROR))
        assert reply.body.get("code") == "busy" and "j2" not in b.jobs
    finally:
        stop_broker(b)


def test_a_client_told_busy_asks_again_until_answered(ctx):  # noqa: F811
    clock = FakeClock()
    b = start_broker(ctx)
    costly_status(b, clock)
    try:
        b._shares.total.level = -1.0  # every client's share spent, until the clock moves
        submit(Peer(ctx, b.address, name="g"), "j1", [(0, "a")])  # (a submission: another
        client = Client(b.address, timeout=20)                        # share)
        try:
            # the clock moves in half a second: until then the client is told busy
            mover = threading.Timer(0.5, lambda: setattr(clock, "now", clock.now + 60))
            mover.start()
            status = client.job("j1").status()  # busy, busy... then answered
            assert status["job_id"] == "j1"
            mover.join()
        finally:
            client.close()
    finally:
        stop_broker(b)


def test_a_bucket_refills_at_its_share_up_to_its_burst():
    clock = FakeClock()
    bucket = TimeBucket(0.1, 0.5, clock)
    assert bucket.ready()
    bucket.charge(0.7)
    assert not bucket.ready()  # -0.2
    clock.now += 1.0
    assert not bucket.ready()  # -0.1
    clock.now += 2.0
    assert bucket.ready() and abs(bucket.level - 0.1) < 1e-9
    clock.now += 1000.0
    assert bucket.ready() and bucket.level == 0.5
    shares = PeerShares(0.1, 0.5, 0.3, 1.0, clock, max_peers=2)
    for peer in ("a", "b"):
        shares.charge(peer, 0.1)
    clock.now += 100.0  # both full again: forgotten when a third needs room
    shares.charge("c", 0.1)
    assert list(shares.peers) == ["c"]


def test_a_fetch_waiting_longer_than_the_resend_interval_keeps_reading(ctx):  # noqa: F811
    """results() asks for a partition not done yet and waits for it while the broker
    sends the job's status every heartbeat: past RESEND_AFTER from the request the client
    must keep reading (here it then hears the job was cancelled), not stop reading (a
    loop that polls nothing) and declare the broker silent after its timeout (or, with a
    timeout longer than RESEND_AFTER, resend the FETCH, one more waiter each time)."""
    b = start_broker(ctx)  # no workers: the job's partition is never done
    try:
        owner = Peer(ctx, b.address, name="g")
        submit(owner, "j1", [(0, "a")])
        client = Client(b.address, timeout=1.0)
        cancel = threading.Timer(timing.RESEND_AFTER + 1.5, lambda: owner.send(P.CANCEL, {"job_id": "j1",
                                                                    "req": 2}))
        try:
            cancel.start()
            with pytest.raises(JobFailed):
                list(client.job("j1").results())
        finally:
            cancel.join()
            client.close()
    finally:
        stop_broker(b)


class FakeBroker:
    """A ROUTER on loopback that answers a job handle as a broker would: WATCH and STATUS
    with a running one-partition job; the first FETCH after ``chatter`` seconds of status
    events (a partition that takes long to be done, the job's watchers told its status
    meanwhile), answered busy; the next with the partition."""

    def __init__(self, context: zmq.Context, chatter: float) -> None:
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.chatter, self.fetches, self.stopped = chatter, 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def send(self, route: bytes, command: str, body: dict, blobs: tuple = ()) -> None:
        self.router.send_multipart([route, *Message(command, body, blobs).encode()])

    def run(self) -> None:
        status = {"job_id": "j1", "state": P.JOB_RUNNING, "parts": 1, "step": [1, 1]}
        while not self.stopped:
            if not self.router.poll(50):
                continue
            route, *frames = self.router.recv_multipart()
            msg = Message.decode(frames)
            req = msg.body.get("req")
            if msg.command in (P.WATCH, P.STATUS):
                self.send(route, P.STATUS, {"req": req, **status})
            elif msg.command == P.FETCH and self.fetches == 0:
                self.fetches += 1
                end = time.monotonic() + self.chatter
                while time.monotonic() < end and not self.stopped:
                    time.sleep(0.1)  # the job's status, every heartbeat, unasked
                    self.send(route, P.STATUS, status)
                self.send(route, P.ERROR, {"req": req, "code": "busy", "message": "full"})
            elif msg.command == P.FETCH:
                self.fetches += 1
                self.send(route, P.PART, {"req": req, "job_id": "j1", "part": 0}, (b"",))

    def close(self) -> None:
        self.stopped = True
        self.thread.join(5)
        self.router.close(0)


def test_a_fetch_told_busy_after_a_long_patient_wait_asks_again(ctx):  # noqa: F811
    """A FETCH that waits for its partition may wait much longer than the client's
    timeout while the broker keeps talking; when its answer is then "busy" (the broker's
    memory held by unread replies), it is asked again, as a busy answer to any request
    is, not raised at once because the wait outlasted the timeout."""
    fake = FakeBroker(ctx, chatter=3.0)
    client = Client(fake.address, timeout=1.0)
    try:
        assert list(client.job("j1").results()) == []
        assert fake.fetches == 2
    finally:
        client.close()
        fake.close()


def test_with_keys_a_client_key_has_one_share_however_many_connections(ctx, tmp_path):  # noqa: F811
    """With keys, a client is its key (as for its jobs and its limits): one key's many
    connections share one key's share of the loop, and do not spend the other keys'
    (the total) among themselves."""
    keys = security.cluster_keys(str(tmp_path / "keys"))
    security.generate(keys, "other")
    security.authorize(keys, security.CLIENT, f"{keys}/other.key")
    clock = FakeClock()
    b = start_broker(ctx, keys_dir=keys)
    costly_status(b, clock)
    try:
        first = Peer(ctx, b.address, keys, "client")
        submit(first, "j1", [(0, "a")])
        greedy = [first, *(Peer(ctx, b.address, keys, "client") for _ in range(7))]
        got = []
        for i, peer in enumerate(greedy):  # two each: 3.2 s of the loop from one key
            peer.send(P.STATUS, {"job_id": "j1", "req": 100 + 2 * i})
            peer.send(P.STATUS, {"job_id": "j1", "req": 101 + 2 * i})
            got += replies(peer, 2)
        assert got == ["status"] * 3 + ["busy"] * 13  # the key's burst: three answers
        other = Peer(ctx, b.address, keys, "other")  # another key: its own share
        submit(other, "j2", [(0, "b")])
        other.send(P.STATUS, {"job_id": "j2", "req": 5})
        assert replies(other, 1) == ["status"]
    finally:
        stop_broker(b)


def test_a_client_used_by_two_threads_at_once_says_so(ctx):  # noqa: F811
    """A Client's socket serves one thread at a time: a request from a second thread
    while one is out is a clear error, not a broker that seems not to answer."""
    from pymapreduce import PyMapReduceError

    b = start_broker(ctx)
    try:
        submit(Peer(ctx, b.address, name="g"), "j1", [(0, "a")])
        client = Client(b.address, timeout=10)
        try:
            out, go = [], threading.Event()

            def hold():  # a request in flight in another thread (its lock held)
                with client._in_use:
                    go.set()
                    out.append(threading.Event().wait(1.0))

            other = threading.Thread(target=hold)
            other.start()
            go.wait(5)
            try:
                client.job("j1").status()
            except PyMapReduceError as exc:
                assert "in use by another thread" in str(exc)
            else:
                raise AssertionError("no error for a second thread's request")
            other.join()
            assert client.job("j1").status()["job_id"] == "j1"  # its turn now
        finally:
            client.close()
    finally:
        stop_broker(b)
