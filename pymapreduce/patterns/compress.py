"""Compression of data-plane frames: map outputs, the partitions reducers read, results.

A compressed frame says so itself, so that the broker stores and forwards it as opaque
bytes (its memory budget, spill files and CRC-32s see the compressed bytes, and it never
decompresses anything)::

    0xC1 | codec (1 byte) | raw size (8 bytes, little-endian) | payload

0xC1 is the one byte msgpack never uses, so no plain frame (a msgpack value, or b"") can
be taken for a compressed one: plain frames stay as they were, and a peer that predates
compression reads every frame that is sent to it.

Negotiation: a worker lists the codecs it decodes in READY, a client in SUBMIT
(:func:`available`); the broker tells each TASKS message which codec its outputs may use:
one every registered worker decodes, for outputs read by workers, and one the job's client
decodes, for results. A peer without the package (or with ``PYMAPREDUCE_COMPRESSION=off``)
lists none and then neither sends nor receives compressed frames.

Decoding is a hostile-input surface (a result comes from a worker the client does not
trust): a frame's raw size must be at most the receiver's per-frame limit and at most
``MAX_RATIO`` times its compressed size, the zstd frame must state that same size, and the
library is asked for no more than it; zstd's content checksum makes a corrupted frame an
error, never other bytes. :class:`CompressedFrameError` says which of these failed.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ConfigError, UndecodableValue

MAGIC = 0xC1  # never used by msgpack ("never used" in its spec)
ZSTD = 1  # codec byte of zstd frames
CODEC_IDS = {"zstd": ZSTD}
NAMES = {v: k for k, v in CODEC_IDS.items()}
HEADER = struct.Struct("<BBQ")  # magic, codec, raw size
ENV = "PYMAPREDUCE_COMPRESSION"  # "off" (or "none", "0"): this process lists no codec

# Frames smaller than this are sent as they are: a few KiB save little on any network,
# and the tiny tasks of a busy job pay no compressor call.
MIN_SIZE = 16 * 1024
# A frame that compresses to more than this share of its size is sent plain: the receiver
# would pay decompression for under 10% fewer bytes.
KEEP_RATIO = 0.9
# Frames larger than this are first probed: PROBE bytes from their middle are compressed,
# and a frame whose probe does not shrink below KEEP_RATIO is sent plain without
# compressing the rest (random or already-compressed data costs a probe, not a pass).
PROBE_FROM = 512 * 1024
PROBE = 64 * 1024
# Raw size allowed per compressed byte. zstd at level 1 makes text and records 2x-5x
# smaller; only degenerate data goes past 256x (one key and value repeated: 7,000x; a
# forged frame of zeros: 19,000x). A frame that would compress further than this is sent
# plain, so a receiver never allocates more than this many times the bytes it was sent.
MAX_RATIO = 256
# zstd level 1: measured on word-count and sort partitions (benchmarks/bench_compression.py),
# it shrinks them 1.6x-2.2x at 500+ MB/s; level 3 gains nothing and is 3x slower, negative
# levels and lz4 do not shrink them at all.
LEVEL = 1


class CompressedFrameError(UndecodableValue):
    """A compressed frame cannot be decoded: an unknown codec, a raw size over the
    receiver's limit or ratio, a damaged payload (checksum), or a codec this process
    does not have. Nothing larger than the stated (and bounded) raw size was allocated."""


_local = threading.local()  # zstd contexts are not thread-safe: one pair per thread


def _zstd() -> Any:
    import zstandard

    return zstandard


def _has_zstd() -> bool:
    try:
        _zstd()
    except ImportError:
        return False
    return True


ENV_VALUES = ("", "on", "off", "none", "0", "1", "false", "true")


def check_env() -> None:
    """A daemon's start: ConfigError for a ``PYMAPREDUCE_COMPRESSION`` it does not know
    (a typo would otherwise leave compression as it was, silently)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value not in ENV_VALUES:
        raise ConfigError(f"{ENV} must be on or off, not {os.environ[ENV]!r}")


def enabled() -> bool:
    """Whether this process may compress and announce codecs (``PYMAPREDUCE_COMPRESSION``
    set to ``off``, ``none`` or ``0`` says no)."""
    return os.environ.get(ENV, "").strip().lower() not in ("off", "none", "0", "false")


def available() -> list[str]:
    """The codecs this process decodes, as it announces them (READY, SUBMIT)."""
    return ["zstd"] if enabled() and _has_zstd() else []


def known(names: Any) -> list[str]:
    """The codec names a peer announced that this version knows (bounded, checked)."""
    if not isinstance(names, list):
        return []
    return [n for n in names[:8] if isinstance(n, str) and n in CODEC_IDS]


def task_codec(body: dict, to_client: bool) -> str | None:
    """The codec a TASKS body (``body``) lets a task's outputs use: ``codec_client`` for
    outputs the client reads, ``codec`` for outputs other workers read; None when the
    broker named none or this process cannot compress with it."""
    name = body.get("codec_client" if to_client else "codec")
    return name if name in CODEC_IDS and name in available() else None


def is_compressed(blob: Any) -> bool:
    """Whether ``blob`` (bytes, memoryview) is a compressed frame."""
    return len(blob) >= HEADER.size and blob[0] == MAGIC


def compress(blob: Any, codec: str | None) -> Any:
    """``blob`` as a frame encoded with ``codec``, or ``blob`` itself where it does not pay
    (no codec, under MIN_SIZE, shrinks by under 10%, or past MAX_RATIO)."""
    size = len(blob)
    if codec != "zstd" or size < MIN_SIZE:
        return blob
    compressor = getattr(_local, "c", None)
    if compressor is None:
        z = _zstd()
        compressor = _local.c = z.ZstdCompressor(level=LEVEL, write_checksum=True)
    if size > PROBE_FROM:
        middle = size // 2
        probe = memoryview(blob)[middle : middle + PROBE]
        if len(compressor.compress(probe)) > KEEP_RATIO * len(probe):
            return blob
    payload = compressor.compress(blob)
    if len(payload) + HEADER.size > KEEP_RATIO * size or size > MAX_RATIO * len(payload):
        return blob
    return HEADER.pack(MAGIC, ZSTD, size) + payload


def compress_all(outputs: list, codec: str | None, limit: int) -> list:
    """A task's outputs, each compressed where it pays; all plain when together they
    take more than ``limit`` raw bytes (the task then fails for its size, compressed or
    not: a receiver never decompresses more than it would accept plain)."""
    if codec is None or sum(len(o) for o in outputs) > limit:
        return outputs
    return [compress(o, codec) for o in outputs]


def decompress(blob: Any, limit: int) -> Any:
    """The raw bytes of a frame: a plain frame as it is (no copy), a compressed one
    decoded, within ``limit`` raw bytes; :class:`CompressedFrameError` otherwise."""
    if not len(blob) or blob[0] != MAGIC:
        return blob
    if len(blob) < HEADER.size:
        raise CompressedFrameError(f"a {len(blob)}-byte frame is too short for the header "
                                   "of a compressed frame")
    _, codec, raw = HEADER.unpack_from(blob)
    payload = memoryview(blob)[HEADER.size:]
    name = NAMES.get(codec)
    if name is None:
        raise CompressedFrameError(f"a frame is compressed with codec {codec}, unknown to "
                                   "this version of pymapreduce")
    if raw > limit:
        raise CompressedFrameError(f"a {len(blob)}-byte compressed frame claims {raw} bytes "
                                   f"decompressed, more than the {limit} allowed per frame; "
                                   "refused unread")
    if raw > MAX_RATIO * len(payload):
        raise CompressedFrameError(f"a {len(blob)}-byte compressed frame claims {raw} bytes "
                                   f"decompressed, over {MAX_RATIO}x its size (no honest "
                                   "sender makes one: a decompression bomb); refused unread")
    try:
        z = _zstd()
    except ImportError:
        raise CompressedFrameError(
            "a frame is zstd-compressed and this process cannot decompress it: install "
            "the zstandard package (pip install zstandard)") from None
    try:
        stated = z.frame_content_size(payload)
    except z.ZstdError:
        stated = -2  # (not a zstd frame header at all)
    if stated != raw:  # (-1: the frame does not state it)
        raise CompressedFrameError(f"a compressed frame's zstd header states "
                                   f"{'no' if stated < 0 else stated} decompressed size where "
                                   f"its frame header says {raw}; refused unread")
    decompressor = getattr(_local, "d", None)
    if decompressor is None:
        decompressor = _local.d = z.ZstdDecompressor()
    try:
        out = decompressor.decompress(payload, max_output_size=raw)
    except z.ZstdError as exc:
        raise CompressedFrameError(f"a {len(blob)}-byte compressed frame is damaged: "
                                   f"{exc}") from None
    if len(out) != raw:
        raise CompressedFrameError(f"a compressed frame decoded to {len(out)} bytes, not "
                                   f"the {raw} it states")
    return out


def raw_size(blob: Any) -> int:
    """The size ``blob`` has decompressed, read off its header (its length if plain)."""
    if is_compressed(blob):
        return HEADER.unpack_from(blob)[2]
    return len(blob)


class Inflating(Sequence):
    """A task's blobs as ``run_task`` reads them: each compressed frame decompressed (within
    ``limit``) when it is read, not before, so a reduce task holds one segment's raw bytes
    at a time beside the compressed ones it was sent. Slices stay lazy."""

    def __init__(self, blobs: Sequence, limit: int) -> None:
        self.blobs = blobs
        self.limit = limit

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return Inflating(self.blobs[i], self.limit)
        blob = self.blobs[i]
        return decompress(blob.buffer if hasattr(blob, "buffer") else blob, self.limit)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self.blobs)):
            yield self[i]

    def __setitem__(self, i: int, value: Any) -> None:
        """Replace a frame (a task under a memory budget lets each segment go once read:
        runner.py's ``_taken``)."""
        if not hasattr(self.blobs, "__setitem__"):  # (segments read at a sink let go
            self.blobs = list(self.blobs)           # themselves: workers/shuffle.py)
        self.blobs[i] = value
