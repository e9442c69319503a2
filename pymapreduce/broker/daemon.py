"""The broker daemon: control plane (ROUTER), data sink (PULL), and the poll loop.

The loop follows the ZeroMQ guide's majordomo broker: poll with a short timeout, decode
each message and check its sender's role and key, hand it to the ledger (``ledger.py``:
jobs, workers, attempts, commits, retries, recovery; no sockets), then one ``step(now)``
for time-driven work, and deliver what the ledger left in its outbox. Every send is
non-blocking: a peer whose queue is full loses what is sent to it (a registered worker is
dropped), so no peer can stall the loop. The broker never unpickles anything: job code,
input chunks and partition data are opaque blobs it stores and forwards.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
import traceback
from typing import Any

import zmq

from ..errors import ProtocolError
from ..observe import api as observe_api
from ..observe.traffic import Traffic
from ..patterns import owned, security
from ..patterns import protocol as P
from ..patterns.message import BROKER_LIMITS, BROKER_MAX_FRAMES, Message
from ..patterns.share import PeerShares
from ..patterns.sockets import (
    Oversized,
    bind,
    make_socket,
    monitor_event,
    readable,
    recv_frames,
    send,
)
from ..patterns.wakeup import SignalWakeup
from .client_api import ClientAPI, _req
from .config import BrokerConfig
from .journal import Journal
from .ledger import NOT_READING, Fetched, Ledger, Publish
from .reports import peer_name
from .sink import SPILL_PREFIX, Store
from .worker_api import WorkerAPI

log = logging.getLogger("pymapreduce.broker")

DRAIN_BATCH = 256  # messages read from one socket before the other gets its turn
GC_YOUNG = 20_000  # allocations between collections of the youngest generation (700 by default)
WORKER_COMMANDS = frozenset({P.READY, P.DONE, P.FAILED, P.HEARTBEAT, P.BYE})
CLIENT_COMMANDS = frozenset({P.HELLO, P.SUBMIT, P.WATCH, P.STATUS, P.FETCH, P.CANCEL,
                             P.RELEASE, P.JOBS, P.LOGS, P.EVENTS})
SINK_COMMANDS = frozenset({P.SINK, P.HEARTBEAT, P.BYE})
ROLE_COMMANDS = {security.WORKER: WORKER_COMMANDS, security.CLIENT: CLIENT_COMMANDS,
                 security.SINK: SINK_COMMANDS}
SUSPECT_FOR = 3.0  # seconds a worker whose connection closed is probed
# seconds a dead worker process's supervisor has to register its replacement, naming the
# attempt the dead one ran (workers/running.py: that one alone is counted); past this,
# every attempt it held counts
WORD_GRACE = 1.5
PROBE_INTERVAL = 0.05
MAX_POLL_MS = 100  # upper bound on a poll, so stop() and deadlines are noticed promptly
# A client's requests that read what the broker holds are answered from its share of the
# loop's time (a client: its key, without keys its connection), and all clients' from
# theirs together (patterns/share.py): past it the client is told "busy", unread, and
# asks again shortly. Workers' messages are not counted: their work is what the shares
# protect; nor is a HELLO (a few fixed fields).
SHARED_COMMANDS = frozenset({P.WATCH, P.STATUS, P.FETCH, P.JOBS, P.LOGS, P.EVENTS})
CLIENT_SHARE, CLIENT_BURST = 0.05, 0.5  # each client's (key's, or connection's)
CLIENTS_SHARE, CLIENTS_BURST = 0.1, 1.0  # all clients' together
# The requests that make or end jobs, from shares of their own, larger (a client's jobs
# are what it is there for; one that submits a hundred jobs at once is served at a
# quarter of the loop's time once past the burst): a SUBMIT of 50,000 tasks and its
# CANCEL took the loop 0.1 s, and one client submitting and cancelling in a loop held it
# from everyone else's jobs.
JOB_COMMANDS = frozenset({P.SUBMIT, P.CANCEL, P.RELEASE})
# ...of which a RELEASE, and a CANCEL of a job of the client's that still runs, are charged
# but acted on even past the share (:meth:`Broker._past_share`): each ends or frees a job
# once, and its SUBMIT paid for it; refused, a RELEASE made `pymapreduce run` (and mrjob's
# runner) end in BrokerBusy after the job's output was out, and a CANCEL (a Ctrl-C) left
# the job running unwatched, when the client's key had spent its share.
JOBS_SHARE, JOBS_BURST = 0.25, 2.0  # each client's
ALL_JOBS_SHARE, ALL_JOBS_BURST = 0.5, 4.0  # all clients' together



def _address(frame: Any) -> str:
    """The network address a received frame came from ("" if unknown): what the logs'
    rate limits count by when peers have no keys."""
    try:
        return f"address {frame.get('Peer-Address')}"
    except (zmq.ZMQError, AttributeError, TypeError):
        return ""


def tune_collector() -> None:
    """For a broker daemon's process (not one that serves in a thread of another
    program): what exists at start (modules, configuration) lives as long as the process,
    so it leaves the collector's sight; and the youngest generation is collected after
    GC_YOUNG allocations, not 700. The loop makes and drops small objects by the thousand
    a second (an attempt, a report); collecting after every 700 cost about a sixth of
    the broker's CPU per no-op task, most of it going over the long-lived tables (jobs,
    the event log) again."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


class Broker(ClientAPI, WorkerAPI):
    """A broker bound to ``config.bind``; ``serve_forever()`` runs it until ``stop()``."""

    def __init__(self, config: BrokerConfig, *, context: zmq.Context | None = None) -> None:
        self.config = config
        journal: Journal | None = None
        if config.state_dir:  # first: a journal that cannot be used stops the broker here
            journal = Journal(config.state_dir, config.fsync)
        self._own_context = context is None
        self.ctx = context or zmq.Context()
        self.control = make_socket(self.ctx, zmq.ROUTER, max_message=config.max_message)
        self.sink = make_socket(self.ctx, zmq.PULL, max_message=config.max_message)
        self.allow: security.Allowlists | None = None
        self.zap: zmq.Socket | None = None
        if config.keys_dir:
            self.allow = security.Allowlists(config.keys_dir)
            # the ZAP handler must exist before a secured socket binds (fail closed)
            self.zap = self.ctx.socket(zmq.REP)
            self.zap.setsockopt(zmq.LINGER, 0)
            self.zap.bind(security.ZAP_ENDPOINT)
            self.allow.secure(self.control, security.CONTROL_DOMAIN)
            self.allow.secure(self.sink, security.DATA_DOMAIN)
        # a worker's connection closing (its process died) is noticed at once: a probe to
        # it then fails, instead of waiting out its liveness
        self.monitor = self.control.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._suspects: dict[bytes, float] = {}  # route -> probe until
        self._word_due: dict[bytes, float] = {}  # route of a dead process -> its word due
        self._last_probe = 0.0
        self._frame: Any = None  # the first frame of the message being handled
        self._whole: Any = None  # returns the control message being handled, its blobs too
        self._reload = False
        self.address = ""
        self.data_address = ""
        store = Store(config.memory_budget, config.spill_dir, fsync=config.fsync == "commit")
        allow = self.allow
        self.ledger = Ledger(config, store, journal, secured=allow is not None,
                             worker_key_allowed=lambda key: allow is None or allow.allows(
                                 key, security.WORKER), address_of=_address)
        store.on_damage = self.ledger._output_damaged
        # the ledger's tables, under the names the client handlers use
        self.journal, self.store = journal, store
        self.workers, self.jobs = self.ledger.workers, self.ledger.jobs
        self.scheduler = self.ledger.scheduler
        self._stopping = False
        self._wakeup = SignalWakeup(enable=False)  # serve_forever's, while it runs
        self._last_tick = 0.0
        self._peer_key = ""  # the CURVE key of the message being handled
        self._no_dispatch = False  # the message being handled changed nothing (a flood's)
        self._shares = PeerShares(CLIENT_SHARE, CLIENT_BURST, CLIENTS_SHARE, CLIENTS_BURST)
        self._job_shares = PeerShares(JOBS_SHARE, JOBS_BURST, ALL_JOBS_SHARE, ALL_JOBS_BURST)
        self.traffic = Traffic()  # bytes and messages per plane (observe/traffic.py)
        self.http = None  # the read-only HTTP server, once bound (observe/server.py)
        self.http_url = ""
        self._handlers = {
            P.READY: self.on_ready,
            P.DONE: self.on_done,
            P.FAILED: self.on_failed,
            P.HEARTBEAT: self.on_heartbeat,
            P.BYE: self.on_bye,
            P.SINK: self.on_sink,
            P.HELLO: self.on_hello,
            P.SUBMIT: self.on_submit,
            P.WATCH: self.on_watch,
            P.STATUS: self.on_status,
            P.FETCH: self.on_fetch,
            P.CANCEL: self.on_cancel,
            P.RELEASE: self.on_release,
            P.JOBS: self.on_jobs,
            P.LOGS: self.on_logs,
            P.EVENTS: lambda peer, msg, now: observe_api.on_events(self, peer, msg),
        }

    # -- life cycle ----------------------------------------------------------------------
    def bind(self) -> str:
        """Bind both sockets; returns the control address (with the real port).

        A broker with a state directory first reloads the jobs it journaled."""
        if self.journal is not None and not self.jobs:
            self.ledger.recover()
        self.address = bind(self.control, self.config.bind)
        try:
            self.data_address = bind(self.sink, self.config.sink_endpoint())
        except Exception:
            self.control.close(0)
            raise
        if self.config.http and self.http is None:
            try:
                self.http = observe_api.start_http(self)
            except Exception:
                self.control.close(0)
                self.sink.close(0)
                raise
            self.http_url = self.http.url
        return self.address

    def connect_worker(self, endpoint: str) -> None:
        """Reach a worker that listens instead of connecting (the original API's slaves)."""
        self.control.connect(endpoint)

    def stop(self) -> None:
        """Ask the loop to end (safe from another thread or a signal handler)."""
        self._stopping = True

    def reload_keys(self) -> None:
        """Re-read the allowlists at the next turn of the loop (SIGHUP)."""
        self._reload = True

    def loop_poller(self) -> zmq.Poller:
        """What the loop waits on (bound first if need be); ``_turn(poller)`` is one turn
        of it (benchmarks/bench_observe_steps.py turns it by hand)."""
        if not self.address:
            self.bind()
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.sink, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap, zmq.POLLIN)
        self._wakeup = SignalWakeup()  # SIGTERM ends the poll at once (patterns/wakeup.py)
        if self._wakeup.fd is not None:
            poller.register(self._wakeup.fd, zmq.POLLIN)
        if self.http is not None:  # the loop serves its HTTP connections too
            self.http.attach(poller)
        return poller

    def serve_forever(self) -> None:
        # what brokers and worker daemons killed on this host left in its spill directory
        # (after its ready line: off an embedded cluster's start)
        # (on a thread of its own: anyone may plant entries with the prefix, and 120,000
        # of them took 1.8 s to look at, which must not hold the loop; the broker forks
        # nothing, so no child can inherit a lock the thread holds)
        spill_dir = self.config.spill_dir or tempfile.gettempdir()
        owned.in_background([lambda: owned.sweep(spill_dir, SPILL_PREFIX)])
        poller = self.loop_poller()
        try:
            while not self._stopping:
                try:
                    self._turn(poller)
                except (zmq.ContextTerminated, KeyboardInterrupt):
                    raise
                except Exception:  # a fault in one turn must not end every job's service
                    self.ledger.complain("broker", "error in the loop (serving on): %s",
                                         traceback.format_exc())
        finally:
            self._wakeup.close()
            self.close()

    def _turn(self, poller: zmq.Poller) -> None:
        """One turn of the loop: what arrived, then the clock's work."""
        events = dict(poller.poll(MAX_POLL_MS))
        if self._wakeup.fd in events:
            self._wakeup.drain()
        if self._reload:
            self._reload_keys()
        if self.zap is not None and self.zap in events:
            self._answer_zap()
        if self.monitor in events:
            self._disconnected()
        if self.sink in events:
            self._drain(self.sink, self._on_data, routed=False)
        if self.control in events:
            self._drain(self.control, self._on_control, routed=True)
        self.ledger.events.flush()  # the turn's committed attempts, recorded together
        self.step(time.monotonic())
        if self.http is not None:
            self.http.serve(events)
        if self.journal is not None:
            self.journal.flush()

    def _reload_keys(self) -> None:
        """Re-read the allowlists if they changed (or on SIGHUP); workers whose key was
        removed are dropped, and their next message is refused."""
        force, self._reload = self._reload, False
        try:
            changed = self.allow.reload(force=force)
        except Exception as exc:  # a half-written key file: keep the old lists
            log.warning("allowlists not reloaded: %s", exc)
            return
        if changed:
            for w in [w for w in self.workers.values()
                      if not self.allow.allows(w.key, security.WORKER)]:
                self.ledger.purge(w, "its key was removed from the allowlist")
            for sink in [s for s in self.ledger.sinks.values()
                         if s.key and not self.allow.allows(s.key, security.SINK)]:
                self.ledger.lose_sink(sink, "its key was removed from the allowlist")

    def _answer_zap(self) -> None:
        while self.zap.poll(0, zmq.POLLIN):
            request = self.zap.recv_multipart()
            try:
                reply = self.allow.answer(request)
            except Exception as exc:  # never leave a handshake unanswered
                log.warning("bad ZAP request: %r", exc)
                reply = [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"error",
                         b"", b""]
            self.zap.send_multipart(reply)

    def _disconnected(self) -> None:
        now = time.monotonic()
        while self.monitor.poll(0):
            _, fd = monitor_event(self.monitor)
            for w in self.workers.values():
                if w.fd == fd:
                    self._suspects[w.route] = now + SUSPECT_FOR

    def _probe(self, now: float) -> None:
        """Probe workers whose connection closed: a dead one is unreachable (purged)."""
        if now - self._last_probe < PROBE_INTERVAL:
            return
        self._last_probe = now
        for route, until in list(self._suspects.items()):
            worker = self.workers.get(route)
            if worker is None or now > until:
                del self._suspects[route]
                continue
            try:
                send(self.control, Message(P.HEARTBEAT), route=[route])
            except zmq.Again:  # connected but not reading: _reply's rule, not a death
                pass
            except zmq.ZMQError:
                del self._suspects[route]
                if worker.supervisor:  # its replacement will say which attempt it ran
                    worker.credit = 0  # (nothing more is handed to it meanwhile)
                    self._word_due[route] = now + WORD_GRACE
                else:
                    self.ledger.purge(worker, "its connection closed")
        for route, due in list(self._word_due.items()):
            if now > due:  # no word came (its whole daemon is gone, say): all count
                del self._word_due[route]
                worker = self.workers.get(route)
                if worker is not None:
                    self.ledger.purge(worker, "its connection closed")

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        self.monitor.close(0)
        self.control.close(0)
        self.sink.close(0)
        if self.zap is not None:
            self.zap.close(0)
        self.store.close()
        if self.journal is not None:
            self.journal.close()
        if self._own_context:
            self.ctx.term()

    def _drain(self, sock: zmq.Socket, handler, routed: bool) -> None:
        """Read and handle up to DRAIN_BATCH waiting messages. Each is read within a budget
        (BROKER_MAX_FRAMES frames, ``max_message`` bytes, a header of at most
        BROKER_LIMITS.header bytes), so no message costs the broker much more than that;
        one over it is dropped unbuilt and answered with an ERROR where it can be."""
        for _ in range(DRAIN_BATCH):
            try:
                route, body = recv_frames(sock, skip=1 if routed else 0,
                                          max_frames=BROKER_MAX_FRAMES,
                                          max_bytes=self.config.max_message)
            except zmq.Again:
                return
            except Oversized as exc:
                self._oversized(exc)
            else:
                self.traffic.received(not routed, body)
                role, key = security.peer_role(body[0]) if self.allow and body else ("", "")
                self.ledger.origin = key or (body[0] if body else "")
                try:
                    # (a client's request is unpacked once it is to be acted on: past its
                    # share of the loop it is refused with its header read, _on_control)
                    msg, whole = Message.decode_header(body, BROKER_LIMITS)
                    if routed:
                        self._whole = whole  # (taken, and let go, by _on_control)
                    else:  # (the data plane: read whole now, and not kept past it)
                        msg = whole()
                    del whole
                except ProtocolError as exc:
                    self._malformed(route, key, exc)
                else:
                    self._frame = body[0]
                    handler(route, msg, role, key)
            if not readable(sock):
                return

    def _malformed(self, route: list, key: str, exc: ProtocolError, req: Any = None) -> None:
        """A message that cannot be read was dropped: say so to its sender and in the
        (rate-limited) log."""
        self._complain(peer_name(route[0] if route else None, key),
                       "dropped a malformed message: %s", exc)
        if route:
            code = "too-large" if exc.cause == "too-large" else "malformed"
            body = {"code": code, "message": str(exc)}
            if req is not None:
                body["req"] = req
            self._reply(route[0], P.ERROR, body)

    def _oversized(self, exc: Oversized) -> None:
        """A message over the budget was dropped: say so to its sender (with its request
        id, when its header can be read) and in the (rate-limited) log."""
        route, head = exc.route, exc.head
        _, key = security.peer_role(head) if self.allow and head is not None else ("", "")
        who = peer_name(route[0] if route else None, key) if route or key else "data plane"
        self.ledger.origin = key or (head if head is not None else "")
        self._complain(who, "dropped a message over the limits: %s", exc)
        if not route:
            return
        body = {"code": "too-large", "message": f"{exc} (the broker's --max-message-mb is "
                                                f"{self.config.max_message / (1 << 20):g})"}
        if head is not None:
            try:
                body["req"] = _req(Message.decode_header([head], BROKER_LIMITS)[0])
            except ProtocolError:
                pass
        self._reply(route[0], P.ERROR, body)

    def _past_share(self, msg: Message) -> bool:
        """Whether a client's request is acted on though its share of the loop is spent: a
        RELEASE, and a CANCEL of a job it may act on that still runs. Each ends or frees a
        job at most once, and the job's SUBMIT was paid from the share; a CANCEL of a job
        that has ended (its status, built again) waits as a read would."""
        if msg.command == P.RELEASE:
            return True
        if msg.command != P.CANCEL:
            return False
        job_id = msg.body.get("job_id")
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        return job is not None and job.state == P.JOB_RUNNING and self._may_act(job)

    def _on_control(self, route: list, msg: Message, role: str, key: str) -> None:
        handler = self._handlers.get(msg.command)
        whole, self._whole = self._whole, None  # (the message's frames: not kept past it)
        peer = route[0]
        if handler is None:
            self._complain(peer_name(route[0] if route else None, key), "unknown command %r", msg.command[:40])
            self._reply(peer, P.ERROR, {"code": "unknown-command", "message": msg.command[:40]})
            return
        if self.allow is not None and (msg.command not in ROLE_COMMANDS.get(role, ())
                                       or not self.allow.allows(key, role)):
            allowed = self.allow.allows(key, role)
            self._complain(peer_name(route[0] if route else None, key), "refused %s from a %s key%s", msg.command,
                           role or "unknown", "" if allowed else " no longer allowed")
            reason = (f"a {role} key may not send this request" if allowed else
                      "this key is no longer in the broker's allowlist")
            self._reply(peer, P.ERROR, {"code": "forbidden", "req": _req(msg),
                                        "message": reason})
            return
        self._peer_key = key
        now = time.monotonic()
        command = msg.command
        shares = (self._shares if command in SHARED_COMMANDS else
                  self._job_shares if command in JOB_COMMANDS else None)
        # whose share: the client's key (as for its jobs and limits), else its connection
        payer = (key or peer) if shares is not None else None
        if shares is not None and not shares.ready(payer) and not self._past_share(msg):
            self._reply(peer, P.ERROR, {
                "code": "busy", "req": _req(msg),
                "message": "this client's requests have had their share of the broker's "
                           "time for now: ask again shortly"})
            return

        def act() -> None:
            try:  # its blobs, unpacked now that it is acted on (charged to its share)
                request = whole() if whole is not None else msg
            except ProtocolError as exc:
                self._malformed(route, key, exc, _req(msg))
                return
            handler(peer, request, now)

        try:
            if shares is not None:
                shares.timed(payer, act)
            else:
                act()
        except Exception as exc:  # a bad message must never take the broker down
            self._complain(peer_name(route[0] if route else None, key), "%s rejected: %r", msg.command, exc)
            self._reply(
                peer,
                P.ERROR,
                {"code": "bad-request", "message": str(exc), "req": _req(msg)},
            )
        if self._no_dispatch:
            self._no_dispatch = False
        else:
            self.dispatch()

    def _complain(self, peer: str, what: str, *args: Any) -> None:
        """Log a bad message, naming the peer (rate-limited: a hostile peer cannot flood
        the log)."""
        self.ledger.complain(peer, what, *args)

    # -- time-driven work ----------------------------------------------------------------

    def step(self, now: float) -> None:
        """Everything driven by the clock: purge silent workers, status events, expiry."""
        if self._suspects or self._word_due:
            self._probe(now)
        for job in self.jobs.values():
            if job.dirty and now - job.last_event >= self.config.status_interval:
                self._publish(job, now)
        if now - self._last_tick >= self.config.heartbeat_interval:
            self._last_tick = now
            if self.allow is not None:
                self._reload_keys()
            self.ledger.tick(now)
        self._deliver()

    # -- dispatching ---------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand pending tasks to workers with credit, and deliver what is to be sent."""
        self.ledger.dispatch()
        self._deliver()
        self.store.settle()  # the reduce segments just sent leave memory (broker/sink.py)

    # -- sending -------------------------------------------------------------------------
    def _deliver(self) -> None:
        """Send what the ledger left in its outbox, never waiting for a peer."""
        outbox = self.ledger.outbox
        while outbox:
            item = outbox.popleft()
            if isinstance(item, Publish):
                self._publish(item.job, time.monotonic())
            elif isinstance(item, Fetched):
                self._serve_fetch_waiters(item.job)
            else:
                self._send(item.route, item.msg, item.worker)

    def _not_reading(self, peer: bytes, command: str) -> None:
        """A message to ``peer`` found its queue full: dropped. A client loses those
        replies (it asks again when it reads again); a registered worker that does not
        read cannot take tasks either and is dropped from the cluster (its tasks go to
        others; it registers again when it reads the RECONNECT that follows)."""
        worker = self.workers.get(peer)
        self._complain(peer_name(peer, worker.key if worker else self._peer_key),
                       "does not read its replies: %s dropped%s", command,
                       ", worker removed" if worker else "")
        if worker is not None:
            self.ledger.purge(worker, NOT_READING)

    # -- job events ----------------------------------------------------------------------
    def _publish(self, job, now: float) -> None:
        job.dirty = False
        job.last_event = now
        status = job.status(now)
        for peer in list(job.watchers):
            if not self._reply(peer, P.STATUS, status):
                job.watchers.discard(peer)

    def _reply(self, peer: bytes, command: str, body: dict, blobs: tuple = ()) -> bool:
        """Send to a peer without ever waiting for it; False if the message was dropped
        (see ``_not_reading``)."""
        return self._send(peer, Message(command, body, blobs))

    def _send(self, peer: bytes, msg: Message, worker: bool = False) -> bool:
        """The one way out to a peer: never waits; a full queue is ``_not_reading``; a
        gone peer is dropped silently, or purged if ``worker`` (the message was its
        tasks) and it is a registered worker."""
        try:
            send(self.control, msg, route=[peer])
            self.traffic.sent(msg.blobs)
            return True
        except zmq.Again:
            self._not_reading(peer, msg.command)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer has gone (ROUTER_MANDATORY)
            gone = self.workers.get(peer) if worker else None
            if gone is not None:
                self.ledger.purge(gone, f"unreachable: {exc.strerror}")
            else:
                log.debug("cannot reach %s: %s", peer_name(peer), exc.strerror)
        return False
