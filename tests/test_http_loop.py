"""The broker loop serves HTTP itself (observe/http.py): clients that do not read, that
open too many connections, that send what is not HTTP, or that flood it, must never hold
the loop, nor the jobs it runs."""

from __future__ import annotations

import socket
import time

from pymapreduce import Client, run_sequential

from .conftest import wait_workers
from .jobs import NoOp, WordCount
from .test_observe import get, get_json, start_broker


def _host_port(http: str) -> tuple[str, int]:
    host, port = http[len("http://"):].rstrip("/").rsplit(":", 1)
    return host, int(port)


def _closed_at_once(sock: socket.socket, within: float = 5.0) -> bool:
    """The server closed ``sock`` without an answer (EOF, or a reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_clients_that_never_read_hold_neither_the_loop_nor_other_clients(daemons):
    """Event streams and big answers nobody reads wait in their connections' buffers:
    a job runs to its end and other requests are answered meanwhile."""
    address, http = start_broker(daemons)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    host, port = _host_port(http)
    stalled = []
    for path in ("/api/events", "/api/events?since=0", "/metrics", "/static/dashboard.js"):
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        stalled.append(s)
    try:
        records = [(i, f"w{i % 7} x{i % 3}") for i in range(3000)]
        with Client(address) as client:
            for _ in range(3):  # thousands of events for the streams nobody reads
                handle = client.submit(WordCount(), records, map_tasks=60)
                assert handle.result(60) == run_sequential(WordCount(), records)
                assert get_json(f"{http}api/cluster")["broker"]["address"] == address
                deadline = time.monotonic() + 10  # (a snapshot is at most 0.5 s old)
                while True:
                    rows = {j["id"]: j for j in get_json(f"{http}api/jobs")["jobs"]}
                    if rows.get(handle.job_id, {}).get("state") == "succeeded":
                        break
                    assert time.monotonic() < deadline, rows
                    time.sleep(0.1)
    finally:
        for s in stalled:
            s.close()


def test_past_its_cap_an_address_s_connections_are_closed_at_once_and_served_again_after(
        daemons):
    from pymapreduce.observe.http import MAX_PER_ADDRESS

    address, http = start_broker(daemons)
    host, port = _host_port(http)
    held = []
    for _ in range(MAX_PER_ADDRESS):  # idle: a request line never sent
        held.append(socket.create_connection((host, port), timeout=10))
    time.sleep(0.3)  # (the loop has taken them)
    extra = socket.create_connection((host, port), timeout=10)
    try:
        assert _closed_at_once(extra)
    finally:
        extra.close()
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while True:  # their ends are seen at the loop's next turns
        try:
            assert get_json(f"{http}api/cluster")["broker"]["address"] == address
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_what_is_not_a_get_request_gets_a_clear_refusal(daemons):
    _, http = start_broker(daemons)
    host, port = _host_port(http)

    def ask(raw: bytes) -> bytes:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(raw)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk

    assert ask(b"POST /api/jobs HTTP/1.1\r\nHost: localhost\r\n\r\n").startswith(
        b"HTTP/1.0 501 ")
    assert ask(b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    assert ask(b"GET /api/jobs HTTP/1.1\r\nno colon here\r\n\r\n").startswith(
        b"HTTP/1.0 400 ")
    assert ask(b"GET /api/jobs HTTP/1.1\r\n Host: folded\r\n\r\n").startswith(
        b"HTTP/1.0 400 ")
    assert ask(b"GET //[::1 HTTP/1.1\r\nHost: localhost\r\n\r\n").startswith(
        b"HTTP/1.0 400 ")
    # bare newlines, as some clients send them
    ok = ask(b"GET /api/cluster HTTP/1.0\nHost: localhost\n\n")
    assert ok.startswith(b"HTTP/1.0 200 ") and b'"broker"' in ok
    status, body = get(f"{http}api/nothing-here")
    assert status == 404 and b"error" in body


def test_a_connection_flood_is_bounded_and_the_jobs_go_on(daemons):
    """Hundreds of connections a second: past MAX_PER_SECOND they are closed at once;
    the loop's jobs finish, and the server answers again once the flood stops."""
    address, http = start_broker(daemons)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    host, port = _host_port(http)
    records = [(i, f"w{i % 5}") for i in range(2000)]
    with Client(address) as client:
        handle = client.submit(WordCount(), records, map_tasks=40)
        for _ in range(3):  # three bursts of 150, each closed at once by the client too
            burst = []
            for _ in range(150):
                try:
                    burst.append(socket.create_connection((host, port), timeout=5))
                except OSError:  # (the backlog full: refused)
                    pass
            for s in burst:
                s.close()
        assert handle.result(60) == run_sequential(WordCount(), records)
    deadline = time.monotonic() + 10
    while True:  # (past the second's cap a connection is closed unanswered)
        try:
            if get(f"{http}api/jobs")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.2)


class _CostlyApp:
    """An app for LoopServer whose every answer costs ``cost`` seconds of a clock that
    moves only when told: what the server's bucket of loop time sees, exactly."""

    token = None
    check_host = False
    closed = False

    def __init__(self) -> None:
        self.now = 1000.0
        self.cost = 0.1
        self.paths: list[str] = []

    def clock(self) -> float:
        return self.now

    def route(self, path, query, headers, scope=""):
        self.paths.append(path)
        self.now += 1.0 if path == "/slow" else self.cost
        return "application/json", b"{}"


def test_answers_take_their_share_of_the_loop_and_addresses_take_turns():
    """A client sending many costly requests at once gets them answered a bucket of loop
    time at a time (BURST seconds, refilled at SHARE of the time), and another address's
    one request goes before its second: one client's volume does not cost the others.
    A request whose client left before its turn is never built."""
    import zmq

    from pymapreduce.observe import http as H

    app = _CostlyApp()
    server = H.LoopServer(("127.0.0.1", 0), app, clock=app.clock)
    poller = zmq.Poller()
    server.attach(poller)
    host, port = server.server_address[:2]
    socks: dict[str, socket.socket] = {}

    def send(path: str, source: str = "127.0.0.1") -> None:
        s = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        socks[path] = s

    def turn() -> None:
        server.serve(dict(poller.poll(20)), time.monotonic())

    def waiting() -> int:
        return sum(map(len, server._waiting.values()))

    def turns_until(done) -> None:
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline
            turn()

    def answered(path: str) -> bytes:
        s = socks[path]
        s.settimeout(5)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data

    try:
        send("/slow")  # one answer of a second empties the bucket (0.25 - 1.0)
        turns_until(lambda: app.paths == ["/slow"])
        for i in range(10):  # an address's ten, then another address's one
            send(f"/a/{i}")
        send("/b", source="127.0.0.2")
        turns_until(lambda: waiting() == 11)
        for _ in range(5):  # the clock has not moved: the bucket stays empty
            turn()
        assert app.paths == ["/slow"] and waiting() == 11
        app.now += 100.0  # refilled: BURST seconds, three answers of 0.1
        turn()
        assert app.paths == ["/slow", "/a/0", "/b", "/a/1"]
        assert all(answered(p).startswith(b"HTTP/1.0 200") for p in ("/a/0", "/b", "/a/1"))
        for i in (2, 3, 4):  # their clients leave before their turn
            socks.pop(f"/a/{i}").close()
        turns_until(lambda: waiting() == 5)
        app.now += 1.0  # a second at SHARE refills 0.1: the bucket (-0.05) goes to 0.05
        turn()
        assert app.paths[4:] == ["/a/5"]
        for _ in range(20):
            app.now += 100.0
            turn()
        assert app.paths[4:] == [f"/a/{i}" for i in range(5, 10)]
        assert all(answered(f"/a/{i}").startswith(b"HTTP/1.0 200") for i in range(5, 10))
    finally:
        for s in socks.values():
            s.close()
        server.close()


def test_a_flood_of_costly_requests_from_one_address_leaves_the_jobs_and_others_served(
        daemons):
    """The attack the bucket answers, kept: a client asks for a big job's page, and for
    its events from cursors that differ, as fast as it can open connections, closing each
    at once; meanwhile a job runs to its exact result and another address's requests
    are answered."""
    address, http = start_broker(daemons)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    host, port = _host_port(http)

    with Client(address) as client:
        big = client.submit(NoOp(), [(i, i) for i in range(3000)], map_tasks=3000,
                            reducers=0)
        assert big.result(60) == []
        page = get_json(f"{http}api/jobs/{big.job_id}")
        assert len(page["attempts"]) >= 3000
        records = [(i, f"w{i % 7} x{i % 3}") for i in range(2000)]
        handle = client.submit(WordCount(), records, map_tasks=200)
        sent = 0
        for n in range(300):  # bounded: 300 requests, each connection closed at once
            path = (f"/api/jobs/{big.job_id}" if n % 2 else
                    f"/api/events?format=json&job={big.job_id}&since={n * 7}")
            try:
                with socket.create_connection((host, port), timeout=5) as s:
                    s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                    sent += 1
            except OSError:  # (refused past the caps: that is a cap doing its work)
                pass
        assert sent > 0
        # another address's request (a loopback one of its own) is answered meanwhile,
        # its turn before the flood's queued ones
        reply = _get_from("127.0.0.2", host, port, "/api/cluster")
        assert reply.startswith(b"HTTP/1.0 200") and address.encode() in reply
        assert handle.result(60) == run_sequential(WordCount(), records)
        # (the flood's address may still have requests queued: a third address asks)
        reply = _get_from("127.0.0.3", host, port, f"/api/jobs/{big.job_id}")
        assert reply.startswith(b"HTTP/1.0 200") and big.job_id.encode() in reply


def _get_from(source: str, host: str, port: int, path: str) -> bytes:
    """A GET from the loopback address ``source``: the whole answer (asked again while the
    server closes the connection unanswered, in a second whose connection cap a flood
    took: a close with the request unread is a reset on Linux)."""
    deadline = time.monotonic() + 30
    while True:
        with socket.create_connection((host, port), timeout=30,
                                      source_address=(source, 0)) as s:
            reply = b""
            try:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                while chunk := s.recv(65536):
                    reply += chunk
            except ConnectionResetError:
                reply = b""  # (closed unanswered)
        if reply or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_an_event_stream_gets_its_turn_while_other_requests_keep_the_bucket_empty():
    """Requests that keep arriving from one address, each taking what the bucket held,
    must not keep another address's event stream from ever being read: its read waits
    its turn like a request, not for a moment when no request waits."""
    import zmq

    from pymapreduce.observe import http as H

    app = _CostlyApp()
    reads = []

    def next_events() -> list:
        reads.append(app.now)
        return [{"seq": 1, "type": "phase"}] if len(reads) == 1 else []

    costly_route = app.route

    def route(path, query, headers, scope=""):
        if path == "/events":
            return "stream", next_events
        return costly_route(path, query, headers, scope)

    app.route = route
    server = H.LoopServer(("127.0.0.1", 0), app, clock=app.clock)
    poller = zmq.Poller()
    server.attach(poller)
    host, port = server.server_address[:2]
    socks: list[socket.socket] = []
    now = [5000.0]  # the loop's clock, for deadlines and the streams' polls

    def send(path: str, source: str = "127.0.0.1") -> socket.socket:
        s = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        socks.append(s)
        return s

    def turn() -> None:
        server.serve(dict(poller.poll(20)), now[0])

    def turns_until(done) -> None:
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline
            turn()

    try:
        stream = send("/events", source="127.0.0.2")  # answered at once: the bucket is full
        turns_until(lambda: any(c.stream is not None for c in server.conns.values()))
        send("/slow")  # the bucket: 0.25 - 1.0
        turns_until(lambda: app.paths == ["/slow"])
        for i in range(12):
            send(f"/a/{i}")
        turns_until(lambda: sum(map(len, server._waiting.values())) == 12)
        while len(app.paths) < 6:  # a second of loop time at a turn: refilled by 0.1,
            app.now += 1.0         # which the next request waiting takes
            now[0] += 1.0
            turn()
        assert reads, "the event stream was never read while requests waited"
        stream.settimeout(5)
        got = b""
        while b"data: " not in got:
            chunk = stream.recv(65536)
            assert chunk
            got += chunk
        assert got.startswith(b"HTTP/1.0 200") and b'"type":"phase"' in got
    finally:
        for s in socks:
            s.close()
        server.close()
