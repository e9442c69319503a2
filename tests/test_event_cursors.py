"""A follower of the event log resumes from the last event it was served: across batches
that a cursor, a reply's limit or the log's cap cut, it gets every event the log holds
after its cursor once, and is told ``skipped`` only when the log kept fewer than there
were."""

from __future__ import annotations

import random

from pymapreduce.observe.events import EventLog


class Job:
    reducers, steps, step, state, submitted, error, phase = 1, [], 0, "running", 0.0, None, "map"

    def __init__(self, job_id: str, tenant: str = "") -> None:
        self.id = self.name = job_id
        self.tenant = tenant
        self.maps: list = []
        self.reduces: list = []


class Task:
    def __init__(self, job: Job, index: int) -> None:
        self.job, self.kind, self.index, self.running = job, "map", index, {}


def _key(event: dict) -> tuple:
    return event["seq"], event["type"], event.get("job"), event.get("index")


def test_a_follower_with_a_limit_gets_each_held_event_once_across_cut_batches():
    """The log driven as the broker loop drives it (a batch of attempts per message, the
    turn's commits flushed together, a phase now and then), two jobs, batches of 1 to 40
    events; a follower of each stream reads with a limit that cuts batches and resumes
    from the last event served, sometimes after falling past the cap. Against a log that
    keeps everything: within the cap it is served exactly the next events after its
    cursor and not told ``skipped`` (a batch its cursor is inside counts only its events
    past the cursor); past the cap it is told so and served the oldest of the newest
    ``cap`` events at most; never an event twice."""
    cap = 60
    # (attempt tables big enough that no row, hence no event of one, goes: the cap alone
    # bounds what is read)
    log = EventLog(per_job=cap, global_events=cap, attempts_per_job=10**5, max_attempts=10**6)
    whole = EventLog(per_job=10**6, global_events=10**6, attempts_per_job=10**5,
                     max_attempts=10**6)  # keeps every event
    jobs = [Job("j"), Job("k")]
    for events in (log, whole):
        for job in jobs:
            events.job_submitted(job)
    rng = random.Random(7)
    cursors = {"j": 0, "k": 0, None: 0}
    running: list = []
    attempt = 0
    exact = cut = told = 0
    for turn in range(400):
        behind = rng.random() < 0.05  # now and then a follower waits through a flood
        for _ in range(rng.randint(1, 12 if behind else 3)):
            job = rng.choice(jobs)
            n = rng.randint(1, 30)
            tasks = [Task(job, i) for i in range(n)]
            ids = list(range(attempt + 1, attempt + n + 1))
            attempt += n
            for events in (log, whole):
                events.dispatched(job, tasks, ids, "w")
            running += [(job.id, i, a) for i, a in enumerate(ids)]
        rng.shuffle(running)  # (a turn's commits: up to 40 too, not to make one batch
        k = rng.randint(min(len(running), 20), min(len(running), 40))  # past the cap)
        commit, running = running[:k], running[k:]
        for events in (log, whole):
            for job_id, index, a in commit:
                events.noted.extend((job_id, "map", index, a, "w", 0.1, 1, 2, 3))
            if turn % 17 == 0:
                events.phase(jobs[0])
            events.flush()
        for stream in cursors:
            cursor = cursors[stream]
            limit = rng.randint(1, 50)
            got, gap = log.since_gap(cursor, stream, limit)
            after = [_key(e) for e in whole.since(cursor, stream, limit=10**9)]
            served = [_key(e) for e in got]
            assert all(s[0] > cursor for s in served)  # nothing served twice
            if len(after) <= cap:
                assert not gap, (stream, cursor, len(after))
                assert served == after[:limit]
                exact += 1
                cut += limit < len(after)
            else:
                assert gap and served, (stream, cursor, len(after))
                start = after.index(served[0])
                assert served == after[start:start + limit]
                assert cap - 40 < len(after) - start <= cap  # (whole batches)
                told += 1
            if got:
                cursors[stream] = got[-1]["seq"]
    assert exact > 500 and told > 20 and cut > 300, (exact, told, cut)
