"""Attacks on the event log's batched form (a review of its rework): the attempt table's
caps while attempts still run, backups, hostile reports, forgotten jobs, readers on other
threads, and the sockets' 'a message waits' check."""

from __future__ import annotations

from pymapreduce.broker.ledger import Ledger
from pymapreduce.observe.events import EventLog
from pymapreduce.observe.reading import NOTE


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


def test_the_global_attempt_cap_holds_while_the_oldest_job_s_rows_all_still_run():
    """The oldest job holding rows whose every row still runs (a long straggling wave, or
    a job that ended with attempts out) must not stop the global cap: newer jobs' rows
    go instead."""
    events = EventLog(attempts_per_job=1000, max_attempts=100)
    old = Job("old")
    events.job_submitted(old)
    tasks = [Task(old, i) for i in range(50)]
    for i, t in enumerate(tasks):
        t.running[i + 1] = b"w"
    events.dispatched(old, tasks, [i + 1 for i in range(50)], "w1")
    new = Job("new")
    events.job_submitted(new)
    for k in range(30):
        events.dispatched(new, [Task(new, i) for i in range(10)],
                          [1000 + 10 * k + i for i in range(10)], "w2")
    assert events._rows <= 100
    assert events._jobs["old"].rows == 50  # what still runs stays
    assert events._rows == sum(log.rows for log in events._jobs.values())
    assert len(events.attempts("new")) == events._jobs["new"].rows
    assert max(r["attempt"] for r in events.attempts("new")) == (1000 + 299) & 0xFFF


def test_attempts_stopped_because_a_sink_was_lost_end_as_abandoned_in_the_table(ledger):
    """A lost sink stops the step's running maps where they run: their rows must end
    (abandoned, with why), not stay 'running' on the timeline for ever."""
    from .test_ledger import T0, add_job, map_output, report, tasks_of

    job = add_job(ledger, maps=6)
    ledger.events.job_submitted(job)
    a = ledger.register(b"A", "", {"credit": 2, "name": "A"}, T0)
    ledger.dispatch(T0)
    first, second = tasks_of(ledger)[b"A"]
    ledger.done(a, [report(first)], tuple(map_output()))
    ledger._rerun(job, {0}, "its sink was lost")
    ledger.dispatch(T0)
    rows = {(r["task"], r["attempt"]): r for r in ledger.events.attempts("j")}
    stopped = rows[(f"map-{second.index}", second.attempt & 0xFFF)]
    assert stopped["outcome"] == "abandoned" and stopped["end"] is not None
    assert any(e["type"] == "abandoned" and f"map-{second.index}" in e["tasks"]
               for e in ledger.events.since(0, "j"))


def test_a_loop_on_another_thread_than_the_log_s_builder_reads_its_own_commits():
    """A broker built on one thread and served on another (compat.Master run on a
    thread): the loop's own reads (EVENTS, flow at a job's end) see the commits noted in
    its turn, and the building thread, reading, never records what the loop notes."""
    import threading

    events = EventLog()  # built here
    job = Job("j")
    events.job_submitted(job)
    seen: list = []

    def loop() -> None:
        task = Task(job, 0)
        events.dispatched(job, [task], [4097], "w1")
        events.noted.extend(("j", "map", 0, 4097, "w1", 0.1, 3, 10, 5))  # as _commit does
        seen.extend(e["type"] for e in events.since(0, "j"))
        seen.append(events.flow("j")["map"]["records_in"])

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    assert seen == ["job-submitted", "job-started", "dispatched", "done", 3]


def test_the_byte_budget_counts_the_texts_of_an_event_s_lists():
    """A worker may name 64 tags of 100 characters at each registration: its worker-joined
    events must count them against the byte budget, not as a small event each."""
    events = EventLog(max_bytes=200_000)
    tags = [f"{i:03d}" + "t" * 97 for i in range(64)]
    for n in range(1000):
        events.worker_joined(f"w{n}", tags)
    kept = [e for e in events._global if e[2] == "worker-joined"]
    text = sum(len(t) for e in kept for t in e[4]["tags"])
    assert text <= 200_000
    assert events.since(0)[-1]["worker"] == "w999"


def _rows(ledger: Ledger, job: str = "j") -> list[tuple]:
    return [(r["step"], r["task"], r["attempt"], r["worker"], r["backup"], r["outcome"])
            for r in ledger.events.attempts(job)]


def test_retries_backups_and_a_worker_lost_mid_attempt_read_back_in_the_table(ledger):
    """A failure's retry is no backup; a straggler's second attempt is; the first
    attempt's worker then lost: killed, and the backup's commit ends the task."""
    from .test_ledger import T0, add_job, map_output, report, tasks_of

    job = add_job(ledger, maps=2)
    ledger.events.job_submitted(job)
    a = ledger.register(b"A", "", {"credit": 1, "name": "A"}, T0)
    b = ledger.register(b"B", "", {"credit": 1, "name": "B"}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    [ka], [kb] = held[b"A"], held[b"B"]
    ledger.failed(b, {**kb._asdict(), "error": "boom"})
    c = ledger.register(b"C", "", {"credit": 1, "name": "C"}, T0)
    ledger.dispatch(T0)
    [kb2] = tasks_of(ledger)[b"C"]  # (its retry avoids B, where it failed)
    ledger.done(c, [report(kb2)], tuple(map_output()))
    job.maps[ka.index].started = T0 - 60
    ledger.dispatch(T0 + 60)
    [backup] = tasks_of(ledger)[b"C"]  # (C has committed a task, B has not: C first)
    ledger.purge(a, "silent")
    ledger.done(c, [report(backup)], tuple(map_output()))
    ia, ib = f"map-{ka.index}", f"map-{kb.index}"
    assert _rows(ledger) == [(1, ia, 1, "A", False, "killed"), (1, ib, 1, "B", False, "failed"),
                             (1, ib, 2, "C", False, "done"), (1, ia, 2, "C", True, "done")]
    sent = [(e["task"], e["attempt"], e["backup"]) for e in ledger.events.since(0, "j")
            if e["type"] == "dispatched"]
    assert sent == [(ia, 1, False), (ib, 1, False), (ib, 2, False), (ia, 2, True)]
    assert ledger.events.totals()[0][("backups", "map")] == 1


def test_hostile_done_reports_neither_raise_nor_count_twice(ledger):
    """Reports of attempts not held, the same attempt twice in one DONE and again later,
    and counts at the largest a report may carry: one done event, counted once."""
    from .test_ledger import T0, add_job, map_output, report, tasks_of

    job = add_job(ledger, maps=1)
    ledger.events.job_submitted(job)
    a = ledger.register(b"A", "", {"credit": 1, "name": "A"}, T0)
    b = ledger.register(b"B", "", {"credit": 1, "name": "B"}, T0)
    ledger.dispatch(T0)
    ((route, [key]),) = tasks_of(ledger).items()
    holder, other = (a, b) if route == b"A" else (b, a)
    big = {"records": (1 << 62) - 1, "bytes": (1 << 62) - 1, "secs": 1e9 - 1}
    ledger.done(other, [report(key, big)], tuple(map_output()))  # not its attempt
    ledger.done(holder, [report(key._replace(attempt=key.attempt ^ (1 << 20)), big)],
                tuple(map_output()))  # an attempt never handed out
    ledger.done(holder, [report(key, big), report(key, big)], tuple(map_output(2)))
    ledger.done(holder, [report(key, big)], tuple(map_output()))
    ledger.done(holder, [report(key, {"records": -1})], tuple(map_output()))
    done = [e for e in ledger.events.since(0, "j") if e["type"] == "done"]
    assert len(done) == 1 and done[0]["records"] == (1 << 62) - 1
    assert ledger.events.flow("j")["map"]["records_in"] == (1 << 62) - 1
    assert [r[-1] for r in _rows(ledger)] == ["done"]
    assert ledger.events.totals()[0][("tasks_done", "map")] == 1


def test_a_multi_step_job_s_table_keeps_each_step_s_rows_under_its_cap(ledger):
    """Steps replace a job's maps and reduces: rows of an earlier step keep their step,
    kind and index, and go first when the table is full."""
    from .test_ledger import T0, add_job, map_output, report, tasks_of

    ledger.events.attempts_per_job = 8
    job = add_job(ledger, maps=12, steps=[{"reducers": 1, "map_only": False},
                                         {"reducers": 1, "map_only": False}])
    ledger.events.job_submitted(job)
    w = ledger.register(b"A", "", {"credit": 4, "name": "A"}, T0)
    for _ in range(40):
        ledger.dispatch(T0)
        held = tasks_of(ledger)
        if not held:
            break
        for key in held[b"A"]:
            ledger.done(w, [report(key)], tuple(map_output()))
        ledger.events.flush()
    assert job.state == "succeeded" and job.step == 1
    rows = _rows(ledger)
    assert 0 < len(rows) <= 8 + 1 + 4
    assert rows[-1][:2] == (2, "reduce-0") and all(r[-1] == "done" for r in rows)
    steps = [r[0] for r in rows]
    assert steps == sorted(steps)
    log = ledger.events._jobs["j"]
    assert ledger.events._rows == log.rows == len(rows)


def test_a_forgotten_job_leaves_nothing_of_itself_in_the_global_ring():
    """Dispatched, committed, failed, abandoned, then forgotten: neither the job nor its
    tasks stay alive through the events the global ring still holds."""
    import gc
    import weakref

    events = EventLog()
    job = Job("j")
    job.maps = [Task(job, i) for i in range(3)]
    job.tasks = lambda kind, maps=job.maps: maps
    events.job_submitted(job)
    events.dispatched(job, job.maps, [1, 2, 3], "w1", backup=True)
    events.noted.extend(("j", "map", 0, 1, "", 0.5, 1, 2, 3))
    events.failed(job.maps[1], 2, "boom", "tb", {"path": "/x", "key": "secret"}, False, True)
    events.abandoned(job, [type("K", (), {"kind": "map", "index": 2, "attempt": 3})()], "x")
    events.flush()
    assert [e["type"] for e in events.since(0)] == [
        "job-submitted", "job-started", "dispatched", "dispatched", "dispatched", "done",
        "failed", "abandoned"]
    alive = weakref.ref(job), weakref.ref(job.maps[0])
    events.job_dropped("j")
    del job
    gc.collect()
    assert not any(ref() for ref in alive)
    # its attempts' events were its attempt table's batches, which went with it; its other
    # events stay in the global ring for as long as it holds them
    seen = events.since(0)
    assert [e["type"] for e in seen] == ["job-submitted", "job-started", "failed", "abandoned"]
    assert "secret" not in repr(seen)
    assert events._bytes == sum(e[5] for e in events._global)


def test_a_cut_batch_of_both_kinds_keeps_each_row_s_kind():
    """The table's cap cuts a dispatch batch of maps and reduces in two: each half keeps
    its tasks with their attempts."""
    events = EventLog(attempts_per_job=8)
    job = Job("j")
    events.job_submitted(job)
    tasks = [Task(job, i, "map" if i % 2 else "reduce") for i in range(6)]
    events.dispatched(job, tasks, [10 + i for i in range(6)], "w1")
    events.dispatched(job, [Task(job, 9)], [99], "w1")
    events.dispatched(job, tasks[:3], [20, 21, 22], "w2")  # 10 rows: back to 8
    rows = [(r["kind"], r["index"], r["attempt"]) for r in events.attempts("j")]
    assert rows == [("reduce", 2, 12), ("map", 3, 13), ("reduce", 4, 14), ("map", 5, 15),
                    ("map", 9, 99), ("reduce", 0, 20), ("map", 1, 21), ("reduce", 2, 22)]
    # the events of the attempts dispatched are those the table keeps, each of its kind
    sent = [(e["kind"], e["index"], e["attempt"]) for e in events.since(0, "j")
            if e["type"] == "dispatched"]
    assert sent == rows


def test_readers_on_other_threads_see_consistent_events_while_the_loop_writes():
    """HTTP threads read (events after a cursor, attempt tables, flows, totals) while the
    loop dispatches, commits, fails, trims and forgets jobs: no reader raises, every read
    is in order without repeats, and the loop's own reads record what it noted."""
    import threading

    events = EventLog(per_job=50, global_events=80, attempts_per_job=24, max_attempts=60,
                      max_bytes=40_000)
    stop = threading.Event()
    errors: list = []

    def reader() -> None:
        cursor = 0
        try:
            while not stop.is_set():
                for job in (None, "j3", "j4"):
                    seen = events.since(0, job)
                    seqs = [e["seq"] for e in seen]
                    assert seqs == sorted(set(seqs)), seqs
                after = events.since(cursor)
                if after:
                    assert after[0]["seq"] > cursor
                    cursor = after[-1]["seq"]
                for job in ("j3", "j4"):
                    events.timeline(job)
                    events.flow(job)
                events.totals()
        except Exception as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for n in range(12):
            job = Job(f"j{n}")
            job.maps = [Task(job, i) for i in range(30)]
            job.tasks = lambda kind, job=job: job.maps
            events.job_submitted(job)
            for first in range(0, 30, 6):
                batch = job.maps[first:first + 6]
                ids = [(n << 20) | (i << 12) | 1 for i in range(first, first + 6)]
                for t, a in zip(batch, ids):
                    t.running[a] = b"w"
                events.dispatched(job, batch, ids, f"w{n % 3}")
                for t, a in zip(batch[:-1], ids):
                    t.running.clear()
                    events.noted.extend((job.id, "map", t.index, a, "", 0.1, 1, 2, 3))
                events.failed(batch[-1], ids[-1], "boom", "", {}, False, True)
                batch[-1].running.clear()
                assert events.since(events.seq - 1, job.id)[-1]["type"] == "failed"
                events.flush()
            if n >= 5:
                events.job_dropped(f"j{n - 5}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert events._rows == sum(log.rows for log in events._jobs.values()) <= 60 + 30
    assert events._bytes <= 40_000


def test_readable_misses_no_message_a_level_triggered_wait_would_see():
    """``readable`` (the event flags read as ints) after each message of a burst, and after
    the last: a message sent once it said 'none' is still found by the next wait, so a
    drain loop that stops on it leaves nothing behind for ever."""
    import zmq

    from pymapreduce.patterns.sockets import readable

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        assert not readable(pull)
        got = 0
        for burst in (1, 7, 300):
            for i in range(burst):
                push.send(b"%d" % i)
            want = got + burst
            while got < want:
                assert pull.poll(10_000, zmq.POLLIN)  # (the loop's wait)
                while True:  # the drain: read while a message waits
                    pull.recv(zmq.NOBLOCK)
                    got += 1
                    if not readable(pull):
                        break
            assert got == want and not readable(pull)
            assert type(readable(pull)) is bool
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


def test_an_ended_job_s_abandoned_attempts_no_longer_hold_their_rows():
    """A job that ended with attempts out (cancelled, failed) had them abandoned: the
    broker no longer runs them (though its tasks still name them), so a full table lets
    their rows go like any other's, and no later dispatch goes over them again."""
    events = EventLog(attempts_per_job=1000, max_attempts=100)
    old = Job("old")
    tasks = [Task(old, i) for i in range(50)]
    old.tasks = lambda kind: tasks
    events.job_submitted(old)
    for i, t in enumerate(tasks):
        t.running[i + 1] = b"w"
    events.dispatched(old, tasks, [i + 1 for i in range(50)], "w1")
    old.state = "cancelled"
    events.job_ended(old, 1.0)
    keys = [type("K", (), {"kind": "map", "index": i, "attempt": i + 1})() for i in range(50)]
    events.abandoned(old, keys, "job cancelled")
    new = Job("new")
    events.job_submitted(new)
    for k in range(11):
        events.dispatched(new, [Task(new, i) for i in range(10)],
                          [1000 + 10 * k + i for i in range(10)], "w2")
    assert events._rows <= 100
    assert events._jobs["old"].rows == 0 and events._jobs["new"].rows == 100


def _full_table_with_stragglers(stragglers: int) -> tuple[EventLog, Job, list]:
    """A table of 40 rows whose first ``stragglers`` attempts, each dispatched alone,
    still run (attempt ``i + 1`` of task ``i``)."""
    events = EventLog(attempts_per_job=40, max_attempts=1_000_000)
    job = Job("j")
    events.job_submitted(job)
    slow = [Task(job, i) for i in range(stragglers)]
    for i, task in enumerate(slow):
        task.running[i + 1] = b"w"
        events.dispatched(job, [task], [i + 1], "slow")
    return events, job, slow


def _dispatch(events: EventLog, job: Job, first: int, n: int, commit: bool = False) -> None:
    """Attempts ``first .. first + n - 1`` (tasks of those indexes) in one message."""
    ids = list(range(first, first + n))
    events.dispatched(job, [Task(job, i) for i in ids], ids, "w")
    if commit:
        for i in ids:
            events.noted.extend((job.id, "map", i, i, "w", 0.1, 1, 2, 3))
        events.flush()


def test_a_full_table_does_not_go_over_its_stragglers_at_every_dispatch(monkeypatch):
    """Rows kept because their attempts still run were taken out and put back at every
    dispatch of a full table, so each dispatch looked at every straggler: now they are
    set aside once and looked at again in proportion to the events recorded. Counted:
    the batches looked at (one call of ``_running_in`` each) over 400 dispatches of one
    attempt, with 4 stragglers and with 400."""
    from pymapreduce.observe import attempts

    looked = [0]
    real = attempts._running_in

    def counting(tasks: tuple, ids: tuple) -> list:
        looked[0] += 1
        return real(tasks, ids)

    monkeypatch.setattr(attempts, "_running_in", counting)
    dispatches = 400
    for stragglers in (4, 400):
        events, job, slow = _full_table_with_stragglers(stragglers)
        looked[0] = 0
        for k in range(dispatches):
            _dispatch(events, job, 1_000_000 + k, 1)
        # each dispatch: the batch it takes, and its share of looking at the stragglers
        # again (one event); plus, once, the stragglers themselves and a full table
        assert looked[0] <= 2 * dispatches + stragglers + 45, (stragglers, looked[0])
        rows = events.attempts("j")
        assert [r["index"] for r in rows if r["outcome"] == "running"][:stragglers] == \
            list(range(stragglers))  # every straggler is still on the timeline


def test_stragglers_set_aside_keep_their_rows_while_they_run_and_go_once_they_ended():
    events, job, slow = _full_table_with_stragglers(60)
    log = events._jobs["j"]
    for k in range(50):  # a full table's dispatches, each committed at once
        _dispatch(events, job, 1000 + 5 * k, 5, commit=True)
        rows = events.attempts("j")
        assert [r["index"] for r in rows[:60]] == list(range(60))  # oldest first, kept
        assert all(r["outcome"] == "running" and r["worker"] == "slow" for r in rows[:60])
        assert all(r["outcome"] == "done" for r in rows[60:])
        assert len(rows) == log.rows <= 60 + 40 + 40 // 8
        assert events._rows == log.rows
        assert sum(len(items) // NOTE for _, _, items in log.ends) <= 40 + 40 // 8 + 5
    # half the stragglers commit, the other half fail: their rows say so until they go
    for i, task in enumerate(slow):
        task.running.clear()
        if i % 2:
            events.failed(task, i + 1, "boom", "", {}, False, True)
        else:
            events.noted.extend(("j", "map", i, i + 1, "slow", 9.0, 1, 2, 3))
    events.flush()
    for k in range(60):  # as many events as they are rows, and some
        rows = {r["attempt"]: r for r in events.attempts("j") if r["worker"] == "slow"}
        assert all(r["outcome"] == ("failed" if r["index"] % 2 else "done")
                   for r in rows.values())  # never "running" again, while it is there
        _dispatch(events, job, 5000 + k, 1, commit=True)
    assert not [r for r in events.attempts("j") if r["worker"] == "slow"]
    assert log.closed == {}  # their notes went with their rows
    assert len(events.attempts("j")) == log.rows == events._rows <= 40 + 40 // 8


def _full_log(jobs: int, tasks: int, **bounds: int) -> EventLog:
    """Jobs of one-attempt messages, each attempt committed in a turn of its own."""
    events = EventLog(**bounds)
    attempt = 0
    for j in range(jobs):
        job = Job(f"j{j}")
        events.job_submitted(job)
        for i in range(tasks):
            attempt += 1
            events.dispatched(job, [Task(job, i)], [attempt], "w")
            events.noted.extend((job.id, "map", i, attempt, "w", 0.1, 1, 2, 3))
            events.flush()
    return events


def test_a_reader_from_cursor_zero_goes_over_the_newest_events_only(monkeypatch):
    """An HTTP reader may ask for every event after 0, as often as it likes: the read
    (under the lock the broker loop writes with) must go over about the events it may
    serve (``global_events``, ``per_job``), not every batch of every attempt table
    (200,000 rows at the defaults)."""
    from pymapreduce.observe import reading

    events = _full_log(20, 500, per_job=50, global_events=100, attempts_per_job=2000,
                       max_attempts=100_000)
    built: list = []
    for name in ("_sent_entry", "_done_entry"):
        real = getattr(reading, name)
        monkeypatch.setattr(reading, name,
                            lambda *a, _real=real: built.append(1) or _real(*a))
    every = events.since(0)
    assert [e["seq"] for e in every] == list(range(events.seq - 99, events.seq + 1))
    assert len(built) <= 100 + 2
    built.clear()
    mine = events.since(0, "j3")
    assert len(mine) == 50 and {e["job"] for e in mine} == {"j3"}
    assert len(built) <= 50 + 2


def test_a_commit_noted_without_its_worker_names_it_on_every_read():
    """A commit noted without its worker is given the one its attempt was sent to: read
    before or after its dispatch row left the attempt table, the event is the same."""
    events = EventLog(attempts_per_job=8)
    job = Job("j")
    events.job_submitted(job)
    events.dispatched(job, [Task(job, 0)], [1], "w1")
    for i in range(1, 5):
        events.dispatched(job, [Task(job, i)], [i + 1], "w2")
    events.noted.extend(("j", "map", 0, 1, "", 0.1, 1, 2, 3))  # (its worker gone)
    events.flush()
    [done] = [e for e in events.since(0, "j") if e["type"] == "done"]
    assert done["worker"] == "w1"
    for i in range(5, 10):  # the first dispatches leave the table
        events.dispatched(job, [Task(job, i)], [i + 1], "w2")
    assert [r["worker"] for r in events.attempts("j")].count("w1") == 0
    assert [e for e in events.since(0, "j") if e["seq"] == done["seq"]] == [done]
