"""The broker's answers to clients: submit, watch, status, fetch, cancel, release.

A mixin of :class:`~pymapreduce.broker.daemon.Broker`, kept apart so each file holds one
side of the protocol; it uses the broker's job table, store and reply helpers.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

import msgpack
import zmq

from ..patterns import protocol as P
from ..patterns.message import Message
from . import submission
from .reports import peer_name
from .sink import StoreBusy
from .tasks import DONE, JobState

log = logging.getLogger("pymapreduce.broker")

MAX_LISTED = 1000  # jobs in one JOBS listing (the newest)
MAX_WAITING_FETCHES = 64  # FETCHes one client may have waiting on one job
MAX_HELD_PER_CLIENT = 1000  # finished jobs whose results wait for one client
MAX_HELD = 10_000  # ... for all clients
LISTED_COUNTERS = 20  # counters of each job in a JOBS listing
FETCH_BYTES = 16 << 20  # one FETCH reply carries several small partitions, up to this size
# LOGS and EVENTS replies not sent yet (to clients that do not read theirs) hold at most
# this much of the broker's memory; past it such a request is answered busy (see
# _reply_held). Each LOGS reply is a fresh copy of up to a job's 4 MiB of logs: 300
# unread took the broker 1 GiB; an EVENTS reply is up to 500 events with tracebacks.
HELD_REPLY_BYTES = 64 << 20


def attempts_started(job: JobState, task: str) -> int | None:
    """How many attempts of ``task`` (``map-N``, ``reduce-N``) this broker has started:
    0 for a task that never ran (a reduce task of a job that failed in its map phase);
    None where it cannot say (a multi-step job: its tasks are the current step's; a name
    the job has no task of)."""
    if len(job.steps) > 1:
        return None
    kind, _, index = task.partition("-")
    if kind not in ("map", "reduce") or not index.isdigit() or len(index) > 18:
        return None
    count = len(job.maps) if kind == "map" else (0 if job.map_only else job.reducers)
    if int(index) >= count:
        return None
    tasks = job.tasks(kind)  # (a job's reduce tasks are made when its reduce phase starts)
    if int(index) >= len(tasks):
        return 0
    if tasks[int(index)].state == DONE and not tasks[int(index)].attempt:
        return None  # committed before a restart of this broker: it ran, then
    return tasks[int(index)].attempt


def _req(msg: Message) -> Any:
    return msg.body.get("req")


class ClientAPI:
    """Handlers of the client commands (HELLO, SUBMIT, WATCH, STATUS, FETCH, CANCEL,
    RELEASE, JOBS, LOGS); mixed into the Broker."""

    def on_hello(self, peer: bytes, msg: Message, now: float) -> None:
        self._reply(
            peer,
            P.INFO,
            {"req": _req(msg), "workers": len(self.workers), "slots": len(self.workers),
             "jobs": sum(1 for j in self.jobs.values() if j.state == P.JOB_RUNNING),
             "max_message": self.config.max_message,
             "sinks": len(self.ledger.sinks),
             # the codecs this broker lets outputs use, for peers that decode them
             "codecs": self.ledger.codec_census.names()},
        )

    def on_submit(self, peer: bytes, msg: Message, now: float) -> None:
        tenant = self._tenant(peer)
        job = self.jobs.get(msg.body.get("job_id")) if isinstance(
            msg.body.get("job_id"), str) else None
        if job is not None and not self._may_act(job):
            raise ValueError(f"job id {job.id!r} is taken by another client")
        if job is None:  # a resubmit of a known id is idempotent
            spec = submission.parse(msg.body, msg.blobs, max(1, len(self.workers)))
            self._check_limits(tenant, spec)
            job = JobState(spec.job_id, spec.options["name"], spec.code, spec.splits,
                           spec.options["reducers"], spec.options["map_only"], peer, now,
                           options={**spec.options, "tenant": tenant})
            job.held = spec.held
            if self.journal is not None:  # durable before the client hears ACCEPTED
                job.seq = self.journal.add_job(job.id, job.options, job.code, job.splits)
                self.journal.flush()
            self.jobs[job.id] = job
            self.scheduler.add(job)
            self.ledger.events.job_submitted(job)
            self.ledger.news(peer_name(peer, self._peer_key), "job %r (%s) accepted: %d map "
                             "tasks, %s", job.id, job.name, len(job.maps),
                             "map only" if job.map_only else f"{job.reducers} reducers")
            if self.config.insecure:
                self.ledger.news("insecure", "job %s runs on a broker WITHOUT authentication "
                                 "(--insecure): anyone who can reach %s can run code on "
                                 "every worker", job.id, self.address, level=logging.WARNING)
        job.watchers.add(peer)
        self._reply(peer, P.ACCEPTED, {"req": _req(msg), **job.status(now)})

    # -- tenants -------------------------------------------------------------------------
    def _tenant(self, peer: bytes) -> str:
        """Who a job counts against: the client's key (without keys, its connection)."""
        return f"key {self._peer_key}" if self._peer_key else f"connection {peer.hex()}"

    def _may_act(self, job: JobState) -> bool:
        """Whether the client being served may see and act on ``job``: its owner key, or
        an admin key. Without keys there is one tenant: whoever can reach such a broker
        can run code on every worker anyway, so ownership would protect nothing."""
        if self.allow is None:
            return True
        return job.tenant == f"key {self._peer_key}" or self.allow.is_admin(
            self._peer_key)

    def _check_limits(self, tenant: str, spec: submission.Spec) -> None:
        """Refuse a job that would take a client past its share (or the broker past its
        total): unfinished jobs, and bytes of job code and inputs held."""
        cfg = self.config
        self._make_room(tenant)
        mine = [j for j in self.jobs.values()
                if j.state == P.JOB_RUNNING and j.tenant == tenant]
        active = sum(1 for j in self.jobs.values() if j.state == P.JOB_RUNNING)
        if active >= cfg.max_jobs:
            raise ValueError(f"the broker already holds {active} unfinished jobs, its "
                             f"limit (--max-jobs {cfg.max_jobs}); submit later")
        if len(mine) >= cfg.max_jobs_per_client:
            raise ValueError(f"this client already has {len(mine)} unfinished job(s), the "
                             f"limit per client (--max-jobs-per-client "
                             f"{cfg.max_jobs_per_client}); wait for one to end")
        held = sum(j.held for j in mine)
        if held + spec.held > cfg.max_bytes_per_client:
            raise ValueError(f"this job's code and inputs ({spec.held} bytes) would take this "
                             f"client's unfinished jobs to {held + spec.held} bytes held in "
                             f"the broker, over its limit (--max-mb-per-client "
                             f"{cfg.max_bytes_per_client / (1 << 20):g}); read large inputs "
                             "from files (read_text), or wait for a job to end")

    def _make_room(self, tenant: str) -> None:
        """Finished jobs wait for their clients (``--result-ttl``), but not in unbounded
        numbers: past MAX_HELD_PER_CLIENT finished jobs of one client (or MAX_HELD of all),
        the oldest finished one is released, as if its client had released it."""
        finished = [j for j in self.jobs.values() if j.state != P.JOB_RUNNING]
        mine = [j for j in finished if j.tenant == tenant]
        while len(mine) >= MAX_HELD_PER_CLIENT or len(finished) >= MAX_HELD:
            oldest = mine[0] if len(mine) >= MAX_HELD_PER_CLIENT else finished[0]
            self.ledger.news(tenant, "released job %r, the oldest of %d finished jobs held",
                             oldest.id, len(mine) if oldest in mine else len(finished))
            self.ledger.drop_job(oldest)
            finished.remove(oldest)
            if oldest in mine:
                mine.remove(oldest)

    def _job_or_error(self, peer: bytes, msg: Message) -> JobState | None:
        job = self.jobs.get(str(msg.body.get("job_id")))
        if job is not None and not self._may_act(job):
            self._reply(peer, P.ERROR, {"req": _req(msg), "code": "no-such-job",
                                        "message": f"job {job.id!r} belongs to another "
                                                   "client key: only its owner or an admin "
                                                   "key may see or act on it"})
            return None
        if job is None:
            self._reply(peer, P.ERROR, {"req": _req(msg), "code": "no-such-job",
                                        "message": f"this broker knows no job "
                                                   f"{msg.body.get('job_id')!r}: never "
                                                   "submitted here, ended more than "
                                                   f"{self.config.result_ttl:g}s ago, or "
                                                   "lost in a restart without --state-dir"})
        return job

    def on_watch(self, peer: bytes, msg: Message, now: float) -> None:
        job = self._job_or_error(peer, msg)
        if job is not None:
            job.watchers.add(peer)
            self._reply(peer, P.STATUS, {"req": _req(msg), **job.status(now)})

    def on_status(self, peer: bytes, msg: Message, now: float) -> None:
        job = self._job_or_error(peer, msg)
        if job is not None:
            self._reply(peer, P.STATUS, {"req": _req(msg), **job.status(now)})

    def on_fetch(self, peer: bytes, msg: Message, now: float) -> None:
        """Up to ``count`` committed output partitions from ``part`` on (FETCH_BYTES at most).

        With ``wait``, a partition not committed yet is answered when it is: this is how a
        client streams results while the job still runs.
        """
        job = self._job_or_error(peer, msg)
        if job is None:
            return
        first = int(msg.body["part"])
        count = max(1, int(msg.body.get("count", 1)))
        if not 0 <= first < job.output_parts:
            raise ValueError(f"job {job.id} has no output partition {first}")
        request = (peer, _req(msg), first, count)
        if job.state == P.JOB_RUNNING and not job.part_done(first) and msg.body.get("wait"):
            if sum(1 for w in job.fetch_waiters if w[0] == peer) >= MAX_WAITING_FETCHES:
                raise ValueError(f"this client already waits for {MAX_WAITING_FETCHES} "
                                 f"partitions of job {job.id}")
            job.fetch_waiters.append(request)
        else:
            self._answer_fetch(job, *request)

    def _answer_fetch(self, job: JobState, peer: bytes, req: Any, first: int,
                      count: int) -> None:
        if job.state in (P.JOB_FAILED, P.JOB_CANCELLED):
            self._reply(peer, P.ERROR, {"req": req, "code": "job-failed",
                                        "message": f"job {job.id} {job.state}",
                                        "status": job.status(time.monotonic())})
            return
        if job.released:  # (its outputs are gone: empty partitions would be a lie)
            self._reply(peer, P.ERROR, {"req": req, "code": "released",
                                        "message": f"the results of job {job.id} were "
                                                   "released by its client; run it again"})
            return
        if not job.part_done(first):
            self._reply(peer, P.ERROR, {"req": req, "code": "not-ready",
                                        "message": f"partition {first} is not done yet"})
            return
        blobs: list = []
        size = 0
        ended = job.state == P.JOB_SUCCEEDED  # (every partition is done)
        store = self.store
        for part in range(first, min(first + count, job.output_parts)):
            if not ended and not job.part_done(part):
                break
            key = (job.id, "out", part)
            try:
                blob = store.get(key, refusable=True) if key in store else b""
            except StoreBusy as exc:  # (unread replies of some client hold the memory)
                if blobs:
                    break  # what fits goes now; the rest on the next FETCH
                self._reply(peer, P.ERROR, {"req": req, "code": "busy", "message": str(exc)})
                return
            n = len(blob.buffer if hasattr(blob, "buffer") else blob)
            if blobs and size + n > FETCH_BYTES:
                break
            blobs.append(blob)
            size += n
        self._reply(peer, P.PART, {"req": req, "job_id": job.id, "part": first}, tuple(blobs))

    def _serve_fetch_waiters(self, job: JobState) -> None:
        waiting, job.fetch_waiters = job.fetch_waiters, []
        for request in waiting:
            if job.state == P.JOB_RUNNING and not job.part_done(request[2]):
                job.fetch_waiters.append(request)
            else:
                self._answer_fetch(job, *request)

    def on_cancel(self, peer: bytes, msg: Message, now: float) -> None:
        job = self._job_or_error(peer, msg)
        if job is None:
            return
        if job.state == P.JOB_RUNNING:
            by = ("an admin key" if self.allow is not None and job.tenant != self._tenant(peer)
                  else "its client")
            job.finish(P.JOB_CANCELLED, {"message": f"cancelled by {by}"})
            self.ledger.end_job(job)
        self._reply(peer, P.STATUS, {"req": _req(msg), **job.status(now)})

    def on_jobs(self, peer: bytes, msg: Message, now: float) -> None:
        """Every job the broker holds (newest last) and every live worker."""
        jobs = []
        visible = [j for j in self.jobs.values() if self.config.list_all_jobs
                   or self._may_act(j)]
        for job in visible[-MAX_LISTED:]:
            status = job.status(now)
            status["skipped"] = len(job.skipped)
            if len(status["counters"]) > LISTED_COUNTERS:  # (all of them: its STATUS)
                status["counters"] = dict(list(status["counters"].items())[:LISTED_COUNTERS])
            if "error" in status:
                status["error"] = {"message": status["error"].get("message", ""),
                                   "task": status["error"].get("task", "")}
            jobs.append(status)
        workers = []
        for w in self.workers.values():
            running = sorted(k for k in w.running if k[0] in self.jobs and (
                self.config.list_all_jobs or self._may_act(self.jobs[k[0]])))
            host, _, _ = w.name.rpartition(":")
            workers.append({"name": w.name, "host": host or w.name, "pid": w.pid,
                            "tags": sorted(w.tags), "credit": w.credit,
                            "tasks": ([f"{j} {k}-{i}" for j, k, i, _ in running[:8]]
                                      + ["(another client's task)"]
                                      * min(len(w.running) - len(running),
                                            max(0, 8 - len(running)))),
                            "held": len(w.running), "done": w.done,
                            "seen": round(now - w.last_seen, 3),
                            "up": round(now - w.joined, 3)})
        sinks = [{"name": s.name, "address": s.address, "durable": s.durable,
                  "seen": round(now - s.last_seen, 3), **s.carried}
                 for s in self.ledger.sinks.values()]
        self._reply(peer, P.LISTING, {"req": _req(msg), "jobs": jobs, "workers": workers,
                                      "sinks": sinks})

    def on_logs(self, peer: bytes, msg: Message, now: float) -> None:
        """A job's task logs (all, or one task's: ``task``), for its owner only."""
        job = self._job_or_error(peer, msg)
        if job is None:
            return
        task = msg.body.get("task")
        logs, dropped = self.ledger.logs.read(job.id, task if isinstance(task, str) else None)
        body = {"req": _req(msg), "job_id": job.id, "logs": logs, "dropped": dropped}
        if isinstance(task, str) and not logs:  # no logs: did it ever run?
            started = attempts_started(job, task)
            if started is not None:
                body["attempts"] = started
        self._reply_held(peer, P.LOGS, body)

    def _reply_held(self, peer: bytes, command: str, body: dict) -> None:
        """A reply whose header is big and made fresh for each request (LOGS, EVENTS), sent
        without a copy and counted until ZeroMQ has sent it: past HELD_REPLY_BYTES of
        such headers unsent, the requester is told ``busy`` (its client asks again).
        Headers under pyzmq's copy threshold are copied by ZeroMQ and not counted."""
        held = self.__dict__.setdefault("_held_replies", weakref.WeakSet())
        header = memoryview(msgpack.packb([P.PROTOCOL_VERSION, command, body],
                                          use_bin_type=True))
        if len(header) >= zmq.COPY_THRESHOLD:
            if sum(len(h) for h in held) + len(header) > HELD_REPLY_BYTES:
                self._reply(peer, P.ERROR, {
                    "req": body.get("req"), "code": "busy",
                    "message": "replies not read yet (by clients that do not read theirs) "
                               "hold the broker's memory: ask again later"})
                return
            held.add(header)  # (pyzmq holds the view until ZeroMQ has sent it)
        try:
            self.control.send_multipart([peer, header], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._not_reading(peer, command)
        except zmq.ZMQError as exc:  # the peer has gone
            log.debug("cannot reach %s: %s", peer_name(peer), exc.strerror)

    def on_release(self, peer: bytes, msg: Message, now: float) -> None:
        job = self.jobs.get(str(msg.body.get("job_id")))
        if job is not None and not self._may_act(job):
            self._job_or_error(peer, msg)  # (says whose it is)
            return
        if job is not None and job.state != P.JOB_RUNNING and not job.released:
            self.ledger.release_job(job)  # (once: a release is answered past its share)
        self._reply(peer, P.STATUS, {"req": _req(msg), "job_id": msg.body.get("job_id"),
                                     "state": "released"})
