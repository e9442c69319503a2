"""Attacks on the event log's batched form (a review of its rework): the attempt table's
caps while attempts still run, backups, hostile reports, forgotten jobs, readers on other
threads, and the sockets' 'a message waits' check."""

from __future__ import annotations

from pymapreduce.observe.events import EventLog


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
