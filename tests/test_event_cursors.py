"""A follower of the event log resumes from the last event it was served: across batches
that a cursor, a reply's limit or the log's cap cut, it gets every event the log holds
after its cursor once, and is told ``skipped`` only when the log kept fewer than there
were. A client key reads its own jobs' events, however busy other clients keep the
broker (over EVENTS and over HTTP with a client token)."""

from __future__ import annotations

import io
import json
import random

from pymapreduce import Client
from pymapreduce.observe import api as observe_api
from pymapreduce.observe import scopes
from pymapreduce.observe.cli import follow, load_token
from pymapreduce.observe.events import EventLog
from pymapreduce.patterns import security

from .test_hostile import Peer, ctx, start_broker, stop_broker, submit  # noqa: F401
from .test_observe import get_json


class Job:
    reducers, steps, step, state, submitted, error, phase = 1, [], 0, "running", 0.0, None, "map"

    def __init__(self, job_id: str, tenant: str = "") -> None:
        self.id = self.name = job_id
        self.tenant = tenant
        self.maps: list = []
        self.reduces: list = []


class Task:
    def __init__(self, job: Job, index: int) -> None:
        self.job, self.kind, self.index, self.running = job, "map", index, {}


def _key(event: dict) -> tuple:
    return event["seq"], event["type"], event.get("job"), event.get("index")


def test_a_follower_with_a_limit_gets_each_held_event_once_across_cut_batches():
    """The log driven as the broker loop drives it (a batch of attempts per message, the
    turn's commits flushed together, a phase now and then), two jobs, batches of 1 to 40
    events; a follower of each stream reads with a limit that cuts batches and resumes
    from the last event served, sometimes after falling past the cap. Against a log that
    keeps everything: within the cap it is served exactly the next events after its
    cursor and not told ``skipped`` (a batch its cursor is inside counts only its events
    past the cursor); past the cap it is told so and served the oldest of the newest
    ``cap`` events at most; never an event twice."""
    cap = 60
    # (attempt tables big enough that no row, hence no event of one, goes: the cap alone
    # bounds what is read)
    log = EventLog(per_job=cap, global_events=cap, attempts_per_job=10**5, max_attempts=10**6)
    whole = EventLog(per_job=10**6, global_events=10**6, attempts_per_job=10**5,
                     max_attempts=10**6)  # keeps every event
    jobs = [Job("j"), Job("k")]
    for events in (log, whole):
        for job in jobs:
            events.job_submitted(job)
    rng = random.Random(7)
    cursors = {"j": 0, "k": 0, None: 0}
    running: list = []
    attempt = 0
    exact = cut = told = 0
    for turn in range(400):
        behind = rng.random() < 0.05  # now and then a follower waits through a flood
        for _ in range(rng.randint(1, 12 if behind else 3)):
            job = rng.choice(jobs)
            n = rng.randint(1, 30)
            tasks = [Task(job, i) for i in range(n)]
            ids = list(range(attempt + 1, attempt + n + 1))
            attempt += n
            for events in (log, whole):
                events.dispatched(job, tasks, ids, "w")
            running += [(job.id, i, a) for i, a in enumerate(ids)]
        rng.shuffle(running)  # (a turn's commits: up to 40 too, not to make one batch
        k = rng.randint(min(len(running), 20), min(len(running), 40))  # past the cap)
        commit, running = running[:k], running[k:]
        for events in (log, whole):
            for job_id, index, a in commit:
                events.noted.extend((job_id, "map", index, a, "w", 0.1, 1, 2, 3))
            if turn % 17 == 0:
                events.phase(jobs[0])
            events.flush()
        for stream in cursors:
            cursor = cursors[stream]
            limit = rng.randint(1, 50)
            got, gap = log.since_gap(cursor, stream, limit)
            after = [_key(e) for e in whole.since(cursor, stream, limit=10**9)]
            served = [_key(e) for e in got]
            assert all(s[0] > cursor for s in served)  # nothing served twice
            if len(after) <= cap:
                assert not gap, (stream, cursor, len(after))
                assert served == after[:limit]
                exact += 1
                cut += limit < len(after)
            else:
                assert gap and served, (stream, cursor, len(after))
                start = after.index(served[0])
                assert served == after[start:start + limit]
                assert cap - 40 < len(after) - start <= cap  # (whole batches)
                told += 1
            if got:
                cursors[stream] = got[-1]["seq"]
    assert exact > 500 and told > 20 and cut > 300, (exact, told, cut)


def _flooded_keys(tmp_path) -> str:
    keys = security.cluster_keys(str(tmp_path / "keys"))
    security.generate(keys, "other")
    security.authorize(keys, security.CLIENT, f"{keys}/other.key")
    return keys


def test_a_client_key_follows_its_own_events_on_a_broker_busy_with_others(
        ctx, tmp_path, monkeypatch):  # noqa: F811
    """A real broker with keys, another client's events filling its global stream many
    times over (its cap made 20 events here; 10,000 by default): ``pymapreduce events``
    with the client's key is served each of its own jobs' events once, in order, across
    replies of a few events each, never told ``skipped`` about other clients' events, and
    resumes from the cursor it was given."""
    monkeypatch.setattr(observe_api, "MAX_EVENTS_REPLY", 4)
    keys = _flooded_keys(tmp_path)
    b = start_broker(ctx, keys_dir=keys, http="127.0.0.1:0")
    b.ledger.events.global_events = 20
    try:
        mine, theirs = Peer(ctx, b.address, keys, "client"), Peer(ctx, b.address, keys, "other")

        def flood(first: int, n: int) -> list[str]:
            own = []
            for i in range(first, first + n):
                for j in range(5):
                    submit(theirs, f"o{i}-{j}", [(0, "x")])
                submit(mine, f"c{i}", [(0, "x")])
                own.append(f"c{i}")
            return own

        own = flood(0, 10)
        with Client(b.address, keys=keys, key_name="client") as client:
            out, warned = io.StringIO(), []
            cursor = follow(client, None, 0, out, keep_going=False, warn=warned.append)
            seen = [json.loads(line) for line in out.getvalue().splitlines()]
            assert [e["job"] for e in seen if e["type"] == "job-submitted"] == own
            assert {e["job"] for e in seen} == set(own) and not warned
            seqs = [e["seq"] for e in seen]
            assert seqs == sorted(set(seqs)) and cursor == seqs[-1]
            more = flood(10, 3)
            out = io.StringIO()
            assert follow(client, None, cursor, out, keep_going=False, warn=warned.append)
            again = [json.loads(line) for line in out.getvalue().splitlines()]
            assert [e["job"] for e in again if e["type"] == "job-submitted"] == more
            assert all(e["seq"] > cursor for e in again) and not warned
        # over HTTP, the client's token: its own events too
        token = scopes.client_token(load_token(f"{keys}/http.token", create=False),
                                    scopes.client_public_key("client", keys))
        served = get_json(b.http.url + "api/events?format=json", token)["events"]
        assert [e["job"] for e in served if e["type"] == "job-submitted"] == own + more
    finally:
        stop_broker(b)


def _tenants_log(**bounds: int) -> EventLog:
    """40 jobs of 100 one-attempt messages each, each attempt committed in a turn of its
    own; one job in eight is ``key mine``'s (the last of them the fifth from the end)."""
    log = EventLog(**bounds)
    attempt = 0
    for j in range(40):
        job = Job(f"j{j}", "key mine" if j % 8 == 3 else "key theirs")
        log.job_submitted(job)
        for i in range(100):
            attempt += 1
            log.dispatched(job, [Task(job, i)], [attempt], "w")
            log.noted.extend((job.id, "map", i, attempt, "w", 0.1, 1, 2, 3))
            log.flush()
    return log


def test_a_client_s_read_goes_over_its_own_jobs_newest_events_only(monkeypatch):
    """Reading one client's events looks at its own jobs' rings and tables, merged, to
    the cap: about the events it may serve, not the other clients' (however many)."""
    from pymapreduce.observe import reading

    log = _tenants_log(per_job=30, global_events=50)
    whole = _tenants_log(per_job=10**6, global_events=10**6)
    own = [_key(e) for e in whole.since(0, limit=10**6) if e.get("job") in
           {f"j{j}" for j in range(3, 40, 8)}]
    built: list = []
    for name in ("_sent_entry", "_done_entry"):
        real = getattr(reading, name)
        monkeypatch.setattr(reading, name,
                            lambda *a, _real=real: built.append(1) or _real(*a))
    got, gap = log.since_gap(0, limit=10**6, tenant="key mine")
    assert gap and [_key(e) for e in got] == own[-50:]  # the newest 50 of its own
    assert len(built) <= 50 + 2
    got, gap = log.since_gap(own[-70][0], limit=10, tenant="key mine")  # one behind
    assert gap and [_key(e) for e in got] == own[-50:-40]
    got, gap = log.since_gap(own[-40][0], limit=10**6, tenant="key mine")
    assert not gap and [_key(e) for e in got] == own[-39:]
    assert log.since_gap(0, tenant="key nobody") == ([], False)


def test_a_reader_is_told_of_events_the_rings_no_longer_hold():
    """The infrequent events (jobs submitted, phases...) are kept in rings bounded in
    events and bytes: a reader whose cursor is before an event a ring dropped is told
    ``skipped`` (of all jobs, one job, or one client's), one after it is not."""
    log = EventLog(per_job=5, global_events=10)
    jobs = [Job(f"j{i}", "key mine" if i % 2 else "key theirs") for i in range(12)]
    for job in jobs:
        log.job_submitted(job)  # 1..12
    for _ in range(6):
        log.phase(jobs[1])  # 13..18: the global ring keeps 9..18, j1's ring 14..18

    def read(cursor: int, job: str | None = None, tenant: str | None = None) -> tuple:
        got, gap = log.since_gap(cursor, job, tenant=tenant)
        return [e["seq"] for e in got], gap

    assert read(0) == (list(range(9, 19)), True)
    assert read(8) == (list(range(9, 19)), False)
    assert read(0, "j1") == (list(range(14, 19)), True)
    assert read(13, "j1") == (list(range(14, 19)), False)
    assert read(0, "j3") == ([4], False)
    assert read(0, tenant="key mine") == ([4, 6, 8, 10, 12, *range(14, 19)], True)
    assert read(13, tenant="key mine") == (list(range(14, 19)), False)
    assert read(0, tenant="key theirs") == ([1, 3, 5, 7, 9, 11], False)
    # over the byte budget, the jobs' rings lose their oldest first (the global one still
    # holds them all here)
    log = EventLog(max_bytes=2500)
    for job in jobs:
        log.job_submitted(job)
    assert log.since_gap(0, "j0") == ([], True) and not log.since_gap(1, "j0")[1]
    assert [e["seq"] for e in log.since_gap(0, "j11")[0]] == [12]
    assert not log.since_gap(0, "j11")[1] and len(log.since_gap(0)[0]) == 12
    assert not log.since_gap(0)[1] and log.since_gap(0, tenant="key mine")[1]


def test_a_reader_is_told_of_events_the_attempt_tables_dropped():
    """Attempts dispatched and committed are read from the jobs' attempt tables, which
    are bounded too (rows per job, rows of all jobs: an ended job's table goes at once):
    a reader whose cursor is before rows a table dropped is told ``skipped`` (of all
    jobs, one job, or one client's), however few events are past its cursor; one whose
    cursor is past them is not."""
    log = EventLog(per_job=1000, global_events=1000, attempts_per_job=1000, max_attempts=100)
    done, other = Job("a", "key mine"), Job("b", "key theirs")
    log.job_submitted(done)
    log.job_submitted(other)  # 1, 2
    # 3 (started), 4..63 dispatched, 64..123 committed
    log.dispatched(done, [Task(done, i) for i in range(60)], list(range(1, 61)), "w")
    for i in range(60):
        log.done(("a", "map", i, i + 1), {"records": 1, "bytes": 1}, 0.1, [b"x"], "w")
    log.flush()
    done.state = "succeeded"
    log.job_ended(done, 1.0)  # 124
    assert len(log.since_gap(0, tenant="key mine")[0]) == 123
    # 110 rows of all jobs, over the 100 kept: the ended job's table goes
    log.dispatched(other, [Task(other, i) for i in range(50)], list(range(61, 111)), "w")
    for mode in ({}, {"job": "a"}, {"tenant": "key mine"}):
        got, gap = log.since_gap(0, **mode)
        assert gap, mode  # (its 120 attempts' events are gone)
        assert log.since_gap(122, **mode)[1], mode
        assert not log.since_gap(123, **mode)[1], mode
    assert not log.since_gap(0, "b")[1] and not log.since_gap(0, tenant="key theirs")[1]
    # a running job's table past its rows' cap loses its oldest rows (cut in a batch too)
    log = EventLog(per_job=1000, global_events=1000, attempts_per_job=16, max_attempts=10**6)
    job = Job("r", "key mine")
    log.job_submitted(job)  # 1, and 2: started
    for n in range(3):  # 3..12, 13..22, 23..32: 30 rows, over 16 + 2, cut to 16
        first = 3 + 10 * n
        log.dispatched(job, [Task(job, i) for i in range(first, first + 10)],
                       list(range(first, first + 10)), "w")
    got, gap = log.since_gap(0)
    assert [e["seq"] for e in got] == [1, 2, *range(17, 33)] and gap
    for mode in ({}, {"job": "r"}, {"tenant": "key mine"}):
        assert log.since_gap(0, **mode)[1] and log.since_gap(15, **mode)[1], mode
        assert not log.since_gap(16, **mode)[1], mode
    # a job the broker forgot: its client's reads no longer find its events
    log.dispatched(job, [Task(job, 0)], [99], "w")  # 33
    job.state = "succeeded"
    log.job_ended(job, 1.0)  # 34
    log.job_submitted(Job("s", "key mine"))  # 35
    log.job_dropped("r")
    assert log.since_gap(33, tenant="key mine")[1]
    assert log.since_gap(34, tenant="key mine") == (log.since_gap(34, "s")[0], False)
    assert not log.since_gap(0, tenant="key theirs")[1]
