"""Sinks as the broker's ledger sees them, without sockets: partition assignment, map
reports that name pushed partitions, reduce tasks that read at a sink, and what a lost
sink or a missing segment costs (broker/sinkplan.py)."""

from __future__ import annotations

import pytest

from pymapreduce.broker.ledger import Ledger
from pymapreduce.broker.tasks import DONE, MAP, PENDING, REDUCE, RUNNING
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.wire import AttemptKey

from .test_ledger import T0, add_job, map_output, report, sent

SINK_A, SINK_B = "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"


def with_sinks(ledger: Ledger, *addresses: str) -> None:
    for i, address in enumerate(addresses):
        ledger.sink_joined(f"sink{i}".encode(), {"address": address, "name": f"s{i}"}, T0)


def take_tasks(ledger: Ledger) -> list[tuple[bytes, dict, list]]:
    """(route, body, [AttemptKey + split]) of each TASKS message in the outbox."""
    out = []
    for s in sent(ledger, P.TASKS):
        items = [(AttemptKey(s.msg.body["job"], k, i, a), split)
                 for k, i, a, split, *_ in s.msg.body["tasks"]]
        out.append((s.route, s.msg.body, items))
    return out


def hand_out(ledger: Ledger, worker, n: int) -> list[tuple[AttemptKey, list]]:
    """Dispatch until ``n`` attempts were handed out (the ledger paces its prefetch)."""
    got: list = []
    for _ in range(50):
        worker.running.clear()  # (as if the worker had room again)
        ledger.dispatch(T0)
        got += [item for _, _, items in take_tasks(ledger) for item in items]
        if len(got) >= n:
            worker.running.update(key for key, _ in got)
            return got
    raise AssertionError(f"{len(got)} of {n} tasks handed out")


def run_maps(ledger: Ledger, worker, job, sunk=lambda i: [0, 1]) -> dict[int, int]:
    """Hand out and commit every pending map task as pushed to sinks; map -> attempt."""
    attempts = {}
    while job.pending and job.pending[0].kind == MAP:
        ledger.dispatch(T0)
        for _, body, items in take_tasks(ledger):
            assert body["sinks"] == job.sinks
            for key, _ in items:
                if key.kind == MAP:
                    ledger.done(worker, [report(key, {"records": 1, "sunk": sunk(key.index)},
                                                nblobs=0)], ())
                    attempts[key.index] = key.attempt
    return attempts


def test_a_step_sends_its_partitions_to_the_sinks_and_reducers_read_them_there(ledger):
    with_sinks(ledger, SINK_B, SINK_A)
    job = add_job(ledger, maps=3, reducers=2)
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    ledger.dispatch(T0)
    assert job.sinks == [SINK_A, SINK_B]  # fixed at the first dispatch, in address order
    out = list(ledger.outbox)
    assigned = [s for s in out if s.msg.command == P.ASSIGN]
    assert sorted(s.route for s in assigned) == [b"sink0", b"sink1"]
    assert all(s.msg.body["steps"] == [[job.id, 0, 2]] for s in assigned)
    tasks = take_tasks(ledger)
    assert tasks and all(b["sinks"] == [SINK_A, SINK_B] for _, b, _ in tasks)
    for _, _, items in tasks:
        for key, _ in items:
            ledger.done(w, [report(key, {"records": 1, "sunk": [0, 1]}, nblobs=0)], ())
    run_maps(ledger, w, job)
    assert job.phase == REDUCE  # nothing stored at the broker:
    assert not any((job.id, MAP, m, r) in ledger.store for m in range(3) for r in range(2))
    reduces = {key.index: split for key, split in hand_out(ledger, w, 2)}
    attempts = {m: job.map_attempts[m] for m in range(3)}
    assert reduces[0] == ["sink", SINK_A, 0, [[m, attempts[m]] for m in range(3)]]
    assert reduces[1] == ["sink", SINK_B, 0, [[m, attempts[m]] for m in range(3)]]


def test_a_map_report_that_names_partitions_out_of_range_fails_its_attempt(ledger):
    with_sinks(ledger, SINK_A)
    job = add_job(ledger, maps=1, reducers=2)
    w = ledger.register(b"W", "", {"credit": 1}, T0)
    for bad in ([0, 2], [1, 0], [-1], "0", [0, 0]):
        ledger.dispatch(T0)
        [(_, _, [(key, _)])] = take_tasks(ledger)
        ledger.done(w, [report(key, {"records": 1, "sunk": bad}, nblobs=0)], ())
        assert job.maps[0].state == PENDING and job.done_maps == 0, bad
        job.maps[0].failures = 0  # (keep the job alive for the next bad report)
    ledger.dispatch(T0)
    [(_, _, [(key, _)])] = take_tasks(ledger)
    # outputs sent to the broker for a step whose shuffle goes to sinks: refused too
    ledger.done(w, [report(key, {"records": 1}, nblobs=2)], tuple(map_output(2)))
    assert job.maps[0].state == PENDING and (job.id, MAP, 0, 0) not in ledger.store


def test_a_lost_sink_re_runs_the_maps_that_fed_it_and_holds_its_reduces(ledger):
    with_sinks(ledger, SINK_A, SINK_B)
    job = add_job(ledger, maps=3, reducers=2)
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    run_maps(ledger, w, job, sunk=lambda i: [0] if i == 2 else [0, 1])
    assert job.phase == REDUCE
    first = {key.index: key for key, _ in hand_out(ledger, w, 2)}
    assert set(first) == {0, 1}
    ledger.lose_sink(ledger.sinks[b"sink1"], "test")  # SINK_B held partition 1
    assert job.sinks == [SINK_A, SINK_A]
    assert job.reruns == 2  # maps 0 and 1 wrote to partition 1; map 2 did not
    assert [t.state for t in job.maps] == [PENDING, PENDING, DONE]
    assert job.reduces[1].state == PENDING and job.reduces[1] not in job.pending
    assert job.reduces[0].state == RUNNING  # its partition is on a live sink
    abandoned = sent(ledger, P.ABANDON)
    assert any(first[1].attempt in [a for *_, a in s.msg.body["tasks"]] for s in abandoned)
    # the reduce of the lost partition, if it still reports, is not taken
    ledger.done(w, [report(first[1])], (b"",))
    assert job.reduces[1].state == PENDING
    v = ledger.register(b"V", "", {"credit": 8}, T0)
    again = run_maps(ledger, v, job)
    assert set(again) == {0, 1} and job.phase == REDUCE
    [(key, split)] = hand_out(ledger, v, 1)
    assert key.index == 1 and split[1] == SINK_A
    assert split[3] == [[0, again[0]], [1, again[1]]]  # the new attempts, map order
    ledger.done(w, [report(first[0])], (b"",))
    ledger.done(v, [report(key)], (b"",))
    assert job.state == P.JOB_SUCCEEDED and job.status(T0)["reruns"] == 2


def test_a_reducer_that_finds_segments_missing_gets_those_maps_run_again(ledger):
    with_sinks(ledger, SINK_A)
    job = add_job(ledger, maps=2, reducers=1)
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    run_maps(ledger, w, job, sunk=lambda i: [0])
    [(key, _)] = hand_out(ledger, w, 1)
    w.running.add(key)
    failure = {**key._asdict(), "error": "SegmentsLost", "position": {"lost": [1, 99]}}
    ledger.failed(w, failure)
    assert job.reduces[0].failures == 0  # not its fault
    assert [t.state for t in job.maps] == [DONE, PENDING]  # 99 is no map of it: ignored
    run_maps(ledger, w, job, sunk=lambda i: [0])
    [(key, split)] = hand_out(ledger, w, 1)
    w.running.add(key)
    assert [m for m, _ in split[3]] == [0, 1]
    # a report that names no map of the partition counts as an ordinary failure
    ledger.failed(w, {**key._asdict(), "error": "x", "position": {"lost": [7]}})
    assert job.reduces[0].failures == 1


def test_without_a_live_sink_the_step_falls_back_to_the_broker(ledger):
    with_sinks(ledger, SINK_A)
    job = add_job(ledger, maps=2, reducers=1)
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    run_maps(ledger, w, job, sunk=lambda i: [0])
    ledger.tick(T0 + 5)  # the sink fell silent past its liveness
    assert not ledger.sinks and job.sinks == [] and job.reruns == 2
    ledger.register(b"W", "", {"credit": 8}, T0 + 5)  # (the worker was silent too)
    w = ledger.workers[b"W"]
    while job.phase == MAP:
        ledger.dispatch(T0 + 5)
        for _, body, items in take_tasks(ledger):
            assert "sinks" not in body
            for key, _ in items:
                ledger.done(w, [report(key)], tuple(map_output(1)))
    assert job.phase == REDUCE and all((job.id, MAP, m, 0) in ledger.store for m in range(2))
    [(key, split)] = hand_out(ledger, w, 1)
    assert split[0] == "segs"


def test_a_sink_registration_is_checked_and_bounded(ledger):
    for body in ({}, {"address": 5}, {"address": "nonsense"}, {"address": "x" * 400}):
        with pytest.raises(ValueError):
            ledger.sink_joined(b"s", body, T0)
    assert not ledger.sinks
    ledger.sink_joined(b"s", {"address": SINK_A}, T0)
    # another identity at the same address is refused while the first one lives (two
    # would take turns, each losing the other at every heartbeat) ...
    with pytest.raises(ValueError, match="registered at"):
        ledger.sink_joined(b"t", {"address": SINK_A}, T0 + 0.1)
    assert list(ledger.sinks) == [b"s"]
    # ... and taken once the first has been silent for the liveness period
    ledger.tick(T0 + 1.5)
    ledger.sink_joined(b"t", {"address": SINK_A}, T0 + 1.5)
    assert list(ledger.sinks) == [b"t"]
    assert ledger.sink_beat(b"t", "", T0 + 2, {"in": 10, "out": -1, "segments": "x"})
    assert ledger.sinks[b"t"].carried == {"in": 10, "out": 0, "segments": 0}
    assert not ledger.sink_beat(b"W", "", T0 + 2)  # not a sink: a worker's beat


def test_on_a_secured_broker_a_sink_is_its_key(ledger):
    """Beats and BYEs count only under the key the sink registered with; another key
    registering on its identity makes it lost; reducers are told the sink's key."""
    ledger.secured = True
    ledger.sink_joined(b"s", {"address": SINK_A}, T0, "K1")
    assert not ledger.sink_beat(b"s", "K2", T0 + 0.5)  # its identity, another key
    assert ledger.sinks[b"s"].last_seen == T0
    assert not ledger.sink_left(b"s", "K2") and b"s" in ledger.sinks
    assert ledger.sink_beat(b"s", "K1", T0 + 0.5)
    job = add_job(ledger, maps=1, reducers=1)
    w = ledger.register(b"W", "W1", {"credit": 8}, T0)
    ledger.dispatch(T0)
    [(_, body, [(key, _)])] = take_tasks(ledger)
    assert body["sinks"] == [SINK_A] and body["sink_keys"] == ["K1"]
    ledger.reporter(b"W", "W1", T0)
    ledger.done(w, [report(key, {"records": 1, "sunk": [0]}, nblobs=0)], ())
    [(key, split)] = hand_out(ledger, w, 1)
    assert split[4] == "K1"
    ledger.sink_joined(b"s", {"address": SINK_A}, T0 + 1, "K2")
    assert job.reruns == 1  # the K1 sink, and what it held, are gone


def test_a_reduce_of_a_live_partition_handed_out_during_a_re_run_names_known_attempts(
        ledger):
    with_sinks(ledger, SINK_A, SINK_B)
    job = add_job(ledger, maps=2, reducers=2)
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    first = run_maps(ledger, w, job)
    assert job.phase == REDUCE
    ledger.lose_sink(ledger.sinks[b"sink1"], "test")  # partition 1's sink, in the reduce phase
    # partition 0's reduce is pending and handed out while maps 0 and 1 run again
    handed = hand_out(ledger, w, 3)
    reduce0 = [s for k, s in handed if k.kind == REDUCE]
    assert reduce0 == [["sink", SINK_A, 0, [[0, first[0]], [1, first[1]]]]]


def test_two_sinks_lost_while_maps_run_again_never_count_a_map_twice(ledger):
    """The chaos soak once got doubled counts: a map that had committed again after one
    sink was lost was added a second time to a partition when another sink was lost."""
    with_sinks(ledger, SINK_A, SINK_B, "tcp://127.0.0.1:7003")
    job = add_job(ledger, maps=3, reducers=3)
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    run_maps(ledger, w, job, sunk=lambda i: [0, 1, 2])
    ledger.lose_sink(ledger.sinks[b"sink0"], "first")
    # map 0 commits again; maps 1 and 2 still wait to run again when the next sink goes
    handed = hand_out(ledger, w, 5)  # (the live partitions' reduces come first)
    key = next(k for k, _ in handed if k.kind == MAP)
    ledger.done(w, [report(key, {"records": 1, "sunk": [0, 1, 2]}, nblobs=0)], ())
    assert job.maps[key.index].state == DONE
    ledger.lose_sink(ledger.sinks[b"sink1"], "second")
    v = ledger.register(b"V", "", {"credit": 8}, T0)
    run_maps(ledger, v, job, sunk=lambda i: [0, 1, 2])
    assert job.phase == REDUCE
    for r in range(3):
        assert sorted(job.map_parts[r]) == [0, 1, 2], (r, job.map_parts[r])
    # the two lost partitions' reduces (the third one runs on W since before the losses)
    splits = [s for k, s in hand_out(ledger, v, 2) if k.kind == REDUCE]
    assert len(splits) == 2
    for split in splits:
        assert [m for m, _ in split[3]] == [0, 1, 2]
        assert all(a == job.map_attempts[m] for m, a in split[3])


def test_a_restarted_broker_re_runs_the_maps_of_a_sink_that_comes_back_empty(ledger):
    """After a broker restart, a sink that registers at an awaited address without the
    segments of the jobs that used it (it restarted without its state) is taken at once,
    and the maps that fed the one it replaces run again."""
    with_sinks(ledger, SINK_A)
    job = add_job(ledger, maps=2, reducers=1)
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    run_maps(ledger, w, job, sunk=lambda i: [0])
    # as a restarted broker sees it: the sink is awaited, not registered
    ledger.sinks.clear()
    ledger.expect_sinks(T0)
    ledger.sink_joined(b"new", {"address": SINK_A, "jobs": []}, T0 + 0.1)
    assert list(ledger.sinks) == [b"new"] and job.reruns == 2
    assert job.sinks == [SINK_A]  # the maps run again to it (not to the broker)
    run_maps(ledger, w, job, sunk=lambda i: [0])
    # one that comes back with them is taken without re-running anything
    ledger.sinks.clear()
    ledger.expect_sinks(T0)
    ledger.sink_joined(b"back", {"address": SINK_A, "jobs": [job.id]}, T0 + 0.2)
    assert list(ledger.sinks) == [b"back"] and job.reruns == 2


def test_a_restarted_broker_holds_a_step_s_tasks_until_its_sinks_are_back(ledger):
    """After a restart, a job whose step pushes to sinks waits for them: a map handed out
    before the sink registered again ran whole, then failed (counted against the task)
    because the broker could not name the sink to the worker."""
    job = add_job(ledger, maps=2, reducers=2)
    job.sinks = [SINK_A, SINK_B]
    ledger.expect_sinks(T0)  # as recovery does
    assert job.sinks_expected
    ledger.register(b"A", "", {"credit": 2}, T0)
    ledger.dispatch(T0)
    assert take_tasks(ledger) == [] and job.maps[0].state == PENDING
    ledger.tick(T0)
    assert "have not registered again" in job.waiting
    ledger.sink_joined(b"sink0", {"address": SINK_A}, T0 + 0.1)
    ledger.dispatch(T0 + 0.1)
    assert take_tasks(ledger) == [] and job.sinks_expected  # one of two is back
    ledger.sink_joined(b"sink1", {"address": SINK_B}, T0 + 0.2)
    assert not job.sinks_expected
    ledger.dispatch(T0 + 0.2)
    assert take_tasks(ledger)
    ledger.tick(T0 + 0.2)
    assert job.waiting == ""


def test_a_sink_that_does_not_come_back_is_lost_and_the_step_goes_on(ledger):
    job = add_job(ledger, maps=2, reducers=2)
    job.sinks = [SINK_A, SINK_B]
    ledger.expect_sinks(T0)
    ledger.register(b"A", "", {"credit": 2}, T0)
    ledger.sink_joined(b"sink0", {"address": SINK_A}, T0 + 0.1)
    assert job.sinks_expected
    ledger.sink_beat(b"sink0", "", T0 + ledger.config.liveness)
    ledger.tick_sinks(T0 + ledger.config.liveness + 0.5)  # SINK_B never came back
    assert not job.sinks_expected and job.sinks == [SINK_A, SINK_A]
    ledger.workers[b"A"].last_seen = T0 + ledger.config.liveness
    ledger.dispatch(T0 + ledger.config.liveness)
    assert take_tasks(ledger)
