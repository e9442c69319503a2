"""What a worker may hold now that its credit is 256 (patterns/protocol.py): the broker's
pacing by time decides, so a phase whose cost is unknown starts small, and the tiny tasks
queued behind a worker stuck in one come back in a few backup scans (a red team's finds,
broker/dispatching.py). Ledger-level, driven by calls and a hand-set clock."""

from __future__ import annotations

from pymapreduce.broker.tasks import JobState
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.records import pack

from .test_ledger import T0, add_job, report, sent, tasks_of

TINY = {"records": 1, "secs": 2e-5}  # a task of 20 us (a filter, a map of a few records)


def test_the_first_reduce_tasks_are_paced_as_unknown_not_by_the_maps_mean(ledger):
    """After a phase of tiny maps the reduce tasks' cost is unknown, as a new job's is:
    they go out at most 2 a worker until one commits. Paced by the maps' mean, the first
    dispatch sent a worker as many as its credit, each with its segments inline (with
    512 reducers of 64 KiB segments: 64 MiB in one message and one process's queue)."""
    reducers = 512
    splits = [["mem", pack([[i, f"w{i}"]])] for i in range(4)]
    job = JobState("j", "j", b"code", splits, reducers, False, b"client", T0,
                   options={"reducers": reducers, "map_only": False})
    ledger.jobs["j"] = job
    ledger.scheduler.add(job)
    w = ledger.register(b"A", "", {"credit": P.DEFAULT_CREDIT}, T0)
    outputs = tuple(pack([[f"k{r}"], [["x" * 1024]]]) for r in range(reducers))
    while job.phase == "map":
        ledger.dispatch(T0)
        keys = [k for ks in tasks_of(ledger).values() for k in ks]
        assert keys
        for key in keys:
            ledger.done(w, [report(key, dict(TINY), reducers)], outputs)
    assert job.phase == "reduce" and job.task_secs is None
    ledger.dispatch(T0)
    [message] = sent(ledger, P.TASKS)
    assert [t[0] for t in message.msg.body["tasks"]] == ["reduce", "reduce"]
    # once one commits, they are paced by the reduces' own mean
    first = tasks_of_message(message)
    ledger.done(w, [report(first[0], {"records": 1, "secs": 0.02})], (pack([[], []]),))
    assert job.task_secs == 0.02
    ledger.dispatch(T0)
    held = len(w.running)
    assert 2 < held <= 1 + int(0.05 / 0.02) + 1


def tasks_of_message(message) -> list:
    body = message.msg.body
    return [(body["job"], kind, index, attempt) for kind, index, attempt, *_ in body["tasks"]]


def test_a_step_s_cost_is_unknown_again(ledger):
    job = add_job(ledger, maps=4, steps=[{"reducers": 1, "map_only": True},
                                         {"reducers": 1, "map_only": True}])
    job.map_only = True
    w = ledger.register(b"A", "", {"credit": P.DEFAULT_CREDIT}, T0)
    while job.step == 0:
        ledger.dispatch(T0)
        for key in [k for ks in tasks_of(ledger).values() for k in ks]:
            ledger.done(w, [report(key, dict(TINY))], (pack([[1], [2]]),))
            if job.step == 0:
                assert job.task_secs is not None
    assert job.step == 1 and job.task_secs is None


def test_the_tiny_tasks_queued_behind_a_stuck_one_come_back_in_one_scan(ledger):
    """A worker stuck in one task (its heartbeat goes on: a hung mount) holds the tiny
    tasks queued behind it. Once nothing is pending, an idle worker takes its share of
    them as backups at once, up to about 50 ms of work by their mean, not one a scan."""
    job = add_job(ledger, maps=300)
    a = ledger.register(b"A", "", {"credit": P.DEFAULT_CREDIT}, T0)
    b = ledger.register(b"B", "", {"credit": P.DEFAULT_CREDIT}, T0)
    while job.pending:  # B ends all it is given, A nothing
        ledger.dispatch(T0)
        mine = tasks_of(ledger).get(b"B", [])
        for key in mine:
            ledger.done(b, [report(key, dict(TINY))], (pack([["w"], [[1]]]),))
    stuck = len(a.running)
    assert stuck > 20 and not b.running
    # (the mean is measured on the broker's real clock, from hand-out to commit: set to
    # the tiny tasks' 20 us, as it would read on a quiet machine, not this test's pace)
    job.durations["map"] = [2e-5 * job.done_maps, job.done_maps]
    for task in job.maps:
        if task.running:
            task.started = T0  # (dispatched then: the tiny tasks' limit is long past)
    ledger.dispatch(T0 + 10.0)
    messages = sent(ledger, P.TASKS)
    assert [m.route for m in messages] == [b"B"]
    assert len(messages[0].msg.body["tasks"]) == stuck == job.backups
    for key in tasks_of_message(messages[0]):
        ledger.done(b, [report(key, dict(TINY))], (pack([["w"], [[1]]]),))
    assert job.done_maps == 300


def test_stragglers_of_unknown_cost_go_one_a_worker_a_scan(ledger):
    """What no task of its kind has told the cost of is backed up one at a time per idle
    worker and scan, as before (it may be long)."""
    job = add_job(ledger, maps=2)
    for route in (b"A1", b"A2"):
        ledger.register(route, "", {"credit": P.DEFAULT_CREDIT}, T0)
    ledger.dispatch(T0)
    assert not job.pending and len(sent(ledger, P.TASKS)) == 2
    ledger.register(b"B", "", {"credit": P.DEFAULT_CREDIT}, T0)
    for task in job.maps:
        task.started = T0
    ledger.dispatch(T0 + 100.0)
    assert job.mean_duration("map") is None
    [message] = sent(ledger, P.TASKS)
    assert message.route == b"B" and len(message.msg.body["tasks"]) == 1
    assert job.backups == 1


def test_stragglers_each_running_alone_on_their_workers_go_one_a_worker_a_scan(ledger):
    """A straggler its worker holds alone is running, not queued, and may be long (a job of
    skewed tasks whose mean is tiny): its cost is what it has run so far, so an idle
    worker takes one such backup a scan, as before, and the others go to workers idle
    at the next scans."""
    job = add_job(ledger, maps=40)
    b = ledger.register(b"B", "", {"credit": P.DEFAULT_CREDIT}, T0)
    while len(job.pending) > 2:  # B ends the tiny ones: the job's mean is known
        ledger.dispatch(T0)
        for key in tasks_of(ledger).get(b"B", []):
            ledger.done(b, [report(key, dict(TINY))], (pack([["w"], [[1]]]),))
    assert job.mean_duration("map") is not None
    for route in (b"A1", b"A2"):  # each takes one of the last two, and runs it long
        ledger.register(route, "", {"credit": 1}, T0)
    b.credit = 0  # (B takes none of them meanwhile)
    ledger.dispatch(T0)
    b.credit = P.DEFAULT_CREDIT
    held = tasks_of(ledger)
    assert not job.pending and {r for r in held} == {b"A1", b"A2"} and not b.running
    for task in job.maps:
        if task.running:
            task.started = T0
    ledger.dispatch(T0 + 10.0)
    [message] = sent(ledger, P.TASKS)
    assert message.route == b"B" and len(message.msg.body["tasks"]) == 1


def test_a_job_no_worker_may_take_does_not_pace_the_others(ledger):
    """A job that requires tags no worker has waits, its cost unknown: it paced every
    worker to 2 tasks at a time for as long as it waited, so a job of tiny tasks beside it
    ran 4-5x slower (a new user's find). Only a worker that may take it is paced by it."""
    add_job(ledger, "g", maps=1, requires=["gpu"])
    job = add_job(ledger, "t", maps=400)
    w = ledger.register(b"W", "", {"credit": P.DEFAULT_CREDIT}, T0)
    ledger.dispatch(T0)
    first = tasks_of(ledger)[b"W"]
    assert len(first) == 2  # (the tiny job's cost is unknown yet)
    for key in first:
        ledger.done(w, [report(key, dict(TINY))], (pack([["w"], [[1]]]),))
    assert job.task_secs is not None
    ledger.dispatch(T0)
    # 399 pending over one worker: at most half of them (the phase's end rule), not 2
    assert len(w.running) == 399 // 2
    gpu = ledger.register(b"G", "", {"credit": P.DEFAULT_CREDIT, "tags": ["gpu"]}, T0)
    ledger.dispatch(T0)
    assert 0 < len(gpu.running) <= 2  # (it may take the waiting job: paced as unknown)
