"""Attacks on the event log's batched form (a review of its rework): the attempt table's
caps while attempts still run, backups, hostile reports, forgotten jobs, readers on other
threads, and the sockets' 'a message waits' check."""

from __future__ import annotations

import pytest

from pymapreduce.broker.config import BrokerConfig
from pymapreduce.broker.ledger import Ledger
from pymapreduce.broker.sink import Store
from pymapreduce.observe.events import EventLog


@pytest.fixture
def ledger():
    store = Store(1 << 30)
    yield Ledger(BrokerConfig(bind="tcp://127.0.0.1:0", heartbeat_interval=0.2, liveness=1.0),
                 store)
    store.close()


class Job:
    reducers, steps, step, state, submitted, error, tenant = 1, [], 0, "running", 0.0, None, ""

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
        events.noted.append(("j", "map", 0, 4097, "w1", 0.1, 3, 10, 5))  # as _commit does
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
