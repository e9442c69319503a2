"""The broker's read-only HTTP server: JSON API, server-sent events, ``/metrics``, page.

It is served by the broker loop itself, between its other work: the listening socket and
each connection are in the loop's poller, every socket is non-blocking, and what a
connection has to send waits in its buffer until the socket takes it. No thread of its
own: threads would share the broker's interpreter lock with the loop, and taking turns
at it cost the loop several times what the requests themselves cost (benchmarks/
RESULTS.md). It reads only an immutable snapshot of the broker's state (built when a
request finds the last one stale) and the event log: no request can change cluster
state, and nothing from a request reaches the cluster. A request is GET only, one per
connection (HTTP/1.0).

What a slow or hostile client may cost: at most ``MAX_CONNECTIONS`` connections at once
(``MAX_PER_ADDRESS`` from one address; more are closed at once), a request must arrive
whole within ``REQUEST_SECONDS`` and ``MAX_REQUEST_BYTES`` (slowloris, huge headers), a
connection that takes nothing of what it is sent for ``WRITE_SECONDS`` is closed, and so
is an event stream whose reader falls ``MAX_STREAM_BUFFER`` bytes behind. At most
``MAX_PER_SECOND`` connections are accepted per second, and the two listings are
serialized once per snapshot however many ask. The loop never waits for a client.

What answering costs the loop is bounded too, whoever asks and whatever they ask for:
a job's page of a job of thousands of tasks takes the loop tens of milliseconds to
build, and a client that sent such requests as fast as it could open connections took
the broker's task rate from 9,000 to 300 a second (benchmarks/bench_request_flood.py). So
a request that has arrived waits its turn: requests are answered from a bucket of loop
time (``SHARE`` of the loop's time, up to ``BURST`` seconds at once after a quiet
spell), each charged what its answer took, and the waiting ones are taken from their
addresses in turn, so that one address's many requests do not go before another's one.
Event streams' reads are charged to the same bucket and, while it is empty, wait their
turn with the requests (an address's among the others: requests that keep arriving do
not keep a stream from ever being read). An answer waits only while answers have used
up the bucket; nothing else of the loop does.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import time
from collections import deque
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import zmq

from ..patterns.share import TimeBucket

log = logging.getLogger("pymapreduce.broker")

MAX_CONNECTIONS = 64
MAX_PER_SECOND = 200  # connections accepted per second; more are closed at once
MAX_PER_ADDRESS = 16
REQUEST_SECONDS = 5.0  # to send the request line and headers
MAX_REQUEST_BYTES = 32 * 1024  # request line and headers together
WRITE_SECONDS = 10.0
SSE_POLL = 0.2  # seconds between looks at the event ring for a stream
SSE_KEEPALIVE = 10.0
SSE_MAX_SECONDS = 600.0  # a stream ends after this; EventSource reconnects (Last-Event-ID)
MAX_STREAM_BUFFER = 8 << 20  # bytes of events a stream's reader may fall behind
ACCEPTS_PER_TURN = 16  # connections taken at one turn of the loop (more: at the next)
TIMERS_EVERY = 0.05  # seconds between looks at deadlines and streams
SHARE = 0.1  # of the loop's time that answers may take, over time (the bucket's refill)
BURST = 0.25  # seconds of answers served at once after a quiet spell (the bucket's size)
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented"}
COOKIE = "pymapreduce_token"
TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"'#]*", re.IGNORECASE)  # redacted from the log
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def _host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:80`` and ``[::1]`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rsplit(":", 1)[0]


def is_loopback_name(host: str) -> bool:
    """``localhost`` or a loopback address written as one (127.0.0.0/8, ::1): never a
    name that merely begins with ``127.``, which anyone's DNS may point at 127.0.0.1."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
PAGES = ("/", "/index.html")  # the dashboard: a browser gets a readable 401 there
# the dashboard's own files may load only from the broker (no CDN, no inline code)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
NEEDS_TOKEN_PAGE = b"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>pymapreduce: the token is needed</title></head>
<body style="font-family:sans-serif;max-width:46em;margin:3em auto;line-height:1.5">
<h1 id="needs-token">This dashboard needs the broker's token</h1>
<p>The broker has keys, so its dashboard and API answer only requests that carry its
token. Ask for the dashboard's URL with the token where the broker's key directory is:</p>
<pre>pymapreduce dashboard-url http://HOST:PORT/ --keys KEY_DIR</pre>
<p>and open the URL it prints (it ends in <code>?token=...</code>).</p>
</body></html>
"""
# a request that carried a token the broker does not accept (rather than none)
REFUSED_TOKEN = ("the token given is not accepted by this broker: its token file was "
                 "replaced (which revokes every token made from the old one), the token "
                 "was cut short, or it is a client token whose key was removed from the "
                 "broker's allowlist. Get a new URL with `pymapreduce dashboard-url`")
REFUSED_TOKEN_PAGE = NEEDS_TOKEN_PAGE.replace(
    b"<p>The broker has keys,",
    b'<p id="refused-token">The token this page was opened with is not accepted: the '
    b"broker's token file was replaced, the token was cut short, or its client key was "
    b"removed from the broker's allowlist.</p>\n<p>The broker has keys,")


class Headers(dict):
    """A request's headers by lower-case name (the first of a name given twice)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


def parse_request(raw: bytes) -> tuple[str, str, Headers]:
    """``(method, target, headers)`` of a request's line and headers (``raw``, without the
    blank line that ends them); ValueError when they are not HTTP."""
    text = raw.decode("latin-1").replace("\r\n", "\n")
    first, _, rest = text.partition("\n")
    parts = first.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("bad request syntax")
    headers = Headers()
    for line in rest.split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("bad header line")
        headers.setdefault(name.lower(), value.strip())
    return parts[0], parts[1], headers


def response(code: int, ctype: str, body: bytes, headers: dict | None = None,
             sized: bool = True) -> bytes:
    """A whole answer: its status line, the headers every answer has, ``headers``, body
    (not ``sized``: an event stream's start, which has no length)."""
    lines = [f"HTTP/1.0 {code} {REASONS.get(code, 'Error')}", "Server: pymapreduce",
             f"Date: {formatdate(usegmt=True)}", f"Content-Type: {ctype}",
             "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
             "X-Frame-Options: DENY", "Referrer-Policy: no-referrer"]  # (URLs hold tokens)
    if sized:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _refusal(code: int, message: str) -> bytes:
    return response(code, "application/json", json.dumps({"error": message}).encode())


def answer(app: Any, method: str, target: str, headers: Headers) -> tuple[bytes, Any]:
    """What to send for a request: ``(bytes, None)``, or for an event stream ``(its
    headers, (next_events, valid))``; ``valid``: None, or a callable that says whether
    the request's token is still accepted (a client token's stream ends with its key)."""
    if method != "GET":
        return _refusal(501, f"unsupported method {method[:20]!r}: GET only"), None
    url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    given = _token(query, headers)
    scope = ""  # every job; "key ...": one client's (a client token, observe/scopes.py)
    path = url.path
    if app.token is None:  # no token: loopback Host names only, unless public
        host = _host_name(headers.get("Host") or "")
        if app.check_host and host and not is_loopback_name(host):
            # a page elsewhere that re-pointed its own name at 127.0.0.1 (DNS
            # rebinding) must not read a keyless broker's API
            return _refusal(403, f"host {host!r} is not a loopback name"), None
    elif (scope := app.scope_of(given)) is None:
        if path in PAGES:  # a person at a browser: say what to do, show no data
            return response(401, "text/html; charset=utf-8",
                            REFUSED_TOKEN_PAGE if given else NEEDS_TOKEN_PAGE), None
        return _refusal(401, REFUSED_TOKEN if given else
                        "a token is needed: see `pymapreduce dashboard-url`"), None
    extra = {}
    if app.token is not None and query.get("token"):
        # the page's own requests (and EventSource, which sends no headers) use it
        extra["Set-Cookie"] = f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/"
    try:
        route = app.route(path, query, headers, scope)
    except PermissionError as exc:
        return _refusal(403, str(exc)), None
    except KeyError as exc:
        return _refusal(404, str(exc.args[0]) if exc.args else "not found"), None
    except ValueError as exc:
        return _refusal(400, str(exc)), None
    except Exception:  # a bug here must not leave the client without an answer
        log.exception("HTTP %s failed", path[:100])
        return _refusal(500, "internal error (see the broker's log)"), None
    if route[0] == "stream":  # (a client token's ends when its key is revoked)
        head = response(200, "text/event-stream", b"retry: 1000\n\n", extra, sized=False)
        return head, (route[1], (lambda: app.scope_of(given) == scope) if scope else None)
    ctype, body = route
    if ctype.startswith(("text/html", "text/javascript", "text/css")):
        extra["Content-Security-Policy"] = CSP
    return response(200, ctype, body, extra), None


def _token(query: dict, headers: Headers) -> str:
    auth = headers.get("Authorization") or ""
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    if query.get("token"):
        return query["token"]
    for part in (headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return ""


_READ = ("read",)  # a _Conn's ``request`` while its event stream's read waits its turn


def _events_chunk(events: list) -> bytes:
    return b"".join(f"id: {e['seq']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n"
                    .encode() for e in events)


class _Conn:
    """One client's connection: what it sent so far, what is left to send it."""

    __slots__ = ("sock", "fd", "peer", "inbuf", "out", "sent", "deadline", "moved",
                 "stream", "started", "polled", "last", "answered", "request")

    def __init__(self, sock: socket.socket, peer: str, now: float) -> None:
        self.sock, self.fd, self.peer = sock, sock.fileno(), peer
        self.inbuf = b""
        self.out = b""  # to send; ``sent`` of it went
        self.sent = 0
        self.deadline = now + REQUEST_SECONDS  # for the whole request to arrive
        self.moved = now  # when the client last took bytes (or the answer began)
        self.stream: Any = None  # an event stream's (next_events, valid)
        self.started = self.polled = self.last = now
        self.answered = False
        self.request: Any = None  # (method, target, headers) once it arrived, unanswered


class LoopServer:
    """The HTTP server the broker loop serves (see the module's text): ``attach`` it to the
    loop's poller, and call ``serve`` each turn with what the poll returned."""

    def __init__(self, address: tuple[str, int], app: Any, *,
                 clock: Any = time.perf_counter) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(MAX_CONNECTIONS)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.server_address = self.sock.getsockname()
        self.fd = self.sock.fileno()
        self.app = app
        self.poller: zmq.Poller | None = None
        self.conns: dict[int, _Conn] = {}
        self._open: dict[str, int] = {}  # connections by client address
        self._second, self._accepted = 0, 0  # connections accepted in the current second
        self._timers = 0.0
        # requests that arrived and wait for the bucket, by client address (an address's
        # oldest first; the addresses in turn, in the dict's order)
        self._waiting: dict[str, deque[_Conn]] = {}
        self.clock = clock  # what answers are timed with
        self._bucket = TimeBucket(SHARE, BURST, clock)  # the loop's time for answers

    def attach(self, poller: zmq.Poller) -> None:
        self.poller = poller
        poller.register(self.fd, zmq.POLLIN)

    def serve(self, events: dict, now: float | None = None) -> None:
        """One turn's work: new connections, what clients sent, what they can take, and
        (every TIMERS_EVERY) deadlines and the event streams. All of it is charged to
        the bucket, so that answers wait longer while connections cost more; they are
        still accepted and read (at most MAX_PER_SECOND a second), so that another
        address's request waits its turn in the queue, not behind a flood in the
        listening socket's backlog. ``now``: the loop's monotonic clock (read here, past
        the usual turn's early return, when not given)."""
        if self.fd not in events and not self.conns:
            return  # (the usual turn: nothing of HTTP's, no clock read)
        if now is None:
            now = time.monotonic()
        bucket = self._bucket
        t = bucket.fill()
        if self.fd in events:
            self._accept(now)
        if self.conns:
            for fd in [fd for fd in events if fd in self.conns]:
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                flags = events[fd]
                if flags & zmq.POLLIN:
                    self._read(conn, now)
                if flags & zmq.POLLOUT and fd in self.conns:
                    self._write(conn, now)
        bucket.charge(self.clock() - t)
        if self.conns:
            if self._waiting:
                self._work(now)
            if now - self._timers >= TIMERS_EVERY:
                self._timers = now
                for conn in list(self.conns.values()):
                    self._tick(conn, now)

    def _work(self, now: float) -> None:
        """Answer waiting requests while the bucket holds time: each address's oldest in
        turn, each answer charged what it took (the last may take the bucket below
        empty: the next waits until it is refilled past that)."""
        bucket = self._bucket
        t = bucket.fill()
        while self._waiting and bucket.level > 0:
            peer = next(iter(self._waiting))
            queue = self._waiting.pop(peer)
            conn = queue.popleft()
            if queue:  # (behind every other address now)
                self._waiting[peer] = queue
            request, conn.request = conn.request, None
            if request is _READ:  # an event stream's read, waiting its turn too
                self._read_stream(conn, now)
            else:
                self._answer_request(conn, request, now)
            done = self.clock()  # (what it took, its first sending included)
            bucket.charge(done - t)
            t = done

    def _answer_request(self, conn: _Conn, request: tuple, now: float) -> None:
        method, target, headers = request
        try:
            body, stream = answer(self.app, method, target, headers)
        except ValueError as exc:  # (a target urlsplit cannot read: "//[x")
            body, stream = _refusal(400, f"bad request target: {exc}"), None
        except Exception:  # a bug here must not leave the client without an answer
            log.exception("HTTP %s failed", target[:100])
            body, stream = _refusal(500, "internal error (see the broker's log)"), None
        conn.stream = stream
        self._answer(conn, body, now)

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.poller is not None:
            try:
                self.poller.unregister(self.fd)
            except KeyError:
                pass
        self.sock.close()

    # -- connections -------------------------------------------------------------------
    def _accept(self, now: float) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # (out of descriptors: the next turn tries again)
                log.debug("HTTP accept failed: %s", exc)
                return
            peer = address[0] if isinstance(address, tuple) else ""
            second = int(now)
            if second != self._second:
                self._second, self._accepted = second, 0
            self._accepted += 1
            if (len(self.conns) >= MAX_CONNECTIONS or self._accepted > MAX_PER_SECOND
                    or self._open.get(peer, 0) >= MAX_PER_ADDRESS):
                sock.close()  # closed at once: costs the loop nothing more
                continue
            sock.setblocking(False)
            conn = _Conn(sock, peer, now)
            self.conns[conn.fd] = conn
            self._open[peer] = self._open.get(peer, 0) + 1
            if self.poller is not None:
                self.poller.register(conn.fd, zmq.POLLIN)

    def _close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        if conn.request is not None:  # (gone before its answer: none is made)
            conn.request = None
            queue = self._waiting.get(conn.peer)
            if queue is not None:
                queue.remove(conn)
                if not queue:
                    del self._waiting[conn.peer]
        left = self._open.get(conn.peer, 1) - 1
        if left > 0:
            self._open[conn.peer] = left
        else:
            self._open.pop(conn.peer, None)
        if self.poller is not None:
            try:
                self.poller.unregister(conn.fd)
            except KeyError:
                pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _read(self, conn: _Conn, now: float) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not chunk:  # the client went away (or ended its side before an answer)
            self._close(conn)
            return
        if conn.answered or conn.request is not None:  # (one request a connection:
            return                                      # what follows is not read)
        conn.inbuf += chunk
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0 or end > MAX_REQUEST_BYTES:
            if len(conn.inbuf) >= MAX_REQUEST_BYTES:
                self._answer(conn, _refusal(431, "request headers too large"), now)
            return
        raw, conn.inbuf = conn.inbuf[:end], b""
        try:
            method, target, headers = parse_request(raw)
        except ValueError as exc:
            self._answer(conn, _refusal(400, str(exc)), now)
            return
        if log.isEnabledFor(logging.DEBUG):  # (the request line: the token in its query)
            log.debug("HTTP %s: %s", conn.peer,
                      TOKEN_IN_QUERY.sub(r"\1<redacted>", f"{method} {target}"[:300]))
        conn.request = (method, target, headers)  # answered in its turn (_work)
        self._queue(conn)

    def _queue(self, conn: _Conn) -> None:
        """``conn`` waits its turn at the bucket (its ``request`` is set)."""
        queue = self._waiting.get(conn.peer)
        if queue is None:
            self._waiting[conn.peer] = queue = deque()
        queue.append(conn)

    def _answer(self, conn: _Conn, data: bytes, now: float) -> None:
        conn.answered = True
        conn.moved = now
        self._send(conn, data, now)

    def _send(self, conn: _Conn, data: bytes, now: float) -> None:
        """Add ``data`` to what the connection is to be sent, and send what it takes now."""
        if conn.sent:
            conn.out, conn.sent = conn.out[conn.sent:], 0
        conn.out += data
        self._write(conn, now)

    def _write(self, conn: _Conn, now: float) -> None:
        if conn.sent < len(conn.out):
            try:
                n = conn.sock.send(memoryview(conn.out)[conn.sent:])
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:  # the client went away
                self._close(conn)
                return
            if n:
                conn.sent += n
                conn.moved = now
        if conn.sent < len(conn.out):  # the rest when the socket takes it
            if self.poller is not None:
                self.poller.register(conn.fd, zmq.POLLIN | zmq.POLLOUT)
            return
        conn.out, conn.sent = b"", 0
        if conn.answered and conn.stream is None:  # the whole answer went
            self._close(conn)
        elif self.poller is not None:  # (a stream: its reader's close is seen)
            self.poller.register(conn.fd, zmq.POLLIN)

    def _tick(self, conn: _Conn, now: float) -> None:
        if not conn.answered:
            if conn.request is None and now >= conn.deadline:  # the request did not
                self._close(conn)                                 # arrive in time
            return
        if conn.sent < len(conn.out) and now - conn.moved >= WRITE_SECONDS:
            self._close(conn)  # it takes nothing of what it is sent
            return
        if conn.stream is None:
            return
        valid = conn.stream[1]
        if self.app.closed or now - conn.started >= SSE_MAX_SECONDS or (
                valid is not None and not valid()):
            self._close(conn)
            return
        if conn.request is not None or now - conn.polled < SSE_POLL:
            return  # (its read waits its turn in ``_waiting``: _work does it)
        t = self._bucket.fill()
        if self._bucket.level <= 0:  # (the bucket is empty: the stream's read waits its turn
            conn.request = _READ  # with the requests, its address's among the others)
            self._queue(conn)
            return
        self._read_stream(conn, now)
        self._bucket.charge(self.clock() - t)

    def _read_stream(self, conn: _Conn, now: float) -> None:
        """An event stream's look at the event ring: what is new is sent (or, after a
        quiet spell, a keep-alive)."""
        conn.polled = now
        chunk = _events_chunk(conn.stream[0]())
        if not chunk and now - conn.last >= SSE_KEEPALIVE:
            chunk = b": keep-alive\n\n"
        if chunk:
            if len(conn.out) - conn.sent + len(chunk) > MAX_STREAM_BUFFER:
                self._close(conn)  # its reader fell too far behind
                return
            conn.last = now
            self._send(conn, chunk, now)
