"""The sink daemon: takes map segments pushed by workers, merges them per partition on its
disk, and streams them to the reducers that ask (push-based shuffle; docs/sinks.md).

Two sockets: a DEALER to the broker's control ROUTER (``SINK`` to register, ``HEARTBEAT``
every interval; the broker answers ``WELCOME``, tells it which job steps it serves with
``ASSIGN`` and which it may forget with ``DROP``) and a bound ROUTER for workers (``PUT``
from mappers, ``GET`` from reducers). It runs no user code and unpickles nothing:
segments are opaque bytes. Every send is non-blocking, so a worker that does not read its
replies loses them (it asks again) and costs no one else; a PUT for a job step the broker
did not assign to this sink is refused, so a peer cannot fill its disk with anything but
the shuffle it was asked to carry.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from typing import Any

import zmq

from ..errors import AuthenticationFailed, ProtocolError
from ..patterns import config as timing
from ..patterns import protocol as P
from ..patterns import security
from ..patterns.message import Limits, Message
from ..patterns.sockets import (
    DEFAULT_MAX_MESSAGE,
    Oversized,
    bind,
    make_socket,
    recv,
    recv_frames,
    send,
)
from ..patterns.wakeup import SignalWakeup
from .store import SegmentStore

log = logging.getLogger("pymapreduce.sink")

REPLY_BYTES = 8 << 20  # a GET's reply carries segments up to this many bytes (one at least)
# Replies queued to one peer before more are dropped (it asks again): a reducer has one GET
# out at a time, so this bounds what a peer that asks and never reads costs the sink to
# about PEER_REPLIES * REPLY_BYTES, not the ROUTER's usual 1,000 messages.
PEER_REPLIES = 4
# What a sink decodes of a worker's header: a GET names up to MAX_SEGS pairs.
SINK_LIMITS = Limits(header=1 << 20, array=2 * 4096, map=64, string=64 << 10,
                     containers=4 * 4096)
MAX_SEGS = 4096  # segments one GET may name
MAX_PARTS = 1 << 20  # partition numbers a PUT may name (a job's reducers are fewer)
MIN_FREE = 64 << 20  # bytes the disk keeps free: past it PUTs are refused
IDENTITY_FILE = "identity"


class SinkDaemon:
    """A sink for the broker at ``connect``; ``bind``: where workers reach it;
    ``state_dir``: keep segments across restarts (else a temporary directory)."""

    def __init__(self, connect: str, *, bind: str = "tcp://127.0.0.1:0",
                 state_dir: str | None = None, name: str = "",
                 heartbeat_interval: float = timing.HEARTBEAT_INTERVAL,
                 max_message: int = DEFAULT_MAX_MESSAGE,
                 context: zmq.Context | None = None, keys_dir: str | None = None,
                 key_name: str = "sink") -> None:
        self.connect_addr = connect
        self.bind_addr = bind
        self.name = name
        self.heartbeat_interval = heartbeat_interval
        self.max_message = max_message
        self.store = SegmentStore(state_dir)
        self.identity = self._identity(state_dir)
        # (with a state directory its identity, and so its default name, outlives it)
        self.name = self.name or self.identity.decode()
        self.ctx = context or zmq.Context.instance()
        self.ctl = make_socket(self.ctx, zmq.DEALER, identity=self.identity)
        self.data = make_socket(self.ctx, zmq.ROUTER, max_message=max_message)
        self.data.setsockopt(zmq.SNDHWM, PEER_REPLIES)
        # with keys: a CURVE client of the broker under its own key, and a CURVE server
        # to workers, answering ZAP itself (workers' keys only), as the broker does
        self.allow: security.Allowlists | None = None
        self.zap: zmq.Socket | None = None
        if keys_dir is not None:
            security.PeerKeys.load(keys_dir, key_name).apply(self.ctl)
        # a refused key (or keys on one side only) is an error within moments
        self.watch = security.HandshakeWatch(self.ctl, connect, has_keys=keys_dir is not None)
        if keys_dir is not None:
            self.allow = security.Allowlists(keys_dir, own=key_name)
            self.zap = self.ctx.socket(zmq.REP)
            self.zap.setsockopt(zmq.LINGER, 0)
            self.zap.bind(security.ZAP_ENDPOINT)  # before the secured socket binds
            self.allow.secure(self.data, security.DATA_DOMAIN)
        self.address = ""
        # (job, step) the broker sent here -> the step's partitions
        self.assigned: dict[tuple[str, int], int] = {}
        self.welcomed = False
        self._stop = False
        self._last_beat = 0.0
        self._puts_since_check = 0
        self.refused = 0  # PUTs refused (not assigned, malformed, disk full)

    @staticmethod
    def _identity(state_dir: str | None) -> bytes:
        """The control socket's identity: kept in the state directory, so a restarted
        sink is the same peer to the broker (and keeps the job steps it serves)."""
        if state_dir is None:
            return b"sink-" + secrets.token_hex(8).encode()
        path = os.path.join(state_dir, IDENTITY_FILE)
        try:
            with open(path, "rb") as f:
                ident = f.read().strip()
            if ident.startswith(b"sink-") and len(ident) <= 64:
                return ident
        except OSError:
            pass
        ident = b"sink-" + secrets.token_hex(8).encode()
        with open(path, "wb") as f:
            f.write(ident)
        return ident

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> str:
        """Bind the data socket and connect to the broker; returns the data address."""
        self.address = bind(self.data, self.bind_addr)
        self.ctl.connect(self.connect_addr)
        self._register()
        return self.address

    def stop(self, *_: object) -> None:
        self._stop = True

    def close(self) -> None:
        self.watch.close()
        self.ctl.close(0)
        self.data.close(0)
        if self.zap is not None:
            self.zap.close(0)
        self.store.close()

    def _register(self) -> None:
        self._send_ctl(P.SINK, {"address": self.address, "name": self.name,
                                "durable": self.store.durable,
                                # (a restarted broker keeps the steps whose segments it has)
                                "jobs": sorted(self.store.jobs())[:10000]})

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.ctl, zmq.POLLIN)
        poller.register(self.data, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap, zmq.POLLIN)
        wakeup = SignalWakeup()
        if wakeup.fd is not None:
            poller.register(wakeup.fd, zmq.POLLIN)
        try:
            while not self._stop:
                events = dict(poller.poll(int(self.heartbeat_interval * 1000 / 2)))
                self.watch.check()  # AuthenticationFailed: this sink's key was refused
                if self.ctl in events:
                    self._drain_ctl()
                if self.zap is not None and self.zap in events:
                    self._answer_zap()
                if self.data in events:
                    self._drain_data()
                if wakeup.fd is not None and wakeup.fd in events:
                    wakeup.drain()
                now = time.monotonic()
                if now - self._last_beat >= self.heartbeat_interval:
                    self._last_beat = now
                    self._reload_keys()
                    if self.welcomed:  # (with what it carried, for listings)
                        st = self.store
                        self._send_ctl(P.HEARTBEAT, {"in": st.bytes_in, "out": st.bytes_out,
                                                     "segments": st.segments_in})
                    else:  # (the broker may have started after us, or restarted)
                        self._register()
        finally:
            wakeup.close()

    def _answer_zap(self) -> None:
        while self.zap.poll(0, zmq.POLLIN):
            request = self.zap.recv_multipart()
            try:
                reply = self.allow.answer(request)
            except Exception as exc:  # a malformed request: refused, never let in
                log.warning("bad ZAP request: %r", exc)
                reply = [b"1.0", b"", b"400", b"bad request", b"", b""]
            self.zap.send_multipart(reply)

    def _reload_keys(self) -> None:
        """Worker keys added or removed count from the next connection (as the broker's)."""
        if self.allow is None:
            return
        try:
            self.allow.reload()
        except Exception as exc:  # a half-written key file: keep the old lists
            log.warning("allowlists not reloaded: %s", exc)

    def _send_ctl(self, command: str, body: dict) -> None:
        try:
            send(self.ctl, Message(command, body))
        except zmq.Again:  # the broker is not reading: the next beat tries again
            pass

    # -- the broker ----------------------------------------------------------------------
    def _drain_ctl(self) -> None:
        for _ in range(1000):
            try:
                msg = recv(self.ctl)
            except zmq.Again:
                return
            except ProtocolError as exc:
                log.warning("dropped a malformed message from the broker: %s", exc)
                continue
            body = msg.body
            if msg.command == P.WELCOME:
                self.welcomed = True
                running = body.get("running")
                if isinstance(running, list):  # what ended while we were apart goes
                    for job in self.store.jobs() - {j for j in running if isinstance(j, str)}:
                        n, size = self.store.held(job)
                        self.store.drop(job)
                        log.info("job %.80r is not running at the broker: %d segment(s), "
                                 "%d bytes dropped", job, n, size)
                beat = body.get("heartbeat")
                if isinstance(beat, (int, float)) and 0 < beat < self.heartbeat_interval:
                    self.heartbeat_interval = beat
            elif msg.command == P.ASSIGN:
                for job, step, parts in _steps(body.get("steps")):
                    self.assigned[(job, step)] = parts
            elif msg.command == P.DROP:
                for job in body.get("jobs") or ():
                    if isinstance(job, str):
                        self.assigned = {a: n for a, n in self.assigned.items()
                                         if a[0] != job}
                        n, size = self.store.held(job)
                        self.store.drop(job)
                        log.info("job %.80r over: %d segment(s), %d bytes dropped", job, n,
                                 size)
            elif msg.command == P.RECONNECT:
                self.welcomed = False
                self._register()
            elif msg.command == P.ERROR:
                if body.get("code") == "forbidden":  # e.g. a worker's key used by a sink
                    raise AuthenticationFailed(f"{self.connect_addr}: "
                                               f"{str(body.get('message'))[:300]}")
                log.warning("broker error: %s", str(body.get("message"))[:300])

    # -- workers -------------------------------------------------------------------------
    def _drain_data(self) -> None:
        for _ in range(100):  # (then the broker's socket gets its turn)
            try:
                route, frames = recv_frames(self.data, skip=1, max_bytes=self.max_message)
            except zmq.Again:
                return
            except Oversized as exc:
                self.refused += 1
                log.warning("dropped an oversized message from a worker: %s", exc)
                continue
            try:
                msg = Message.decode(frames, SINK_LIMITS)
                if msg.command == P.PUT:
                    self._put(route, msg)
                elif msg.command == P.GET:
                    self._get(route, msg)
                else:
                    raise ValueError(f"unknown command {msg.command[:40]!r}")
            except (ProtocolError, ValueError, TypeError, KeyError) as exc:
                self.refused += 1
                log.warning("refused a message from a worker: %s", str(exc)[:300])
                self._reply(route, P.ERROR, {"req": _req(frames), "code": "bad-request",
                                             "message": str(exc)[:300]})

    def _put(self, route: list, msg: Message) -> None:
        b = msg.body
        req, job, step = _int(b, "req"), b.get("job"), _int(b, "step")
        map_index, attempt = _int(b, "map"), _int(b, "attempt")
        parts = b.get("parts")
        if (not isinstance(job, str) or not isinstance(parts, list)
                or len(parts) != len(msg.blobs) or map_index >= 1 << 32  # (store.RECORD)
                or any(type(p) is not int or not 0 <= p < MAX_PARTS for p in parts)):
            raise ValueError("a PUT is {req, job, step, map, attempt, parts} and a blob "
                             "per part")
        if (job, step) not in self.assigned or any(
                p >= self.assigned[(job, step)] for p in parts):
            self.refused += 1
            self._reply(route, P.ERROR, {"req": req, "code": "not-assigned", "message":
                                         f"this sink does not serve step {step} of {job!r:.80}"
                                         " (or those partitions)"})
            return
        if self._disk_full():
            self.refused += 1
            self._reply(route, P.ERROR, {"req": req, "code": "disk-full", "message":
                                         f"the sink's disk ({self.store.root}) is full"})
            return
        try:
            for part, blob in zip(parts, msg.blobs):
                self.store.put(job, step, map_index, attempt, part, blob)
        except OSError as exc:
            self.refused += 1
            self._reply(route, P.ERROR, {"req": req, "code": "disk", "message":
                                         f"the sink could not store the segment: {exc}"})
            return
        self._reply(route, P.STORED, {"req": req})

    def _get(self, route: list, msg: Message) -> None:
        b = msg.body
        req, job, step, part = _int(b, "req"), b.get("job"), _int(b, "step"), _int(b, "part")
        segs = b.get("segs")
        if not isinstance(job, str) or not isinstance(segs, list) or len(segs) > MAX_SEGS:
            raise ValueError(f"a GET is {{req, job, step, part, segs}} (at most {MAX_SEGS})")
        blobs: list[Any] = []
        missing: list[int] = []
        size = got = 0
        for seg in segs:
            if (not isinstance(seg, list) or len(seg) != 2 or type(seg[0]) is not int
                    or type(seg[1]) is not int):
                raise ValueError("a GET's segment is [map, attempt]")
            if blobs and size >= REPLY_BYTES:
                break
            got += 1
            blob = self.store.get(job, step, part, seg[0], seg[1])
            if blob is None:
                missing.append(seg[0])
            else:
                blobs.append(blob)
                size += len(blob)
        self._reply(route, P.SEGS, {"req": req, "got": got, "missing": missing}, tuple(blobs))

    def _reply(self, route: list, command: str, body: dict, blobs: tuple = ()) -> None:
        msg = Message(command, body, blobs)
        for _ in range(2):
            try:
                send(self.data, msg, route)
                return
            except zmq.Again:
                # Its queue is full, or looks full: ZeroMQ counts what the peer has read
                # only as the socket handles its commands, which a send does at most once a
                # millisecond or so, and a queue of PEER_REPLIES is reached by a few quick
                # answers to a peer that reads each one (a test's fifth reply was lost so).
                # Reading the socket's events handles them; then one more try, and a peer
                # that really reads nothing asks again.
                self.data.get(zmq.EVENTS)
            except zmq.ZMQError:  # gone
                return

    def _disk_full(self) -> bool:
        self._puts_since_check += 1
        if self._puts_since_check < 64 and self._puts_since_check > 1:
            return False
        self._puts_since_check = 1
        try:
            return shutil.disk_usage(self.store.root).free < MIN_FREE
        except OSError:
            return False


def _int(body: dict, name: str) -> int:
    value = body.get(name)
    if type(value) is not int or not 0 <= value < (1 << 63):
        raise ValueError(f"{name} is {value!r:.40}, not a count")
    return value


def _req(frames: list) -> Any:
    try:
        value = Message.decode(frames).body.get("req")
    except ProtocolError:
        return None
    return value if type(value) is int else None


def _steps(value: Any) -> list[tuple[str, int, int]]:
    """``[[job, step, partitions], ...]`` of an ASSIGN, the malformed entries left out."""
    if not isinstance(value, list):
        return []
    return [(v[0], v[1], v[2]) for v in value[:10000] if isinstance(v, list) and len(v) == 3
            and isinstance(v[0], str) and type(v[1]) is int and type(v[2]) is int]
