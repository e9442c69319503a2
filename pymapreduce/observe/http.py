"""The broker's read-only HTTP server: JSON API, server-sent events, ``/metrics``, page.

It runs in threads of its own (``ThreadingHTTPServer``) and reads only what the broker
loop publishes (an immutable snapshot, the locked event log): no handler can change
cluster state, and nothing from a request reaches the cluster. A request is GET only.

What a slow or hostile client may cost: at most ``MAX_CONNECTIONS`` connections at once
(``MAX_PER_ADDRESS`` from one address; more are closed at once), a request must arrive
whole within ``REQUEST_SECONDS`` and ``MAX_REQUEST_BYTES`` (slowloris, huge headers),
and a write that the client does not read for ``WRITE_SECONDS`` ends its connection.
At most ``MAX_PER_SECOND`` connections are accepted per second, and the two listings
are serialized once per snapshot however many ask: the HTTP threads share the broker's
interpreter (its GIL), so a request flood is bounded in what it can take from the loop.
Each connection holds one thread; the broker loop never waits for any of them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


class _RequestReader:
    """The request's reader: the whole request line and headers within a deadline and a
    byte budget (a socket timeout alone bounds each recv, not a trickle of bytes)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline
        self.buf = b""
        self.total = 0
        self.over = False

    def readline(self, limit: int = -1) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0 or (0 < limit <= len(self.buf)):
                end = i + 1 if i >= 0 else limit
                if limit > 0:
                    end = min(end, limit)
                line, self.buf = self.buf[:end], self.buf[end:]
                return line
            if self.total >= MAX_REQUEST_BYTES:
                self.over = True  # ends the headers here; the handler answers 431
                return b""
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.total += len(chunk)
            self.buf += chunk

    def read(self, n: int = -1) -> bytes:  # (GET requests have no body to read)
        return b""

    def close(self) -> None:
        pass


class Server(ThreadingHTTPServer):
    """Bounded connections, one daemon thread each."""

    daemon_threads = True
    request_queue_size = 64
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: Any) -> None:
        self.app = app
        self._count_lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._total = 0
        self._second, self._accepted = 0, 0  # connections accepted in the current second
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = client_address[0] if isinstance(client_address, tuple) else ""
        with self._count_lock:
            second = int(time.monotonic())
            if second != self._second:
                self._second, self._accepted = second, 0
            self._accepted += 1
            full = (self._total >= MAX_CONNECTIONS or self._accepted > MAX_PER_SECOND
                    or self._open.get(peer, 0) >= MAX_PER_ADDRESS)
            if not full:
                self._total += 1
                self._open[peer] = self._open.get(peer, 0) + 1
        if full:  # closed at once: costs this thread nothing more
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._closed(peer)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed(client_address[0] if isinstance(client_address, tuple) else "")

    def _closed(self, peer: str) -> None:
        with self._count_lock:
            self._total -= 1
            left = self._open.get(peer, 1) - 1
            if left > 0:
                self._open[peer] = left
            else:
                self._open.pop(peer, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP client %s: error", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    """GET only; routes to the app's views (``observe/server.py``)."""

    server: Server
    server_version = "pymapreduce"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: its deadline is the request's

    def setup(self) -> None:
        super().setup()
        self.rfile = _RequestReader(self.connection, time.monotonic() + REQUEST_SECONDS)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        if log.isEnabledFor(logging.DEBUG):  # (the request line: the token in its query)
            log.debug("HTTP %s: %s", self.client_address[0],
                      TOKEN_IN_QUERY.sub(r"\1<redacted>", format % args))

    def _refuse(self, code: int, message: str) -> None:
        self._send(code, "application/json", json.dumps({"error": message}).encode())

    def _send(self, code: int, ctype: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")  # (a URL may hold the token)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.rfile.over:
            self._refuse(431, "request headers too large")
            return
        self.connection.settimeout(WRITE_SECONDS)
        app = self.server.app
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        given = self._token(query)
        scope = ""  # every job; "key ...": one client's (a client token, observe/scopes.py)
        if app.token is None:  # no token: loopback Host names only, unless public
            host = _host_name(self.headers.get("Host") or "")
            if app.check_host and host and not is_loopback_name(host):
                # a page elsewhere that re-pointed its own name at 127.0.0.1 (DNS
                # rebinding) must not read a keyless broker's API
                self._refuse(403, f"host {host!r} is not a loopback name")
                return
        elif (scope := app.scope_of(given)) is None:
            if url.path in PAGES:  # a person at a browser: say what to do, show no data
                self._send(401, "text/html; charset=utf-8",
                           REFUSED_TOKEN_PAGE if given else NEEDS_TOKEN_PAGE)
                return
            self._refuse(401, REFUSED_TOKEN if given else
                         "a token is needed: see `pymapreduce dashboard-url`")
            return
        headers = {}
        if app.token is not None and query.get("token"):
            # the page's own requests (and EventSource, which sends no headers) use it
            headers["Set-Cookie"] = f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/"
        try:
            route = app.route(url.path, query, self.headers, scope)
        except PermissionError as exc:
            self._refuse(403, str(exc))
            return
        except KeyError as exc:
            self._refuse(404, str(exc.args[0]) if exc.args else "not found")
            return
        except ValueError as exc:
            self._refuse(400, str(exc))
            return
        except Exception:  # a bug here must not leave the client without an answer
            log.exception("HTTP %s failed", url.path[:100])
            self._refuse(500, "internal error (see the broker's log)")
            return
        if route[0] == "stream":  # (a client token's ends when its key is revoked)
            self._stream(route[1], (lambda: app.scope_of(given) == scope) if scope else None)
            return
        ctype, body = route
        if ctype.startswith(("text/html", "text/javascript", "text/css")):
            headers["Content-Security-Policy"] = CSP
        self._send(200, ctype, body, headers)

    def _token(self, query: dict) -> str:
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            return auth[7:].strip()
        if query.get("token"):
            return query["token"]
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
        return ""

    def _stream(self, next_events: Any, valid: Any = None) -> None:
        """Server-sent events: ``next_events()`` returns new events (oldest first), as long
        as ``valid()`` (if given) says the request's token is still accepted."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        started = last = time.monotonic()
        app = self.server.app
        try:
            self.wfile.write(b"retry: 1000\n\n")
            while not app.closed and time.monotonic() - started < SSE_MAX_SECONDS:
                if valid is not None and not valid():
                    break
                events = next_events()
                chunk = b"".join(
                    f"id: {e['seq']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n"
                    .encode() for e in events)
                if not chunk and time.monotonic() - last >= SSE_KEEPALIVE:
                    chunk = b": keep-alive\n\n"
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    last = time.monotonic()
                time.sleep(SSE_POLL)
        except OSError:  # the client went away, or does not read
            pass
