"""The broker's task table and scheduler on their own (no sockets, no processes)."""

from __future__ import annotations

from pymapreduce.broker.scheduler import Scheduler
from pymapreduce.broker.tasks import DONE, JobState


def job(job_id: str, maps: int) -> JobState:
    return JobState(job_id, job_id, b"code", [["mem", b""]] * maps, 2, False, None, 0.0)


def test_a_retry_goes_to_another_worker_while_there_is_one():
    j = job("j", 3)
    sched = Scheduler()
    sched.add(j)
    first = j.pending[0]
    first.avoid_worker(b"A")  # it failed on worker A
    live = {b"A": 1, b"B": 1}
    got = sched.take(1, b"A", live)
    assert got and got[0] is not first  # A gets the next task instead
    assert sched.take(1, b"B", live) == [first]


def test_a_retry_returns_to_the_failing_worker_when_no_other_is_left():
    j = job("j", 1)
    sched = Scheduler()
    sched.add(j)
    for route in (b"A", b"B"):  # failed on both; B has gone since
        j.pending[0].avoid_worker(route)
    assert sched.take(1, b"A", {b"A": 1}) == [j.maps[0]]


def test_only_retries_left_for_this_worker_end_the_round_without_looping():
    j = job("j", 1)
    sched = Scheduler()
    sched.add(j)
    j.pending[0].avoid_worker(b"A")
    assert sched.take(4, b"A", {b"A": 1, b"B": 1}) == []
    assert len(j.pending) == 1


def test_jobs_take_turns():
    a, b = job("a", 4), job("b", 4)
    sched = Scheduler()
    sched.add(a)
    sched.add(b)
    got = sched.take(4)
    assert sorted(t.job.id for t in got) == ["a", "a", "b", "b"]


def test_a_restored_commit_counts_once_and_queues_the_reduces():
    j = job("j", 2)
    j.commit(j.maps[0], {"counters": {"n": 1}}, [0], restored=True)
    j.commit(j.maps[1], {"counters": {"n": 2}}, [1], restored=True)
    assert j.recovered == 2 and j.counters == {"n": 3}
    assert j.phase == "reduce" and [t.index for t in j.pending if t.kind == "reduce"] == [0, 1]
    assert all(t.state == DONE for t in j.maps)


def test_clients_share_the_workers_equally_whatever_priorities_they_give_their_jobs():
    def owned(job_id, maps, tenant, priority):
        return JobState(job_id, job_id, b"code", [["mem", b""]] * maps, 2, False, None, 0.0,
                        options={"tenant": tenant, "priority": priority})

    greedy = owned("greedy", 100, "key A", 1e6)
    modest = owned("modest", 10, "key B", 1)
    mine_too = owned("a-second", 100, "key A", 1)
    sched = Scheduler()
    for j in (greedy, mine_too, modest):
        sched.add(j)
    taken = [sched.take(1, b"W", {b"W": 1})[0].job.id for _ in range(20)]
    assert taken.count("modest") == 10  # half the slots while it has tasks
    # within key A, its own priorities decide: the greedy job gets nearly all of A's half
    assert taken.count("greedy") >= 9 and taken.count("a-second") <= 1
