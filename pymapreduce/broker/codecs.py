"""Which codec a task's outputs may be compressed with (no sockets, no decompression).

The broker never compresses or decompresses: it only tells each TASKS message which codec
its outputs may use (``patterns/compress.py``), from what the peers announced:

- outputs other workers read (map outputs of a job with reducers, a step's output that
  the next step maps): a codec every registered worker decodes, so whichever worker the
  reduce task goes to can read it. A worker without one (an older version, no package,
  or ``PYMAPREDUCE_COMPRESSION=off``) makes these outputs plain for as long as it is
  registered;
- outputs the client reads (the last step's): a codec the job's client listed in its
  SUBMIT (kept with the job's options, so it survives a restart of the broker).

In both cases the worker running the task must be able to compress with it.

Where it pays: compressing costs CPU on both ends (5%-20% of a job's time on this 2-core
machine, benchmarks/bench_compression.py) and saves bytes on the network. A broker
that listens on loopback only has every peer on its own machine, where bytes cost a copy,
so by default (``--compression auto``) it names codecs only when it listens beyond
loopback; ``on`` and ``off`` decide outright, and ``PYMAPREDUCE_COMPRESSION`` (``on`` or
``off``) in its environment overrides both.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit

from ..patterns import compress

PREFERRED = "zstd"  # the one codec there is (the frame format has room for more)


class CodecCensus:
    """The registered workers that cannot decode the preferred codec, kept as workers
    register and are purged, so each TASKS message asks a set's size, not every worker."""

    def __init__(self, config: Any = None) -> None:
        self.plain: set[bytes] = set()  # routes of workers without PREFERRED
        self.on = decide(config)

    def joined(self, route: bytes, codecs: frozenset) -> None:
        if PREFERRED in codecs:
            self.plain.discard(route)
        else:
            self.plain.add(route)

    def left(self, route: bytes) -> None:
        self.plain.discard(route)

    def names(self) -> list[str]:
        """The codecs this broker names in TASKS (for a peer that decodes them)."""
        return [PREFERRED] if self.on else []

    def fields(self, worker_codecs: frozenset, job_options: dict, to_workers: bool,
               to_client: bool) -> dict[str, Any]:
        """The codec fields of a TASKS body for a worker that decodes ``worker_codecs``
        (empty when nothing may be compressed). ``to_workers``/``to_client``: whether the
        message's tasks make outputs for workers or for the client."""
        if PREFERRED not in worker_codecs or not self.on:
            return {}
        fields = {}
        if to_workers and not self.plain:
            fields["codec"] = PREFERRED
        if to_client and PREFERRED in (job_options.get("codecs") or ()):
            fields["codec_client"] = PREFERRED
        return fields


def decide(config: Any) -> bool:
    """Whether a broker of ``config`` (a BrokerConfig; None: "on") names codecs."""
    env = os.environ.get(compress.ENV, "").strip().lower()
    if not compress.enabled():
        return False
    if env == "on" or config is None:
        return True
    mode = getattr(config, "compression", "auto")
    if mode != "auto":
        return mode == "on"
    return not all(is_loopback(e) for e in (config.bind, config.sink_endpoint()))


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` listens for this machine only (loopback, ipc, inproc)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or "*": any interface
        return False


def announced(value: Any) -> frozenset:
    """The codecs a READY or SUBMIT lists, checked (a peer may send anything)."""
    return frozenset(compress.known(value))
