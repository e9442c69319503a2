"""The broker's observability: event log, JSON API, server-sent events, /metrics, the
``events`` command, tokens with keys, and what a hostile HTTP client can cost."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pymapreduce import Client, run_sequential
from pymapreduce.observe.events import EventLog, _size, safe_position
from pymapreduce.patterns import security

from .conftest import ROOT, pmr, read_line, wait_workers
from .jobs import WordCount, note

MARKER = "SECRETMARKERq7"  # in every record's value; must never leave the broker's API
READY_HTTP = re.compile(r"pymapreduce broker ready: (\S+) .*; http (http://\S+/)\)")


def start_broker(daemons, *extra: str) -> tuple[str, str]:
    """A broker with --http on a free port: (control address, http URL)."""
    proc = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--log-level",
                                "WARNING", "--parent-pid", str(os.getpid()),
                                "--http", "127.0.0.1:0", *extra),
                            stdout=subprocess.PIPE, cwd=ROOT)
    daemons.procs.append(proc)
    m = read_line(proc, READY_HTTP)
    return m.group(1), m.group(2)


def get(url: str, token: str | None = None, headers: dict | None = None
        ) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={
        **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str, token: str | None = None) -> dict:
    status, body = get(url, token)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


class Troubled(WordCount):
    """Word count whose record 3 fails on its first try and record 11 dawdles (so that
    its worker can be killed mid-task); every try is noted with its pid."""

    FIRST_TRY = "first try of record 3 fails"  # the failure's message

    def __init__(self, log_path):
        self.log_path = log_path

    def map(self, key, line):
        note(self.log_path, key, os.getpid())
        if key == 3:
            with open(self.log_path) as f:
                if sum(1 for x in f.read().split("\n") if x.startswith("3 ")) == 1:
                    raise ValueError(self.FIRST_TRY)
        if key == 11:
            time.sleep(2.0)
        yield from super().map(key, line)


def wait_for(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_events_timeline_and_metrics_of_a_job_with_a_failure_and_a_killed_worker(
        daemons, tmp_path):
    address, http = start_broker(daemons, "--heartbeat", "1", "--liveness", "60",
                                 "--backup-after", "off")
    daemons.worker(address, 1)
    daemons.worker(address, 1)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 5} {MARKER}{i}") for i in range(12)]
    with Client(address) as client:
        handle = client.submit(Troubled(str(log)), records, map_tasks=12, reducers=2)
        running = None
        while running is None:
            lines = [x.split() for x in log.read_text().splitlines()] if log.exists() else []
            running = next((int(pid) for key, pid in lines if key == "11"), None)
            time.sleep(0.02)
        os.kill(running, signal.SIGKILL)  # mid-task
        assert handle.result(60) == run_sequential(WordCount(), records)
        job = handle.job_id
    detail = wait_for(lambda: (d := get_json(f"{http}api/jobs/{job}"))["job"]["state"]
                      == "succeeded" and d)
    events = get_json(f"{http}api/events?job={job}&format=json")["events"]
    kinds = [e["type"] for e in events]
    for kind in ("job-submitted", "job-started", "dispatched", "failed", "retried", "killed",
                 "done", "phase", "job-succeeded"):
        assert kind in kinds, (kind, kinds)
    failed = next(e for e in events if e["type"] == "failed")
    assert failed["task"] == "map-3" and "first try of record 3 fails" in failed["traceback"]
    assert failed["position"]["split"] == 3 and failed["position"]["record"] == 0
    killed = next(e for e in events if e["type"] == "killed")
    assert killed["task"] == "map-11" and "was lost" in killed["error"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    # the cluster's own ring: the worker's loss; a cursor resumes after an event
    every = get_json(f"{http}api/events?format=json")["events"]
    assert any(e["type"] == "worker-lost" for e in every)
    later = get_json(f"{http}api/events?job={job}&since={seqs[5]}&format=json")["events"]
    assert [e["seq"] for e in later] == seqs[6:]

    # the timeline: every attempt, the retried and the killed ones with their outcomes
    attempts = detail["attempts"]
    by_task = {}
    for a in attempts:
        by_task.setdefault(a["task"], []).append(a)
    assert [a["outcome"] for a in by_task["map-3"]] == ["failed", "done"]
    assert [a["outcome"] for a in by_task["map-11"]] == ["killed", "done"]
    assert [a["attempt"] for a in by_task["map-11"]] == [1, 2]
    assert all(a["end"] >= a["start"] for a in attempts)
    assert detail["failures"][0]["task"] == "map-3"
    # the attempt that raised and the one lost with its worker (killed) told apart
    assert detail["failed_attempts"] == 1 and detail["lost_attempts"] == 1
    assert [f["type"] for f in detail["failures"]] == ["failed", "killed"]
    assert detail["slowest"][0]["task"] == "map-11"
    row = detail["job"]
    assert row["progress"] == {"map": [12, 12], "reduce": [2, 2]}
    assert row["flow"]["map"]["records_in"] == 12  # (and its outputs are the shuffle)
    assert row["flow"]["map"]["bytes_out"] > 0 and row["flow"]["reduce"]["bytes_out"] > 0
    # the reduce tasks read the shuffle: every pair the maps wrote (two words a record,
    # no combiner), the maps' output bytes; the job's own records stay its input's
    assert row["flow"]["reduce"]["records_in"] == 2 * 12
    assert row["flow"]["reduce"]["bytes_in"] == row["flow"]["map"]["bytes_out"]
    assert row["records"] == 12

    # /metrics parses, and its counters are the job's facts
    status, text = get(f"{http}metrics")
    assert status == 200
    samples = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    done = samples["pymapreduce_tasks_completed_total"]
    assert done[(("kind", "map"),)] == 12 and done[(("kind", "reduce"),)] == 2
    tries = samples["pymapreduce_task_attempts_total"]
    assert sum(tries.values()) == len(attempts) == 16  # 14 tasks, a retry, a re-run
    assert samples["pymapreduce_task_attempts_failed_total"][(("kind", "map"),)] == 1
    assert samples["pymapreduce_task_attempts_lost_total"][(("kind", "map"),)] == 1
    assert sum(samples["pymapreduce_task_retries_total"].values()) == 2
    assert samples["pymapreduce_jobs_finished_total"][(("state", "succeeded"),)] == 1
    assert samples["pymapreduce_job_duration_seconds_count"][()] == 1
    assert samples["pymapreduce_received_bytes_total"][(("plane", "control"),)] > 0
    assert len(samples["pymapreduce_worker_heartbeat_age_seconds"]) == 2

    # server-sent events: a stream from a cursor gives the events after it
    with urllib.request.urlopen(f"{http}api/events?job={job}&since={seqs[-3]}",
                                timeout=20) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        data = []
        while len(data) < 2:
            line = stream.readline().decode()
            if line.startswith("data: "):
                data.append(json.loads(line[6:]))
    assert [e["seq"] for e in data] == seqs[-2:]

    # `pymapreduce events JOB` prints the job's events and ends with the job
    out = subprocess.run(pmr("events", "--connect", address, job), capture_output=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    printed = [json.loads(x) for x in out.stdout.decode().splitlines()]
    assert [e["seq"] for e in printed] == seqs

    # no job code or data values in anything served
    served = [get(f"{http}{p}")[1] for p in ("", "api/cluster", "api/jobs", f"api/jobs/{job}",
                                             "api/events?format=json", "metrics")]
    for body in [*served, out.stdout]:
        assert MARKER.encode() not in body


@pytest.fixture
def keys(tmp_path):
    directory = security.cluster_keys(str(tmp_path / "keys"))
    security.generate(directory, "other")  # a second tenant, authorized before the start
    security.authorize(directory, security.CLIENT, os.path.join(directory, "other.key"))
    return directory


def test_with_keys_http_needs_the_token_and_a_client_sees_only_its_own_events(
        daemons, keys):
    address, http = start_broker(daemons, "--keys", keys, "--heartbeat", "0.2",
                                 "--liveness", "2")
    daemons.worker(address, 1, "--keys", keys)
    records = [(i, f"w{i % 3}") for i in range(30)]
    with Client(address, keys=keys) as client:
        handle = client.submit(WordCount(), records, map_tasks=3)
        handle.result(60)
        job = handle.job_id
    for path in ("api/jobs", "api/cluster", "metrics", "api/events?format=json", ""):
        assert get(f"{http}{path}")[0] == 401
        assert get(f"{http}{path}", token="x" * 32)[0] == 401
    url = subprocess.run(pmr("dashboard-url", http, "--keys", keys), capture_output=True,
                         timeout=30, cwd=ROOT).stdout.decode().strip()
    token = url.split("?token=")[1]
    assert token == open(os.path.join(keys, "http.token")).read().strip()
    assert get(url)[0] == 200
    jobs = wait_for(lambda: get_json(f"{http}api/jobs", token)["jobs"])
    assert [j["id"] for j in jobs] == [job]

    def events(key_name, *extra):
        return subprocess.run(pmr("events", "--connect", address, "--keys", keys,
                                  "--key-name", key_name, "--no-follow", *extra),
                              capture_output=True, timeout=60, cwd=ROOT)

    mine = events("client")
    assert mine.returncode == 0, mine.stderr
    assert any(json.loads(x).get("job") == job for x in mine.stdout.decode().splitlines())
    theirs = events("other")
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout.decode().strip() == ""
    refused = events("other", job)
    assert refused.returncode != 0 and b"no job" in refused.stderr


def test_a_slowloris_client_does_not_stop_other_requests(daemons):
    address, http = start_broker(daemons)
    host, port = http[len("http://"):].rstrip("/").split(":")
    slow = []
    for _ in range(8):  # they trickle their headers, never finishing them
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        slow.append(s)
    huge = socket.create_connection((host, int(port)), timeout=30)
    huge.sendall(b"GET /api/jobs HTTP/1.1\r\n" + b"X-Big: " + b"a" * 60_000 + b"\r\n")
    try:
        for _ in range(5):  # others are served meanwhile
            assert get_json(f"{http}api/cluster")["broker"]["address"] == address
        assert b"431" in huge.recv(200).split(b"\r\n")[0]
        # the server closes a trickling request at its deadline, however it trickles
        closed = False
        deadline = time.monotonic() + 30
        while not closed and time.monotonic() < deadline:
            try:
                slow[0].sendall(b"a")
                slow[0].settimeout(0.5)
                closed = slow[0].recv(100) is not None  # EOF (b"") or an answer
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed
    finally:
        for s in (*slow, huge):
            s.close()


def test_a_keyless_broker_refuses_http_beyond_loopback_and_foreign_host_names(daemons):
    proc = subprocess.run(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--http",
                              "0.0.0.0:0"), capture_output=True, timeout=30, cwd=ROOT)
    assert proc.returncode != 0 and b"--http-public" in proc.stderr
    _, http = start_broker(daemons)
    assert get(f"{http}api/jobs", headers={"Host": "evil.example:80"})[0] == 403
    # --http-public without keys: any Host is answered, with or without a stray token
    _, http = start_broker(daemons, "--http-public")
    status, body = get(f"{http}api/jobs", headers={"Host": "broker.example:80"})
    assert status == 200 and "jobs" in json.loads(body)
    assert get(f"{http}api/jobs", token="anything")[0] == 200


def test_the_event_log_is_bounded_and_keeps_no_data_values():
    class FakeJob:
        id, name, tenant, reducers, steps, maps, step = "j", "n", "", 1, [], [], 0
        state = "running"

    for budget in (10 << 20, 50_000):  # rings full first; then the byte budget first
        events = EventLog(per_job=10, global_events=20, max_bytes=budget)
        events.job_submitted(FakeJob)
        for _ in range(100):
            with events.lock:
                events._emit("j", "failed", error="e" * 1000, traceback="t" * 5000)
        assert len(events.since(0, "j")) <= 10 and len(events.since(0)) <= 20
        assert events._bytes <= budget
        if budget > 1 << 20:
            assert len(events.since(0, "j")) == 10 and len(events.since(0)) == 20
        events.job_dropped("j")
        assert events.since(0, "j") == []
    # attempt rows: at most max_attempts over all jobs, the oldest job's going first
    class Task:
        def __init__(self, index: int) -> None:
            self.kind, self.index, self.running = "map", index, {}

    events = EventLog(max_attempts=50)
    jobs = []
    for j in range(3):
        job = type("Job", (), {"id": f"j{j}", "name": "n", "tenant": "", "reducers": 1,
                               "steps": [], "maps": [], "step": 0, "state": "running"})
        events.job_submitted(job)
        jobs.append(job)
        for i in range(0, 40, 8):  # messages of 8 attempts each
            events.dispatched(job, [Task(k) for k in range(i, i + 8)],
                             [k + 1 for k in range(i, i + 8)], "w")
    rows = [len(events.attempts(job.id)) for job in jobs]
    assert sum(rows) == 50 and rows[2] == 40
    assert safe_position({"key": "'secret'", "split": 2, "record": 5}) == {"split": 2,
                                                                          "record": 5}
    assert safe_position({"key": "1200", "path": "/in/a.txt"}) == {"path": "/in/a.txt",
                                                                  "offset": 1200}


def test_an_embedded_cluster_serves_http_when_asked():
    from pymapreduce import LocalCluster

    with LocalCluster(workers=1, http=True) as cluster:
        assert cluster.http_url.startswith("http://127.0.0.1:")
        workers = wait_for(lambda: get_json(f"{cluster.http_url}api/cluster")["workers"])
        assert len(workers) == 1 and workers[0]["liveness"] == "alive"
        status, page = get(cluster.http_url)
        assert status == 200 and b"/api/jobs" in page
    with LocalCluster(workers=1) as cluster:  # off by default
        assert cluster.http_url == ""


def test_the_ledger_records_an_attempt_s_whole_story_without_sockets():
    """Driven by calls (tests/test_ledger.py's helpers): a failure, its retry, a worker
    lost with its attempt, and the commits, in the event log and the attempt table."""
    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.ledger import Ledger
    from pymapreduce.broker.sink import Store

    from .test_ledger import T0, add_job, map_output, report, tasks_of

    store = Store(1 << 30)
    try:
        ledger = Ledger(BrokerConfig(bind="tcp://127.0.0.1:0", heartbeat_interval=0.2,
                                     liveness=1.0), store)
        job = add_job(ledger, maps=1)
        ledger.events.job_submitted(job)
        a = ledger.register(b"A", "", {"credit": 1, "name": "host:1"}, T0)
        ledger.dispatch(T0)
        (_, [key]), = tasks_of(ledger).items()
        ledger.failed(a, {"job": key[0], "kind": key[1], "index": key[2], "attempt": key[3],
                          "error": "boom", "traceback": "tb", "position": {"key": "'v'"}})
        ledger.dispatch(T0)
        (_, [key]), = tasks_of(ledger).items()
        ledger.purge(a, "silent for 2.0s")
        b = ledger.register(b"B", "", {"credit": 1, "name": "host:2"}, T0)
        ledger.dispatch(T0)
        (_, [key]), = tasks_of(ledger).items()
        ledger.done(b, [report(key)], tuple(map_output()))
        kinds = [e["type"] for e in ledger.events.since(0, "j")]
        assert kinds == ["job-submitted", "job-started", "dispatched", "failed", "retried",
                         "dispatched", "killed", "retried", "dispatched", "done", "phase"]
        failed = ledger.events.since(0, "j")[3]
        assert failed["position"] == {} and failed["error"] == "boom"  # no data values
        rows = ledger.events.attempts("j")
        assert [(r["attempt"], r["worker"], r["outcome"]) for r in rows] == [
            (1, "host:1", "failed"), (2, "host:1", "killed"), (3, "host:2", "done")]
        ledger.drop_job(job)
        assert ledger.events.since(0, "j") == [] and ledger.events.attempts("j") == []
    finally:
        store.close()


def test_a_snapshot_builds_an_ended_job_s_row_once_until_it_changes():
    """The dashboard's snapshot keeps ended jobs' rows from build to build (a broker
    holding its finished jobs for the result TTL builds rows for its running ones only),
    the same as built afresh, built again when the job is released, and let go when the
    broker forgets the job."""
    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.ledger import Ledger
    from pymapreduce.broker.sink import Store
    from pymapreduce.observe import snapshot as snap
    from pymapreduce.patterns import protocol as P

    from .test_ledger import T0, add_job

    store = Store(1 << 30)
    try:
        ledger = Ledger(BrokerConfig(bind="tcp://127.0.0.1:0"), store)
        ended, running = add_job(ledger, "j", maps=1), add_job(ledger, "k", maps=1)
        for job in (ended, running):
            ledger.events.job_submitted(job)
        ended.finish(P.JOB_CANCELLED, {"message": "cancelled by its client"})
        ledger.end_job(ended)
        cache: dict = {}
        first = snap.build(ledger, {}, T0, cache)
        second = snap.build(ledger, {}, T0 + 1, cache)
        assert second.jobs["j"] is first.jobs["j"] and first.jobs["j"]["state"] == "cancelled"
        assert second.jobs["k"] is not first.jobs["k"]  # a running job's: new each time
        assert second.jobs["j"] == snap.build(ledger, {}, T0 + 1).jobs["j"]  # (afresh)
        ledger.release_job(ended)
        third = snap.build(ledger, {}, T0 + 2, cache)
        assert third.jobs["j"]["released"] and not first.jobs["j"]["released"]
        ledger.drop_job(ended)
        assert "j" not in snap.build(ledger, {}, T0 + 3, cache).jobs and "j" not in cache
    finally:
        store.close()


def test_over_its_byte_budget_the_event_log_trims_the_oldest_job_holding_events():
    """Trimming takes the oldest job's oldest events, skipping jobs whose rings are empty
    (found at once, not by a scan of every job), and a job whose ring was emptied and
    gets new events is trimmed after the jobs older than those events."""
    def job(jid):
        return type("Job", (), {"id": jid, "name": "n", "tenant": "", "reducers": 1,
                                "steps": [], "maps": [], "step": 0, "state": "running"})

    events = EventLog(per_job=1000, global_events=100_000, max_bytes=10 << 20)
    ids = [f"j{i}" for i in range(200)]
    for jid in ids:
        events.job_submitted(job(jid))
    with events.lock:
        for jid in ids[:5]:  # the five oldest jobs' rings: emptied by trimming
            while events._jobs[jid].events:
                events._trim_oldest()
        assert list(events._holding) == ids[5:]
        events._emit("j0", "failed", error="again")  # j0 speaks again: now the newest
        assert list(events._holding)[-1] == "j0"
        # the next event (kept twice: its job's ring and the global one) puts the log
        # over budget by one byte: one event goes
        events.max_bytes = events._bytes + 2 * _size({"error": "x"}) - 1
        events._emit("j7", "failed", error="x")
    assert [e["type"] for e in events.since(0, "j5")] == []  # the oldest holder's went
    assert [e["type"] for e in events.since(0, "j6")] == ["job-submitted"]
    assert [e["type"] for e in events.since(0, "j0")][-1] == "failed"
    assert events._bytes <= events.max_bytes
    events.job_dropped("j6")
    assert "j6" not in events._holding


def test_the_jobs_listing_reuses_ended_rows_json_and_scopes_by_client():
    """``/api/jobs`` built from a snapshot: newest first, no skipped records, an error's
    message and task only; a client's scope lists its own jobs; the JSON of a row the
    next snapshot still holds (an ended job's) is reused, a new row's is made again."""
    from pymapreduce.observe.server import jobs_listing
    from pymapreduce.observe.snapshot import Snapshot

    def row(job_id, state, error=None):
        return {"id": job_id, "state": state, "skipped_records": [{"ordinal": 1}],
                "error": error, "progress": {"map": [1, 1]}}

    failed = row("a", "failed", {"message": "boom", "task": "map-0", "traceback": "tb",
                                 "position": {"split": 0}})
    done = row("b", "succeeded")
    snap1 = Snapshot(1.0, {}, {"a": failed, "b": done, "c": row("c", "running")},
                     {"a": "key one", "b": "key two", "c": "key one"})
    body, cache = jobs_listing(snap1, "", {})
    listed = json.loads(body)
    assert listed["time"] == 1.0 and [r["id"] for r in listed["jobs"]] == ["c", "b", "a"]
    assert listed["jobs"][2] == {"id": "a", "state": "failed", "progress": {"map": [1, 1]},
                                 "error": {"message": "boom", "task": "map-0"}}
    assert all("skipped_records" not in r for r in listed["jobs"])
    mine, _ = jobs_listing(snap1, "key one", cache)
    assert [r["id"] for r in json.loads(mine)["jobs"]] == ["c", "a"]
    snap2 = Snapshot(2.0, {}, {"a": failed, "b": done, "c": row("c", "succeeded")},
                     dict(snap1.tenants))
    body2, cache2 = jobs_listing(snap2, "", cache)
    assert cache2["a"][1] is cache["a"][1] and cache2["c"][1] is not cache["c"][1]
    assert [r["state"] for r in json.loads(body2)["jobs"]] == ["succeeded"] * 2 + ["failed"]
    _, cache3 = jobs_listing(Snapshot(3.0, {}, {"b": done}, {"b": "key two"}), "", cache2)
    assert set(cache3) == {"b"}  # (forgotten jobs' JSON goes)


class LastFailsOnce(WordCount):
    """Word count whose last record fails on its first try."""

    def __init__(self, flag_path, last):
        self.flag_path, self.last = flag_path, last

    def map(self, key, line):
        if key == self.last and not os.path.exists(self.flag_path):
            open(self.flag_path, "w").close()
            raise ValueError("the last record's first try fails")
        yield from super().map(key, line)


def test_a_job_s_detail_lists_its_newest_failures_past_a_thousand_events(daemons, tmp_path):
    """A job of many tasks has more events than one read of them returns (1000): the
    job's detail must list the failures among its newest events, not only those among
    the first thousand of what its stream keeps."""
    address, http = start_broker(daemons, "--backup-after", "off")
    daemons.worker(address, 2)
    wait_workers(address, 2)
    n = 700  # (a dispatch and a commit each: 1400 events and more)
    records = [(i, f"w{i % 5}") for i in range(n)]
    with Client(address) as client:
        handle = client.submit(LastFailsOnce(str(tmp_path / "failed"), n - 1), records,
                               map_tasks=n, reducers=1)
        assert handle.result(120) == run_sequential(WordCount(), records)
        job = handle.job_id
    detail = wait_for(lambda: (d := get_json(f"{http}api/jobs/{job}"))["job"]["state"]
                      == "succeeded" and d)
    assert [f["task"] for f in detail["failures"]] == [f"map-{n - 1}"]


def test_a_job_s_page_is_there_as_soon_as_it_is_submitted(daemons):
    """The page of a job submitted since the last snapshot (a quick job may even have
    ended within the interval between snapshots) is built from a fresh one, not a 404."""
    address, http = start_broker(daemons)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        for _ in range(5):
            handle = client.submit(WordCount(), [(0, "a b")], map_tasks=1, reducers=1)
            status, body = get(f"{http}api/jobs/{handle.job_id}")
            assert status == 200, body[:300]
            handle.result(60)


def test_a_broker_no_one_asks_builds_no_snapshot_and_a_request_sees_every_job(monkeypatch):
    """The dashboard's snapshot is built when a request finds the last one stale, not by
    the loop every turn: a broker whose HTTP no one reads builds none however long it
    runs; a request right after another reuses its snapshot; a job submitted since is in
    the next answer at once."""
    import threading

    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.daemon import Broker
    from pymapreduce.observe import snapshot as snap

    builds = []
    real = snap.build

    def counted(*args, **kwargs):
        builds.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(snap, "build", counted)
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", http="127.0.0.1:0",
                                 heartbeat_interval=0.05))
    broker.bind()
    thread = threading.Thread(target=broker.serve_forever, daemon=True)
    thread.start()
    try:
        first = len(builds)  # (the one its start builds)
        time.sleep(3 * snap.PUBLISH_INTERVAL)  # the loop turns, nobody asks
        assert len(builds) == first
        assert get_json(f"{broker.http_url}api/jobs")["jobs"] == []
        assert len(builds) == first + 1  # stale (older than PUBLISH_INTERVAL): built
        get_json(f"{broker.http_url}api/cluster")
        if time.monotonic() - builds[-1] < snap.PUBLISH_INTERVAL:  # (a slow machine's
            assert len(builds) == first + 1  # second request may come after it: built)
        with Client(broker.address) as client:  # no workers: the job stays queued
            handle = client.submit(WordCount(), [(0, "a b")], map_tasks=1, reducers=1)
            listed = get_json(f"{broker.http_url}api/jobs")["jobs"]
            assert [row["id"] for row in listed] == [handle.job_id]
            handle.cancel()
    finally:
        broker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_a_flood_of_requests_builds_at_most_a_snapshot_an_interval(monkeypatch):
    """Requests build the snapshot they read, so a reader that asks as fast as it can
    while events keep happening must not make the loop build one per request: at most
    one per CHANGED_INTERVAL (each charged to the requests' share of the loop, as their
    answers are: observe/http.py)."""
    from types import SimpleNamespace

    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.daemon import Broker
    from pymapreduce.observe import server
    from pymapreduce.observe import snapshot as snap

    builds = []
    real = snap.build
    monkeypatch.setattr(snap, "build", lambda *a, **k: builds.append(1) or real(*a, **k))
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", http="127.0.0.1:0"))
    broker.bind()
    try:
        clock = [time.monotonic() + 10]
        monkeypatch.setattr(server, "time", SimpleNamespace(monotonic=lambda: clock[0]))
        events = broker.ledger.events
        first = len(builds)
        for step in range(5):
            for _ in range(200):  # a flood within one interval, an event before each
                events.seq += 1
                for path in ("/api/jobs", "/api/cluster", "/metrics"):
                    broker.http.route(path, {}, {})
            assert len(builds) == first + step + 1
            # (a hair past the interval: x + 0.1 - x is below 0.1 for many clock values)
            clock[0] += snap.CHANGED_INTERVAL * 1.001
    finally:
        broker.close()


def test_a_job_s_page_is_there_when_its_submission_released_an_older_job(monkeypatch):
    """A client at its cap of finished jobs held: each SUBMIT forgets its oldest finished
    job and adds the new one in the same handler, so the broker holds as many jobs as
    the last snapshot does. The new job's page and the listing still have it at once
    (a red team's find: the snapshot was rebuilt only when the count changed)."""
    import threading
    from types import SimpleNamespace

    from pymapreduce.broker import client_api
    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.daemon import Broker
    from pymapreduce.observe import server

    monkeypatch.setattr(client_api, "MAX_HELD_PER_CLIENT", 1)  # (the cap, made small)
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", http="127.0.0.1:0"))
    broker.bind()
    # (the requests below come within CHANGED_INTERVAL of each other, as a client's
    # SUBMIT then GET usually do: the server's clock held still makes it certain)
    clock = [time.monotonic() + 10]
    monkeypatch.setattr(server, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    thread = threading.Thread(target=broker.serve_forever, daemon=True)
    thread.start()
    url = broker.http_url
    try:
        with Client(broker.address) as client:  # no workers: jobs stay queued
            first = client.submit(WordCount(), [(0, "a b")], map_tasks=1, reducers=1)
            first.cancel()
            deadline = time.monotonic() + 30
            while get_json(f"{url}api/jobs/{first.job_id}")["job"]["state"] != "cancelled":
                assert time.monotonic() < deadline
                clock[0] += 1
                time.sleep(0.05)
            second = client.submit(WordCount(), [(0, "c d")], map_tasks=1, reducers=1)
            assert first.job_id not in broker.ledger.jobs  # forgotten to make room
            status, body = get(f"{url}api/jobs/{second.job_id}")
            assert status == 200, body[:300]
            assert [r["id"] for r in get_json(f"{url}api/jobs")["jobs"]] == [second.job_id]
            second.cancel()
    finally:
        broker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_a_snapshot_that_cannot_be_built_is_a_logged_500_and_the_next_request_retries(
        monkeypatch):
    """A fault while building a snapshot answers 500 (not the 404 a KeyError of the build
    would read as), leaves the loop serving, and the next request builds again."""
    import threading

    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.daemon import Broker
    from pymapreduce.observe import snapshot as snap

    real = snap.build
    faults = [1]

    def build(*args, **kwargs):
        if faults:
            faults.pop()
            raise KeyError("a fault inside the build")
        return real(*args, **kwargs)

    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:0", http="127.0.0.1:0"))
    broker.bind()
    thread = threading.Thread(target=broker.serve_forever, daemon=True)
    thread.start()
    try:
        time.sleep(snap.PUBLISH_INTERVAL)  # (the start's snapshot is stale by now)
        monkeypatch.setattr(snap, "build", build)
        status, body = get(f"{broker.http_url}api/jobs")
        assert status == 500, body[:300]
        assert get_json(f"{broker.http_url}api/jobs")["jobs"] == []
    finally:
        broker.stop()
        thread.join(10)
    assert not thread.is_alive()
