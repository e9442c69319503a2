"""The task timeline from when an attempt began to run: the run time its worker reports
(DONE's ``secs``, FAILED's ``secs``), placed on the broker's clock and clamped."""

from __future__ import annotations

import os
import time

import pytest

from pymapreduce import Client, Job
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
