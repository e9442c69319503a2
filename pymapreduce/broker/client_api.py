"""The broker's answers to clients: submit, watch, status, fetch, cancel, release.

A mixin of :class:`~pymapreduce.broker.daemon.Broker`, kept apart so each file holds one
side of the protocol; it uses the broker's job table, store and reply helpers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..patterns import protocol as P
from ..patterns.message import Message
from .tasks import JobState

log = logging.getLogger("pymapreduce.broker")

MAX_TASKS = 100_000  # map or reduce tasks of one job
MAX_STEPS = 200  # steps of a multi-step job
MAX_LISTED = 1000  # jobs in one JOBS listing (the newest)
FETCH_BYTES = 16 << 20  # one FETCH reply carries several small partitions, up to this size


def _req(msg: Message) -> Any:
    return msg.body.get("req")


def _peer(route: list, key: str = "") -> str:
    if key:
        return f"key {key}"
    return route[0].hex() if route and route[0] else "?"


def _read_options(options: Any) -> dict:
    """A file split's reading settings (encoding, longest line): passed on to workers as
    they are, only bounded here (the worker validates their meaning)."""
    if not isinstance(options, dict) or len(options) > 8:
        raise ValueError("a split's read options must be a map of at most 8 entries")
    return {str(k)[:40]: v if type(v) is int else str(v)[:100] for k, v in options.items()}


class ClientAPI:
    """Handlers of the client commands (HELLO, SUBMIT, WATCH, STATUS, FETCH, CANCEL,
    RELEASE); mixed into the Broker."""

    def on_hello(self, peer: bytes, msg: Message, now: float) -> None:
        self._reply(
            peer,
            P.INFO,
            {"req": _req(msg), "workers": len(self.workers), "slots": len(self.workers),
             "jobs": sum(1 for j in self.jobs.values() if j.state == P.JOB_RUNNING),
             "max_message": self.config.max_message},
        )

    def on_submit(self, peer: bytes, msg: Message, now: float) -> None:
        b = msg.body
        job_id = b["job_id"]
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 200:
            raise ValueError("job_id must be a string of 1 to 200 characters")
        job = self.jobs.get(job_id)
        if job is None:  # a resubmit of a known id is idempotent
            if not msg.blobs:
                raise ValueError("SUBMIT carries no job code")
            if not isinstance(b["splits"], list) or len(b["splits"]) > MAX_TASKS:
                raise ValueError(f"splits must be a list of at most {MAX_TASKS}")
            splits = []
            for desc in b["splits"]:
                if desc[0] == "mem":
                    splits.append(["mem", msg.blobs[int(desc[1])]])
                elif desc[0] == "files" and len(desc) in (2, 3) and desc[1]:
                    split = ["files", [[str(p), int(s), int(e)] for p, s, e in desc[1]]]
                    if len(desc) == 3:  # read_text()'s settings, for the workers to check
                        split.append(_read_options(desc[2]))
                    splits.append(split)
                else:
                    raise ValueError(f"unknown split {desc[:1]!r}")
            if not splits:
                raise ValueError("the job has no input splits")
            reducers = b.get("reducers")
            if reducers is None:
                reducers = max(1, len(self.workers))
            if type(reducers) is not int or not 0 <= reducers <= MAX_TASKS:
                raise ValueError(f"reducers must be an int from 0 to {MAX_TASKS}")
            map_only = bool(b.get("map_only")) or reducers == 0
            skip = b.get("skip", 0)
            if type(skip) is not int or skip < -1:
                raise ValueError("skip must be -1 (no limit), 0 (off) or a number of records")
            priority = b.get("priority", 1)
            if type(priority) not in (int, float) or not 0 < priority <= 1e6:
                raise ValueError("priority must be a number above 0 (default 1)")
            requires = b.get("requires") or []
            if not isinstance(requires, list) or len(requires) > 64 or not all(
                    isinstance(t, str) and 0 < len(t) <= 100 for t in requires):
                raise ValueError("requires must be a list of at most 64 tag names")
            active = sum(1 for j in self.jobs.values() if j.state == P.JOB_RUNNING)
            if active >= self.config.max_jobs:
                raise ValueError(f"the broker already holds {active} unfinished jobs, its "
                                 f"limit (--max-jobs {self.config.max_jobs}); submit later")
            steps = b.get("steps")
            if steps is not None:
                if not isinstance(steps, list) or not 0 < len(steps) <= MAX_STEPS or not all(
                        isinstance(s, dict) and type(s.get("reducers")) is int
                        and 0 < s["reducers"] <= MAX_TASKS
                        and isinstance(s.get("map_only"), bool) for s in steps):
                    raise ValueError(f"steps must be a list of 1 to {MAX_STEPS} "
                                     "{reducers, map_only}")
                steps = [{"reducers": s["reducers"], "map_only": s["map_only"]} for s in steps]
                reducers, map_only = steps[0]["reducers"], steps[0]["map_only"]
            options = {"name": str(b.get("name", ""))[:200], "reducers": max(1, int(reducers)),
                       "map_only": map_only, "skip": skip, "priority": priority,
                       "requires": sorted(set(requires)), "steps": steps,
                       "submitted_at": time.time()}
            job = JobState(job_id, options["name"], msg.blobs[0], splits, options["reducers"],
                           map_only, peer, now, options=options,
                           attempt_base=self.attempt_base)
            if self.journal is not None:  # durable before the client hears ACCEPTED
                job.seq = self.journal.add_job(job_id, options, job.code, splits)
                self.journal.flush()
            self.jobs[job_id] = job
            self.scheduler.add(job)
            log.info("job %s (%s) accepted from %s: %d map tasks, %d reducers", job_id,
                     job.name, _peer([peer], self._peer_key),
                     len(splits), job.reducers)
            if self.config.insecure:
                log.warning("job %s runs on a broker WITHOUT authentication (--insecure): "
                            "anyone who can reach %s can run code on every worker",
                            job_id, self.address)
        job.watchers.add(peer)
        self._reply(peer, P.ACCEPTED, {"req": _req(msg), **job.status(now)})

    def _job_or_error(self, peer: bytes, msg: Message) -> JobState | None:
        job = self.jobs.get(str(msg.body.get("job_id")))
        if job is None:
            self._reply(peer, P.ERROR, {"req": _req(msg), "code": "no-such-job",
                                        "message": f"no job {msg.body.get('job_id')!r} here"})
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
        if not job.part_done(first):
            self._reply(peer, P.ERROR, {"req": req, "code": "not-ready",
                                        "message": f"partition {first} is not done yet"})
            return
        blobs: list = []
        size = 0
        for part in range(first, min(first + count, job.output_parts)):
            if not job.part_done(part):
                break
            key = (job.id, "out", part)
            blob = self.store.get(key) if key in self.store else b""
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
            job.finish(P.JOB_CANCELLED, {"message": "cancelled by a client"})
            self._job_ended(job)
        self._reply(peer, P.STATUS, {"req": _req(msg), **job.status(now)})

    def on_jobs(self, peer: bytes, msg: Message, now: float) -> None:
        """Every job the broker holds (newest last) and every live worker."""
        jobs = []
        for job in list(self.jobs.values())[-MAX_LISTED:]:
            status = job.status(now)
            status["skipped"] = len(job.skipped)
            if "error" in status:
                status["error"] = {"message": status["error"].get("message", ""),
                                   "task": status["error"].get("task", "")}
            jobs.append(status)
        workers = []
        for w in self.workers.values():
            running = sorted(w.running)
            host, _, _ = w.name.rpartition(":")
            workers.append({"name": w.name, "host": host or w.name, "pid": w.pid,
                            "tags": sorted(w.tags), "credit": w.credit,
                            "tasks": [f"{j} {k}-{i}" for j, k, i, _ in running[:8]],
                            "held": len(running), "done": w.done,
                            "seen": round(now - w.last_seen, 3),
                            "up": round(now - w.joined, 3)})
        self._reply(peer, P.LISTING, {"req": _req(msg), "jobs": jobs, "workers": workers})

    def on_release(self, peer: bytes, msg: Message, now: float) -> None:
        job = self.jobs.get(str(msg.body.get("job_id")))
        if job is not None and job.state != P.JOB_RUNNING:
            self._drop_job(job)
        self._reply(peer, P.STATUS, {"req": _req(msg), "job_id": msg.body.get("job_id"),
                                     "state": "released"})
