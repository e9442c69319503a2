"""Socket set-up shared by every role, turning ZeroMQ errors into pymapreduce's own."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import zmq

from ..errors import AddressInUse, ConfigError
from .message import Message
from .protocol import ZERO_COPY_THRESHOLD

log = logging.getLogger("pymapreduce")

LINGER_MS = 200  # long enough to flush a final reply, short enough never to block exit
DEFAULT_MAX_MESSAGE = 1 << 30  # 1 GiB; bound sockets refuse anything larger
PEER_QUEUE = 1000  # messages queued to one peer of a ROUTER before sends to it fail
# A connection to a bound socket that has not finished its ZeroMQ (and CURVE) handshake
# within this is closed. ZeroMQ's default, 30 s, let a peer with no key hold a file
# descriptor per idle TCP connection for that long: a thousand of them locked keyed
# clients out of a broker. A CURVE handshake takes the bound side about three round trips
# (through a relay that delays each byte: 1.2 s round trips pass, 1.8 s ones do not).
HANDSHAKE_MS = 5000


def make_socket(
    ctx: zmq.Context, kind: int, *, identity: bytes | None = None, max_message: int | None = None
) -> zmq.Socket:
    """A socket with the options every role wants (short LINGER, ROUTER_MANDATORY)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if kind == zmq.ROUTER:
        # an unknown peer is an error (not a silent drop), and one that does not read
        # fills its own queue of PEER_QUEUE messages, after which sends to it fail
        # at once (zmq.Again) instead of blocking the whole daemon
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, PEER_QUEUE)
    if max_message is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    return sock


def check_endpoint(endpoint: str) -> str:
    """Validate a ``tcp://host:port`` (or ipc:// / inproc://) endpoint; return it unchanged."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return endpoint
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ConfigError(f"address {endpoint!r} is not of the form tcp://HOST:PORT "
                          "(PORT a number from 0 to 65535)")
    return endpoint


def bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind and return the address actually bound (the real port when asked for port 0)."""
    check_endpoint(endpoint)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"cannot bind {endpoint}: address already in use") from None
        raise ConfigError(f"cannot bind {endpoint}: {exc.strerror}") from None
    bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return bound.replace("0.0.0.0", "127.0.0.1") if endpoint.endswith(":0") else bound


def send(sock: zmq.Socket, msg: Message, route: list | None = None) -> None:
    """Send a message (prefixed by ``route`` on a ROUTER) without ever blocking; large
    blobs are not copied.

    Raises ``zmq.Again`` when the peer's queue is full (it does not read, or there is no
    peer yet): what to do then is the caller's choice, and no role may wait on a peer
    for ever. On a ROUTER, an unknown peer raises ``zmq.ZMQError`` (EHOSTUNREACH).
    """
    frames = msg.encode()
    if route:
        frames = [*route, *frames]
    big = any(len(f) >= ZERO_COPY_THRESHOLD for f in frames if isinstance(f, (bytes, memoryview)))
    sock.send_multipart(frames, zmq.NOBLOCK, copy=not big)


def send_within(sock: zmq.Socket, msg: Message, seconds: float,
                keep_waiting: Callable[[], bool] = lambda: True) -> bool:
    """Send, waiting at most ``seconds`` for room in the peer's queue (and only while
    ``keep_waiting()`` says so); False if the message could not be queued in time."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            send(sock, msg)
            return True
        except zmq.Again:
            left = deadline - time.monotonic()
            if left <= 0 or not keep_waiting():
                return False
            sock.poll(int(min(left, 0.1) * 1000) + 1, zmq.POLLOUT)


def recv(sock: zmq.Socket) -> Message:
    """The next message on a DEALER (zmq.Again if none is waiting: poll first).

    Raises ProtocolError for malformed frames (after the whole message was read).
    """
    return Message.decode(sock.recv_multipart(zmq.NOBLOCK, copy=False))
