"""One worker process: pulls tasks by credit, runs them, sends their outputs.

User code runs on the main thread; a heartbeat thread with a socket of its own keeps the
broker informed while a long ``map`` call holds the main thread, so a busy worker never
looks dead (and when user code holds the GIL, which stops that thread too, the
supervisor beats for this process: ``voucher.py``). Small outputs ride inline in DONE; large ones go to the data-plane sink first.
What a task goes through here, from its TASKS message to its report, is in ``tasks.py``.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import zmq

from ..errors import AuthenticationFailed, ConfigError, ProtocolError
from ..patterns import compress
from ..patterns import config as timing
from ..patterns import protocol as P
from ..patterns.message import Message
from ..patterns.security import HandshakeWatch, PeerKeys
from ..patterns.sockets import (
    DEFAULT_MAX_MESSAGE,
    check_resolves,
    make_socket,
    readable,
    recv,
    send,
)
from ..patterns.wire import AttemptKey, Failure, abandoned
from ..spill.budget import Budget
from .capture import Capture
from .isolation import JobDirs, ProcessState
from .reporting import done_messages
from .runner import READING
from .shuffle import SinkClient
from .tasks import TaskAbandoned, Tasks

log = logging.getLogger("pymapreduce.worker")

FLUSH_AFTER = 0.02  # seconds a finished task's report may wait to share a DONE message
FLUSH_COUNT = 128  # ... or this many reports, or half the worker's credit if that is fewer:
# the broker then refills the queue while the other half runs, so a worker of many tiny
# tasks does not wait out a round trip after each batch (benchmarks/RESULTS.md, "DONE at
# half the credit"); and a message's cost (about 90 us in the broker, as much in the
# worker) is shared by as many tasks as a few milliseconds of them ("Bigger batches")
EXIT_LINGER_MS = 50  # how long a leaving worker tries to deliver its last reports and BYE
HEARTBEAT_STEP = 0.05  # the heartbeat thread looks at the clock this often
UNSENT_LIMIT = 10_000  # reports kept while the broker reads nothing; the oldest go first
READ_EVERY = 0.001  # seconds of short tasks between looks for the broker's messages (a
# look costs about a tenth of a no-op task; an empty queue, or a long task, looks at once)


class Worker(Tasks):
    """A worker that connects to a broker (``connect``) or listens for one (``bind``).
    Its tasks' intake and running are the methods of ``Tasks`` (tasks.py)."""

    def __init__(
        self,
        connect: str | None = None,
        *,
        bind: str | None = None,
        credit: int = P.DEFAULT_CREDIT,
        name: str | None = None,
        context: zmq.Context | None = None,
        heartbeat_interval: float = timing.HEARTBEAT_INTERVAL,
        parent_pid: int | None = None,
        keys: PeerKeys | None = None,
        slowdown: float = 1.0,
        identity: bytes | None = None,
        replaces: list | None = None,
        tags: Any = (),
        on_welcome: Callable[[float], None] | None = None,
        on_registered: Callable[[bool], None] | None = None,
        supervisor: bytes | None = None,
        memory: int | None = None,
        spill_dir: str | None = None,
        capture_fds: bool = False,
        running: Any = None,
    ) -> None:
        """``capture_fds``: keep what tasks' subprocesses and C code write to descriptors
        1 and 2 in the attempts' logs (capture.FdCapture): it moves this process's
        descriptors, so only a process of its own (the supervisor's children) asks it.
        ``running``: a page shared with the supervisor where the running attempt is
        written (running.RunningPage)."""
        if (connect is None) == (bind is None):
            raise ValueError("a worker needs exactly one of connect= or bind=")
        self.connect_addr = connect
        self.bind_addr = bind
        self.credit = credit
        self._flush_count = max(1, min(FLUSH_COUNT, credit // 2))
        if not name:  # (the supervisor names its children: socket is imported by few)
            import socket

            name = f"{socket.gethostname()}:{os.getpid()}"
        self.name = name
        self.identity = identity or uuid.uuid4().bytes
        self.replaces = replaces  # [identity, why] of the process this one replaces
        self.tags = sorted(set(tags))
        self.on_welcome = on_welcome  # told the heartbeat interval the broker expects
        # told False when READY goes, True at WELCOME (a supervisor says when all its
        # processes have registered: registrations.py)
        self.on_registered = on_registered
        self.supervisor = supervisor  # the identity of the socket that beats for this one
        self._own_context = context is None
        self.ctx = context or zmq.Context()
        self.heartbeat_interval = heartbeat_interval
        self.parent_pid = parent_pid
        self.keys = keys
        # a debugging aid: after each task, idle (slowdown - 1) times its duration, so this
        # worker is that many times slower (stragglers, backup tasks, fault benchmarks)
        self.slowdown = max(1.0, slowdown)
        self.ctl = self._socket(zmq.DEALER, identity=self.identity)
        self.watch = HandshakeWatch(self.ctl, connect or bind or "", has_keys=keys is not None)
        self.data: zmq.Socket | None = None
        self._sinks: SinkClient | None = None  # sockets to sink daemons (shuffle.py)
        self.jobs: OrderedDict[str, object] = OrderedDict()
        self.load_errors: dict[str, tuple[str, str]] = {}
        self.steps: dict[str, list] = {}  # job id -> its steps (a multi-step job)
        self.queue: deque = deque()
        self.reports: list = []
        self.report_blobs: list = []
        self._unsent: deque[Message] = deque()  # reports the broker had no room for yet
        self.max_message = DEFAULT_MAX_MESSAGE  # bytes in one message (the broker's WELCOME)
        self._first_report = 0.0
        self._read_at = 0.0  # when the loop last looked for messages between tasks
        self._ready_sent = 0.0
        self._welcomed = self._warned = False
        self._last_sent = 0.0
        self._stop = threading.Event()
        self._current: AttemptKey | None = None  # the attempt running now
        self._abandon: AttemptKey | None = None  # the running attempt to stop (hb thread)
        self.stopped: AttemptKey | None = None  # the last attempt so stopped
        self.ended_badly = False  # the last task failed or was stopped (Tasks._run_one)
        self._main = threading.main_thread().ident
        self._interruptible = False
        self._idle_poll = False
        self._need_ready = threading.Event()
        self.tasks_done = 0
        self.job_dirs = JobDirs()  # jobs' shipped files, one directory per job
        # what tasks print or log, kept per attempt (and what they write to descriptors 1
        # and 2, in files in the job directories' root: a supervisor reads a dead one's)
        self.capture = Capture(self.job_dirs.capture_file if capture_fds else None)
        # the running attempt, for the supervisor to name if this process dies (running.py)
        self.running_slots = running.slots if running is not None else None
        self._sources_of = ""  # the job whose shipped source linecache holds
        self.state = ProcessState()  # what each task starts from (isolation.py)
        # the memory budget of this process's tasks: past it they spill (spill/), in
        # spill_dir/PID (a directory private to this user: the supervisor's own)
        self.budget = Budget(memory, spill_dir) if memory else None

    def _socket(self, kind: int, identity: bytes | None = None) -> zmq.Socket:
        sock = make_socket(self.ctx, kind, identity=identity)
        if self.keys is not None:
            self.keys.apply(sock)
        return sock

    # -- life cycle ----------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> None:
        """Leave gracefully (SIGTERM): report what is finished, hand back the running task
        and the queued ones (the broker re-queues them at once), then exit. Call from the
        main thread (a signal handler)."""
        self._stop.set()
        if self._current is not None or self._idle_poll:
            self.capture.stop_task(TaskAbandoned("the worker is leaving"))

    def _on_abandon_signal(self, signum: int, frame: object) -> None:
        if self._abandon is not None and self._abandon == self._current:
            # (kept: a task that swallows the exception must still not write or report)
            self.stopped = self._abandon
            self._abandon = None
            self.capture.stop_task(TaskAbandoned("the broker abandoned this task"))

    def run(self) -> None:
        """Register, then serve tasks until ``stop()`` (or the parent process is gone)."""
        if self.connect_addr:
            self.ctl.connect(self.connect_addr)
        else:
            self.ctl.bind(self.bind_addr)
        hb = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._on_abandon_signal)
            self._interruptible = True  # else (a worker on a thread) tasks run to their end
            self.state.capture()  # (signal handlers included: a task may not keep changes)
        try:
            self._register()
            if self.connect_addr:
                hb = threading.Thread(target=self._heartbeat_loop, name="pmr-heartbeat", daemon=True)
                hb.start()
            try:
                self._loop()
            except TaskAbandoned:  # drained while idle: leave now
                pass
        finally:
            self._stop.set()
            try:  # never block here: the broker may be gone, or may never have let us in
                if self._welcomed:
                    self._send_unsent()
                if self.reports and self._welcomed:  # finished work is not lost
                    for msg in done_messages(self.reports, self.report_blobs, self.max_message):
                        self.ctl.send_multipart(msg.encode(), zmq.NOBLOCK)
                self.ctl.send_multipart(Message(P.BYE).encode(), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            if hb is not None:
                hb.join(2 * self.heartbeat_interval)
            self.ctl.setsockopt(zmq.LINGER, EXIT_LINGER_MS)  # a gone broker: do not wait
            self.watch.close()
            self.ctl.close()
            if self.data is not None:
                self.data.close()
            if self._sinks is not None:
                self._sinks.close()
            self.job_dirs.close()
            if self._own_context:
                self.ctx.term()
            self.capture.close()  # (what a left-behind writer still sent: the daemon's)

    def _register(self) -> None:
        self.queue.clear()
        self.reports.clear()
        self.report_blobs.clear()
        self._unsent.clear()  # (about attempts of the registration the broker dropped)
        self._need_ready.clear()
        body = {"credit": self.credit, "name": self.name, "pid": os.getpid(), "tags": self.tags,
                "codecs": compress.available()}  # (what it decodes: the broker picks codecs)
        if self.supervisor:
            body["supervisor"] = self.supervisor
        if self.replaces:
            body["replaces"] = self.replaces
        while not self._stop.is_set():
            # A listening worker has no peer until the broker connects: wait for one.
            if self.ctl.poll(100, zmq.POLLOUT):
                send(self.ctl, Message(P.READY, body))
                self._last_sent = self._ready_sent = time.monotonic()
                self._welcomed = self._warned = False
                if self.on_registered is not None:
                    self.on_registered(False)
                return
            self._check_parent()
            self.watch.check()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._need_ready.is_set():
                # (a supervisor says it once for all its processes: after a broker restart
                # every one of them registers again)
                log.log(logging.DEBUG if self.on_registered else logging.INFO,
                        "the broker asked %s to register again", self.name)
                self._register()
            if not self.queue:
                self._flush()
                self._idle_poll = True  # a drain may interrupt this wait
                try:
                    ready = self.ctl.poll(100, zmq.POLLIN)
                finally:
                    self._idle_poll = False
                if ready:
                    self._drain()
                else:
                    self._idle()
                continue
            started = time.monotonic()
            self._run_one(self.queue.popleft())
            if self.ended_badly:
                self.ended_badly = False
                if self.budget is not None:
                    # a task that failed or was stopped left its objects in reference
                    # cycles with its traceback's frames, among them the spill files it
                    # had open: deleted, but their space is only given back once closed,
                    # and a full disk would fail the next task too
                    gc.collect()
            now = time.monotonic()
            if now - self._read_at >= READ_EVERY:
                self._read_at = now
                if readable(self.ctl):
                    self._drain()
            # Short tasks share a DONE message; after a long one, report at once (the
            # next may be as long, and the broker should know this one is committed).
            if (
                not self.queue
                or len(self.reports) >= self._flush_count
                or now - self._first_report > FLUSH_AFTER
                or now - started > FLUSH_AFTER
            ):
                self._flush()

    def _idle(self) -> None:
        self.watch.check()  # AuthenticationFailed: this worker's key was refused
        self._prune_dirs()
        self.capture.poll_fds()  # (what a task left running writes: the daemon's stderr)
        now = time.monotonic()
        if not self._welcomed and not self._warned and now - self._ready_sent > timing.LIVENESS:
            self._warned = True
            address = self.connect_addr or self.bind_addr
            why = self.watch.not_a_broker()
            try:
                check_resolves(self.connect_addr or "")
            except ConfigError:  # (a worker keeps trying: the name may appear later)
                why = f", and no host named {urlsplit(address).hostname!r} is known here"
            log.warning("no answer from a broker at %s after %.0fs%s; still trying",
                        address, now - self._ready_sent, why)
        self._send_unsent()
        if now - self._last_sent >= self.heartbeat_interval:
            try:
                send(self.ctl, Message(P.HEARTBEAT))
            except zmq.Again:  # the broker reads nothing: a beat more would not help
                pass
            self._last_sent = now
        self._check_parent()

    def _check_parent(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("parent process %d is gone; %s exits", self.parent_pid, self.name)
            self._stop.set()

    # -- messages from the broker --------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                msg = recv(self.ctl)
            except zmq.Again:
                return
            except ProtocolError as exc:
                log.warning("dropped a malformed message from the broker: %s", exc)
                continue
            if msg.command == P.TASKS:
                self._enqueue(msg)
            elif msg.command == P.WELCOME:
                # tasks queued before this WELCOME belong to an earlier registration, which
                # the broker dropped (and re-queued) when this one began: running them would
                # only delay the tasks it hands out now
                self.queue.clear()
                self._welcomed = True
                self._connect_sink(str(msg.body.get("sink", "")))
                beat = msg.body.get("heartbeat")
                if isinstance(beat, (int, float)) and 0 < beat < self.heartbeat_interval:
                    self.heartbeat_interval = beat  # beat as often as this broker expects
                limit = msg.body.get("max_message")
                if type(limit) is int and limit > 0:
                    self.max_message = limit
                if self.on_welcome is not None:
                    self.on_welcome(self.heartbeat_interval)
                if self.on_registered is not None:
                    self.on_registered(True)
            elif msg.command == P.ABANDON:
                gone = abandoned(msg.body)
                self.queue = deque(q for q in self.queue if q.key not in gone)
            elif msg.command == P.RECONNECT and self._welcomed:
                # (before the WELCOME it answers a message sent before our READY)
                self._need_ready.set()
            elif msg.command == P.ERROR:
                if msg.body.get("code") == "forbidden":  # e.g. a client key used by a worker
                    raise AuthenticationFailed(f"{self.connect_addr or self.bind_addr}: "
                                               f"{msg.body.get('message')}")
                log.warning("broker error: %s", msg.body.get("message"))
            if not readable(self.ctl):
                return

    def _connect_sink(self, sink: str) -> None:
        if self.connect_addr and sink.startswith("tcp://"):
            # the broker may have bound a wildcard; reach the sink where we reached it
            host = urlsplit(self.connect_addr).hostname
            port = urlsplit(sink).port
            sink = f"tcp://{host}:{port}" if ":" not in (host or "") else f"tcp://[{host}]:{port}"
        if self.data is not None:
            self.data.close()
        self.data = self._socket(zmq.PUSH)
        self.data.connect(sink)

    # -- reports to the broker -----------------------------------------------------------
    def _fail(self, key: AttemptKey, error: str, tb: str, position: dict,
              final: bool = False, log: bytes = b"", secs: float | None = None) -> None:
        """``secs``: how long the attempt ran (the broker's timeline shows it)."""
        self._flush()
        self._send_ctl(Message(P.FAILED, Failure(key, error, tb, position, final, log,
                                                 None if secs is None else round(secs, 6)
                                                 ).body()))

    def _flush(self) -> None:
        if not self.reports:
            self._send_unsent()
            return
        messages = done_messages(self.reports, self.report_blobs, self.max_message)
        self.reports = []
        self.report_blobs = []
        for msg in messages:
            self._send_ctl(msg)

    def _send_ctl(self, msg: Message) -> None:
        """Send a report to the broker without waiting on it: when its queue is full (the
        broker reads nothing), the report waits here, in order, and goes with the next."""
        self._unsent.append(msg)
        if len(self._unsent) > UNSENT_LIMIT:  # the broker re-runs what it never hears of
            self._unsent.popleft()
            log.warning("%s: the broker reads nothing; an old report was dropped", self.name)
        self._send_unsent()

    def _send_unsent(self) -> None:
        while self._unsent:
            try:
                send(self.ctl, self._unsent[0])
            except zmq.Again:
                return
            self._unsent.popleft()
            self._last_sent = time.monotonic()

    # -- heartbeat thread ----------------------------------------------------------------
    def _abandon_running(self, msg: Message) -> None:
        """The broker no longer wants an attempt: if it is the one running, stop it (a
        signal makes the main thread raise TaskAbandoned inside the user's code)."""
        current = self._current
        if current is None or current.job != msg.body.get("job") or not self._interruptible:
            return
        if current in abandoned(msg.body):
            self._abandon = current
            signal.pthread_kill(self._main, signal.SIGUSR1)
    def _progress(self) -> list | None:
        """The running map task's progress for a heartbeat: ``[*attempt, records, bytes]``
        read so far, or None (no task reading its input, or nothing read yet). The reader
        is its attempt's if the attempt is still the same after it was looked up: a task
        lets its reader go before the next attempt begins (runner.READING)."""
        current = self._current
        reader = READING[0]
        if current is None or reader is None or self._current is not current:
            return None
        records, nbytes = max(0, reader.count - reader.skipped), min(reader.read, reader.size)
        if not records and not nbytes:
            return None
        return [*current, records, nbytes]

    def _heartbeat_loop(self) -> None:
        """Beat on a socket of its own, so a busy main thread never looks like a dead one."""
        sock = self._socket(zmq.DEALER, identity=self.identity + b"/hb")
        sock.connect(self.connect_addr)
        beat = Message(P.HEARTBEAT, {"worker": self.identity}).encode()
        # connected again (a restarted broker, a network back): beat at once, so that a
        # broker that does not know this worker says so now, not a heartbeat later
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        connections = 0
        last = 0.0
        sent: deque[float] = deque(maxlen=64)  # when each unanswered beat left
        try:
            # short waits: the broker's WELCOME may shorten the interval after this started
            while not self._stop.wait(min(self.heartbeat_interval, HEARTBEAT_STEP)):
                now = time.monotonic()
                self.capture.poll_fds()  # (a long task's subprocess output, as it comes)
                while monitor.poll(0):
                    monitor.recv_multipart()
                    connections += 1
                    if connections > 1:
                        last = 0.0
                while sock.poll(0, zmq.POLLIN):
                    frames = sock.recv_multipart()
                    try:
                        msg = Message.decode(frames)
                    except ProtocolError:
                        continue
                    if msg.command == P.ABANDON:  # an answer to no beat
                        self._abandon_running(msg)
                        continue
                    answered = sent.popleft() if sent else now
                    if msg.command == P.RECONNECT and answered > self._ready_sent:
                        self._need_ready.set()  # (not an answer about an old READY)
                if now - last < self.heartbeat_interval:
                    continue
                last = now
                self._check_parent()
                progress = self._progress()
                try:
                    sock.send_multipart(beat if progress is None else Message(
                        P.HEARTBEAT, {"worker": self.identity, "progress": progress}).encode(),
                        zmq.NOBLOCK)
                except zmq.Again:  # the broker reads nothing: never wait on it here
                    continue
                sent.append(now)
        finally:
            monitor.close(0)
            sock.close(0)
