"""Socket set-up shared by every role, turning ZeroMQ errors into pymapreduce's own."""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import zmq

from ..errors import AddressInUse, ConfigError, ProtocolError
from .message import PEER_LIMITS, Limits, Message
from .protocol import ZERO_COPY_THRESHOLD

log = logging.getLogger("pymapreduce")

LINGER_MS = 200  # long enough to flush a final reply, short enough never to block exit
DEFAULT_MAX_MESSAGE = 1 << 30  # 1 GiB; bound sockets refuse anything larger
PEER_QUEUE = 1000  # messages queued to one peer of a ROUTER before sends to it fail
# Received frames smaller than this are copied out of ZeroMQ into bytes: a bytes object
# costs ~40 bytes besides its data, a zmq.Frame ~250 (a message of many tiny frames would
# cost six times its count in Python objects); larger frames are kept without copying.
SMALL_FRAME = 4096
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


def check_resolves(endpoint: str) -> str:
    """``endpoint`` unchanged, or ConfigError when its host is a name this machine does not
    know (a typo): ZeroMQ would go on retrying it without a word. A resolver that cannot
    answer now (no network yet) is not an error here: the connection's own wait judges."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    host = urlsplit(endpoint).hostname
    if not host or ";" in endpoint:  # (ZeroMQ's "source;destination" form: left to it)
        return endpoint
    unknown = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in unknown:
            raise ConfigError(f"address {endpoint!r}: no host named {host!r} is known here "
                              "(a typo? give a name this machine resolves, or an IP "
                              "address)") from None
    except (OSError, UnicodeError):
        pass
    return endpoint


def bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind and return the address actually bound (the real port when asked for port 0)."""
    check_endpoint(endpoint)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"cannot bind {endpoint}: address already in use (another "
                               "daemon listens there: stop it, or give another port; port "
                               "0 lets the OS pick a free one)") from None
        raise ConfigError(f"cannot bind {endpoint}: {exc.strerror}") from None
    bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return bound.replace("0.0.0.0", "127.0.0.1") if endpoint.endswith(":0") else bound


_send_frame = zmq.backend.Socket.send  # (the sugar layer's send adds nothing we use)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)
_get = zmq.backend.Socket.get  # (the sugar's get, and IntFlag arithmetic, make enums)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def readable(sock: zmq.Socket) -> bool:
    """Whether a message waits to be read: the socket's event flags, as plain ints (a
    ``poll(0)`` builds a Poller; ``getsockopt(zmq.EVENTS) & zmq.POLLIN`` makes two enum
    members), read after every task and message."""
    return bool(_get(sock, _EVENTS) & _POLLIN)


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
    copy = not any(len(f) >= ZERO_COPY_THRESHOLD for f in frames
                   if isinstance(f, (bytes, memoryview)))
    # each frame through the socket's own send with plain int flags: what
    # send_multipart does, without its per-frame type checks and enum arithmetic (a
    # TASKS message carries a frame per in-memory split). ZeroMQ queues a multipart
    # message whole or not at all, so zmq.Again can only come from the first frame.
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send_frame(sock, frame, _MORE if i < last else _LAST, copy, False)


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


class Oversized(ProtocolError):
    """A message over the receiver's frame or byte budget: it was read to its end and
    dropped without keeping its frames. ``route`` is its routing id (on a ROUTER) and
    ``head`` its first frame after it (the header, for the sender's identity and request
    id), or None when that frame alone was over the byte budget."""

    def __init__(self, message: str, *, size: int, frames: int, route: list,
                 head: Any) -> None:
        super().__init__(message, size=size, cause="too-large")
        self.frames = frames
        self.route = route
        self.head = head


def recv_frames(sock: zmq.Socket, *, skip: int = 0, max_frames: int | None = None,
                max_bytes: int | None = None) -> tuple[list, list]:
    """``(route, frames)`` of the next message (zmq.Again if none is waiting: poll first).

    Reads one frame at a time: ``skip`` leading frames (a ROUTER's routing id) come back
    as bytes in ``route``; of the others, the first (the header) stays a zmq.Frame (its
    properties, such as the peer's key, can be read) and later ones under SMALL_FRAME are
    copied into bytes. Past ``max_frames`` frames or ``max_bytes`` bytes (not counting
    ``route``), the rest of the message is read and dropped frame by frame, and
    :class:`Oversized` is raised: a message of a million empty frames costs a count.

    ZeroMQ hands a message over only once all of it has arrived, so it holds the whole
    message until then (64 bytes per frame besides its data; MAXMSGSIZE bounds a frame).
    """
    route: list = []
    frames: list = []
    size = 0
    frame = sock.recv(zmq.NOBLOCK, copy=False)
    while True:
        if len(route) < skip:
            route.append(frame.bytes)
        else:
            n = len(frame)
            size += n
            if ((max_frames is not None and len(frames) >= max_frames)
                    or (max_bytes is not None and size > max_bytes)):
                break
            frames.append(frame if n >= SMALL_FRAME or not frames else frame.bytes)
        if not frame.more:
            return route, frames
        frame = sock.recv(zmq.NOBLOCK, copy=False)
    # over budget: the rest of the message is counted, never kept
    head = frames[0] if frames else None
    count = len(frames) + 1
    frames.clear()
    while frame.more:
        frame = sock.recv(zmq.NOBLOCK, copy=False)
        count += 1
        size += len(frame)
    limits = ([f"{max_frames} frames"] if max_frames is not None else []) + (
        [f"{max_bytes / (1 << 20):.1f} MiB"] if max_bytes is not None else [])
    raise Oversized(f"a message of {count} frames and {size / (1 << 20):.1f} MiB; at most "
                    f"{' and '.join(limits)} are accepted", size=size, frames=count,
                    route=route, head=head)


def recv(sock: zmq.Socket, limits: Limits = PEER_LIMITS) -> Message:
    """The next message on a DEALER (zmq.Again if none is waiting: poll first).

    Raises ProtocolError for malformed frames (after the whole message was read).
    """
    return Message.decode(recv_frames(sock)[1], limits)


def monitor_event(monitor: zmq.Socket) -> tuple[int, int]:
    """``(event, value)`` of the next event on a socket monitor (the value: a file
    descriptor for connection events). Read here rather than with zmq.utils.monitor, which
    imports asyncio: slow for every process's start, and an import that can fail when the
    process is out of file descriptors, which is when connection events matter most."""
    frames = monitor.recv_multipart()
    event, value = struct.unpack("=hi", frames[0][:6])
    return event, value
