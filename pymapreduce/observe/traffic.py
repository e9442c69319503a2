"""Bytes and messages through the broker's sockets, counted on the broker loop.

Its own module so that a broker imports neither ``prometheus_client`` nor the HTTP server
unless it serves ``--http`` (they cost a broker's start some 20 ms).
"""

from __future__ import annotations


class Traffic:
    """Bytes and messages through the broker's sockets (updated by the broker loop)."""

    __slots__ = ("control_in", "control_out", "data_in", "msgs_control_in", "msgs_data_in",
                 "msgs_control_out")

    def __init__(self) -> None:
        self.control_in = self.control_out = self.data_in = 0
        self.msgs_control_in = self.msgs_data_in = self.msgs_control_out = 0

    def received(self, data: bool, frames: list) -> None:
        n = 0
        for f in frames:
            n += len(f)
        if data:
            self.data_in += n
            self.msgs_data_in += 1
        else:
            self.control_in += n
            self.msgs_control_in += 1

    def sent(self, blobs: tuple) -> None:
        """A control message out: its blobs' bytes (the msgpack header is not counted)."""
        # (bytes and zmq.Frames both give their length in bytes; a sent blob is one of
        # them, or a memoryview of bytes)
        self.control_out += sum(map(len, blobs))
        self.msgs_control_out += 1
