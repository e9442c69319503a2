"""The event log records a task's two events in batches (one entry per TASKS message, one
per job's commits in a turn of the broker loop): readers still see one event per attempt,
numbered without gaps, in the order things happened; rings stay bounded in events; and a
broker started with --no-events keeps none, says so, and still runs jobs."""

from __future__ import annotations

import subprocess

import pytest

from pymapreduce import Client, ConfigError, LocalCluster
from pymapreduce.errors import PyMapReduceError
from pymapreduce.observe.events import EventLog, _events_in
from pymapreduce.observe.reading import NOTE

from .conftest import ROOT, pmr
from .jobs import WordCount


class FakeJob:
    id, name, tenant, reducers, steps, maps, step = "j", "n", "", 1, [], [], 0
    state, submitted, error = "running", 0.0, None


class FakeTask:
    def __init__(self, index: int, job: type = FakeJob) -> None:
        self.job, self.kind, self.index, self.running = job, "map", index, {}


def dispatch(events: EventLog, job: type, indices: range, worker: str, attempts=None,
             tasks=None) -> None:
    """A TASKS message's attempts: of map tasks ``indices`` (attempt ``1000 * i + 1``)."""
    tasks = tasks if tasks is not None else [FakeTask(i, job) for i in indices]
    attempts = attempts if attempts is not None else [1000 * i + 1 for i in indices]
    events.dispatched(job, tasks, attempts, worker)


def run_batches(events: EventLog, n: int, per_message: int) -> None:
    """``n`` attempts dispatched ``per_message`` at a time, each committed right after."""
    for first in range(0, n, per_message):
        batch = range(first, min(n, first + per_message))
        dispatch(events, FakeJob, batch, "w1")
        for i in batch:
            events.done(("j", "map", i, 1000 * i + 1), {"records": i, "bytes": 10}, 0.5, [b"ab"])
        events.flush()


def test_batched_events_read_as_one_event_per_attempt_in_order_with_every_cursor():
    events = EventLog()
    events.job_submitted(FakeJob)
    run_batches(events, 25, per_message=7)
    seen = events.since(0, "j")
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
    tasks = [(e["type"], e.get("index")) for e in seen if e["type"] in ("dispatched", "done")]
    assert len(tasks) == 50
    for i in range(25):  # each attempt dispatched before it is done
        assert tasks.index(("dispatched", i)) < tasks.index(("done", i))
    done = [e for e in seen if e["type"] == "done"]
    assert done[3]["records"] == 3 and done[3]["bytes_out"] == 2 and done[3]["worker"] == "w1"
    assert done[3]["task"] == "map-3" and done[3]["attempt"] == (3001 & 0xFFF)
    # a cursor anywhere, also inside a batch, resumes exactly after it; limits cut inside
    for cursor in range(0, seqs[-1] + 1):
        after = events.since(cursor, "j")
        assert [e["seq"] for e in after] == [s for s in seqs if s > cursor]
        assert [e["seq"] for e in events.since(cursor, "j", limit=3)] == \
            [s for s in seqs if s > cursor][:3]
    assert [e["seq"] for e in events.since(0)] == seqs  # the global ring: the same events
    rows = events.attempts("j")
    assert len(rows) == 25 and all(r["outcome"] == "done" and r["end"] >= r["start"]
                                   for r in rows)
    assert events.flow("j")["map"] == {"records_in": sum(range(25)), "bytes_in": 250,
                                       "bytes_out": 50}
    counts, _, _ = events.totals()
    assert counts[("tasks_done", "map")] == 25 and counts[("attempts", "map")] == 25


def test_noted_commits_are_recorded_before_any_later_event():
    events = EventLog()
    events.job_submitted(FakeJob)
    dispatch(events, FakeJob, range(1), "w1", attempts=[1])
    events.done(("j", "map", 0, 1), {}, 0.1, [])
    FakeJob.state = "succeeded"
    try:
        events.job_ended(FakeJob, 1.0)  # no flush in between: job_ended flushes first
    finally:
        FakeJob.state = "running"
    types = [e["type"] for e in events.since(0, "j")]
    assert types[-2:] == ["done", "job-succeeded"]


def test_batched_rings_stay_bounded_in_events_and_attempt_rows():
    events = EventLog(per_job=30, global_events=45, attempts_per_job=40)
    events.job_submitted(FakeJob)
    run_batches(events, 500, per_message=16)
    assert len(events.since(0, "j")) <= 30 + 16  # (one entry past the cap at most)
    assert len(events.since(0)) <= 45 + 16
    log = events._jobs["j"]
    assert log.count == sum(_events_in(e) for e in log.events)
    assert len(events.attempts("j")) <= 40 + 40 // 8
    newest = max(r["index"] for r in events.attempts("j"))
    assert newest == 499  # the oldest rows went, not the newest


def test_a_broker_without_an_event_log_runs_jobs_and_says_why_events_are_missing():
    with LocalCluster(workers=1, events=False) as cluster, Client(cluster.address) as client:
        assert dict(client.submit(WordCount(), [(0, "a b a")]).result()) == {"a": 2, "b": 1}
        proc = subprocess.run(pmr("events", "--connect", cluster.address, "--timeout", "20"),
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode != 0 and "--no-events" in proc.stderr
    with pytest.raises(ConfigError, match="no-events|events=False"):
        LocalCluster(workers=1, http=True, events=False)
    proc = subprocess.run(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0",
                              "--no-events"), capture_output=True, text=True, timeout=30,
                          cwd=ROOT)
    assert proc.returncode != 0 and "--no-events" in proc.stderr
    assert issubclass(ConfigError, PyMapReduceError)


def test_a_full_attempt_table_keeps_the_attempts_still_running_and_frees_what_it_drops():
    """Rows go oldest first when the table is full, except attempts the broker still
    runs (its tasks say so); the commit batches kept to join with the rows go with them."""

    class Task:
        def __init__(self, index: int) -> None:
            self.job, self.kind, self.index, self.running = Job, "map", index, {}
            self.name, self.failures = f"map-{index}", 0

    class Job(FakeJob):
        id = "s"
        reduces: list = []

    Job.maps = [Task(i) for i in range(401)]

    events = EventLog(attempts_per_job=40)
    events.job_submitted(Job)
    straggler = Job.maps[0]
    straggler.running[7] = b"w"  # dispatched first, runs on past everything else
    dispatch(events, Job, range(1), "slow", attempts=[7], tasks=[straggler])
    for first in range(1, 400, 10):
        batch = range(first, first + 10)
        dispatch(events, Job, batch, "w1", tasks=[Job.maps[i] for i in batch])
        for i in batch:
            events.done(("s", "map", i, 1000 * i + 1), {"records": 1}, 0.1, [b"x"], "w1")
        events.flush()
    rows = events.attempts("s")
    assert len(rows) <= 40 + 40 // 8 + 1
    assert rows[0]["index"] == 0 and rows[0]["outcome"] == "running"
    assert rows[0]["worker"] == "slow"
    assert all(r["outcome"] == "done" for r in rows[1:])
    assert max(r["index"] for r in rows) == 400
    log = events._jobs["s"]
    assert sum(len(items) // NOTE for _, _, items in log.ends) <= 40 + 40 // 8 + 10
    # the straggler fails at last: its row says so, and once it no longer runs, it goes
    del straggler.running[7]
    events.failed(straggler, 7, "boom", "", {}, False, True)
    assert events.attempts("s")[0]["outcome"] == "failed"
    for first in range(400, 460, 10):
        batch = range(first, first + 10)
        dispatch(events, Job, batch, "w1", tasks=[Job.maps[i % 400] for i in batch])
    assert all(r["index"] != 0 or r["attempt"] != 7 for r in events.attempts("s"))
    assert log.closed == {}  # its failure's note went with its row
    assert events._rows == log.rows == len(events.attempts("s"))


def test_run_times_of_unknown_attempts_cannot_grow_the_log_past_its_bound():
    events = EventLog(attempts_per_job=16)
    events.job_submitted(FakeJob)
    for attempt in range(10_000):  # (the broker only passes attempts a reporter holds)
        events.ran(FakeTask(0), attempt, 0.5)
    assert len(events._jobs["j"].closed) <= 16 + 16 // 8


def test_a_forgotten_job_s_tasks_go_with_it_and_its_attempts_events_with_them():
    """A dispatch is kept once, as a batch of the job's attempt table (which holds its
    tasks), and read as events from there, also by the global stream; forgotten, the job
    keeps no task (its splits, its code) alive, and its attempts' events go with it."""
    import gc
    import weakref

    events = EventLog()
    events.job_submitted(FakeJob)
    tasks = [FakeTask(i) for i in range(4)]
    alive = [weakref.ref(t) for t in tasks]
    events.dispatched(FakeJob, tasks, [11, 12, 13, 14], "w1")
    sent = [(e["task"], e["attempt"]) for e in events.since(0) if e["type"] == "dispatched"]
    assert sent == [("map-0", 11), ("map-1", 12), ("map-2", 13), ("map-3", 14)]
    events.job_dropped("j")
    del tasks
    gc.collect()
    assert not any(ref() for ref in alive)
    assert [e["type"] for e in events.since(0)] == ["job-submitted", "job-started"]


def test_the_global_stream_merges_jobs_attempts_in_order_and_keeps_its_bound():
    """Two jobs' dispatches and commits interleave: the global stream reads them in the
    order they happened, each event once, its newest ``global_events`` at most, and a
    job's stream its newest ``per_job``."""

    class Other(FakeJob):
        id = "k"

    events = EventLog(per_job=25, global_events=40)
    events.job_submitted(FakeJob)
    events.job_submitted(Other)
    for n in range(10):
        for job in (FakeJob, Other):
            attempts = [1000 * n + 10 * (job is Other) + i for i in range(3)]
            events.dispatched(job, [FakeTask(i, job) for i in range(3)], attempts, "w1")
            for a in attempts[:2]:
                events.done((job.id, "map", a % 10, a), {"records": 1}, 0.1, [b"x"], "w1")
            events.flush()
    every = events.since(0)
    seqs = [e["seq"] for e in every]
    assert seqs == sorted(set(seqs)) and seqs[-1] == events.seq
    assert 40 - 3 <= len(every) <= 40  # (whole batches)
    assert {e["job"] for e in every if e["type"] in ("dispatched", "done")} == {"j", "k"}
    mine = events.since(0, "k")
    assert {e["job"] for e in mine} == {"k"} and 25 - 3 <= len(mine) <= 25
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)
    assert [e["seq"] for e in events.since(seqs[-6])] == seqs[-5:]
    # a reader that fell past what the log keeps is told so; one within it is not
    assert events.since_gap(0)[1] and events.since_gap(0, "k")[1]
    assert not events.since_gap(seqs[-6])[1]
    assert not events.since_gap(mine[0]["seq"], "k")[1]


def test_events_tells_a_follower_that_fell_behind_what_it_missed():
    """``pymapreduce events`` says so on stderr when the broker's reply says events
    were skipped, and prints the ones it got."""
    import io

    from pymapreduce.observe.cli import follow

    class Reader:
        timeout = 5.0
        replies = [{"events": [{"seq": 90, "type": "done"}], "next": 90, "seq": 90,
                    "skipped": True}]

        def _request(self, command, body, patient=False):
            from pymapreduce.patterns.message import Message

            return Message(command, self.replies.pop(0))

    out, warned = io.StringIO(), []
    assert follow(Reader(), None, 0, out, keep_going=False, warn=warned.append) == 90
    assert out.getvalue() == '{"seq":90,"type":"done"}\n'
    assert len(warned) == 1 and "skipped" in warned[0]


def test_a_message_of_maps_and_reduces_reads_back_with_each_ones_kind():
    """(Maps of a job can run again after its reduces began, when a sink was lost: one
    TASKS message may then hold both kinds.)"""
    events = EventLog()
    events.job_submitted(FakeJob)
    tasks = [FakeTask(0), FakeTask(1), FakeTask(0)]
    tasks[2].kind = "reduce"
    events.dispatched(FakeJob, tasks, [21, 22, 23], "w1")
    sent = [(e["kind"], e["index"], e["attempt"]) for e in events.since(0, "j")
            if e["type"] == "dispatched"]
    assert sent == [("map", 0, 21), ("map", 1, 22), ("reduce", 0, 23)]
    counts, _, _ = events.totals()
    assert counts[("attempts", "map")] == 2 and counts[("attempts", "reduce")] == 1
    assert [(r["kind"], r["index"]) for r in events.attempts("j")] == [
        ("map", 0), ("map", 1), ("reduce", 0)]


def test_past_the_global_cap_an_ended_job_s_table_goes_whole_and_a_running_one_s_by_batch():
    """The global cap takes the oldest jobs' rows first: a job that ended loses its whole
    table at once (nothing of it runs), one that still runs only what is due."""

    class Ended(FakeJob):
        id, state = "ended", "succeeded"

    class Running(FakeJob):
        id, state = "running", "running"

    class Newest(FakeJob):
        id, state = "newest", "running"

    events = EventLog(max_attempts=100)
    for job in (Ended, Running, Newest):
        events.job_submitted(job)
    dispatch(events, Ended, range(40), "w1")
    dispatch(events, Running, range(40), "w1")
    dispatch(events, Newest, range(30), "w2")  # 110 rows: 10 too many
    assert events.attempts("ended") == [] and events._jobs["ended"].rows == 0
    assert len(events.attempts("running")) == 40 and len(events.attempts("newest")) == 30
    assert events._rows == 70 == sum(log.rows for log in events._jobs.values())
    dispatch(events, Newest, range(30, 70), "w2")  # 110 again: the running job's oldest go
    assert len(events.attempts("running")) == 30
    assert [r["index"] for r in events.attempts("running")] == list(range(10, 40))
    assert events._rows == 100


def test_a_message_s_attempts_and_backups_are_counted_by_kind_however_its_maps_are_told():
    """``dispatched`` counts a message's attempts (and backups) by their tasks' kinds:
    the same whether the dispatcher says how many are maps or the log reads each kind,
    for a message of maps, of reduces, and of both."""
    def counts(given: bool) -> dict:
        events = EventLog()
        events.job_submitted(FakeJob)
        for kinds, backup in ((["map"] * 3, False), (["reduce"] * 2, True),
                              (["map", "reduce", "map"], True), (["reduce"], False)):
            tasks = [FakeTask(i) for i in range(len(kinds))]
            for t, kind in zip(tasks, kinds):
                t.kind = kind
            maps = kinds.count("map") if given else None
            events.dispatched(FakeJob, tasks, list(range(1, len(kinds) + 1)), "w1",
                              backup, maps)
        return {k: v for k, v in events.counts.items() if k[0] in ("attempts", "backups")}

    expected = {("attempts", "map"): 5, ("attempts", "reduce"): 4,
                ("backups", "reduce"): 3, ("backups", "map"): 2}
    assert counts(True) == expected
    assert counts(False) == expected
