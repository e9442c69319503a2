"""The broker's answers to workers and sinks: READY, HEARTBEAT, BYE, SINK, DONE, FAILED, and
OUTPUT on the data plane.

A mixin of :class:`~pymapreduce.broker.daemon.Broker`, as ``client_api.py`` is for
clients: each file holds one side of the protocol. The handlers check nothing the ledger
does not (``ledger.py`` decides what a peer may report); they hand it the message and
reply.
"""

from __future__ import annotations

import zmq

from ..patterns import protocol as P
from ..patterns.message import Message


class WorkerAPI:
    """Handlers of the worker and sink commands (READY, HEARTBEAT, BYE, SINK, DONE, FAILED)
    and of the data plane's OUTPUT; mixed into the Broker."""

    def on_ready(self, peer: bytes, msg: Message, now: float) -> None:
        try:
            fd = self._frame.get(zmq.SRCFD)
        except (zmq.ZMQError, AttributeError, TypeError):
            fd = -1
        self.ledger.register(peer, self._peer_key, msg.body, now, fd)
        self._reply(peer, P.WELCOME, {"sink": self.data_address,
                                      "heartbeat": self.config.heartbeat_interval,
                                      "liveness": self.config.liveness,
                                      "max_message": self.config.max_message})

    def on_heartbeat(self, peer: bytes, msg: Message, now: float) -> None:
        if self.ledger.sinks and self.ledger.sink_beat(peer, self._peer_key, now, msg.body):
            return
        answer = self.ledger.heartbeat(peer, self._peer_key, msg.body.get("worker", peer), now,
                                       msg.body.get("progress"))
        if answer:
            self._reply(peer, answer, {})
        elif answer is not None:  # a beat too soon after the sender's last: ignored whole
            self._no_dispatch = True

    def on_bye(self, peer: bytes, msg: Message, now: float) -> None:
        if not self.ledger.sink_left(peer, self._peer_key):
            self.ledger.leave(peer, self._peer_key)

    def on_sink(self, peer: bytes, msg: Message, now: float) -> None:
        """SINK: a sink daemon registers (sinks/daemon.py); with keys, only a key in the
        sinks allowlist may, and workers are told that key to reach it by."""
        self.ledger.sink_joined(peer, msg.body, now, self._peer_key)
        # the jobs still running: a sink forgets the others' segments (jobs that ended,
        # or that this broker never knew or lost, while the sink was away)
        running = [j.id for j in self.jobs.values() if j.state == P.JOB_RUNNING]
        self._reply(peer, P.WELCOME, {"heartbeat": self.config.heartbeat_interval,
                                      "liveness": self.config.liveness, "running": running})

    def on_done(self, peer: bytes, msg: Message, now: float) -> None:
        worker = self.ledger.reporter(peer, self._peer_key, now)
        if worker is not None:
            self.ledger.done(worker, msg.body.get("results"), msg.blobs)

    def on_failed(self, peer: bytes, msg: Message, now: float) -> None:
        worker = self.ledger.reporter(peer, self._peer_key, now)
        if worker is not None:
            self.ledger.failed(worker, msg.body)

    def _on_data(self, route: list, msg: Message, role: str, sender: str) -> None:
        who = f"key {sender}" if sender else "data plane"
        if msg.command != P.OUTPUT:
            self._complain(who, "dropped a %r message on the data plane", msg.command[:40])
            return
        try:
            self.ledger.output(msg.body, msg.blobs, sender)
        except Exception as exc:  # a bad message must never take the broker down
            self._complain(who, "%s rejected: %r", msg.command[:40], exc)
        self.dispatch()
