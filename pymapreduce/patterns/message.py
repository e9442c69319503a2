"""The control-plane message: a msgpack header and opaque binary blobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import ProtocolError
from .protocol import PROTOCOL_VERSION

Frame = Any  # bytes, memoryview or zmq.Frame: anything the buffer protocol can read


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
    def decode(cls, frames: Sequence[Frame]) -> Message:
        """Parse frames received from a socket; raise ProtocolError on anything malformed."""
        if not frames:
            raise ProtocolError("empty message", size=0, cause="no frames")
        head = frames[0]
        raw = head.bytes if hasattr(head, "bytes") else bytes(head)
        try:
            decoded = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise ProtocolError(
                f"undecodable header ({len(raw)} bytes): {type(exc).__name__} {exc}", size=len(raw), cause=repr(exc)
            ) from None
        if not isinstance(decoded, list) or len(decoded) != 3:
            raise ProtocolError(
                f"header is not [version, command, body] ({len(raw)} bytes)",
                size=len(raw),
                cause="shape",
            )
        version, command, body = decoded
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {version!r}, this side speaks {PROTOCOL_VERSION}",
                size=len(raw),
                cause="version",
            )
        if not isinstance(command, str) or not isinstance(body, dict):
            raise ProtocolError(
                f"bad command or body types ({len(raw)} bytes)", size=len(raw), cause="types"
            )
        return cls(command, body, tuple(frames[1:]))


def frame_bytes(frame: Frame) -> bytes | memoryview:
    """A readable buffer over a received frame (zmq.Frame or bytes), without copying."""
    return frame.buffer if hasattr(frame, "buffer") else frame
