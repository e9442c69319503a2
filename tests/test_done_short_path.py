"""A DONE's usual reports are committed on a short path (broker/commits.py: _done_usual);
whatever a worker sends, the ledger must end in the state the long path (each report
checked and committed by Ledger.done and _commit) leaves it in. Two ledgers, one with the
short path turned off, are given the same attempts (their identifiers made the same) and
the same DONE messages, mixing usual reports with every kind a hostile or confused worker
could send; every observable fact is compared after each message: the tasks and their
attempts, the jobs' counts, what the store holds, what the outbox says, each worker's held
attempts, and the event log's rows, events and counters."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymapreduce.broker import tasks as tasks_module
from pymapreduce.broker.config import BrokerConfig
from pymapreduce.broker.ledger import Ledger
from pymapreduce.broker.sink import Store
from pymapreduce.broker.tasks import JobState
from pymapreduce.observe import events as events_module
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.records import EMPTY_COLUMNS, pack

from .test_ledger import T0, tasks_of

# what each report of a DONE may be: the usual one, or one of the unusual
SHAPES = ("usual", "usual", "usual", "empty", "stale", "unheld", "dup", "no-secs",
          "bool-secs", "negative", "extra", "log", "counters", "two-blobs", "no-blob",
          "minus-one", "bad-kind", "bad-index", "not-a-list", "short", "str-stats")
CLOCK = ("start", "run_end", "end", "t", "time")  # (an attempt row's wall-clock readings)


def _report(shape: str, key: tuple, blob: bytes) -> tuple[object, list]:
    """(the report, its blobs) of ``shape`` for the attempt ``key``."""
    job, kind, index, attempt = key
    stats = {"records": 1, "bytes": 7, "secs": 0.0001}
    if shape == "empty":
        return [*key, stats, 1], [EMPTY_COLUMNS]
    if shape == "stale":
        return [job, kind, index, attempt ^ (1 << 20), stats, 1], [blob]
    if shape == "unheld":
        return [job, kind, index + 1000, attempt, stats, 1], [blob]
    if shape == "no-secs":
        return [*key, {"records": 1, "bytes": 7}, 1], [blob]
    if shape == "bool-secs":
        return [*key, {"records": 1, "bytes": 7, "secs": True}, 1], [blob]
    if shape == "negative":
        return [*key, {"records": -1, "bytes": 7, "secs": 0.0001}, 1], [blob]
    if shape == "extra":
        return [*key, {"records": 1, "bytes": 7, "secs": 0.1, "x": 1}, 1], [blob]
    if shape == "log":
        return [*key, {"records": 1, "bytes": 7, "log": "printed"}, 1], [blob]
    if shape == "counters":
        return [*key, {"records": 1, "bytes": 7, "counters": {"c": 2}}, 1], [blob]
    if shape == "two-blobs":
        return [*key, stats, 2], [blob, blob]
    if shape == "no-blob":
        return [*key, stats, 0], []
    if shape == "minus-one":  # (its outputs said to be on the data plane)
        return [*key, stats, -1], []
    if shape == "bad-kind":
        return [job, "mapp", index, attempt, stats, 1], [blob]
    if shape == "bad-index":
        return [job, kind, str(index), attempt, stats, 1], [blob]
    if shape == "not-a-list":
        return (job, kind, index, attempt, stats, 1), [blob]
    if shape == "short":
        return [job, kind, index, attempt, stats], [blob]
    if shape == "str-stats":
        return [*key, "stats", 1], [blob]
    return [*key, dict(stats), 1], [blob]  # usual (and "dup": sent twice)


def _facts(ledger: Ledger, routes: list) -> dict:
    ledger.events.flush()
    out: dict = {"jobs": {}, "outbox": [], "workers": {}, "events": {}}
    for job in ledger.jobs.values():
        out["jobs"][job.id] = (
            job.state, job.phase, job.step, job.done_maps, job.done_reduces, job.records,
            job.bytes_in, dict(job.counters), job.task_secs, job.active,
            [(t.state, t.attempt, dict(t.running), t.failures)
             for t in [*job.maps, *job.reduces]],
            [[str(k), bytes(ledger.store.get(k))] for k in sorted(
                ledger.store._by_job.get(job.id, ()), key=repr)])
        rows = ledger.events.attempts(job.id)
        out["events"][job.id] = [{k: v for k, v in r.items() if k not in CLOCK} for r in rows]
    out["stream"] = [{k: v for k, v in e.items() if k not in CLOCK
                      and not (k == "secs" and e["type"].startswith("job-"))}  # (its age)
                     for e in ledger.events.since(0, limit=10**6)]
    out["counts"] = dict(ledger.events.counts)
    for item in ledger.outbox:
        msg = getattr(item, "msg", None)
        out["outbox"].append((type(item).__name__, getattr(item, "route", None),
                              msg.command if msg is not None else None,
                              repr(msg.body) if msg is not None
                              else re.sub(r"0x[0-9a-f]+", "", repr(item))))
    ledger.outbox.clear()
    for route in routes:
        w = ledger.workers.get(route)
        out["workers"][route] = None if w is None else (sorted(w.running), w.done)
    return out


def _run(short: bool, map_only: bool, shapes: list[str], reducers: int) -> list[dict]:
    counter = itertools.count(1)
    saved = tasks_module._random_bits
    tasks_module._random_bits = lambda: next(counter)  # the same identifiers in both runs
    store = Store(1 << 30)
    try:
        ledger = Ledger(BrokerConfig(bind="tcp://127.0.0.1:0", heartbeat_interval=0.2,
                                     liveness=1.0), store)
        if not short:
            ledger._done_usual = lambda worker, results, blobs: (0, 0)
        n = len(shapes)
        splits = [["mem", pack([[i, f"w{i}"]])] for i in range(n)]
        job = JobState("j", "j", b"code", splits, reducers, map_only, b"client", T0,
                       options={"reducers": reducers, "map_only": map_only})
        ledger.jobs[job.id] = job
        ledger.scheduler.add(job)
        ledger.events.job_submitted(job)
        routes = [b"A", b"B"]
        workers = {r: ledger.register(r, "", {"credit": 64, "name": r.decode()}, T0)
                   for r in routes}
        facts = []
        for step in range(60):  # until nothing more is handed out
            ledger.dispatch(T0 + 0.01 * step)
            held = tasks_of(ledger)
            if not held:
                break
            for route, keys in held.items():
                results, blobs = [], []
                for key, shape in zip(keys, itertools.cycle(shapes)):
                    blob = pack([[f"k{key[2]}"], [[key[3] & 0xFFF]]])
                    if key[1] == "map" and not map_only:  # one output per partition
                        blob_list = [blob] * reducers
                        results.append([*key, {"records": 1, "bytes": 7, "secs": 0.0001},
                                        reducers])
                        blobs.extend(blob_list)
                        continue
                    item, its = _report(shape, key, blob)
                    results.append(item)
                    blobs.extend(its)
                    if shape == "dup":
                        results.append(list(item))
                        blobs.extend(its)
                try:
                    ledger.done(workers[route], results, tuple(blobs))
                except ValueError as exc:
                    facts.append({"raised": str(exc)})
                facts.append(_facts(ledger, routes))
        return facts
    finally:
        tasks_module._random_bits = saved
        store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=st.lists(st.sampled_from(SHAPES), min_size=1, max_size=12),
       map_only=st.booleans(), reducers=st.integers(1, 3))
def test_the_short_path_leaves_the_ledger_as_the_long_path_does(shapes, map_only, reducers):
    assert _run(True, map_only, shapes, reducers) == _run(False, map_only, shapes, reducers)
    # (and so when the log reads the short path's runs of reports in Python, as without
    # the C loops)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(events_module, "pack_notes", None)
        assert _run(True, map_only, shapes, reducers) == _run(False, map_only, shapes,
                                                               reducers)


@pytest.mark.parametrize("map_only", [True, False])
def test_usual_reports_are_committed_by_the_short_path(monkeypatch, map_only):
    """(The comparison above would pass if the short path took nothing: here it must take
    every usual report of a map-only job's maps and of a job's reduces.)"""
    taken = []
    original = Ledger._done_usual

    def counting(self, worker, results, blobs):
        n, pos = original(self, worker, results, blobs)
        taken.append((n, len(results)))
        return n, pos

    monkeypatch.setattr(Ledger, "_done_usual", counting)
    facts = _run(True, map_only, ["usual"] * 6, 2)
    done = [f for f in facts if "jobs" in f][-1]["jobs"]["j"]
    assert done[0] == P.JOB_SUCCEEDED
    usual = [(n, total) for n, total in taken if n]
    assert usual and all(n == total for n, total in usual)
    assert sum(n for n, _ in usual) == (6 if map_only else 2)  # (maps have partitions)
