"""The broker's ledger: workers, jobs, attempts, commits, retries, skips, backups.

Socket-free: the daemon (``daemon.py``) decodes messages, checks roles and keys, and calls
the ledger's methods with plain values; the ledger decides and leaves what is to be sent in
``outbox`` (``Send``: a message to a peer; ``Publish``: a job's status changed; ``Fetched``:
a job's partitions may now answer waiting fetches), which the daemon delivers without
blocking. So the failure logic (who holds which attempt, what a report may do, when a task
is retried, skipped, backed up or given up on, what a restart recovers) is tested by
driving a ledger with calls and a hand-set clock (``tests/test_ledger.py``), and the daemon
tests only prove the wiring.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, NamedTuple

from ..observe.events import EventLog, NullEventLog
from ..observe.history import History
from ..patterns import protocol as P
from ..patterns.message import Message
from ..patterns.ratelog import RateLimitedLog
from ..patterns.wire import AttemptKey, Report, abandon_body
from .codecs import CodecCensus, announced
from .commits import Commits
from .config import BrokerConfig
from .dispatching import Dispatching
from .failures import Failures
from .journal import Journal
from .logstore import DONE, LogStore
from .recovery import Recovery
from .reports import clean_stats, peer_name
from .scheduler import Scheduler
from .sink import Store
from .sinkplan import Sinks, SinkState
from .tasks import INT64, MAP, REDUCE, RUNNING, JobState, Task

log = logging.getLogger("pymapreduce.broker")

REREGISTERED = "re-registered"  # purges that are not their tasks' fault
LEFT = "left"
NOT_READING = "its queue is full: it does not read what the broker sends"
BLAMELESS = frozenset({REREGISTERED, LEFT, NOT_READING})
HB_SUFFIX = b"/hb"  # a worker's heartbeat socket: its identity plus this
GONE_WORKERS = 50  # workers lost or left lately, kept for the dashboard's cluster view


def blamed(value: Any) -> tuple | None:
    """A registration's ``replaces[2]`` (the attempt a dead worker process ran last, as
    its supervisor read it: workers/running.py) as ``(index, attempt)``, or None if it is
    not one. A peer's bytes: checked here, and trusted no further than the broker's own
    table of what the dead process held (``purge``)."""
    if type(value) is list and len(value) == 2 and all(type(v) is int for v in value):
        return value[0], value[1]
    return None


class Send(NamedTuple):
    """A message for a peer. ``worker``: the route of a registered worker whose queue is
    full or who is gone is purged (TASKS); other undeliverable messages are dropped."""

    route: bytes
    msg: Message
    worker: bool = False


class Publish(NamedTuple):
    """A job's status changed: its watchers hear it now."""

    job: JobState


class Fetched(NamedTuple):
    """A job committed outputs (or ended): its waiting FETCHes may be answered."""

    job: JobState


BEAT_GAP = 0.25  # of the heartbeat interval: a sender's beats closer together are ignored
MAX_RECONNECTS = 1024  # unknown senders whose last RECONNECT answer is remembered

class WorkerState:
    """A registered worker process, as the broker sees it."""

    __slots__ = ("route", "name", "credit", "running", "last_seen", "known_jobs", "key", "fd",
                 "tags", "pid", "done", "joined", "supervisor", "codecs", "beats")

    def __init__(self, route: bytes, name: str, credit: int, now: float, key: str = "") -> None:
        self.route = route
        self.key = key  # its CURVE public key, when the broker is secured
        self.name = name
        self.credit = credit
        self.running: set[AttemptKey] = set()  # the attempts it holds
        self.last_seen = now
        self.known_jobs: set[str] = set()  # jobs whose code this worker already has
        self.fd = -1  # the broker's file descriptor of its connection
        self.tags: frozenset = frozenset()  # placement labels (--tag); jobs may require them
        self.pid = 0
        self.done = 0  # tasks it committed
        self.joined = now
        self.supervisor = b""  # the route of the process that may beat on its behalf
        self.codecs: frozenset = frozenset()  # what it decompresses (broker/codecs.py)
        self.beats: dict[bytes, float] = {}  # sender -> when its last beat was handled


class Ledger(Commits, Dispatching, Failures, Recovery, Sinks):
    """Everything the broker knows and decides; see the module's docstring.

    ``secured``: peers carry CURVE keys, and a report counts only under the key its
    worker registered with; ``worker_key_allowed(key)``: whether a key is (still) in the
    workers' allowlist (the data plane's check).
    """

    def __init__(self, config: BrokerConfig, store: Store, journal: Journal | None = None,
                 *, secured: bool = False,
                 worker_key_allowed: Callable[[str], bool] = lambda key: True,
                 address_of: Callable[[Any], str] = lambda frame: "") -> None:
        self.config = config
        self.store = store
        self.journal = journal
        self.secured = secured
        self.worker_key_allowed = worker_key_allowed
        self.workers: OrderedDict[bytes, WorkerState] = OrderedDict()
        # the newest GONE_WORKERS workers removed: what they were, when and why
        self.gone: deque[dict] = deque(maxlen=GONE_WORKERS)
        self.sinks: dict[bytes, SinkState] = {}  # sink daemons (sinkplan.py)
        self.jobs: dict[str, JobState] = {}
        self.scheduler = Scheduler()
        self.outbox: deque[Send | Publish | Fetched] = deque()
        self._reconnects: dict[bytes, float] = {}  # unknown sender -> its last RECONNECT
        self._early: dict[tuple, list] = {}  # outputs that arrived before their DONE
        self._early_bytes = 0
        self._awaiting: dict[tuple, dict] = {}  # DONE stats waiting for their outputs
        self._last_backup_scan = 0.0
        self._bad = RateLimitedLog(log)
        # where the message being handled came from, for the logs' rate limits: its key,
        # or its first frame, whose network address ``address_of`` reads only when a line
        # is about to be logged (a new connection is not a new offender)
        self.origin: Any = ""
        self.address_of = address_of
        self._events = RateLimitedLog(log)  # ordinary news a peer can cause (joins, jobs)
        self.logs = LogStore()  # what attempts printed and logged (in memory only)
        # job and task events (observe/events.py), unless the broker was told to keep none
        self.events = EventLog() if config.events else NullEventLog()
        self.history = History(journal)  # finished jobs' facts, past their TTL too
        self.codec_census = CodecCensus(config)  # who decodes compressed frames (codecs.py)

    def complain(self, peer: str, what: str, *args: Any) -> None:
        """Log a bad message, naming the peer (rate-limited: a hostile peer cannot flood
        the log)."""
        self._bad.warn(peer, what, *args, bucket=self._bucket() or peer)

    def news(self, peer: str, what: str, *args: Any, level: int = logging.INFO) -> None:
        """Log something a peer caused that is not wrong (rate-limited per peer too)."""
        self._events.warn(peer, what, *args, level=level, bucket=self._bucket() or peer)

    def _bucket(self) -> str:
        """What the logs' rate limit counts the current message against."""
        origin = self.origin
        return origin if isinstance(origin, str) else self.address_of(origin)

    def _send(self, route: bytes, command: str, body: dict | None = None,
              blobs: tuple = (), worker: bool = False) -> None:
        self.outbox.append(Send(route, Message(command, body or {}, blobs), worker))

    def _publish(self, job: JobState, now: float | None = None) -> None:
        self.outbox.append(Publish(job))

    def _serve_fetch_waiters(self, job: JobState) -> None:
        self.outbox.append(Fetched(job))

    # -- the clock -----------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Once a heartbeat interval: purge silent workers, explain waits, expire results."""
        for w in [w for w in self.workers.values() if now - w.last_seen > self.config.liveness]:
            self.purge(w, f"silent for {now - w.last_seen:.1f}s")
        if self.sinks:
            self.tick_sinks(now)
        self._explain_waits()
        for job in list(self.jobs.values()):
            if job.state == P.JOB_RUNNING:
                self._publish(job, now)  # doubles as the clients' heartbeat
            elif job.finished is not None and now - job.finished > self.config.result_ttl:
                self.drop_job(job)
        self.dispatch(now)

    # -- workers -------------------------------------------------------------------------
    def register(self, peer: bytes, key: str, body: dict, now: float,
                 fd: int = -1) -> WorkerState:
        """READY: a worker process (re-)registers; what it held before is handed out again
        (and what a process of the same key that died held, named in ``replaces``)."""
        old = self.workers.get(peer)
        if old is not None:  # re-registration: what it held is lost with its queue
            self.purge(old, REREGISTERED)
        gone = body.get("replaces")
        if isinstance(gone, list) and len(gone) in (2, 3) and isinstance(gone[0], bytes):
            dead = self.workers.get(gone[0])  # a process that died: its supervisor says so
            if dead is not None and dead.key == key:  # (same key: same daemon)
                # (and which attempt it was running: workers/running.py)
                self.purge(dead, str(gone[1])[:200],
                           blamed(gone[2]) if len(gone) == 3 else None)
        credit = body.get("credit", 1)
        credit = credit if type(credit) is int else 1
        name = str(body.get("name", ""))[:200]
        worker = self.workers[peer] = WorkerState(peer, name, max(1, min(credit, P.MAX_CREDIT)), now,
                                                  key)
        worker.fd = fd
        tags = body.get("tags") or []
        if isinstance(tags, list):
            worker.tags = frozenset(str(t)[:100] for t in tags[:64])
        pid = body.get("pid")
        worker.pid = pid if type(pid) is int else 0
        supervisor = body.get("supervisor")
        if isinstance(supervisor, bytes) and 0 < len(supervisor) <= 64:
            worker.supervisor = supervisor
        worker.codecs = announced(body.get("codecs"))
        self.codec_census.joined(peer, worker.codecs)
        self.news(peer_name(peer, key), "worker %s joined (credit %d%s)",
                  name or peer_name(peer), worker.credit,
                  f", tags {','.join(sorted(worker.tags))}" if worker.tags else "")
        self.events.worker_joined(name or peer_name(peer), worker.tags)
        return worker

    def heartbeat(self, peer: bytes, key: str, named: Any, now: float,
                  progress: Any = None) -> str | None:
        """A HEARTBEAT from ``peer`` for worker ``named`` (itself by default): the command
        to answer with (HEARTBEAT, or RECONNECT when the worker is unknown), or None when
        ``peer`` may not speak for that worker. ``progress``: what the worker's running
        map task has read so far (:meth:`_read_progress`).

        A sender's beats (a worker's own, its supervisor's on its behalf) come once per
        heartbeat interval; one that comes sooner than BEAT_GAP of it after the last one
        handled from that sender is ignored, and "" returned: nothing is answered and
        nothing else is done for it (a flood of beats costs the loop its reading alone,
        not an answer and a dispatch each)."""
        worker = self.workers.get(named) if isinstance(named, bytes) else None
        if worker is not None and not self._vouches(peer, key, worker):
            self.complain(peer_name(peer, key),
                          "HEARTBEAT for a worker it does not speak for: ignored")
            return None
        gap = self.config.heartbeat_interval * BEAT_GAP
        if worker is None:
            last = self._reconnects.get(peer)
            if last is not None and now - last < gap:
                return ""
            if len(self._reconnects) >= MAX_RECONNECTS:
                self._reconnects.clear()
            self._reconnects[peer] = now
            return P.RECONNECT
        last = worker.beats.get(peer)
        if last is not None and now - last < gap:
            return ""
        worker.beats[peer] = now
        worker.last_seen = now
        if progress is not None:
            self._read_progress(worker, progress)
        return P.HEARTBEAT

    def _read_progress(self, worker: WorkerState, progress: Any) -> None:
        """``[job, kind, index, attempt, records, bytes]``: a running map attempt's input
        read so far, counted in its job's progress until the task commits. Counted only
        for an attempt ``worker`` holds, of a task still running, with counts that are
        non-negative 64-bit integers; anything else is ignored (a report of a task that
        just ended is not wrong: heartbeats and reports travel apart)."""
        if type(progress) is not list or len(progress) != 6:
            return
        records, nbytes = progress[4], progress[5]
        if (type(records) is not int or type(nbytes) is not int
                or not 0 <= records <= INT64 or not 0 <= nbytes <= INT64):
            return
        attempt = AttemptKey.parse(progress[:4])
        if attempt is None or attempt.kind != MAP or attempt not in worker.running:
            return
        task = self._attempt(attempt)
        if task is not None:
            task.job.read_progress(task, attempt.attempt, records, nbytes)

    def _vouches(self, peer: bytes, key: str, worker: WorkerState) -> bool:
        """Whether ``peer`` may speak for ``worker``: it is the worker, its heartbeat
        socket, or its supervisor, and (on a secured broker) it holds the worker's key."""
        if self.secured and key != worker.key:
            return False
        return peer in (worker.route, worker.route + HB_SUFFIX) or peer == worker.supervisor

    def leave(self, peer: bytes, key: str) -> None:
        """BYE: a worker leaves (drained); what it held is handed back, no fault counted."""
        worker = self.workers.get(peer)
        if worker is not None and self.secured and worker.key != key:
            return
        if worker is not None:  # leaving (drained): what it held is handed back, no fault
            self.purge(worker, LEFT)

    def reporter(self, peer: bytes, key: str, now: float) -> WorkerState | None:
        """The registered worker a report comes from (None: it is told to register, or,
        from another key than the worker's, ignored)."""
        worker = self.workers.get(peer)
        if worker is None:  # e.g. after a broker restart, or a worker taken for dead
            # (not wrong: every worker of a broker that restarted without its state says
            # so once; rate-limited per peer all the same)
            self.news(peer_name(peer, key), "a report from a worker this broker does not "
                      "know (it restarted, or took the worker for dead): told to register")
            self._send(peer, P.RECONNECT)
        elif self.secured and worker.key != key:
            # another key took over a gone worker's identity: it speaks for no one
            self.complain(peer_name(peer, key), "report on the identity of a "
                          "worker registered with another key: ignored")
            return None
        else:
            worker.last_seen = now
        return worker

    def done(self, worker: WorkerState, results: Any, blobs: tuple) -> None:
        """DONE: finished attempts, each committed only if ``worker`` holds it; a report
        whose fields are malformed fails its attempt (with the reason) instead of being
        lost."""
        if not isinstance(results, list):
            raise ValueError("DONE carries no list of results")
        n, pos = self._done_usual(worker, results, blobs)  # (most reports, most often)
        for item in (results[n:] if n else results):
            key = Report.key_of(item)
            try:
                report: Report | None = Report.checked(key, item, len(blobs) - pos)
            except ValueError as exc:
                report, error = None, exc
            # a report's inline outputs come next in the message: one that is not committed
            # must still be skipped, or the next report would take its outputs for its own
            skip = max(report.nblobs, 0) if report is not None else 0
            if key is None or key not in worker.running:
                self.complain(peer_name(worker.route, worker.key), "DONE for an attempt "
                              "it does not hold: %.80r", item)
                if report is not None and isinstance(report.stats, dict):
                    # (one that crossed its ABANDON: how long it ran, for the timeline)
                    self.events.ran_abandoned(key.job, key.attempt, report.stats.get("secs"),
                                             worker.name)
                pos += skip
                continue
            try:
                if report is None:
                    raise error
                stats, nblobs = clean_stats(report.stats), report.nblobs
            except ValueError as exc:
                self._report_failed(worker, key, f"its worker sent a malformed report: {exc}")
                pos += skip
                continue
            text = report.stats.get("log")
            if text:  # (most attempts print nothing)
                self.logs.keep(self._attempt(key), key.attempt, worker.name, DONE, text)
            if nblobs >= 0:  # output inline
                self._commit(key, stats, list(blobs[pos : pos + nblobs]))
                pos += nblobs
                worker.running.discard(key)
            elif key in self._early:
                self._commit(key, stats, self._take_early(key))
            elif self._attempt(key) is not None:
                self._awaiting[key] = stats  # its outputs are still on the data plane
            else:
                worker.running.discard(key)

    def output(self, b: dict, blobs: tuple, sender: str) -> None:
        """OUTPUT on the data plane: the outputs of an attempt, from key ``sender`` (empty
        on a broker without keys); kept until its DONE, or committed if that came first."""
        who = f"key {sender}" if sender else "data plane"
        key = AttemptKey.from_body(b)
        task = self._attempt(key) if key is not None else None
        if task is None:  # unknown, or a stale attempt: another attempt owns this task
            self.complain(who, "dropped output for an attempt not running: %.80r", key)
            return
        owner = self.workers.get(task.running[key.attempt])
        if self.secured and (owner is None or owner.key != sender
                             or not self.worker_key_allowed(sender)):
            self.complain(who, "dropped output for %s %s attempt %s: not its worker",
                          key.job, task.name, key.attempt)
            return
        if key in self._awaiting:
            self._commit(key, self._awaiting.pop(key), list(blobs))
            return
        size = sum(len(b) for b in blobs)
        cap = max(self.config.memory_budget, self.config.max_message)
        if key in self._early or self._early_bytes + size > cap:
            # outputs wait for their DONE in memory, outside the store's budget: never more
            # than the budget (or one message) in all (an honest worker's DONE follows its
            # OUTPUT at once)
            self.complain(who, "%s %s: outputs waiting for their report are over the memory "
                          "budget; the attempt fails", key.job, task.name)
            if owner is not None:
                self._report_failed(owner, key, "the broker held too many outputs waiting "
                                    "for their reports")
            return
        self._early[key] = list(blobs)
        self._early_bytes += size

    def _take_early(self, key: AttemptKey) -> list:
        blobs = self._early.pop(key)
        self._early_bytes -= sum(len(b) for b in blobs)
        return blobs

    def _forget(self, key: AttemptKey) -> None:
        """An attempt is over: what of it waited for its report, or its outputs, goes."""
        if key in self._early:
            self._take_early(key)
        self._awaiting.pop(key, None)

    def _attempt(self, key: AttemptKey) -> Task | None:
        """The task whose attempt ``key`` is still running, or None if it is stale."""
        # (an AttemptKey's fields have their types: AttemptKey.parse checked a peer's)
        job_id, kind, index, attempt = key
        job = self.jobs.get(job_id)
        if job is None or job.state != P.JOB_RUNNING:
            return None
        tasks = job.maps if kind == MAP else job.reduces if kind == REDUCE else ()
        if not 0 <= index < len(tasks):
            return None
        task = tasks[index]
        if task.state != RUNNING or attempt not in task.running:
            return None
        return task

    def purge(self, worker: WorkerState, reason: str, blame: tuple | None = None) -> None:
        """Forget a worker; each attempt it held counts as failed and is retried, or, if
        ``blame`` (``(index, attempt)``, what its supervisor says the dead process ran
        last: workers/running.py) names one it held, that one alone counts and the others
        are queued again uncounted (they never ran, or ran and ended well)."""
        self.workers.pop(worker.route, None)
        self.codec_census.left(worker.route)
        lost = 0
        counted = reason not in BLAMELESS
        if blame is not None and counted and not any(
                (k.index, k.attempt) == blame for k in worker.running):
            blame = None  # (not one it held: every attempt counts, as without a word)
        for key in worker.running:
            self._forget(key)
            task = self._attempt(key)
            if task is None:
                continue
            lost += 1
            fault = counted and (blame is None or (key.index, key.attempt) == blame)
            self.events.failed(task, key.attempt, reason, "", {"split": task.index}, True,
                               fault)
            self._attempt_failed(task, key.attempt, f"the worker running it ({worker.name}) "
                                 f"was lost: {reason}" if fault else
                                 f"its worker ({worker.name}) was lost while it waited or "
                                 f"had ended: {reason}", "", {"split": task.index},
                                 counted=fault)
        self.news(peer_name(worker.route, worker.key), "worker %s removed (%s); %d task(s) "
                  "re-queued", worker.name, reason, lost)
        self.events.worker_lost(worker.name, reason, lost)
        self.gone.append({"name": worker.name, "pid": worker.pid, "tags": sorted(worker.tags),
                          "done": worker.done, "joined": worker.joined,
                          "last_seen": worker.last_seen, "gone": time.monotonic(),
                          "reason": str(reason)[:200], "lost_attempts": lost})

    def _abandon(self, route: bytes, job_id: str, tasks: list[AttemptKey]) -> None:
        """Tell a worker to drop attempts it holds: its main thread drops the queued ones,
        its heartbeat thread stops the running one (ABANDON goes to both sockets)."""
        for target in (route, route + HB_SUFFIX):
            self._send(target, P.ABANDON, abandon_body(job_id, tasks))

    def _durable(self) -> None:
        """Flush the journal before deleting output files: a commit that made files spent
        must be on disk first, or a restart would need files that are gone."""
        if self.journal is not None:
            self.journal.flush()

    def end_job(self, job: JobState) -> None:
        """A job reached a terminal state: journal it, free what it no longer needs, stop
        its attempts still out there, and tell its watchers and waiting fetches."""
        self.scheduler.remove(job)
        self.events.job_ended(job, time.monotonic())
        self.history.record(job, self.events.result_bytes(job), time.monotonic())
        if self.journal is not None:  # durable before its map outputs are deleted
            self.journal.finish(job.seq, job.state, job.error, time.time())
        self._durable()
        jid = job.id
        if job.state == P.JOB_SUCCEEDED:  # its outputs wait for the client
            self.store.discard_job(jid, lambda k: k[1] == "s")
        else:  # failed or cancelled: nothing of it can be fetched, free it all now
            self.store.discard_job(jid)
        for w in self.workers.values():  # its attempts still out there: stop them
            held = [k for k in w.running if k.job == jid]
            if held:
                w.running.difference_update(held)
                self._abandon(w.route, jid, held)
                self.events.abandoned(job, held, f"job {job.state}")
        self.store.discard_job(jid, lambda k: k[1] == MAP)
        for key in [k for k in (*self._early, *self._awaiting) if k.job == jid]:
            self._forget(key)
        job.code, job.splits, job.held = b"", [], 0  # its inputs are no longer needed
        self.news(job.tenant, "job %r %s in %.3fs", jid, job.state,
                  time.monotonic() - job.submitted)
        self.forget_at_sinks(job)
        self._serve_fetch_waiters(job)
        self._publish(job)

    def drop_job(self, job: JobState) -> None:
        """Forget a finished job and its outputs (expired, or pushed out by newer ones)."""
        self.jobs.pop(job.id, None)
        self.scheduler.remove(job)
        jid = job.id
        if self.journal is not None and job.seq:  # forgotten on disk first, then its files
            self.journal.drop(job.seq)
            self.journal.flush()
        self.store.discard_job(jid)
        self.logs.drop(jid)
        self.events.job_dropped(jid)

    def release_job(self, job: JobState) -> None:
        """A finished job's client no longer needs its outputs: free them (memory, spill
        and state files), but keep its status row, so that listings show it until the
        result TTL like any other finished job (a restarted broker forgets it)."""
        jid = job.id
        if self.journal is not None and job.seq:
            self.journal.drop(job.seq)
            self.journal.flush()
        job.seq = 0  # (nothing of it left on disk to drop at expiry)
        job.released = True
        self.events.job_released(job)
        self.store.discard_job(jid)
