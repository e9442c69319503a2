"""The event log's commit batches packed in C (``speedups.pack_notes``, observe/events.py):
the same rows, sums and reads as the notes kept as they were, and nothing odd packed."""

from __future__ import annotations

import gc
import itertools
import sys
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymapreduce import speedups
from pymapreduce.observe import events as events_module
from pymapreduce.observe.events import EventLog
from pymapreduce.observe.reading import NOTE, PACKED, ROW, commits_in, flat

built = pytest.mark.skipif(not speedups.built(), reason="the C extension is not built here "
                           "(no C compiler at install, or PYMAPREDUCE_PURE=1)")
INT64, UINT64 = 1 << 63, 1 << 64


def model(noted: list) -> list | None:
    """What pack_notes must give, in Python."""
    if not noted or len(noted) % NOTE:
        return None
    runs: list = []
    for i in range(0, len(noted), NOTE):
        job, kind, index, attempt, worker, secs, records, nbytes, out = noted[i:i + NOTE]
        if not (type(job) is str and type(kind) is str and type(worker) is str and worker
                and type(index) is int and 0 <= index < INT64
                and type(attempt) is int and 0 <= attempt < UINT64
                and type(secs) in (float, int)
                and all(type(c) is int and 0 <= c < INT64 for c in (records, nbytes, out))):
            return None
        try:
            secs = float(secs)
        except OverflowError:
            return None
        if not runs or runs[-1][0] != job or runs[-1][1] != kind:
            runs.append((job, kind, []))
        runs[-1][2].append((index, attempt, secs, records, nbytes, out, worker))
    result = []
    for job, kind, rows in runs:
        sums = [sum(r[k] for r in rows) for k in (3, 4, 5)]
        if any(s >= INT64 for s in sums):
            return None
        workers: list = []
        for r in rows:
            if r[6] not in workers:
                workers.append(r[6])
        packed = b"".join(ROW.pack(*r[:6], workers.index(r[6])) for r in rows)
        result.append((job, kind, len(rows), *sums, tuple(workers), packed))
    return result


COUNT = st.one_of(st.integers(0, 1000), st.integers(0, INT64 - 1), st.integers(-3, INT64 + 3))
NOTES = st.lists(st.tuples(
    st.sampled_from(["j1", "j2", "é" * 3]), st.sampled_from(["map", "reduce"]),
    st.one_of(st.integers(0, 10_000), st.integers(-2, INT64 + 2)),
    st.one_of(st.integers(0, UINT64 - 1), st.integers(-2, UINT64 + 2)),
    st.one_of(st.sampled_from(["w1", "w2", "w3"]), st.sampled_from(["", "wé"])),
    st.one_of(st.floats(allow_nan=False), st.integers(0, 10), st.integers(10**308, 10**309),
              st.booleans(), st.none()),
    COUNT, COUNT, COUNT), max_size=40)


@built
@settings(max_examples=500)
@given(NOTES, st.integers(0, 3))
def test_pack_notes_is_the_python_model(notes, odd):
    noted = [x for note in notes for x in note]
    if odd == 1:  # not a whole note
        noted.append("j1")
    elif odd == 2 and noted:  # a subclass of str, of int
        noted[2] = type("Index", (int,), {})(1)
    elif odd == 3 and noted:
        noted[0] = type("Name", (str,), {})("j1")
    before = list(noted)
    assert speedups.pack_notes(noted) == model(noted)
    assert noted == before  # (left as it was)


@built
def test_pack_notes_packs_the_usual_and_refuses_odd_ones():
    usual = ["j", "map", 3, (1 << 62) + 5, "w1", 0.5, 1, 2, 3,
             "j", "map", 4, 6, "w2", 2, 4, 5, 6,
             "k", "reduce", 0, 7, "w1", 0.25, 0, 0, 3]
    runs = speedups.pack_notes(usual)
    assert [r[:7] for r in runs] == [("j", "map", 2, 5, 7, 9, ("w1", "w2")),
                                     ("k", "reduce", 1, 0, 0, 3, ("w1",))]
    assert list(ROW.iter_unpack(runs[0][7])) == [(3, (1 << 62) + 5, 0.5, 1, 2, 3, 0),
                                                 (4, 6, 2.0, 4, 5, 6, 1)]
    for i, bad in [(4, ""), (2, -1), (3, 1 << 64), (5, True), (5, None), (6, -1),
                   (8, 1 << 63), (0, b"j"), (1, None)]:
        odd = list(usual)
        odd[i] = bad
        assert speedups.pack_notes(odd) is None, (i, bad)
    over = ["j", "map", 1, 1, "w", 0.0, INT64 - 1, 0, 0] * 2
    assert speedups.pack_notes(over) is None  # (a sum past int64)
    assert speedups.pack_notes([]) is None and speedups.pack_notes(usual[:-1]) is None
    with pytest.raises(TypeError):
        speedups.pack_notes(tuple(usual))


@built
def test_pack_notes_holds_no_memory_and_no_references():
    job, worker = "job-" + "x" * 20, "worker-" + "y" * 20
    usual = [job, "map", 1, 12345678901, worker, 0.5, 1, 2, 3] * 40
    odd = usual + [job, "map", -1, 1, worker, 0.5, 1, 2, 3]
    refs = sys.getrefcount(job), sys.getrefcount(worker)
    for _ in range(3):
        speedups.pack_notes(usual), speedups.pack_notes(odd)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(2000):
        speedups.pack_notes(usual), speedups.pack_notes(odd)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 16 * 1024
    assert (sys.getrefcount(job), sys.getrefcount(worker)) == refs


@built
def test_pack_notes_survives_a_finalizer_that_changes_the_list():
    """Making the result's objects may start the collector, whose finalizers run Python
    code: one that empties the list being packed must not leave the packing reading
    names that are gone (they are held from the first pass)."""
    noted = []
    for i in range(300):
        noted += (f"job-{i // 50}", "map", i, i + 1, f"w-{i % 7}", 0.1, 1, 2, 3)

    class Clears:
        target = noted

        def __del__(self):
            self.target.clear()

    threshold = gc.get_threshold()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(10):
            garbage = Clears()
            garbage.me = garbage
            del garbage
        gc.set_threshold(1)
        gc.enable()
        runs = speedups.pack_notes(noted)
    finally:
        gc.set_threshold(*threshold)
        if not was_enabled:
            gc.disable()
    assert runs is not None and len(runs) == 6
    assert [r[0] for r in runs] == [f"job-{k}" for k in range(6)]
    assert all(r[6] == tuple(f"w-{(50 * k + w) % 7}" for w in range(7))
               for k, r in enumerate(runs))


# -- the log: packed batches read as the flat ones --------------------------------------

class Job:
    reducers, steps, step, state, submitted, error, tenant = 1, [], 0, "running", 0.0, None, ""
    map_only = False

    def __init__(self, job_id: str) -> None:
        self.id = self.name = job_id
        self.maps: list = []


class Task:
    def __init__(self, job: Job, index: int, kind: str = "map") -> None:
        self.job, self.kind, self.index, self.running = job, kind, index, {}
        self.name, self.failures = f"{kind}-{index}", 0


def drive(steps: list, cap: int) -> dict:
    """Run one log through ``steps`` and read everything a reader can."""
    log = EventLog(attempts_per_job=cap, max_attempts=4 * cap)
    jobs = {name: Job(name) for name in ("j1", "j2")}
    for job in jobs.values():
        log.job_submitted(job)
    attempt = 1000
    out = []
    for name, kind, n, worker, secs, records, committed, flush in steps:
        job = jobs[name]
        tasks = [Task(job, i, kind) for i in range(n)]
        ids = list(range(attempt, attempt + n))
        attempt += n
        log.dispatched(job, tasks, ids, worker or "w0")
        for i, t in enumerate(tasks[:committed]):
            # (the commit path's note; a worker "" is resolved from the dispatch batch)
            log.noted += (name, kind, t.index, ids[i], worker, secs, records + i, 10 * i,
                          3 + i)
        if flush:
            log.flush()
        out.append(log.totals()[0])
    log.flush()
    for name in jobs:
        out.append((log.attempts(name), log.timeline(name), log.flow(name),
                    log.result_bytes(jobs[name])))
    out.append(log.since_gap(0, limit=100_000))
    out.append([log.since(0, name, limit=100_000) for name in jobs])
    return {"reads": out, "log": log}


STEPS = st.lists(st.tuples(
    st.sampled_from(["j1", "j2"]), st.sampled_from(["map", "reduce"]), st.integers(1, 12),
    st.sampled_from(["w1", "w2", ""]), st.one_of(st.floats(0, 100), st.integers(0, 5)),
    st.integers(0, 1000), st.integers(0, 12), st.booleans()), min_size=1, max_size=25)


@built
@settings(max_examples=150, deadline=None)
@given(STEPS, st.sampled_from([8, 40, 10_000]))
def test_the_log_reads_the_same_packed_or_flat(steps, cap):
    def runs(packed: bool) -> dict:
        clock = itertools.count(1_800_000_000)
        with pytest.MonkeyPatch.context() as mp:  # (the same times in both runs)
            mp.setattr(time, "time", lambda: float(next(clock)))
            if not packed:
                mp.setattr(events_module, "pack_notes", None)
            return drive(steps, cap)

    flat_run, packed_run = runs(False), runs(True)
    assert packed_run["reads"] == flat_run["reads"]
    # (packed they were, unless a turn noted a commit without its worker)
    blank = any(s[3] == "" and s[6] for s in steps)
    for log in packed_run["log"]._jobs.values():
        for _, _, items in log.ends:
            assert commits_in(items) == len(flat(items)) // NOTE
            assert items[0] is PACKED or blank
