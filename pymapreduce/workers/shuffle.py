"""A worker's side of the sinks (docs/sinks.md): a map task pushes each partition's segment
to its sink and waits for the sink to say it is stored before the task reports DONE; a
reduce task reads its partition's segments from its sink as it merges them.

One DEALER per sink address, made on first use. Requests carry a number; a reply to an
older request (one given up on, or a resent one's twin) is dropped. Nothing here waits for
ever: a sink that does not answer within its deadline fails the attempt, which the broker
retries (and, once it takes the sink for lost, re-runs the maps that fed it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from ..errors import PyMapReduceError
from ..patterns import protocol as P
from ..patterns.message import Message
from ..patterns.sockets import make_socket, recv_frames, send

PUT_WAIT = 60.0  # seconds a map task waits for its sinks to store its segments
GET_WAIT = 30.0  # seconds a reduce task waits for one reply before the sink is unreachable
RESEND = 2.5  # seconds of silence after which a request is sent again (a sink restarted)
NOT_ASSIGNED_WAIT = 5.0  # a sink that does not know the step yet (its ASSIGN is on the way)
GET_BATCH = 256  # segments named in one GET (the sink answers up to 8 MiB of them)


class SinkUnreachable(PyMapReduceError):
    """A sink did not answer in time, or refused (disk full, not serving the step)."""


class SegmentsLost(PyMapReduceError):
    """A sink does not hold segments a reduce task needs: ``maps`` names their map tasks
    (the broker runs them again)."""

    def __init__(self, address: str, maps: list[int]) -> None:
        super().__init__(f"the sink at {address} does not hold the output of map task(s) "
                         f"{', '.join(map(str, maps[:10]))}{' ...' if len(maps) > 10 else ''}"
                         " (lost with a sink, or damaged): they run again")
        self.address = address
        self.maps = maps


class SinkClient:
    """This process's sockets to sinks."""

    def __init__(self, ctx: zmq.Context, max_message: Callable[[], int],
                 keep_waiting: Callable[[], bool] = lambda: True, keys: Any = None) -> None:
        self.ctx = ctx
        self.keys = keys  # this worker's PeerKeys: CURVE to each sink, under its key
        self.max_message = max_message
        self.keep_waiting = keep_waiting
        self.socks: dict[str, zmq.Socket] = {}
        self.sink_keys: dict[str, str] = {}  # address -> the sink's public key (z85)
        self._req = itertools.count(1)
        self.bytes_out = self.bytes_in = 0

    def know(self, address: str, key: str | None) -> None:
        """The public key the sink at ``address`` must prove (a broker with keys says)."""
        if key is None or self.sink_keys.get(address) == key:
            return
        self.sink_keys[address] = key
        old = self.socks.pop(address, None)  # (a sink restarted there under another key)
        if old is not None:
            old.close(0)

    def _sock(self, address: str) -> zmq.Socket:
        sock = self.socks.get(address)
        if sock is None:
            sock = make_socket(self.ctx, zmq.DEALER)
            sock.setsockopt(zmq.RCVHWM, 0)  # (replies are bounded by what we ask for)
            if self.keys is not None:
                key = self.sink_keys.get(address, "")
                if len(key) != 40:
                    sock.close(0)
                    raise SinkUnreachable(f"the broker named no key for the sink at "
                                          f"{address} (it has not registered again yet)")
                sock.curve_publickey = self.keys.public
                sock.curve_secretkey = self.keys.secret
                sock.curve_serverkey = key.encode()
            sock.connect(address)
            self.socks[address] = sock
        return sock

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(0)
        self.socks.clear()

    # -- map side ------------------------------------------------------------------------
    def put(self, job: str, step: int, index: int, attempt: int, sinks: list[str],
            outputs: Sequence[Any], keys: list | None = None) -> list[int]:
        """Push a map task's non-empty partitions to their sinks (``sinks[r % n]``, whose
        public keys are ``keys``, on a cluster with keys); returns the partitions pushed,
        once every sink said they are stored. SinkUnreachable when one did not, in time."""
        if keys is not None:
            if not isinstance(keys, list) or len(keys) != len(sinks):
                raise SinkUnreachable("the broker sent no key for each sink")
            for address, key in zip(sinks, keys):
                self.know(address, str(key))
        groups: dict[str, tuple[list[int], list[Any]]] = {}
        for r, blob in enumerate(outputs):
            if len(blob):
                parts, blobs = groups.setdefault(sinks[r % len(sinks)], ([], []))
                parts.append(r)
                blobs.append(blob)
        waiting: dict[int, tuple[str, Message]] = {}
        for address, (parts, blobs) in groups.items():
            req = next(self._req)
            msg = Message(P.PUT, {"req": req, "job": job, "step": step, "map": index,
                                  "attempt": attempt, "parts": parts}, tuple(blobs))
            waiting[req] = (address, msg)
            self._send(address, msg)
            self.bytes_out += sum(len(b) for b in blobs)
        deadline = time.monotonic() + PUT_WAIT
        not_assigned_until: dict[str, float] = {}
        sent = {req: time.monotonic() for req in waiting}
        while waiting:
            reply = self._next_reply({a for a, _ in waiting.values()}, deadline)
            now = time.monotonic()
            if reply is None:
                if now >= deadline or not self.keep_waiting():
                    raise SinkUnreachable(
                        f"the sink at {next(iter(waiting.values()))[0]} did not store the "
                        f"task's output within {PUT_WAIT:g}s")
                for req, (address, msg) in list(waiting.items()):
                    if now - sent[req] >= RESEND:  # (a sink that restarted lost it)
                        sent[req] = now
                        self._send(address, msg)
                continue
            address, body = reply
            req = body.get("req")
            if req not in waiting or waiting[req][0] != address:  # (another sink's number)
                continue
            if body.get("code") == "not-assigned":
                until = not_assigned_until.setdefault(address, now + NOT_ASSIGNED_WAIT)
                if now < until:
                    time.sleep(0.05)
                    sent[req] = now
                    self._send(address, waiting[req][1])
                    continue
            if "code" in body:
                raise SinkUnreachable(f"the sink at {address} refused the task's output: "
                                      f"{str(body.get('message'))[:300]}")
            del waiting[req]
        return [r for r, blob in enumerate(outputs) if len(blob)]

    def _send(self, address: str, msg: Message) -> None:
        try:
            send(self._sock(address), msg)
        except zmq.Again:  # not connected yet, or its queue is full: resent on silence
            pass

    def _next_reply(self, addresses: set[str], deadline: float) -> tuple[str, dict] | None:
        """The next reply from one of ``addresses`` (None after a short wait, to resend)."""
        poller = zmq.Poller()
        for address in addresses:
            poller.register(self._sock(address), zmq.POLLIN)
        wait = max(0.0, min(deadline - time.monotonic(), RESEND / 5))
        for sock, _ in poller.poll(int(wait * 1000) + 1):
            address = next(a for a, s in self.socks.items() if s is sock)
            try:
                _, frames = recv_frames(sock, max_bytes=self.max_message())
                msg = Message.decode(frames)
            except zmq.Again:
                continue
            except Exception:  # a malformed reply: dropped, the request is resent
                continue
            return address, {**msg.body, "_blobs": msg.blobs}
        return None

    # -- reduce side ---------------------------------------------------------------------
    def get(self, address: str, job: str, step: int, part: int,
            segs: list[list[int]]) -> tuple[int, list[int], tuple]:
        """Ask ``address`` for segments ``segs`` (from the front); returns how many it
        answered for, the maps it lacks and the blobs of the ones it has."""
        req = next(self._req)
        msg = Message(P.GET, {"req": req, "job": job, "step": step, "part": part,
                              "segs": segs[:GET_BATCH]})
        self._send(address, msg)
        deadline = time.monotonic() + GET_WAIT
        sent = time.monotonic()
        while True:
            reply = self._next_reply({address}, deadline)
            now = time.monotonic()
            if reply is None:
                if now >= deadline or not self.keep_waiting():
                    raise SinkUnreachable(f"the sink at {address} did not answer within "
                                          f"{GET_WAIT:g}s")
                if now - sent >= RESEND:
                    sent = now
                    self._send(address, msg)
                continue
            _, body = reply
            if body.get("req") != req:
                continue
            if "code" in body:
                raise SinkUnreachable(f"the sink at {address} refused: "
                                      f"{str(body.get('message'))[:300]}")
            got, missing, blobs = body.get("got"), body.get("missing"), body["_blobs"]
            if (type(got) is not int or not 0 < got <= len(msg.body["segs"])
                    or not isinstance(missing, list)
                    or not all(type(m) is int for m in missing)
                    or len(blobs) + len(missing) != got):
                shown = {k: v for k, v in body.items() if k != "_blobs"}
                raise SinkUnreachable(f"the sink at {address} sent a malformed reply "
                                      f"({str(shown)[:200]}, {len(blobs)} blobs)")
            self.bytes_in += sum(len(b) for b in blobs)
            return got, missing, blobs


class SinkSegments(Sequence):
    """A reduce task's segments, read from its sink as the task reaches them (a GET per
    up to 8 MiB), each let go once read: the task holds one reply's segments at a time,
    not its partition."""

    streamed = True  # (a memory budget does not count it as held: runner.py)

    def __init__(self, client: SinkClient, address: str, job: str, step: int, part: int,
                 segs: list[list[int]]) -> None:
        self.client = client
        self.address = address
        self.job = job
        self.step = step
        self.part = part
        self.segs = segs
        self._have: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.segs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            if i == slice(0, len(self.segs), None) or i == slice(None, None, None):
                return self
            return [self[j] for j in range(*i.indices(len(self.segs)))]
        if i < 0:
            i += len(self.segs)
        if not 0 <= i < len(self.segs):
            raise IndexError(i)
        if i not in self._have:
            self._fetch(i)
        return self._have.pop(i)

    def __setitem__(self, i: int, value: Any) -> None:
        """A task under a memory budget lets a segment go once read (it is, already)."""
        self._have.pop(i, None)

    def _fetch(self, i: int) -> None:
        for j in [j for j in self._have if j < i]:  # read in order: the ones behind go
            del self._have[j]
        got, missing, blobs = self.client.get(self.address, self.job, self.step, self.part,
                                              self.segs[i:])
        if missing:  # every lost segment of the partition, so they all run again at once
            lost = set(missing)
            lost.update(self._missing_after(i + got))
            raise SegmentsLost(self.address, sorted(lost))
        for k, blob in enumerate(blobs):
            self._have[i + k] = blob

    def _missing_after(self, start: int) -> list[int]:
        """Ask for the rest only to learn which are missing (a lost sink's partition)."""
        missing: list[int] = []
        while start < len(self.segs):
            got, lost, _ = self.client.get(self.address, self.job, self.step, self.part,
                                           self.segs[start:])
            missing.extend(lost)
            start += got
        return missing


def sink_input(client: SinkClient, job: str, part: int, split: list) -> tuple[list, Any]:
    """A reduce task's ``["sink", address, step, [[map, attempt], ...]]`` split as the
    runner reads segments: ``["segs", 0, n]`` over a :class:`SinkSegments`."""
    if (len(split) not in (4, 5) or not isinstance(split[1], str)
            or type(split[2]) is not int or not isinstance(split[3], list)):
        raise ValueError("a sink split is [\"sink\", address, step, segments, key?]")
    if len(split) == 5:  # (a cluster with keys: the key the sink must prove)
        client.know(split[1], str(split[4]))
    segs = [s for s in split[3] if isinstance(s, list) and len(s) == 2
            and type(s[0]) is int and type(s[1]) is int]
    if len(segs) != len(split[3]):
        raise ValueError("a sink split's segments are [map, attempt] pairs")
    return ["segs", 0, len(segs)], SinkSegments(client, split[1], job, split[2], part, segs)
