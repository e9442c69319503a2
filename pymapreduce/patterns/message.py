"""The control-plane message: a msgpack header and opaque binary blobs.

Decoding is bounded before it starts: a header frame over the receiver's cap is refused
unread, and msgpack is told how long one array, map, string or binary may be, so a small
header cannot make the receiver build a large pile of Python objects (an empty array is
one byte on the wire and ~64 bytes decoded; an array header claiming n items makes msgpack
allocate n pointers at once). What each side accepts is a :class:`Limits`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import ProtocolError
from .protocol import PROTOCOL_VERSION

Frame = Any  # bytes, memoryview or zmq.Frame: anything the buffer protocol can read

KiB, MiB = 1 << 10, 1 << 20
# Headers at most this large are decoded without counting their arrays and maps: even
# made of nothing but empty ones they cost ~5 MiB while decoded. Larger ones are counted.
UNCOUNTED_HEADER = 64 * KiB


@dataclass(frozen=True, slots=True)
class Limits:
    """How much of a message's header one side is willing to decode.

    ``header``: bytes of the header frame (larger ones are refused before decoding);
    ``array``/``map``: items of one msgpack array/map; ``string``: bytes of one str or bin;
    ``containers``: arrays and maps in one header (None: not counted), which bounds what a
    header of tiny containers costs. Within these, a header costs at most ~20 bytes per
    byte while decoded (short strings), plus up to 8 * ``array`` bytes per nesting level
    of an array still being filled (msgpack allocates an array's slots on its length)."""

    header: int
    array: int
    map: int
    string: int
    containers: int | None = None


# What the broker decodes from any peer. The largest legitimate header is a worker's DONE:
# the worker splits its reports so that one DONE header stays under half of this (a single
# report, with 1000 counters of 200 characters, is ~200-800 KB). FAILED carries at most
# 22,000 characters of text; SUBMIT lists its splits in a blob, not in the header.
# Arrays: DONE has at most 64 results, SUBMIT at most 200 steps; maps: 1000 counters.
BROKER_LIMITS = Limits(header=1 * MiB, array=1024, map=4096, string=1 * MiB, containers=16_384)

# What clients and workers decode from the broker: STATUS and LISTING replies (1000 jobs,
# every worker, a job's counters) and TASKS, whose file splits travel in the header (up to
# 100,000 ranges of paths up to 4096 characters each, several tasks per message). Larger,
# still bounded: the broker is the party they chose to trust with their jobs and code.
PEER_LIMITS = Limits(header=1 << 30, array=1 << 20, map=1 << 20, string=1 << 30)

# Frames in one message the broker accepts (the header included, the routing id not): a
# SUBMIT has the code, the split list and one blob per in-memory split; an OUTPUT one blob
# per reducer; both are at most MAX_TASKS (100,000; broker/submission.py). A worker splits
# a DONE whose inline outputs would need more.
BROKER_MAX_FRAMES = 100_000 + 64


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol message. ``body`` is msgpack-able; ``blobs`` are opaque bytes."""

    command: str
    body: dict = field(default_factory=dict)
    blobs: tuple = ()

    def encode(self) -> list:
        """Frames ready for ``send_multipart`` (the blobs are not copied)."""
        header = msgpack.packb([PROTOCOL_VERSION, self.command, self.body], use_bin_type=True)
        return [header, *self.blobs]

    @classmethod
    def decode(cls, frames: Sequence[Frame], limits: Limits = PEER_LIMITS) -> Message:
        """Parse frames received from a socket; raise ProtocolError on anything malformed
        or beyond ``limits`` (cause ``"too-large"`` for a header over ``limits.header``)."""
        if not frames:
            raise ProtocolError("empty message", size=0, cause="no frames")
        raw = frame_bytes(frames[0])
        size = len(raw)
        if size > limits.header:
            raise ProtocolError(f"a header of {size} bytes; at most {limits.header} are "
                                "accepted", size=size, cause="too-large")
        hook = None
        if limits.containers is not None and size > UNCOUNTED_HEADER:
            hook = _counter(limits.containers)
        try:
            decoded = msgpack.unpackb(
                raw, raw=False, strict_map_key=False, max_array_len=limits.array,
                max_map_len=limits.map, max_str_len=limits.string, max_bin_len=limits.string,
                max_ext_len=0, list_hook=hook, object_hook=hook)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise ProtocolError(
                f"undecodable header ({size} bytes): {type(exc).__name__} {str(exc)[:200]}",
                size=size, cause=repr(exc)[:200]) from None
        if not isinstance(decoded, list) or len(decoded) != 3:
            raise ProtocolError(
                f"header is not [version, command, body] ({size} bytes)",
                size=size,
                cause="shape",
            )
        version, command, body = decoded
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {version!r:.40}, this side speaks {PROTOCOL_VERSION}",
                size=size,
                cause="version",
            )
        if not isinstance(command, str) or not isinstance(body, dict):
            raise ProtocolError(
                f"bad command or body types ({size} bytes)", size=size, cause="types"
            )
        return cls(command, body, tuple(frames[1:]))


def _counter(limit: int) -> Callable[[Any], Any]:
    """A msgpack list/object hook that fails the decode past ``limit`` containers (it runs
    as each one is finished, so at most ``limit`` exist at once)."""
    left = limit

    def count(obj: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise ValueError(f"more than {limit} arrays and maps")
        return obj

    return count


def frame_bytes(frame: Frame) -> bytes | memoryview:
    """A readable buffer over a received frame (zmq.Frame or bytes), without copying."""
    return frame.buffer if hasattr(frame, "buffer") else frame
