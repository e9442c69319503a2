"""Socket set-up shared by every role, turning ZeroMQ errors into pymapreduce's own."""

from __future__ import annotations

import errno
import logging
from urllib.parse import urlsplit

import zmq

from ..errors import AddressInUse, ConfigError
from .message import Message
from .protocol import ZERO_COPY_THRESHOLD

log = logging.getLogger("pymapreduce")

LINGER_MS = 200  # long enough to flush a final reply, short enough never to block exit
DEFAULT_MAX_MESSAGE = 1 << 30  # 1 GiB; bound sockets refuse anything larger


def make_socket(
    ctx: zmq.Context, kind: int, *, identity: bytes | None = None, max_message: int | None = None
) -> zmq.Socket:
    """A socket with the options every role wants (short LINGER, ROUTER_MANDATORY)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
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
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"cannot bind {endpoint}: address already in use") from None
        raise ConfigError(f"cannot bind {endpoint}: {exc.strerror}") from None
    bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return bound.replace("0.0.0.0", "127.0.0.1") if endpoint.endswith(":0") else bound


def send(sock: zmq.Socket, msg: Message, route: list | None = None) -> None:
    """Send a message (prefixed by ``route`` on a ROUTER); large blobs are not copied."""
    frames = msg.encode()
    if route:
        frames = [*route, *frames]
    big = any(len(f) >= ZERO_COPY_THRESHOLD for f in frames if isinstance(f, (bytes, memoryview)))
    sock.send_multipart(frames, copy=not big)


def recv(sock: zmq.Socket) -> Message:
    """The next message on a DEALER (zmq.Again if none is waiting: poll first).

    Raises ProtocolError for malformed frames (after the whole message was read).
    """
    return Message.decode(sock.recv_multipart(zmq.NOBLOCK, copy=False))
