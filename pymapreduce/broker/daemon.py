"""The broker: control plane (ROUTER), data sink (PULL), task table and scheduler.

The loop follows the ZeroMQ guide's majordomo broker: poll with a short timeout,
dispatch each message on its command, then one ``step(now)`` for time-driven work
(liveness purge, status events, expiry) and a dispatch round that hands pending tasks
to workers that announced credit. The broker never unpickles anything: job code, input
chunks and partition data are opaque blobs it stores and forwards.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import zmq

from ..errors import ProtocolError
from ..patterns import protocol as P
from ..patterns import security
from ..patterns.message import Message
from ..patterns.ratelog import RateLimitedLog
from ..patterns.sockets import bind, make_socket, send
from .client_api import ClientAPI, _peer, _req
from .config import BrokerConfig
from .journal import Journal
from .recovery import Recovery
from .reports import attempt_key, report_fields
from .scheduler import Scheduler
from .sink import Store
from .submission import file_ranges
from .tasks import MAP, PENDING, REDUCE, RUNNING, JobState, Task

log = logging.getLogger("pymapreduce.broker")

BACKUP_FACTOR = 2.0  # a straggler has run this many times its job's mean task time
BACKUP_SCAN_INTERVAL = 0.1  # seconds between looks for stragglers
DRAIN_BATCH = 256  # messages read from one socket before the other gets its turn
WORKER_COMMANDS = frozenset({P.READY, P.DONE, P.FAILED, P.HEARTBEAT, P.BYE})
CLIENT_COMMANDS = frozenset({P.HELLO, P.SUBMIT, P.WATCH, P.STATUS, P.FETCH, P.CANCEL,
                             P.RELEASE, P.JOBS})
ROLE_COMMANDS = {security.WORKER: WORKER_COMMANDS, security.CLIENT: CLIENT_COMMANDS}
REREGISTERED = "re-registered"  # purges that are not their tasks' fault
LEFT = "left"
NOT_READING = "its queue is full: it does not read what the broker sends"
BLAMELESS = frozenset({REREGISTERED, LEFT, NOT_READING})
SUSPECT_FOR = 3.0  # seconds a worker whose connection closed is probed
PROBE_INTERVAL = 0.05
STEP_DONE = "done"  # the journal's row for a finished step of a multi-step job
HB_SUFFIX = b"/hb"  # a worker's heartbeat socket: its identity plus this
PREFETCH_SECONDS = 0.05  # work a worker holds queued beyond its running task
MAX_POLL_MS = 100  # upper bound on a poll, so stop() and deadlines are noticed promptly


class WorkerState:
    """A registered worker process, as the broker sees it."""

    __slots__ = ("route", "name", "credit", "running", "last_seen", "known_jobs", "key", "fd",
                 "tags", "pid", "done", "joined", "supervisor")

    def __init__(self, route: bytes, name: str, credit: int, now: float, key: str = "") -> None:
        self.route = route
        self.key = key  # its CURVE public key, when the broker is secured
        self.name = name
        self.credit = credit
        self.running: set[tuple] = set()  # (job_id, kind, index, attempt)
        self.last_seen = now
        self.known_jobs: set[str] = set()  # jobs whose code this worker already has
        self.fd = -1  # the broker's file descriptor of its connection
        self.tags: frozenset = frozenset()  # placement labels (--tag); jobs may require them
        self.pid = 0
        self.done = 0  # tasks it committed
        self.joined = now
        self.supervisor = b""  # the route of the process that may beat on its behalf


class Broker(ClientAPI, Recovery):
    """A broker bound to ``config.bind``; ``serve_forever()`` runs it until ``stop()``."""

    def __init__(self, config: BrokerConfig, *, context: zmq.Context | None = None) -> None:
        self.config = config
        self.journal: Journal | None = None
        if config.state_dir:  # first: a journal that cannot be used stops the broker here
            self.journal = Journal(config.state_dir, config.fsync)
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
        self._last_probe = 0.0
        self._frame: Any = None  # the first frame of the message being handled
        self._reload = False
        self.address = ""
        self.data_address = ""
        self.workers: OrderedDict[bytes, WorkerState] = OrderedDict()
        self.jobs: dict[str, JobState] = {}
        self.scheduler = Scheduler()
        self.store = Store(config.memory_budget, config.spill_dir,
                           fsync=config.fsync == "commit")
        self.store.on_damage = self._output_damaged
        self._early: dict[tuple, list] = {}  # outputs that arrived before their DONE
        self._awaiting: dict[tuple, dict] = {}  # DONE stats waiting for their outputs
        self._stopping = False
        self._last_tick = 0.0
        self._last_backup_scan = 0.0
        self._peer_key = ""  # the CURVE key of the message being handled
        self._bad = RateLimitedLog(log)
        self._events = RateLimitedLog(log)  # ordinary news a peer can cause (joins, jobs)
        self._handlers = {
            P.READY: self.on_ready,
            P.DONE: self.on_done,
            P.FAILED: self.on_failed,
            P.HEARTBEAT: self.on_heartbeat,
            P.BYE: self.on_bye,
            P.HELLO: self.on_hello,
            P.SUBMIT: self.on_submit,
            P.WATCH: self.on_watch,
            P.STATUS: self.on_status,
            P.FETCH: self.on_fetch,
            P.CANCEL: self.on_cancel,
            P.RELEASE: self.on_release,
            P.JOBS: self.on_jobs,
        }

    # -- life cycle ----------------------------------------------------------------------
    def bind(self) -> str:
        """Bind both sockets; returns the control address (with the real port).

        A broker with a state directory first reloads the jobs it journaled."""
        if self.journal is not None and not self.jobs:
            self.recover()
        self.address = bind(self.control, self.config.bind)
        try:
            self.data_address = bind(self.sink, self.config.sink_endpoint())
        except Exception:
            self.control.close(0)
            raise
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

    def serve_forever(self) -> None:
        if not self.address:
            self.bind()
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.sink, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap, zmq.POLLIN)
        try:
            while not self._stopping:
                events = dict(poller.poll(MAX_POLL_MS))
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
                self.step(time.monotonic())
                if self.journal is not None:
                    self.journal.flush()
        finally:
            self.close()

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
                self._purge(w, "its key was removed from the allowlist")

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
        from zmq.utils.monitor import recv_monitor_message

        now = time.monotonic()
        while self.monitor.poll(0):
            fd = recv_monitor_message(self.monitor)["value"]
            for w in self.workers.values():
                if w.fd == fd:
                    self._suspects[w.route] = now + SUSPECT_FOR

    def _explain_waits(self) -> None:
        """Say, in each job's status, why its pending tasks are not handed out."""
        for job in self.scheduler.jobs():
            if not job.pending:
                job.waiting = ""
            elif not self.workers:
                job.waiting = "no worker is connected"
            elif job.requires and not any(job.requires <= w.tags
                                          for w in self.workers.values()):
                job.waiting = ("no live worker has the tags " + ", ".join(sorted(job.requires))
                               + " it requires")
            elif job.active == 0 and job.dispatched is False:
                job.waiting = "every worker slot is busy with other jobs"
            else:
                job.waiting = ""

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
                self._purge(worker, "its connection closed")

    def close(self) -> None:
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
        for _ in range(DRAIN_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            route = [frames[0].bytes] if routed else []
            body = frames[1:] if routed else frames
            role, key = security.peer_role(body[0]) if self.allow and body else ("", "")
            try:
                msg = Message.decode(body)
            except ProtocolError as exc:
                self._complain(_peer(route, key), "dropped a malformed message: %s", exc)
                if route:
                    self._reply(route[0], P.ERROR, {"code": "malformed", "message": str(exc)})
            else:
                self._frame = body[0]
                handler(route, msg, role, key)
            if not sock.poll(0, zmq.POLLIN):
                return

    def _on_control(self, route: list, msg: Message, role: str, key: str) -> None:
        handler = self._handlers.get(msg.command)
        peer = route[0]
        if handler is None:
            self._complain(_peer(route, key), "unknown command %r", msg.command[:40])
            self._reply(peer, P.ERROR, {"code": "unknown-command", "message": msg.command[:40]})
            return
        if self.allow is not None and (msg.command not in ROLE_COMMANDS.get(role, ())
                                       or not self.allow.allows(key, role)):
            allowed = self.allow.allows(key, role)
            self._complain(_peer(route, key), "refused %s from a %s key%s", msg.command,
                           role or "unknown", "" if allowed else " no longer allowed")
            reason = (f"a {role} key may not send {msg.command}" if allowed else
                      "this key is no longer in the broker's allowlist")
            self._reply(peer, P.ERROR, {"code": "forbidden", "req": _req(msg),
                                        "message": reason})
            return
        self._peer_key = key
        now = time.monotonic()
        try:
            handler(peer, msg, now)
        except Exception as exc:  # a bad message must never take the broker down
            self._complain(_peer(route, key), "%s rejected: %r", msg.command, exc)
            self._reply(
                peer,
                P.ERROR,
                {"code": "bad-request", "message": f"{msg.command}: {exc}", "req": _req(msg)},
            )
        self.dispatch()

    def _complain(self, peer: str, what: str, *args: Any) -> None:
        """Log a bad message, naming the peer (rate-limited: a hostile peer cannot flood
        the log)."""
        self._bad.warn(peer, what, *args)

    # -- time-driven work ----------------------------------------------------------------
    def step(self, now: float) -> None:
        """Everything driven by the clock: purge silent workers, status events, expiry."""
        if self._suspects:
            self._probe(now)
        for job in self.jobs.values():
            if job.dirty and now - job.last_event >= self.config.status_interval:
                self._publish(job, now)
        if now - self._last_tick < self.config.heartbeat_interval:
            return
        self._last_tick = now
        if self.allow is not None:
            self._reload_keys()
        for w in [w for w in self.workers.values() if now - w.last_seen > self.config.liveness]:
            self._purge(w, f"silent for {now - w.last_seen:.1f}s")
        self._explain_waits()
        for job in list(self.jobs.values()):
            if job.state == P.JOB_RUNNING:
                self._publish(job, now)  # doubles as the clients' heartbeat
            elif job.finished is not None and now - job.finished > self.config.result_ttl:
                self._drop_job(job)
        self.dispatch()

    # -- workers -------------------------------------------------------------------------
    def on_ready(self, peer: bytes, msg: Message, now: float) -> None:
        old = self.workers.get(peer)
        if old is not None:  # re-registration: what it held is lost with its queue
            self._purge(old, REREGISTERED)
        gone = msg.body.get("replaces")
        if isinstance(gone, list) and len(gone) == 2 and isinstance(gone[0], bytes):
            dead = self.workers.get(gone[0])  # a process that died: its supervisor says so
            if dead is not None and dead.key == self._peer_key:  # (same key: same daemon)
                self._purge(dead, str(gone[1])[:200])
        credit = int(msg.body.get("credit", 1))
        name = str(msg.body.get("name", ""))[:200]
        worker = self.workers[peer] = WorkerState(peer, name, max(1, min(credit, 1024)), now,
                                                  self._peer_key)
        try:
            worker.fd = self._frame.get(zmq.SRCFD)
        except (zmq.ZMQError, AttributeError, TypeError):
            pass
        tags = msg.body.get("tags") or []
        if isinstance(tags, list):
            worker.tags = frozenset(str(t)[:100] for t in tags[:64])
        pid = msg.body.get("pid")
        worker.pid = pid if type(pid) is int else 0
        supervisor = msg.body.get("supervisor")
        if isinstance(supervisor, bytes) and 0 < len(supervisor) <= 64:
            worker.supervisor = supervisor
        self._events.warn(_peer([peer], self._peer_key), "worker %s joined (credit %d%s)",
                          name or _peer([peer]), credit,
                          f", tags {','.join(sorted(worker.tags))}" if worker.tags else "",
                          level=logging.INFO)
        self._reply(
            peer,
            P.WELCOME,
            {
                "sink": self.data_address,
                "heartbeat": self.config.heartbeat_interval,
                "liveness": self.config.liveness,
            },
        )

    def on_heartbeat(self, peer: bytes, msg: Message, now: float) -> None:
        named = msg.body.get("worker", peer)
        worker = self.workers.get(named) if isinstance(named, bytes) else None
        if worker is not None and not self._vouches(peer, worker):
            self._complain(_peer([peer], self._peer_key),
                           "HEARTBEAT for a worker it does not speak for: ignored")
            return
        if worker is None:
            self._reply(peer, P.RECONNECT, {})
            return
        worker.last_seen = now
        self._reply(peer, P.HEARTBEAT, {})

    def _vouches(self, peer: bytes, worker: WorkerState) -> bool:
        """Whether ``peer`` may speak for ``worker``: it is the worker, its heartbeat
        socket, or its supervisor, and (on a secured broker) it holds the worker's key."""
        if self.allow is not None and self._peer_key != worker.key:
            return False
        return peer in (worker.route, worker.route + HB_SUFFIX) or peer == worker.supervisor

    def on_bye(self, peer: bytes, msg: Message, now: float) -> None:
        worker = self.workers.get(peer)
        if worker is not None:  # leaving (drained): what it held is handed back, no fault
            self._purge(worker, LEFT)

    def _worker(self, peer: bytes, now: float) -> WorkerState | None:
        worker = self.workers.get(peer)
        if worker is None:  # e.g. after a broker restart, or a worker taken for dead
            self._bad.warn(_peer([peer], self._peer_key),
                           "report from an unregistered worker: told to register")
            self._reply(peer, P.RECONNECT, {})
        elif self.allow is not None and worker.key != self._peer_key:
            # another key took over a gone worker's identity: it speaks for no one
            self._complain(_peer([peer], self._peer_key), "report on the identity of a "
                           "worker registered with another key: ignored")
            return None
        else:
            worker.last_seen = now
        return worker

    def on_done(self, peer: bytes, msg: Message, now: float) -> None:
        """Finished attempts, each committed only if this worker holds it; a report whose
        fields are malformed fails its attempt (with the reason) instead of being lost."""
        worker = self._worker(peer, now)
        if worker is None:
            return
        results = msg.body.get("results")
        if not isinstance(results, list):
            raise ValueError("DONE carries no list of results")
        blobs = msg.blobs
        pos = 0
        for item in results:
            key = attempt_key(item[:4] if isinstance(item, list) else None)
            if key is None or key not in worker.running:
                self._complain(_peer([peer], worker.key), "DONE for an attempt it does not "
                               "hold: %.80r", item)
                continue
            try:
                stats, nblobs = report_fields(item, len(blobs) - pos)
            except ValueError as exc:
                self._report_failed(worker, key, f"its worker sent a malformed report: {exc}")
                continue
            if nblobs >= 0:  # output inline
                self._commit(key, stats, list(blobs[pos : pos + nblobs]))
                pos += nblobs
                worker.running.discard(key)
            elif key in self._early:
                self._commit(key, stats, self._early.pop(key))
            elif self._attempt(key) is not None:
                self._awaiting[key] = stats  # its outputs are still on the data plane
            else:
                worker.running.discard(key)

    def _report_failed(self, worker: WorkerState, key: tuple, error: str, tb: str = "",
                       position: dict | None = None) -> None:
        """``worker`` says (or its malformed report shows) that attempt ``key`` failed."""
        worker.running.discard(key)
        self._early.pop(key, None)
        self._awaiting.pop(key, None)
        task = self._attempt(key)
        if task is not None:
            self._attempt_failed(task, key[3], error, tb,
                                 position if position else {"split": task.index})

    def _on_data(self, route: list, msg: Message, role: str, sender: str) -> None:
        try:
            self._take_output(msg, sender)
        except Exception as exc:  # a bad message must never take the broker down
            self._complain(f"key {sender}" if sender else "data plane", "%s rejected: %r",
                           msg.command[:40], exc)

    def _take_output(self, msg: Message, sender: str) -> None:
        if msg.command != P.OUTPUT:
            self._complain(f"key {sender}" if sender else "data plane",
                           "dropped a %r message on the data plane", msg.command[:40])
            return
        b = msg.body
        who = f"key {sender}" if sender else "data plane"
        key = attempt_key([b.get("job"), b.get("kind"), b.get("index"), b.get("attempt")])
        task = self._attempt(key) if key is not None else None
        if task is None:  # unknown, or a stale attempt: another attempt owns this task
            self._complain(who, "dropped output for an attempt not running: %.80r", key)
            return
        owner = self.workers.get(task.running[key[3]])
        if self.allow is not None and (owner is None or owner.key != sender
                                       or not self.allow.allows(sender, security.WORKER)):
            self._complain(who, "dropped output for %s %s attempt %s: not its worker",
                           key[0], task.name, key[3])
            return
        if key in self._awaiting:
            self._commit(key, self._awaiting.pop(key), list(msg.blobs))
        else:
            self._early[key] = list(msg.blobs)
        self.dispatch()

    def on_failed(self, peer: bytes, msg: Message, now: float) -> None:
        worker = self._worker(peer, now)
        if worker is None:
            return
        b = msg.body
        key = attempt_key([b.get("job"), b.get("kind"), b.get("index"), b.get("attempt")])
        if key is None or key not in worker.running:
            self._complain(_peer([peer], worker.key), "FAILED for an attempt it does not "
                           "hold: %.80r", key)
            return
        position = b.get("position")
        if not isinstance(position, dict) or len(position) > 16:
            position = {}
        self._report_failed(worker, key, str(b.get("error", ""))[:2000],
                            str(b.get("traceback", ""))[-20000:], position)
    def _attempt_failed(self, task: Task, attempt: int, error: str, tb: str,
                        position: Any, counted: bool = True) -> None:
        """Count a failed attempt: retry the task, or fail the job once attempts run out.

        An attempt lost with its worker counts too: a task that kills the process running
        it (os._exit, a segfault, the OOM killer) must not kill workers forever. The retry
        goes to another worker where there is one. ``counted=False``: not the task's fault
        (its worker re-registered), so it is simply queued again.
        """
        route = task.end(attempt)
        job = task.job
        if not counted:
            if not task.running and task.state == RUNNING:
                task.move(PENDING)
                job.pending.appendleft(task)
            return
        task.failures += 1
        if route is not None:
            task.avoid.add(route)
        log.info("%s %s attempt %d failed: %s", job.id, task.name, attempt, error)
        if self._skip_record(task, position):
            task.failures = max(0, task.failures - 2)  # the record is to blame, not the task
        if job.state != P.JOB_RUNNING:
            return
        if task.failures >= self.config.max_attempts:
            job.finish(P.JOB_FAILED, {
                "message": f"{task.name} failed {task.failures} times; last error: {error}",
                "task": task.name,
                "position": position,
                "traceback": tb,
            })
            self._job_ended(job)
        elif not task.running:
            task.move(PENDING)
            job.pending.appendleft(task)

    def _skip_record(self, task: Task, position: Any) -> bool:
        """Skipping bad records (the paper's section 3.3): a record on which ``map`` failed
        twice is left out of the task's next attempts, if the job allows it."""
        limit = task.job.options.get("skip", 0)
        ordinal = position.get("ordinal") if isinstance(position, dict) else None
        if not limit or task.kind != MAP or type(ordinal) is not int or ordinal in task.skip:
            return False
        task.bad[ordinal] = task.bad.get(ordinal, 0) + 1
        if task.bad[ordinal] < 2:
            return False
        job = task.job
        if limit > 0 and job.skips >= limit:
            job.finish(P.JOB_FAILED, {
                "message": f"more than {limit} bad records (skip_bad_records={limit}); "
                           f"{task.name} record {ordinal} failed twice too",
                "task": task.name, "position": position, "traceback": ""})
            self._job_ended(job)
            return False
        job.skips += 1
        where = {k: v for k, v in position.items() if k in ("key", "path", "split")}
        task.skip[ordinal] = {"task": task.name, "record": ordinal, **where}
        log.info("%s %s: record %d failed twice, skipped from now on", job.id, task.name,
                 ordinal)
        return True

    def _attempt(self, key: tuple) -> Task | None:
        """The task whose attempt ``key`` is still running, or None if it is stale."""
        job_id, kind, index, attempt = key
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None or job.state != P.JOB_RUNNING or kind not in (MAP, REDUCE):
            return None
        tasks = job.tasks(kind)
        if not isinstance(index, int) or not 0 <= index < len(tasks):
            return None
        task = tasks[index]
        if task.state != RUNNING or attempt not in task.running:
            return None
        return task

    def _commit(self, key: tuple, stats: dict, blobs: list) -> None:
        task = self._attempt(key)
        if task is None:
            return
        job = task.job
        expected = job.reducers if task.kind == MAP and not job.map_only else 1
        if len(blobs) != expected:  # a bad report fails its attempt; it never wedges
            route = task.running.get(key[3])
            self._complain(_peer([route or b""], self.workers[route].key if route in
                                 self.workers else ""),
                           "%s %s: %d outputs where %d were due", job.id, task.name,
                           len(blobs), expected)
            worker = self.workers.get(route)
            if worker is not None:
                self._report_failed(worker, key, f"its worker reported {len(blobs)} outputs "
                                    f"where {expected} were due")
            else:
                self._attempt_failed(task, key[3], "malformed outputs", "", {})
            return
        winner = self.workers.get(task.running.get(key[3]))
        if winner is not None:
            winner.done += 1
        losers: dict[bytes, list] = {}
        for attempt, route in task.running.items():  # also any other attempt of the task
            w = self.workers.get(route)
            if w is not None:
                w.running.discard((job.id, task.kind, task.index, attempt))
                if attempt != key[3]:  # a backup race lost: stop it where it runs
                    losers.setdefault(route, []).append([task.kind, task.index, attempt])
        for route, tasks in losers.items():
            self._abandon(route, job.id, tasks)
        nonempty: list[int] = []
        step = job.step
        if task.kind == MAP and not job.map_only:
            nonempty = [r for r, blob in enumerate(blobs) if len(blob)]
        sums = [self.store.put(key, blob, self._path(job, name)) for (key, name), blob in zip(
            self._outputs(job, step, task.kind, task.index, nonempty),
            [b for b in blobs if len(b)] if nonempty else blobs)]  # (CRC-32s, None: not durable)
        stats = stats if isinstance(stats, dict) else {}
        secs = stats.pop("secs", None)
        if isinstance(secs, (int, float)) and secs >= 0:
            job.task_secs = secs if job.task_secs is None else (
                0.8 * job.task_secs + 0.2 * secs)
        if task.skip:  # the report names them, also after a restart
            stats["skipped"] = list(task.skip.values())
        if self.journal is not None:  # after its files: a commit row names complete files
            self.journal.commit(job.seq, step, task.kind, task.index, stats, nonempty, sums)
        job.commit(task, stats, nonempty)
        if job.step != step:
            if self.journal is not None:  # the step is over: its map outputs may go
                self.journal.commit(job.seq, step, STEP_DONE, 0, {}, [])
            self._spent(job)
        if job.state != P.JOB_RUNNING:
            self._job_ended(job)
        elif job.fetch_waiters:
            self._serve_fetch_waiters(job)

    def _spent(self, job: JobState) -> None:
        """The next step began: the last step's map outputs are spent, and so are the
        inputs it read (the outputs of the step before it)."""
        self._durable()
        jid, old = job.id, job.step - 2
        self.store.discard_where(lambda k: k[0] == jid and (
            k[1] == MAP or (k[1] == "s" and k[2] <= old)))

    @staticmethod
    def _outputs(job: JobState, step: int, kind: str, index: int,
                 parts: list[int]) -> list[tuple[tuple, str]]:
        """Store keys and file names of a committed task's outputs: a map task's non-empty
        partitions (``parts``), or the one output of a reduce or map-only task (kept for
        the client after the last step, as the next step's input before it)."""
        prefix = f"s{step}" if step else ""
        if kind == MAP and not (job.steps[step]["map_only"] if job.steps else job.map_only):
            return [((job.id, MAP, index, r), f"{prefix}m{index}-{r}") for r in parts]
        if not job.steps or step == len(job.steps) - 1:
            return [((job.id, "out", index), f"o{index}")]
        return [((job.id, "s", step, index), f"s{step}o{index}")]

    def _path(self, job: JobState, name: str) -> str | None:
        """The file a committed output of ``job`` is kept in (None: no state directory)."""
        return self.journal.output_path(job.seq, name) if self.journal is not None else None

    def _purge(self, worker: WorkerState, reason: str) -> None:
        """Forget a worker; each attempt it was running counts as failed and is retried."""
        self.workers.pop(worker.route, None)
        lost = 0
        for key in worker.running:
            task = self._attempt(key)
            if task is None:
                continue
            lost += 1
            self._attempt_failed(task, key[3], f"the worker running it ({worker.name}) was "
                                 f"lost: {reason}", "", {"split": task.index},
                                 counted=reason not in BLAMELESS)
        self._events.warn(_peer([worker.route], worker.key), "worker %s removed (%s); %d "
                          "task(s) re-queued", worker.name, reason, lost, level=logging.INFO)

    def dispatch(self) -> None:
        """Hand pending tasks to workers with credit (never to one that did not ask)."""
        pending = self.scheduler.pending()
        if not self.workers:
            return
        if not pending:
            self._backup()
            return
        # A worker holds a few tasks beyond the one it runs, so it never waits for the next:
        # about PREFETCH_SECONDS of work (many tiny tasks, one long one), and fewer near the
        # end of a phase, so the last tasks are not stuck behind a busy worker's queue.
        target = max(1, pending // (2 * len(self.workers)))
        # paced by the slowest job with pending tasks: a deep queue of its tasks would
        # hold a worker for long (and a job without a finished task yet is unknown)
        costs = [j.task_secs for j in self.scheduler.jobs() if j.pending]
        if not costs or None in costs:
            target = min(target, 2)
        else:
            target = min(target, 1 + int(PREFETCH_SECONDS / max(max(costs), 1e-6)))
        for worker in list(self.workers.values()):
            room = min(worker.credit, target) - len(worker.running)
            if room <= 0:
                continue
            tasks = self.scheduler.take(room, worker.route, self.workers, worker.tags)
            if not tasks:
                if not self.scheduler.pending():
                    return
                continue  # what is left failed on this worker: another one takes it
            self.workers.move_to_end(worker.route)
            self._send_checked(worker, tasks)

    def _backup(self) -> None:
        """Backup tasks (the paper's section 3.6): when nothing is pending and a worker is
        idle, a task that has run well past its job's mean task time gets a second attempt
        on that worker; whichever commits first wins, the other's output is dropped."""
        now = time.monotonic()
        idle = [w for w in self.workers.values() if not w.running]
        if not idle or now - self._last_backup_scan < BACKUP_SCAN_INTERVAL:
            return
        self._last_backup_scan = now
        stragglers = []
        for job in self.jobs.values():
            if job.state != P.JOB_RUNNING or job.pending:
                continue
            for task in job.tasks(job.phase):
                if task.state != RUNNING or len(task.running) != 1:
                    continue
                mean = job.mean_duration(task.kind)
                limit = max(self.config.backup_after, BACKUP_FACTOR * (mean or 0.0))
                if mean is not None and now - task.started > limit:
                    stragglers.append((task.started, task))
        stragglers.sort(key=lambda pair: pair[0])  # the longest running first
        for worker, (_, task) in zip(idle, stragglers):
            if worker.route in task.running.values():
                continue
            task.job.backups += 1
            log.info("%s %s straggles (%.1fs): backup attempt on %s", task.job.id, task.name,
                     now - task.started, worker.name)
            self._send_checked(worker, [task])

    def _send_tasks(self, worker: WorkerState, tasks: list[Task]) -> None:
        by_job: dict[str, list[Task]] = {}
        for t in tasks:
            by_job.setdefault(t.job.id, []).append(t)
        for job_id, group in by_job.items():
            job = self.jobs[job_id]
            blobs: list[Any] = []
            body: dict = {"job": job_id, "reducers": job.reducers, "map_only": job.map_only}
            if job.steps:
                body["step"] = job.step
            if job_id not in worker.known_jobs:
                body["code"] = len(blobs)
                blobs.append(job.code)
            items = []
            if job.options.get("skip"):
                body["ordinals"] = True  # report a failing record's ordinal
            for t in group:
                attempt = t.start(worker.route)
                worker.running.add((job_id, t.kind, t.index, attempt))
                if t.kind == MAP:
                    split = job.splits[t.index]
                    if split[0] == "step":  # the output of the step before
                        key = (job.id, "s", split[1], split[2])
                        if key not in self.store:
                            log.error("%s: input %s of %s is missing", job.id, key, t.name)
                        items.append([MAP, t.index, attempt, ["cols", len(blobs)]])
                        blobs.append(self.store.get(key) if key in self.store else b"")
                    elif split[0] == "mem":
                        items.append([MAP, t.index, attempt, ["mem", len(blobs)]])
                        blobs.append(split[1])
                    else:  # file ranges, kept packed until now
                        items.append([MAP, t.index, attempt,
                                      ["files", file_ranges(split), *split[2:]]])
                    if t.skip:
                        items[-1].append(sorted(t.skip))
                else:
                    parts = job.map_parts[t.index]
                    items.append([REDUCE, t.index, attempt, ["segs", len(blobs), len(parts)]])
                    blobs.extend(self.store.get((job_id, MAP, i, t.index)) for i in parts)
            body["tasks"] = items
            try:
                send(self.control, Message(P.TASKS, body, tuple(blobs)), route=[worker.route])
            except zmq.Again:  # its queue is full: it does not read, so it gets nothing
                self._purge(worker, NOT_READING)
                return
            except zmq.ZMQError as exc:  # the worker is gone (ROUTER_MANDATORY)
                self._purge(worker, f"unreachable: {exc.strerror}")
                return
            worker.known_jobs.add(job_id)

    # -- job events ----------------------------------------------------------------------
    def _abandon(self, route: bytes, job_id: str, tasks: list) -> None:
        """Tell a worker to drop attempts it holds: its main thread drops the queued ones,
        its heartbeat thread stops the running one (ABANDON goes to both sockets)."""
        msg = Message(P.ABANDON, {"job": job_id, "tasks": tasks})
        for target in (route, route + HB_SUFFIX):
            try:
                send(self.control, msg, route=[target])
            except zmq.ZMQError:
                pass

    def _durable(self) -> None:
        """Flush the journal before deleting output files: a commit that made files spent
        must be on disk first, or a restart would need files that are gone."""
        if self.journal is not None:
            self.journal.flush()

    def _job_ended(self, job: JobState) -> None:
        self.scheduler.remove(job)
        if self.journal is not None:  # durable before its map outputs are deleted
            self.journal.finish(job.seq, job.state, job.error, time.time())
        self._durable()
        jid = job.id
        if job.state == P.JOB_SUCCEEDED:  # its outputs wait for the client
            self.store.discard_where(lambda k: k[0] == jid and k[1] == "s")
        else:  # failed or cancelled: nothing of it can be fetched, free it all now
            self.store.discard_where(lambda k: k[0] == jid)
        for w in self.workers.values():  # its attempts still out there: stop them
            held = [k for k in w.running if k[0] == jid]
            if held:
                w.running.difference_update(held)
                self._abandon(w.route, jid, [[k, i, a] for _, k, i, a in held])
        self.store.discard_where(lambda k: k[0] == jid and k[1] == MAP)
        for table in (self._early, self._awaiting):
            for key in [k for k in table if k[0] == jid]:
                del table[key]
        log.info("job %s %s in %.3fs", jid, job.state, time.monotonic() - job.submitted)
        self._serve_fetch_waiters(job)
        self._publish(job, time.monotonic())

    def _drop_job(self, job: JobState) -> None:
        self.jobs.pop(job.id, None)
        self.scheduler.remove(job)
        jid = job.id
        if self.journal is not None:  # forgotten on disk first, then its files go
            self.journal.drop(job.seq)
            self.journal.flush()
        self.store.discard_where(lambda k: k[0] == jid)

    def _publish(self, job: JobState, now: float) -> None:
        job.dirty = False
        job.last_event = now
        status = job.status(now)
        for peer in list(job.watchers):
            if not self._reply(peer, P.STATUS, status):
                job.watchers.discard(peer)

    def _reply(self, peer: bytes, command: str, body: dict, blobs: tuple = ()) -> bool:
        """Send to a peer without ever waiting for it; False if the message was dropped.

        A peer that does not read fills its own queue (PEER_QUEUE messages); what is sent
        to it after that is dropped at once, so it costs no one else anything. A client
        loses those replies (it asks again when it reads again); a registered worker that
        does not read cannot take tasks either and is dropped from the cluster (its tasks
        go to others; it registers again when it reads the RECONNECT that follows)."""
        try:
            send(self.control, Message(command, body, blobs), route=[peer])
            return True
        except zmq.Again:
            worker = self.workers.get(peer)
            self._complain(_peer([peer], worker.key if worker else self._peer_key),
                           "does not read its replies: %s dropped%s", command,
                           ", worker removed" if worker else "")
            if worker is not None:
                self._purge(worker, NOT_READING)
            return False
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer has gone
            log.debug("cannot reach %s: %s", _peer([peer]), exc.strerror)
            return False
