"""The event log's commit batches packed in C (``speedups.pack_notes``, observe/events.py):
the same rows, sums and reads as the notes kept as they were, and nothing odd packed."""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymapreduce import speedups
from pymapreduce.observe import events as events_module
from pymapreduce.observe.events import EventLog
from pymapreduce.observe.reading import INT_SECS, NOTE, PACKED, REPORTS, ROW, commits_in, flat

from .test_event_review import Job, Task

built = pytest.mark.skipif(not speedups.built(), reason="the C extension is not built here "
                           "(no C compiler at install, or PYMAPREDUCE_PURE=1)")
INT64, UINT64 = 1 << 63, 1 << 64


def pack(noted, reports=None):
    return speedups.pack_notes(noted, REPORTS if reports is None else reports)


def model(noted: list, reports: tuple = ()) -> list | None:
    """What pack_notes must give, in Python (``reports``: the positions of the notes that
    came from a run of reports, whose run time the log reads as ``secs or 0``)."""
    if not noted or len(noted) % NOTE:
        return None
    runs: list = []
    for i in range(0, len(noted), NOTE):
        job, kind, index, attempt, worker, secs, records, nbytes, out = noted[i:i + NOTE]
        if i // NOTE in reports:
            secs = secs or 0 if secs is None or type(secs) in (float, int) else secs
        if not (type(job) is str and type(kind) is str and type(worker) is str and worker
                and type(index) is int and 0 <= index < INT64
                and type(attempt) is int and 0 <= attempt < UINT64
                and (type(secs) is float or type(secs) is int and abs(secs) <= 1 << 53)
                and all(type(c) is int and 0 <= c < INT64 for c in (records, nbytes, out))):
            return None
        if not runs or runs[-1][0] != job or runs[-1][1] != kind:
            runs.append((job, kind, []))
        runs[-1][2].append((index, attempt, float(secs), records, nbytes, out, worker,
                            type(secs) is int))
    result = []
    for job, kind, rows in runs:
        sums = [sum(r[k] for r in rows) for k in (3, 4, 5)]
        if any(s >= INT64 for s in sums):
            return None
        workers: list = []
        for r in rows:
            if r[6] not in workers:
                workers.append(r[6])
        packed = b"".join(ROW.pack(*r[:6], workers.index(r[6]) | (INT_SECS if r[7] else 0))
                          for r in rows)
        result.append((job, kind, len(rows), *sums, tuple(workers), packed))
    return result


COUNT = st.one_of(st.integers(0, 1000), st.integers(0, INT64 - 1), st.integers(-3, INT64 + 3))
NOTES = st.lists(st.tuples(
    st.sampled_from(["j1", "j2", "é" * 3]), st.sampled_from(["map", "reduce"]),
    st.one_of(st.integers(0, 10_000), st.integers(-2, INT64 + 2)),
    st.one_of(st.integers(0, UINT64 - 1), st.integers(-2, UINT64 + 2)),
    st.one_of(st.sampled_from(["w1", "w2", "w3"]), st.sampled_from(["", "wé"])),
    st.one_of(st.floats(allow_nan=False), st.integers(0, 10), st.integers(10**308, 10**309),
              st.integers(2**53 - 2, 2**53 + 2), st.booleans(), st.none()),
    COUNT, COUNT, COUNT), max_size=40)


@built
@settings(max_examples=500, deadline=None)
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
    assert pack(noted) == model(noted)
    assert noted == before  # (left as it was)


def model_with_reports(noted: list) -> list | None:
    """``model`` of a list that holds runs of reports (REPORTS) too."""
    flat_notes: list = []
    reports: list = []
    for i in range(0, len(noted) - len(noted) % NOTE, NOTE):
        entry = noted[i:i + NOTE]
        if entry[0] is not REPORTS:
            flat_notes += entry
            continue
        _, worker, results, first, count, blobs = entry[:6]
        if not (type(results) is list and type(blobs) is tuple and type(first) is int
                and type(count) is int and 0 <= first and 0 <= count
                and first + count <= min(len(results), len(blobs))):
            return None
        for k in range(first, first + count):
            item = results[k]
            if not (type(item) is list and len(item) >= 5 and type(item[4]) is dict
                    and type(blobs[k]) is bytes
                    and set(item[4]) == {"records", "bytes", "secs"}):  # (only them)
                return None
            stats = item[4]
            reports.append(len(flat_notes) // NOTE)
            flat_notes += (*item[:4], worker, stats["secs"], stats["records"],
                           stats["bytes"], len(blobs[k]))
    if len(noted) % NOTE:
        return None
    return model(flat_notes, tuple(reports)) if flat_notes or not noted else None


STATS = st.one_of(
    st.fixed_dictionaries({"records": COUNT, "bytes": COUNT,
                           "secs": st.one_of(st.floats(0, 10), st.integers(0, 3), st.none(),
                                             st.just(0.0), st.just(-0.0),
                                             st.text(max_size=1))}),
    st.dictionaries(st.sampled_from(["records", "bytes", "secs", "log"]), st.integers(0, 5),
                    max_size=4),
    st.fixed_dictionaries({"records": st.just(1), "bytes": st.just(2), "secs": st.just(0.5),
                           "log": st.just("x")}))
REPORT = st.tuples(st.sampled_from(["j1", "j2"]), st.sampled_from(["map", "reduce"]),
                   st.integers(-1, 50), st.integers(0, UINT64 + 1), STATS).map(
                       lambda r: [*r, 1])
RUNS = st.tuples(
    st.sampled_from(["w1", "w2", ""]),
    st.lists(st.one_of(REPORT, REPORT, st.just(["j1", "map"]), st.just(("t",) * 6)),
             max_size=8),
    st.integers(-1, 4), st.integers(-1, 8),
    st.lists(st.one_of(st.binary(max_size=6), st.binary(max_size=6),
                       st.binary(max_size=3).map(bytearray)), max_size=9))


@built
@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(NOTES.map(lambda notes: notes[:2]), RUNS), max_size=5))
def test_pack_notes_reads_runs_of_reports_as_their_notes(entries):
    noted: list = []
    for entry in entries:
        if isinstance(entry, list):  # flat notes
            noted += [x for note in entry for x in note]
        else:
            worker, results, first, count, blobs = entry
            noted += (REPORTS, worker, results, first, count, tuple(blobs), None, None, None)
    assert pack(noted) == model_with_reports(noted)


@built
def test_pack_notes_packs_the_usual_and_refuses_odd_ones():
    usual = ["j", "map", 3, (1 << 62) + 5, "w1", 0.5, 1, 2, 3,
             "j", "map", 4, 6, "w2", 2, 4, 5, 6,
             "k", "reduce", 0, 7, "w1", 0.25, 0, 0, 3]
    runs = pack(usual)
    assert [r[:7] for r in runs] == [("j", "map", 2, 5, 7, 9, ("w1", "w2")),
                                     ("k", "reduce", 1, 0, 0, 3, ("w1",))]
    assert list(ROW.iter_unpack(runs[0][7])) == [(3, (1 << 62) + 5, 0.5, 1, 2, 3, 0),
                                                 (4, 6, 2.0, 4, 5, 6, 1 | INT_SECS)]
    for i, bad in [(4, ""), (2, -1), (3, 1 << 64), (5, True), (5, "0"), (5, None), (6, -1),
                   (8, 1 << 63), (0, b"j"), (1, None)]:
        odd = list(usual)
        odd[i] = bad
        assert pack(odd) is None, (i, bad)
    over = ["j", "map", 1, 1, "w", 0.0, INT64 - 1, 0, 0] * 2
    assert pack(over) is None  # (a sum past int64)
    assert pack([]) is None and pack(usual[:-1]) is None
    with pytest.raises(TypeError):
        pack(tuple(usual))
    with pytest.raises(TypeError):
        speedups.pack_notes(usual)


@built
def test_pack_notes_holds_no_memory_and_no_references():
    job, worker = "job-" + "x" * 20, "worker-" + "y" * 20
    usual = [job, "map", 1, 12345678901, worker, 0.5, 1, 2, 3] * 40
    odd = usual + [job, "map", -1, 1, worker, 0.5, 1, 2, 3]
    refs = sys.getrefcount(job), sys.getrefcount(worker)
    for _ in range(3):
        pack(usual), pack(odd)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(2000):
        pack(usual), pack(odd)
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
        runs = pack(noted)
    finally:
        gc.set_threshold(*threshold)
        if not was_enabled:
            gc.disable()
    assert runs is not None and len(runs) == 6
    assert [r[0] for r in runs] == [f"job-{k}" for k in range(6)]
    assert all(r[6] == tuple(f"w-{(50 * k + w) % 7}" for w in range(7))
               for k, r in enumerate(runs))


# -- the log: packed batches read as the flat ones --------------------------------------

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


# -- attacks kept (a red team, 2026-12-03) ----------------------------------------------

_KEY_EQ = textwrap.dedent("""
    import gc, sys
    from pymapreduce import speedups
    from pymapreduce.observe.reading import REPORTS
    ARM = [False]
    class Key:  # compared with "secs" when a dict is looked up (the same hash)
        def __hash__(self):
            return hash("secs")
        def __eq__(self, other):
            if ARM[0]:
                ARM[0] = False
                TARGET()
                gc.collect()
            return False
    stats = {"records": 1, "bytes": 2, Key(): 0, "secs": 1.0}
    item = ["".join(["jo", "b"]), "map", 0, 5, stats, 1]
    results = [item, ["job", "map", 1, 6, {"records": 1, "bytes": 2, "secs": 1.0}, 1]]
    noted = [REPORTS, "w", results, 0, 2, (b"abc", b"de"), None, None, None]
    TARGET = {"item": item.clear, "results": results.clear, "noted": noted.clear}[sys.argv[1]]
    del item, results, stats
    ARM[0] = True
    print(speedups.pack_notes(noted, REPORTS))
""")


@built
@pytest.mark.parametrize("emptied", ["item", "results", "noted"])
def test_a_report_s_statistics_run_no_python_code_while_packed(emptied):
    """A statistics dict with a key whose comparison runs Python code (one that empties
    the lists being read, then collects) is not looked up: its keys must be the three
    exact str, gone over without a comparison that runs code (it was looked up, and the
    lists read after: a read of freed memory, found with AddressSanitizer)."""
    proc = subprocess.run([sys.executable, "-X", "dev", "-c", _KEY_EQ, emptied],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONMALLOC": "malloc_debug"})
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stderr[-2000:]


@built
def test_a_turn_of_many_workers_reports_packs_as_the_model_says():
    """256 DONEs of 64 reports each (a turn drains up to 256 messages), one worker each:
    packed as the model packs them (a commit's worker is found at once when it is the
    last one the run added, as a DONE's reports' are: looking from the start for each
    took 39 ms for this turn, against 1.8 for one worker's 16,384 reports)."""
    noted: list = []
    for w in range(256):
        results = [["job-abcdef", "map", w * 64 + i, 123456789 + i,
                    {"records": 10, "bytes": 100, "secs": 0.01 if i % 3 else 2}, 1]
                   for i in range(64)]
        noted += (REPORTS, f"worker-{w:04d}", results, 0, 64, (b"x" * 10,) * 64,
                  None, None, None)
    runs = pack(noted)
    assert runs == model_with_reports(noted)
    assert len(runs) == 1 and len(runs[0][6]) == 256 and runs[0][2] == 256 * 64


@built
@pytest.mark.parametrize("secs", [3, 0, 0.0, -0.0, None, 0.25])
def test_a_done_event_s_secs_reads_the_same_packed_or_not(secs):
    """A report's run time reads as the log read it before it was packed (``secs or
    0``): an int stays an int (3, not 3.0, in the JSON the HTTP API streams)."""
    def done_secs(packed: bool) -> list:
        with pytest.MonkeyPatch.context() as mp:
            if not packed:
                mp.setattr(events_module, "pack_notes", None)
            log = EventLog()
            job = Job("j1")
            log.job_submitted(job)
            log.dispatched(job, [Task(job, 0)], [7], "w1")
            results = [["j1", "map", 0, 7, {"records": 1, "bytes": 2, "secs": secs}, 1]]
            log.noted += (REPORTS, "w1", results, 0, 1, (b"abc",), None, None, None)
            log.flush()
            kept = log._jobs["j1"].ends[-1][2]
            assert (kept[0] is PACKED) == packed
            return [(type(e["secs"]), e["secs"]) for e in log.since(0, "j1")
                    if e["type"] == "done"]

    assert done_secs(True) == done_secs(False) == [(type(secs or 0), secs or 0)]


@built
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["map", "reduce"]), st.integers(0, 10**6),
                          st.integers(0, 2**64 - 1), st.booleans()), max_size=70))
def test_attempt_ids_reads_a_messages_identifiers_as_the_python_loop_does(items):
    """``attempt_ids`` (a TASKS message's items to the dispatch batch's array, in C) gives
    what ``array(UINT64, map(itemgetter(2), items))`` does, for items with and without
    their skipped records."""
    from array import array
    from operator import itemgetter

    wire = [[kind, index, attempt, ["mem", i], *([[1, 2]] if skip else [])]
            for i, (kind, index, attempt, skip) in enumerate(items)]
    assert array(speedups.UINT64, speedups.attempt_ids(wire)) == \
        array(speedups.UINT64, map(itemgetter(2), wire))


@built
def test_attempt_ids_refuses_what_is_not_a_message_s_items():
    """Anything but a list of lists whose third element is an int from 0 to 2**64 - 1 is
    a TypeError or OverflowError, with no memory kept."""
    class Int(int):
        pass

    for bad in ((), [()], [[0, 1]], [[0, 1, 1.0]], [[0, 1, True]], [[0, 1, Int(3)]],
                [(0, 1, 2)], [[0, 1, 2], "x"]):
        with pytest.raises(TypeError):
            speedups.attempt_ids(bad)
    for bad in ([[0, 1, -1]], [[0, 1, 2**64]], [[0, 1, 2], [0, 1, -(2**70)]]):
        with pytest.raises(OverflowError):
            speedups.attempt_ids(bad)
    tracemalloc.start()
    try:
        for _ in range(3):  # (the first rounds may grow the allocator's free lists)
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(2000):
                with pytest.raises(OverflowError):
                    speedups.attempt_ids([[0, 1, 2]] * 50 + [[0, 1, -1]])
        assert tracemalloc.get_traced_memory()[0] - before < 10_000
    finally:
        tracemalloc.stop()
