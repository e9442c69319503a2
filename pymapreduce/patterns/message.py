"""The control-plane message: a msgpack header and opaque binary blobs.

Decoding is bounded before it starts: a header frame over the receiver's cap is refused
unread, and msgpack is told how long one array, map, string or binary may be, so a small
header cannot make the receiver build a large pile of Python objects (an empty array is
one byte on the wire and ~64 bytes decoded; an array header claiming n items makes msgpack
allocate n pointers at once). What each side accepts is a :class:`Limits`.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
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
    blobs: int | None = None  # blobs in one message (None: as many as its layout names)


# What the broker decodes from any peer. The largest legitimate header is a worker's DONE:
# the worker splits its reports so that one DONE header stays under half of this (a single
# report, with 1000 counters of 200 characters, is ~200-800 KB). FAILED carries at most
# 22,000 characters of text; SUBMIT lists its splits in a blob, not in the header.
# Arrays: DONE has at most 64 results, SUBMIT at most 200 steps; maps: 1000 counters.
BROKER_LIMITS = Limits(header=1 * MiB, array=1024, map=4096, string=1 * MiB, containers=16_384,
                       blobs=100_000 + 64)

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

# Blobs shorter than this share one frame (``Message.encode``): a frame costs the
# sender and the receiver a call into ZeroMQ and an object each, which for a task's tiny
# in-memory split or a no-op task's empty output was most of what carrying it cost.
PACK_BELOW = 1024
_OWN_FRAME = -1  # a layout entry: the blob is the next frame of its own
_SWAP = sys.byteorder == "big"  # layouts travel as little-endian int32


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol message. ``body`` is msgpack-able; ``blobs`` are opaque bytes."""

    command: str
    body: dict = field(default_factory=dict)
    blobs: tuple = ()

    def encode(self) -> list:
        """Frames ready for ``send_multipart``. Two or more blobs shorter than PACK_BELOW
        are joined into one frame after the header, which then carries the message's
        layout (each blob's length, or -1 for one that keeps a frame of its own, in
        order); larger blobs are not copied."""
        blobs = self.blobs
        if len(blobs) > 1:
            layout = array("i", [n if (n := len(b)) < PACK_BELOW else _OWN_FRAME
                                 for b in blobs])
            if layout.count(_OWN_FRAME) < len(layout) - 1:
                if _SWAP:
                    layout.byteswap()
                header = msgpack.packb([PROTOCOL_VERSION, self.command, self.body,
                                        layout.tobytes()], use_bin_type=True)
                packed = b"".join([b for b in blobs if len(b) < PACK_BELOW])
                return [header, packed, *[b for b in blobs if len(b) >= PACK_BELOW]]
        header = msgpack.packb([PROTOCOL_VERSION, self.command, self.body], use_bin_type=True)
        return [header, *blobs]

    @classmethod
    def decode(cls, frames: Sequence[Frame], limits: Limits = PEER_LIMITS) -> Message:
        """Parse frames received from a socket; raise ProtocolError on anything malformed
        or beyond ``limits`` (cause ``"too-large"`` for a header over ``limits.header``)."""
        return cls.decode_header(frames, limits)[1]()

    @classmethod
    def decode_header(cls, frames: Sequence[Frame], limits: Limits = PEER_LIMITS
                      ) -> tuple[Message, Callable[[], Message]]:
        """The message without its blobs, and a function that returns it whole (its
        blobs unpacked and checked against its layout: ProtocolError if they do not
        match). A receiver that may refuse the message unread (its sender has had its
        share of the receiver's time) decodes its header, and unpacks its blobs only
        if it acts on it: 100,000 small blobs cost tens of milliseconds to unpack, and
        one header at most a few. ProtocolError as ``decode``'s for the header."""
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
        if not isinstance(decoded, list) or len(decoded) not in (3, 4):
            raise ProtocolError(
                f"header is not [version, command, body] ({size} bytes)",
                size=size,
                cause="shape",
            )
        version, command, body = decoded[:3]
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
        head = cls(command, body)
        if len(decoded) == 4:
            layout = decoded[3]
            return head, lambda: cls(command, body,
                                     _unpack_blobs(layout, frames, limits, size))
        if limits.blobs is not None and len(frames) - 1 > limits.blobs:
            raise ProtocolError(f"{len(frames) - 1} blobs; at most {limits.blobs} are "
                                "accepted", size=size, cause="too-large")
        if len(frames) == 1:
            return head, lambda: head
        return head, lambda: cls(command, body, tuple(frames[1:]))


def _unpack_blobs(layout: Any, frames: Sequence[Frame], limits: Limits,
                  size: int) -> tuple:
    """The blobs of a message whose small blobs share a frame (``Message.encode``),
    checked against its layout: every byte of the shared frame and every frame after it
    belongs to exactly one blob, or the message is refused."""
    if not isinstance(layout, bytes) or len(layout) % 4 or len(frames) < 2:
        raise ProtocolError(f"a malformed blob layout ({size} bytes of header)", size=size,
                            cause="layout")
    sizes = array("i")
    sizes.frombytes(layout)
    if _SWAP:
        sizes.byteswap()
    if limits.blobs is not None and len(sizes) > limits.blobs:
        raise ProtocolError(f"{len(sizes)} blobs; at most {limits.blobs} are accepted",
                            size=size, cause="too-large")
    joined = frame_bytes(frames[1])
    own = frames[2:]
    if min(sizes, default=0) < _OWN_FRAME or sizes.count(_OWN_FRAME) != len(own) or \
            sum(sizes) + len(own) != len(joined):
        raise ProtocolError("a blob layout that does not match the message's frames",
                            size=size, cause="layout")
    # each blob a copy of its bytes, not a view that would pin the whole received frame
    # (a store counting the blob's size would then undercount what it holds); a frame
    # ZeroMQ hands over as a view is cut view by view, not copied whole first
    if not own:  # (the usual message: every blob in the joined frame, cut in one pass;
        # a received frame's bytes copied once, then cut, costs less than view by view)
        ends = list(accumulate(sizes))
        if not isinstance(joined, bytes):
            joined = bytes(joined)
        return tuple([joined[a:b] for a, b in zip([0, *ends], ends)])
    copy = (lambda view: view.tobytes()) if isinstance(joined, memoryview) else None
    blobs = []
    pos = taken = 0
    for n in sizes:
        if n == _OWN_FRAME:
            blobs.append(own[taken])
            taken += 1
        else:
            blob = joined[pos:pos + n]
            blobs.append(copy(blob) if copy is not None else blob)
            pos += n
    return tuple(blobs)


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
