"""Immutable views of the broker's state, for the HTTP server's answers.

The HTTP server's answers never read the ledger: a :class:`Snapshot` (plain dicts and
lists, JSON-ready) is built from it on the broker loop, when a request finds the last
one stale (server.Observatory.publish: older than ``PUBLISH_INTERVAL``, or than
``CHANGED_INTERVAL`` with events since), and is never changed after. Building one costs
O(jobs + workers), not O(tasks): counts come from the job's own tallies.

Nothing of a job's code or data is copied: names, numbers, error texts, and input
positions without keys (see ``events.safe_position``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from heapq import nsmallest
from typing import Any

from ..patterns import protocol as P
from .events import safe_position

PUBLISH_INTERVAL = 0.5  # seconds between snapshots (the dashboard's refresh)
CHANGED_INTERVAL = 0.1  # ... at least, when events happened since the last
MAX_SKIPPED = 200  # skipped records listed per job
MAX_WORKER_TASKS = 8  # current tasks listed per worker


@dataclass(frozen=True)
class Snapshot:
    """What the HTTP thread serves; built whole, never changed after."""

    time: float = 0.0  # wall clock at the build
    cluster: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)  # job id -> row (oldest first)
    tenants: dict = field(default_factory=dict)  # job id -> tenant (never served)
    tasks: dict = field(default_factory=dict)  # state -> count, all live jobs
    pending: dict = field(default_factory=dict)  # kind -> tasks waiting for a worker
    # answers built from this snapshot (path -> bytes), by the first HTTP request that
    # needs them: a thousand dashboards polling cost one serialization per snapshot
    served: dict = field(default_factory=dict)


def _error(error: dict | None) -> dict | None:
    if not error:
        return None
    return {"message": str(error.get("message", "")), "task": str(error.get("task", "")),
            "traceback": str(error.get("traceback", "")),
            "position": safe_position(error.get("position"))}


def job_row(job: Any, now: float, flow: dict | None = None, out: int = 0) -> dict:
    """A job's row: state, phase, progress, records and bytes, counters, times. ``out``:
    what it wrote as its result (``EventLog.result_bytes``)."""
    state = job.state
    if state == P.JOB_RUNNING and not job.dispatched:
        state = P.JOB_QUEUED
    end = job.finished if job.finished is not None else now
    elapsed = max(0.0, end - job.submitted)
    maps = [job.done_maps, len(job.maps)]
    reduces = [job.done_reduces, 0 if job.map_only else job.reducers]
    done, total = maps[0] + reduces[0], maps[1] + reduces[1]
    records, nbytes = job.read_so_far()
    eta = None
    if job.state == P.JOB_RUNNING and done:  # the rate of the done tasks, simply
        eta = round(elapsed / done * (total - done), 3)
    elif job.state == P.JOB_RUNNING and nbytes and job.phase == "map":
        # no task done yet (one long map task): the rate its input is being read at
        size = job.input_bytes()
        if size and nbytes < size:
            eta = round(elapsed / nbytes * (size - nbytes), 3)
    return {
        "id": job.id, "name": job.name, "state": state, "phase": job.phase,
        "step": [job.step + 1, max(1, len(job.steps))],
        "progress": {"map": maps, "reduce": reduces},
        "running": job.active, "pending": len(job.pending),
        "records": records, "bytes": nbytes, "bytes_out": out, "flow": flow or {},
        "counters": dict(list(job.counters.items())[:100]),
        "backups": job.backups, "skipped": len(job.skipped),
        "elapsed": round(elapsed, 3), "eta": eta,
        "queued_reason": job.waiting if job.state == P.JOB_RUNNING else "",
        "priority": job.priority, "requires": sorted(job.requires),
        "released": job.released, "error": _error(job.error),
        "skipped_records": [{k: v for k, v in s.items() if k != "key"}
                            for s in job.skipped[:MAX_SKIPPED]],
    }


def build(ledger: Any, broker_facts: dict, now: float, ended: dict | None = None) -> Snapshot:
    """A snapshot of ``ledger`` (called on the broker loop only). ``ended``: the rows of
    jobs that had ended at an earlier build, by job id, kept by the caller from build to
    build: an ended job's row changes only when it is released (or its state changes), so
    it is built once, not at every snapshot, and a broker holding a thousand finished jobs
    (the result TTL's history) builds rows for its running ones only. Rows of jobs the
    ledger no longer holds leave it."""
    liveness = ledger.config.liveness
    beat = ledger.config.heartbeat_interval
    workers = []
    for w in ledger.workers.values():
        host, _, _ = w.name.rpartition(":")
        seen = now - w.last_seen
        # (the first few by job, kind and index: the keys compared in C, and only those
        # listed named; all of a worker's held attempts named and sorted as strings, at
        # every snapshot of a cluster of hundreds of workers, cost the loop more than
        # the snapshot's other work)
        running = [f"{k.job} {k.kind}-{k.index}"
                   for k in nsmallest(MAX_WORKER_TASKS, w.running)]
        workers.append({
            "name": w.name, "host": host or w.name, "pid": w.pid, "tags": sorted(w.tags),
            "credit": w.credit, "tasks": running, "held": len(w.running),
            "done": w.done, "heartbeat_age": round(seen, 3), "up": round(now - w.joined, 3),
            "liveness": "alive" if seen <= 2 * beat else (
                "late" if seen <= liveness else "lost"),
        })
    jobs, tenants = {}, {}
    tasks = {"pending": 0, "running": 0, "done": 0}
    pending = {"map": 0, "reduce": 0}
    kept: dict = {}
    for job in ledger.jobs.values():
        if job.state in P.JOB_TERMINAL and ended is not None:
            mark = (job.state, job.released, job.finished, job.active, len(job.pending))
            got = ended.get(job.id)
            if got is None or got[0] != mark:  # (rows are never changed once built)
                got = (mark, job_row(job, now, ledger.events.flow(job.id),
                                    ledger.events.result_bytes(job)))
            kept[job.id] = got
            jobs[job.id] = got[1]
        else:
            jobs[job.id] = job_row(job, now, ledger.events.flow(job.id),
                                    ledger.events.result_bytes(job))
        tenants[job.id] = job.tenant
        if job.state == P.JOB_RUNNING:
            tasks["done"] += job.done_maps + job.done_reduces
            tasks["running"] += job.active  # attempts out (a backup counts too)
            tasks["pending"] += len(job.pending)
            pending[job.phase] = pending.get(job.phase, 0) + len(job.pending)
    # workers removed lately (lost, or left), newest first: a worker that registered again
    # under its name is listed above instead
    here = {w["name"] for w in workers}
    gone = [{"name": g["name"], "host": g["name"].rpartition(":")[0] or g["name"],
             "pid": g["pid"], "tags": g["tags"], "done": g["done"],
             "up": round(g["gone"] - g["joined"], 3), "gone_ago": round(now - g["gone"], 3),
             "heartbeat_age": round(now - g["last_seen"], 3), "reason": g["reason"],
             "lost_attempts": g["lost_attempts"]}
            for g in reversed(getattr(ledger, "gone", ())) if g["name"] not in here]
    cluster = {"broker": {**broker_facts, "workers": len(workers),
                          "jobs_running": sum(1 for j in ledger.jobs.values()
                                              if j.state == P.JOB_RUNNING),
                          "jobs_held": len(ledger.jobs),
                          "stored_bytes": ledger.store.memory_bytes,
                          "spilled_bytes": ledger.store.spilled_bytes},
               "workers": workers, "gone_workers": gone, "sinks": []}
    if ended is not None:
        ended.clear()
        ended.update(kept)
    return Snapshot(time.time(), cluster, jobs, tenants, tasks, pending)


def broker_facts(broker: Any) -> dict:
    """What does not change while a broker runs (plus its uptime's start)."""
    cfg = broker.config
    return {"address": broker.address, "data_address": broker.data_address,
            "host": socket.gethostname(), "pid": os.getpid(), "secured": cfg.keys_dir is not None,
            "state_dir": bool(cfg.state_dir), "result_ttl": cfg.result_ttl,
            "heartbeat": cfg.heartbeat_interval, "liveness": cfg.liveness,
            "max_attempts": cfg.max_attempts, "started": time.time()}
