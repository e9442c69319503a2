"""The task timeline from when an attempt began to run: the run time its worker reports
(DONE's ``secs``, FAILED's ``secs``), placed on the broker's clock and clamped."""

from __future__ import annotations

import os
import time

import pytest

from pymapreduce import Client, Job
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.wire import AttemptKey, Failure

from .test_ledger import T0, add_job, map_output, report, tasks_of
from .test_observe import get_json, start_broker, wait_for

PAUSE = 0.05  # seconds between handing an attempt out and its report (a lower bound)



def _one_attempt(ledger, job_id: str):
    add_job(ledger, job_id, maps=1)
    ledger.events.job_submitted(ledger.jobs[job_id])
    ledger.register(job_id.encode(), "", {"credit": 1, "name": f"h:{job_id}"}, T0)
    ledger.dispatch(T0)
    route, key = next((r, k) for r, keys in tasks_of(ledger).items() for k in keys
                      if k.job == job_id and k.kind == "map")
    worker = ledger.workers[route]
    time.sleep(PAUSE)  # (the event log's clock is the wall clock)
    return worker, key


def _row(ledger, job_id: str) -> dict:
    (row,) = [r for r in ledger.events.timeline(job_id) if r["kind"] == "map"]
    return row


def test_a_reported_run_time_places_the_start_and_a_hostile_one_is_clamped(ledger):
    # an honest DONE: it ran its last 0.01 s
    worker, key = _one_attempt(ledger, "ok")
    ledger.done(worker, [report(key, {"records": 1, "secs": 0.01})], tuple(map_output()))
    row = _row(ledger, "ok")
    assert row["outcome"] == "done" and row["start"] < row["run"] < row["end"]
    assert row["end"] - row["run"] == pytest.approx(0.01, abs=1e-5)
    # a DONE claiming it ran longer than it was out: from the hand-out, no earlier
    worker, key = _one_attempt(ledger, "long")
    ledger.done(worker, [report(key, {"records": 1, "secs": 1e8})], tuple(map_output()))
    row = _row(ledger, "long")
    assert row["run"] == pytest.approx(row["start"], abs=1e-5)
    # FAILED with a negative run time: nothing ran (no time before its end), and with a
    # run time longer than it was out: from the hand-out
    for job_id, secs, where in (("neg", -5.0, "end"), ("huge", 1e12, "start")):
        worker, key = _one_attempt(ledger, job_id)
        ledger.failed(worker, {**key._asdict(), "error": "E", "secs": secs})
        row = _row(ledger, job_id)
        assert row["outcome"] == "failed" and row["run"] == pytest.approx(row[where], abs=1e-5)
    # FAILED with a run time that is no number (or none: an older worker): not known
    for job_id, secs in (("nan", float("nan")), ("text", "1.0"), ("none", None)):
        worker, key = _one_attempt(ledger, job_id)
        body = {**key._asdict(), "error": "E"}
        if secs is not None:
            body["secs"] = secs
        ledger.failed(worker, body)
        assert _row(ledger, job_id)["run"] is None
    # an honest FAILED
    worker, key = _one_attempt(ledger, "failed")
    ledger.failed(worker, {**key._asdict(), "error": "E", "secs": 0.02})
    row = _row(ledger, "failed")
    assert row["end"] - row["run"] == pytest.approx(0.02, abs=1e-5)


def _abandon(ledger, job) -> None:
    """The job is cancelled: its attempts still out are abandoned where they run."""
    job.finish(P.JOB_CANCELLED, {"message": "cancelled"})
    ledger.end_job(job)


def test_an_abandoned_attempt_without_a_report_is_placed_from_its_hand_out_and_says_so(
        ledger):
    """A stopped attempt is not reported: nothing says whether it waited in its worker's
    queue or ran, so the timeline places it from its hand-out and says what placed it."""
    worker, key = _one_attempt(ledger, "cancelled")
    row = _row(ledger, "cancelled")
    assert row["outcome"] == "running" and row["run"] is None and row["run_from"] is None
    _abandon(ledger, ledger.jobs["cancelled"])
    row = _row(ledger, "cancelled")
    assert row["outcome"] == "abandoned" and row["note"] == "job cancelled"
    assert row["run"] is None and row["run_from"] == "hand-out"
    assert row["start"] < row["end"]
    # a reported one says so; the plain attempt table has neither field
    worker, key = _one_attempt(ledger, "reported")
    ledger.done(worker, [report(key, {"records": 1, "secs": 0.01})], tuple(map_output()))
    assert _row(ledger, "reported")["run_from"] == "report"
    assert not {"run", "run_from"} & set(ledger.events.attempts("reported")[0])


def test_a_backup_race_s_loser_is_abandoned_and_placed_from_its_hand_out(ledger):
    job = add_job(ledger, "race", maps=2)
    ledger.events.job_submitted(job)
    a = ledger.register(b"A", "", {"credit": 1, "name": "A"}, T0)
    b = ledger.register(b"B", "", {"credit": 1, "name": "B"}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    [key_a], [key_b] = held[b"A"], held[b"B"]
    ledger.done(b, [report(key_b, {"records": 1, "secs": 0.01})], tuple(map_output()))
    job.maps[key_a.index].started = T0 - 10.0  # A straggles: B gets a backup of it
    ledger.dispatch(T0 + 10.0)
    [backup] = tasks_of(ledger)[b"B"]
    time.sleep(PAUSE)
    ledger.done(b, [report(backup, {"records": 1, "secs": 0.01})], tuple(map_output()))
    assert not a.running
    rows = {(r["index"], r["attempt"]): r for r in ledger.events.timeline("race")}
    lost = rows[(key_a.index, key_a.attempt & 0xFFF)]
    won = rows[(backup.index, backup.attempt & 0xFFF)]
    assert lost["outcome"] == "abandoned" and lost["worker"] == "A"
    assert lost["run"] is None and lost["run_from"] == "hand-out"
    assert won["outcome"] == "done" and won["backup"] and won["run_from"] == "report"


def _heard_between(row: dict, before: float, after: float, secs: float) -> bool:
    """``row`` began to run ``secs`` before its report was heard, between ``before`` and
    ``after``, clamped to between its hand-out and its end (when it was abandoned)."""
    def clamp(t: float) -> float:
        return min(row["end"], max(row["start"], t))
    return clamp(before - secs) - 1e-5 <= row["run"] <= clamp(after - secs) + 1e-5


def test_a_report_that_crossed_the_abandon_places_the_abandoned_attempt(ledger):
    """The attempt ended on its worker as the broker gave it up: its DONE is no longer
    counted, but its run time places the abandoned row, from when the report came. A
    later report does not move it; one for an attempt the log has no abandoned row of
    adds nothing."""
    worker, key = _one_attempt(ledger, "crossed")
    _abandon(ledger, ledger.jobs["crossed"])
    before = time.time()
    ledger.done(worker, [report(key, {"records": 1, "secs": 0.03})], tuple(map_output()))
    after = time.time()
    row = _row(ledger, "crossed")
    assert row["outcome"] == "abandoned" and row["run_from"] == "report"
    assert _heard_between(row, before, after, 0.03)
    ledger.failed(worker, {**key._asdict(), "error": "E", "secs": 10.0})  # later: ignored
    assert _row(ledger, "crossed")["run"] == row["run"]
    closed = ledger.events._jobs["crossed"].closed
    rows = len(closed)
    for attempt in (key.attempt ^ (1 << 40), key.attempt + 1):
        ledger.done(worker, [report(key._replace(attempt=attempt), {"secs": 1.0})],
                    tuple(map_output()))
    assert len(closed) == rows and len(ledger.events.timeline("crossed")) == 1


def test_a_failed_report_that_crossed_the_abandon_places_it_if_its_run_time_is_a_number(
        ledger):
    worker, key = _one_attempt(ledger, "crossed")
    _abandon(ledger, ledger.jobs["crossed"])
    for hostile in (float("nan"), "0.02", None, float("inf")):
        body = {**key._asdict(), "error": "E"}
        if hostile is not None:
            body["secs"] = hostile
        ledger.failed(worker, body)
        assert _row(ledger, "crossed")["run_from"] == "hand-out"
    before = time.time()
    ledger.failed(worker, {**key._asdict(), "error": "E", "secs": 0.02})
    after = time.time()
    row = _row(ledger, "crossed")
    assert row["outcome"] == "abandoned" and row["run_from"] == "report"
    assert _heard_between(row, before, after, 0.02)


def test_failure_carries_its_run_time_and_stays_readable_both_ways():
    key = AttemptKey("j", "map", 0, 1)
    body = Failure(key, "E", secs=1.5).body()
    assert body["secs"] == 1.5 and Failure.from_body(body).secs == 1.5
    old = Failure(key, "E").body()  # what an older worker sends
    assert "secs" not in old and Failure.from_body(old).secs is None


class Sleepy(Job):
    """Every record takes a while; record 2's first try fails after it slept (the file
    at ``mark`` says a first try happened)."""

    def __init__(self, mark: str, pause: float) -> None:
        self.mark, self.pause = mark, pause

    def map(self, key, value):
        time.sleep(self.pause)
        if key == 2 and not os.path.exists(self.mark):
            open(self.mark, "w").close()
            raise ValueError("first try of record 2 fails")
        yield value, 1

    def reduce(self, key, values):
        return sum(values)


def test_tasks_queued_on_a_worker_show_their_wait_and_their_run_apart(daemons, tmp_path):
    """One worker process holds several attempts at once (its credit): the dashboard's
    bars start when each was handed out; the timeline says when each began to run."""
    address, url = start_broker(daemons)
    daemons.worker(address, 1)
    pause = 0.3
    with Client(address) as client:
        handle = client.submit(Sleepy(str(tmp_path / "mark"), pause),
                               [(i, f"w{i % 2}") for i in range(5)], map_tasks=5,
                               reducers=1)
        assert handle.result(60) == {"w0": 3, "w1": 2}
    wait_for(lambda: get_json(url + f"api/jobs/{handle.job_id}")["job"]["state"]
             == "succeeded")
    detail = get_json(url + f"api/jobs/{handle.job_id}")
    maps = [a for a in detail["attempts"] if a["kind"] == "map"]
    ran = {a["task"]: a["run"] for a in maps if a["outcome"] == "done"}
    assert len(ran) == 5 and all(v is not None for v in ran.values())
    for a in maps:
        assert a["start"] <= a["run"] <= a["end"], a
        assert a["end"] - a["run"] >= pause - 1e-3  # what the worker measured: its sleep
    failed = [a for a in maps if a["outcome"] == "failed"]
    assert len(failed) == 1 and failed[0]["run"] is not None  # FAILED said how long
    # the process ran one task at a time: those handed out with the first waited for it
    waits = sorted(a["run"] - a["start"] for a in maps)
    assert waits[-1] >= pause / 2, waits
    # the slowest tasks count the run, not the wait in the worker's queue
    for s in detail["slowest"]:
        assert s["secs"] < pause * 3 and s["queued"] is not None


def test_run_start_is_clamped_to_between_hand_out_and_end():
    from pymapreduce.observe.timeline import run_start

    assert run_start(10.0, 14.0, 1.5) == 12.5
    assert run_start(10.0, 14.0, -3) == 14.0  # negative: it ran no time
    assert run_start(10.0, 14.0, 1e12) == 10.0  # longer than it was out: all of it
    for secs in (float("nan"), "2", None, True):
        assert run_start(10.0, 14.0, secs) is None
    assert run_start(10.0, None, 1.0) is None  # still running


def test_only_the_worker_an_abandoned_attempt_was_handed_to_gives_it_a_run_time(ledger):
    """A report that crossed the ABANDON counts for the timeline only from the worker the
    attempt was handed to: another worker naming it (its whole identifier) adds nothing."""
    worker, key = _one_attempt(ledger, "crossed")
    ledger.register(b"other", "", {"credit": 1, "name": "h:other"}, T0)
    other = ledger.workers[b"other"]
    _abandon(ledger, ledger.jobs["crossed"])
    ledger.done(other, [report(key, {"records": 1, "secs": 0.03})], tuple(map_output()))
    ledger.failed(other, {**key._asdict(), "error": "E", "secs": 0.03})
    assert _row(ledger, "crossed")["run_from"] == "hand-out"
    ledger.failed(worker, {**key._asdict(), "error": "E", "secs": 0.02})
    assert _row(ledger, "crossed")["run_from"] == "report"


def test_attempts_one_report_ended_are_placed_one_after_the_other():
    """A worker reports the attempts it ran in a row together: they share one end, and
    ran in the order they were handed out; the next report's begin after them."""
    from pymapreduce.observe.timeline import place

    def row(index, start, end, secs, worker="w1", outcome="done"):
        return ("map", index, 1, worker, False, 1, start, end, outcome, "", secs)

    placed = place([row(0, 0.0, 10.0, 1.0), row(1, 0.0, 10.0, 2.0), row(2, 0.5, 10.0, 3.0),
                    row(3, 1.0, 12.0, 1.5), row(4, 0.0, 10.0, 4.0, worker="w2"),
                    row(5, 2.0, None, None, outcome="running")])
    by = {a["index"]: a for a in placed}
    assert (by[3]["run"], by[3]["run_end"]) == (10.5, 12.0)  # the next report's, after
    assert (by[2]["run"], by[2]["run_end"]) == (7.0, 10.0)
    assert (by[1]["run"], by[1]["run_end"]) == (5.0, 7.0)
    assert (by[0]["run"], by[0]["run_end"]) == (4.0, 5.0)
    assert (by[4]["run"], by[4]["run_end"]) == (6.0, 10.0)  # another worker: its own
    assert by[5]["run"] is None and by[5]["run_end"] is None
    # clamped to the hand-out: a worker that says it ran longer than it could
    early = {a["index"]: a for a in place([row(0, 3.0, 10.0, 1.0), row(1, 3.0, 10.0, 9.0)])}
    assert early[1]["run"] == 3.0 and early[0]["run"] == early[0]["run_end"] == 3.0
