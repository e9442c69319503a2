"""The broker's observatory: the snapshot it builds, and the HTTP views of it.

:class:`Observatory` is owned by the broker daemon. The broker loop calls
``serve(events)`` each turn (observe/http.py: the loop serves the HTTP connections
itself), whose requests call ``route()``, which reads only the snapshot and the event
log. A snapshot is built when a request finds the last one stale (``publish``), not by
the loop while no one asks: a broker whose dashboard is closed and that nothing scrapes
pays nothing for it a turn. See docs/observability.md for the API.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import ConfigError
from ..patterns.security import CLIENT
from . import scopes
from . import snapshot as snap
from .events import EventLog
from .http import LoopServer, is_loopback_name
from .metrics import Traffic, registry

JSON = "application/json"
SLOWEST = 10  # tasks listed as the slowest of a job
MAX_FAILURES = 50  # failures listed per job
MAX_SERVED = 16  # answers kept per snapshot (the listings, and jobs' pages, the first asked)
# files served from static/ (the dashboard adds its own here), by content type
STATIC = {"index.html": "text/html; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}


def parse_http(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``http://HOST:PORT``) -> (host, port); port 0: the OS picks."""
    spec = spec.removeprefix("http://").rstrip("/")
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--http wants HOST:PORT (port 0: any free port), not {spec!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback_host(host: str) -> bool:
    return is_loopback_name(host)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _listed_row(row: dict) -> dict:
    """A job's row as ``/api/jobs`` lists it: no skipped records, the error's message and
    task only (one job's page has the rest)."""
    out = {k: v for k, v in row.items() if k != "skipped_records"}
    if out["error"]:
        out["error"] = {"message": out["error"]["message"], "task": out["error"]["task"]}
    return out


def jobs_listing(s: snap.Snapshot, scope: str, cache: dict) -> tuple[bytes, dict]:
    """``/api/jobs`` of snapshot ``s`` (newest first; ``scope``: one client's jobs), and
    the cache to keep for the next call: each row's JSON by job id, reused while the
    snapshot holds the same row object (an ended job's is kept from snapshot to snapshot:
    snapshot.build), so a broker holding its finished jobs serializes its running ones."""
    kept: dict = {}
    parts = []
    for row in reversed(s.jobs.values()):
        if scope and s.tenants.get(row["id"]) != scope:
            continue
        got = cache.get(row["id"])
        if got is None or got[0] is not row:
            got = (row, _dumps(_listed_row(row)))
        kept[row["id"]] = got
        parts.append(got[1])
    if scope:  # (other clients' rows stay cached for their own requests)
        kept = {**cache, **kept}
        for job_id in [j for j in kept if j not in s.jobs]:
            del kept[job_id]
    return b'{"time":' + _dumps(s.time) + b',"jobs":[' + b",".join(parts) + b"]}", kept


class Observatory:
    """Snapshots, metrics and the HTTP server of one broker."""

    def __init__(self, broker: Any, bind: str, token: str | None, *,
                 check_host: bool = True) -> None:
        self.events: EventLog = broker.ledger.events
        self.check_host = check_host  # without a token: loopback Host names only
        self.traffic: Traffic = broker.traffic
        self.token = token
        # the broker's allowlists (None without keys): a client token lives as long as
        # its key is a client's
        self._allow = getattr(broker, "allow", None)
        self.closed = False
        self.snapshot = snap.Snapshot()
        self._ledger = broker.ledger
        self.history = broker.ledger.history  # (read under its own lock)
        self._facts = snap.broker_facts(broker)
        self._last = 0.0
        self._seq = -1  # the event log's sequence number at the last snapshot
        self._newest: Any = None  # the newest job the last snapshot holds (its object)
        self._ended: dict = {}  # ended jobs' rows, built once (snapshot.build)
        self._listed: dict = {}  # job id -> (its row, the row's JSON in /api/jobs)
        self.registry = registry(self.events, self.traffic, lambda: self.snapshot)
        host, port = parse_http(bind)
        self.server = LoopServer((host, port), self)
        real = self.server.server_address
        shown = f"[{real[0]}]" if ":" in real[0] else real[0]
        self.url = f"http://{shown}:{real[1]}/"
        self.publish(time.monotonic(), force=True)

    # -- the broker loop's side ----------------------------------------------------------
    def publish(self, now: float, force: bool = False) -> None:
        """A new snapshot when the last one is older than PUBLISH_INTERVAL, or than
        CHANGED_INTERVAL and events happened since (a job that ends shows at once), or
        when a job was submitted or forgotten since (its page and the listings are never
        behind the broker's jobs: a quick job can end within CHANGED_INTERVAL; a
        submission that made room by forgetting an older job leaves their count as it
        was, so the newest job is compared too). Called by each request before it reads
        the snapshot (on the loop's thread, which serves them): what a snapshot costs is
        charged to the requests, as their answers are, and a broker no one asks builds
        none. A build that fails keeps the last snapshot stale: the next request tries
        again."""
        age = now - self._last
        jobs = self._ledger.jobs
        newest = next(reversed(jobs.values()), None) if jobs else None
        if force or age >= snap.PUBLISH_INTERVAL or (
                age >= snap.CHANGED_INTERVAL and self.events.seq != self._seq) or \
                len(jobs) != len(self.snapshot.jobs) or newest is not self._newest:
            seq = self.events.seq
            self.snapshot = snap.build(self._ledger, self._facts, now,  # (one assignment)
                                       self._ended)
            self._last, self._seq, self._newest = now, seq, newest

    def attach(self, poller: Any) -> None:
        """Serve HTTP from the loop that polls with ``poller`` (its sockets join it)."""
        self.server.attach(poller)

    def serve(self, events: dict) -> None:
        """The loop's turn at HTTP: ``events`` is what its poll returned."""
        self.server.serve(events)

    def close(self) -> None:
        self.closed = True
        self.server.close()

    # -- the requests' side (served by the loop: observe/http.py) ------------------------
    def scope_of(self, given: str) -> str | None:
        """What a request's token shows: "" every job (the broker's token), ``key ...``
        one client's jobs (a client token, observe/scopes.py), None: refused."""
        if not given or self.token is None:
            return None
        if hmac.compare_digest(given.encode(), self.token.encode()):
            return ""
        scope = scopes.scope_of(self.token, given)
        if scope and self._allow is not None and not self._allow.allows(scope[4:], CLIENT):
            return None  # its key was removed from the allowlist: revoked with it
        return scope

    def route(self, path: str, query: dict, headers: Any, scope: str = "") -> tuple:
        """(content type, body) or ("stream", next_events); KeyError: 404,
        PermissionError: 403. ``scope``: a client's tenant, whose jobs alone are shown."""
        if path in ("/", "/index.html"):
            return STATIC["index.html"], _static("index.html")
        if path.startswith("/static/") and path[8:] in STATIC:
            return STATIC[path[8:]], _static(path[8:])
        try:
            self.publish(time.monotonic())
        except Exception as exc:  # (a KeyError of a build is no 404: a logged 500)
            raise RuntimeError(f"the snapshot could not be built: {exc!r}") from exc
        s = self.snapshot
        if path == "/metrics":
            if scope:
                raise PermissionError("/metrics counts every client's jobs: it needs the "
                                      "broker's token, not a client token")
            return CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/api/cluster", "/api/jobs"):
            key = f"{path} {scope}" if scope else path
            body = s.served.get(key)
            if body is None:  # (two threads may both build it: the same bytes)
                if path == "/api/jobs":
                    body, self._listed = jobs_listing(s, scope, self._listed)
                else:
                    body = _dumps(self._cluster(s, scope))
                s.served[key] = body
            return JSON, body
        if path.startswith("/api/jobs/"):
            job_id = path[len("/api/jobs/"):]
            if scope and s.tenants.get(job_id) != scope:  # (as if there were none)
                raise KeyError(f"no job {job_id[:100]!r} of this client")
            body = s.served.get(path)  # (a job's page is the same for every reader)
            if body is None:
                body = _dumps(self.job_detail(job_id))
                if len(s.served) < MAX_SERVED:  # (built once per snapshot, for a few)
                    s.served[path] = body
            return JSON, body
        if path == "/api/events":
            return self._events(query, headers, scope)
        if path == "/api/history":
            return JSON, _dumps({"time": s.time, **self.history.page(
                _int(query, "limit", 100), _int(query, "before", None),
                scope or query.get("owner"))})
        raise KeyError(f"no such page: {path[:100]}")

    @staticmethod
    def _cluster(s: snap.Snapshot, scope: str = "") -> dict:
        """``/api/cluster``: a client's view names only its own jobs' tasks."""
        if not scope:
            return {"time": s.time, **s.cluster}
        workers = [{**w, "tasks": [t for t in w["tasks"]
                                   if s.tenants.get(t.rpartition(" ")[0]) == scope]}
                   for w in s.cluster["workers"]]  # (other clients' jobs not named)
        return {"time": s.time, **s.cluster, "workers": workers}

    def job_detail(self, job_id: str) -> dict:
        """One job: its row, attempts (timeline), failures, skipped records, slowest."""
        row = self.snapshot.jobs.get(job_id)
        if row is None:
            raise KeyError(f"no job {job_id[:100]!r}: never submitted, or forgotten after "
                           "the result TTL (/api/history keeps its facts)")
        attempts = self.events.timeline(job_id)
        failures = self.events.failures(job_id, MAX_FAILURES)
        done = [a for a in attempts if a["outcome"] == "done" and a["end"] is not None]
        done.sort(key=_ran_for, reverse=True)  # by run time where known: a straggler
        slowest = [{"task": a["task"], "step": a["step"], "attempt": a["attempt"],
                    "worker": a["worker"], "secs": round(_ran_for(a), 6),
                    "queued": None if a["run"] is None else round(a["run"] - a["start"], 6)}
                   for a in done[:SLOWEST]]
        # an attempt that raised, and one lost with its worker, told apart (the engine
        # counts the latter against its task only when its worker died or went silent:
        # each failure's ``counted`` says)
        failed = sum(1 for a in attempts if a["outcome"] == "failed")
        lost = sum(1 for a in attempts if a["outcome"] == "killed")
        return {"time": self.snapshot.time, "job": row, "attempts": attempts,
                "failed_attempts": failed, "lost_attempts": lost,
                "failures": failures, "skipped": row["skipped_records"], "slowest": slowest}

    def _events(self, query: dict, headers: Any, scope: str = "") -> tuple:
        job = query.get("job") or None
        try:
            cursor = int(query.get("since") or headers.get("Last-Event-ID") or 0)
        except ValueError:
            raise ValueError("since must be an event's sequence number") from None
        if job is not None and self.events.tenant_of(job) is None \
                and job not in self.snapshot.jobs:
            raise KeyError(f"no job {job[:100]!r}")
        if scope and job is not None and self.events.tenant_of(job) != scope:
            raise KeyError(f"no job {job[:100]!r} of this client")
        # a client's events of all its jobs: read from its jobs (all jobs' newest, then
        # filtered, may be other clients' alone)
        tenant = scope if scope and job is None else None
        if query.get("format") == "json":  # one look, for programs that poll
            events = self.events.since(cursor, job, tenant=tenant)
            return JSON, _dumps({"events": events,
                                 "next": events[-1]["seq"] if events else cursor})
        state = [cursor]

        def next_events() -> list:
            events = self.events.since(state[0], job, tenant=tenant)
            if events:
                state[0] = events[-1]["seq"]
            return events
        return "stream", next_events


def _ran_for(attempt: dict) -> float:
    """An ended attempt's seconds: from when it began to run, or was handed out."""
    began = attempt["run"] if attempt["run"] is not None else attempt["start"]
    return (attempt.get("run_end") or attempt["end"]) - began


def _int(query: dict, name: str, default: int | None) -> int | None:
    """A query parameter that must be an integer (a ValueError says so: 400)."""
    value = query.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


def _static(name: str) -> bytes:
    try:
        return resources.files("pymapreduce.observe").joinpath("static", name).read_bytes()
    except FileNotFoundError:
        raise KeyError(f"{name} is not in this installation") from None
