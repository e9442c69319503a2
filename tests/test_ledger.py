"""The broker's ledger without sockets: attempts, commits, retries, skips, backups and the
checks on who may report what, driven by calls and a hand-set clock."""

from __future__ import annotations

import logging

import pytest

from pymapreduce.broker.config import BrokerConfig
from pymapreduce.broker.ledger import Fetched, Ledger, Publish, Send
from pymapreduce.broker.tasks import PENDING, JobState
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.records import pack
from pymapreduce.patterns.wire import AttemptKey

T0 = 1000.0  # the hand-set clock's start



def add_job(ledger: Ledger, job_id: str = "j", maps: int = 2, reducers: int = 1,
            **options) -> JobState:
    splits = [["mem", pack([[i, f"w{i}"]])] for i in range(maps)]
    job = JobState(job_id, job_id, b"code", splits, reducers, False, b"client", T0,
                   options={"reducers": reducers, "map_only": False, **options})
    ledger.jobs[job_id] = job
    ledger.scheduler.add(job)
    return job


def sent(ledger: Ledger, command: str | None = None) -> list[Send]:
    """Take the messages out of the outbox (of one command, or all)."""
    out = [x for x in ledger.outbox if isinstance(x, Send)
           and (command is None or x.msg.command == command)]
    ledger.outbox.clear()
    return out


def tasks_of(ledger: Ledger) -> dict[bytes, list]:
    """route -> [(job, kind, index, attempt), ...] handed out in the outbox."""
    held: dict[bytes, list] = {}
    for s in sent(ledger, P.TASKS):
        for kind, index, attempt, *_ in s.msg.body["tasks"]:
            held.setdefault(s.route, []).append(
                AttemptKey(s.msg.body["job"], kind, index, attempt))
    return held


def map_output(n_parts: int = 1) -> list[bytes]:
    return [pack([["w"], [[1]]]) for _ in range(n_parts)]


def report(key: tuple, stats: dict | None = None, nblobs: int = 1) -> list:
    return [*key, stats if stats is not None else {"records": 1}, nblobs]


def test_a_report_counts_only_from_the_worker_holding_the_attempt(ledger):
    job = add_job(ledger, maps=1)
    a = ledger.register(b"A", "", {"credit": 1}, T0)
    b = ledger.register(b"B", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    (route, [key]), = held.items()
    holder, other = (a, b) if route == b"A" else (b, a)
    ledger.done(other, [report(key)], tuple(map_output()))  # forged: ignored
    ledger.failed(other, {"job": key[0], "kind": key[1], "index": key[2],
                          "attempt": key[3], "error": "forged"})
    assert job.done_maps == 0 and job.maps[0].failures == 0
    ledger.done(holder, [report(key)], tuple(map_output()))
    assert job.done_maps == 1 and job.phase == "reduce"


def test_a_malformed_report_fails_its_attempt_and_the_task_is_retried(ledger):
    job = add_job(ledger, maps=1)
    w = ledger.register(b"A", "", {"credit": 1}, T0)
    for attempt in range(ledger.config.max_attempts):
        ledger.dispatch(T0)
        [key] = tasks_of(ledger)[b"A"]
        assert key[3] & 0xFFF == attempt + 1  # the attempt's number, under random bits
        ledger.done(w, [report(key, {"counters": {"n": "many"}})], tuple(map_output()))
    assert job.state == P.JOB_FAILED
    assert "malformed report" in job.error["message"]
    assert any(isinstance(x, Publish) and x.job is job for x in ledger.outbox)


def test_outputs_of_the_wrong_shape_fail_the_attempt_instead_of_wedging_it(ledger):
    job = add_job(ledger, maps=1, reducers=2)
    w = ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    ledger.done(w, [report(key)], tuple(map_output(1)))  # 1 partition for 2 reducers
    assert job.maps[0].failures == 1 and job.maps[0].state == PENDING
    assert not w.running


def test_a_silent_worker_is_purged_and_its_task_handed_to_another(ledger):
    job = add_job(ledger, maps=1)
    ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    assert list(tasks_of(ledger)) == [b"A"]
    ledger.register(b"B", "", {"credit": 1}, T0 + 0.9)
    ledger.tick(T0 + 1.5)  # A said nothing for 1.5 s (liveness 1.0); B spoke at 0.9
    assert b"A" not in ledger.workers and job.maps[0].failures == 1
    assert list(tasks_of(ledger)) == [b"B"]


def test_heartbeats_count_only_from_the_worker_its_beat_socket_or_its_supervisor(ledger):
    ledger.register(b"A", "", {"credit": 1, "supervisor": b"sup"}, T0)
    assert ledger.heartbeat(b"X", "", b"A", T0 + 0.5) is None  # a stranger: ignored
    assert ledger.workers[b"A"].last_seen == T0
    for peer in (b"A", b"A/hb", b"sup"):
        assert ledger.heartbeat(peer, "", b"A", T0 + 0.5) == P.HEARTBEAT
    assert ledger.heartbeat(b"Z", "", b"Z", T0) == P.RECONNECT  # unknown: register


def test_a_flood_of_beats_is_ignored_past_one_per_sender_per_quarter_interval(ledger):
    """A sender's beats closer together than BEAT_GAP of the interval are ignored whole
    ("": no answer, no liveness, no progress, and no dispatch after them), each sender's
    apart (a worker's own beats and its supervisor's on its behalf); an unknown sender
    is told to RECONNECT once per gap, not once per beat."""
    from pymapreduce.broker.ledger import BEAT_GAP

    gap = ledger.config.heartbeat_interval * BEAT_GAP
    ledger.register(b"A", "", {"credit": 1, "supervisor": b"sup"}, T0)
    assert ledger.heartbeat(b"A", "", b"A", T0 + 1) == P.HEARTBEAT
    assert [ledger.heartbeat(b"A", "", b"A", T0 + 1 + gap * i / 10) for i in range(1, 10)] \
        == [""] * 9
    assert ledger.workers[b"A"].last_seen == T0 + 1
    assert ledger.heartbeat(b"sup", "", b"A", T0 + 1.01) == P.HEARTBEAT  # its own count
    assert ledger.heartbeat(b"A", "", b"A", T0 + 1 + gap * 1.01) == P.HEARTBEAT
    assert ledger.workers[b"A"].last_seen == T0 + 1 + gap * 1.01
    assert ledger.heartbeat(b"Z", "", b"Z", T0) == P.RECONNECT
    assert ledger.heartbeat(b"Z", "", b"Z", T0 + gap / 2) == ""
    assert ledger.heartbeat(b"Z", "", b"Z", T0 + gap * 1.01) == P.RECONNECT


def test_on_a_secured_broker_another_key_cannot_report_for_a_worker(ledger):
    ledger.secured = True
    add_job(ledger, maps=1)
    ledger.register(b"A", "K1", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    assert ledger.reporter(b"A", "K2", T0) is None  # its identity, another key
    assert ledger.heartbeat(b"A/hb", "K2", b"A", T0) is None
    ledger.output({"job": key[0], "kind": key[1], "index": key[2], "attempt": key[3]},
                  tuple(map_output()), "K2")
    assert not ledger._early


def test_a_record_that_fails_twice_is_skipped_when_the_job_allows_it(ledger):
    job = add_job(ledger, maps=1, skip=-1)
    w = ledger.register(b"A", "", {"credit": 1}, T0)
    for _ in range(2):
        ledger.dispatch(T0)
        [key] = tasks_of(ledger)[b"A"]
        ledger.failed(w, {"job": key[0], "kind": key[1], "index": key[2], "attempt": key[3],
                          "error": "bad", "position": {"ordinal": 0}})
    ledger.dispatch(T0)
    [message] = sent(ledger, P.TASKS)
    assert message.msg.body["tasks"][0][4] == [0]  # the next attempt leaves record 0 out
    assert job.state == P.JOB_RUNNING and job.skips == 1


def test_a_straggler_gets_a_backup_attempt_and_the_first_commit_wins(ledger):
    job = add_job(ledger, maps=2)
    ledger.events.job_submitted(job)  # (as a submission does: its attempt table)
    a = ledger.register(b"A", "", {"credit": 1}, T0)
    b = ledger.register(b"B", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    [key_a], [key_b] = held[b"A"], held[b"B"]
    ledger.done(b, [report(key_b)], tuple(map_output()))  # B is done, A straggles
    straggler = job.maps[key_a[2]]
    straggler.started = T0 - 10.0
    ledger.dispatch(T0 + 10.0)
    [backup] = tasks_of(ledger)[b"B"]
    assert backup[:3] == key_a[:3] and backup[3] != key_a[3] and job.backups == 1
    ledger.done(b, [report(backup)], tuple(map_output()))
    abandon = sent(ledger, P.ABANDON)  # the losing attempt is stopped where it runs
    assert {s.route for s in abandon} == {b"A", b"A/hb"}
    assert job.done_maps == 2 and not a.running
    ledger.done(a, [report(key_a)], tuple(map_output()))  # too late: not held any more
    assert job.done_maps == 2
    # the event log tells the backup from the first attempts, and which one committed
    ledger.events.flush()
    seen = ledger.events.since(0)
    sent_out = [(e["index"], e["attempt"], e["backup"]) for e in seen
                if e["type"] == "dispatched"]
    number = backup[3] & 0xFFF
    assert (backup[2], number, True) in sent_out
    assert sum(1 for e in sent_out if e[2]) == 1
    done = [(e["index"], e["attempt"], e["worker"]) for e in seen if e["type"] == "done"]
    assert (backup[2], number, ledger.workers[b"B"].name) in done and len(done) == 2
    assert ledger.events.totals()[0][("backups", "map")] == 1


def test_cancel_stops_the_attempts_on_their_workers_and_answers_waiting_fetches(ledger):
    job = add_job(ledger, maps=1)
    ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    job.finish(P.JOB_CANCELLED, {"message": "cancelled"})
    ledger.end_job(job)
    kinds = {type(x) for x in ledger.outbox}
    abandon = sent(ledger, P.ABANDON)
    assert abandon and abandon[0].msg.body["tasks"] == [list(key[1:])]
    assert {Publish, Fetched} <= kinds
    assert not ledger.workers[b"A"].running


def test_a_worker_that_leaves_hands_its_tasks_back_without_blame(ledger):
    job = add_job(ledger, maps=1)
    ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    tasks_of(ledger)
    ledger.leave(b"A", "")
    assert job.maps[0].failures == 0 and job.maps[0].state == PENDING
    assert not ledger.workers


def test_a_job_with_too_many_distinct_counter_names_fails_clearly(ledger):
    from pymapreduce.broker.commits import MAX_JOB_COUNTERS

    job = add_job(ledger, maps=3)
    w = ledger.register(b"A", "", {"credit": 1}, T0)
    for n in range(3):  # each report within its own limit, the job's total not
        ledger.dispatch(T0)
        [key] = tasks_of(ledger).get(b"A", [None])
        if key is None:
            break
        counters = {f"c{n}-{i}": 1 for i in range(MAX_JOB_COUNTERS // 2)}
        ledger.done(w, [report(key, {"records": 1, "counters": counters})],
                    tuple(map_output()))
    assert job.state == P.JOB_FAILED
    assert f"more than {MAX_JOB_COUNTERS} distinct names" in job.error["message"]
    assert len(job.counters) <= MAX_JOB_COUNTERS


def test_a_first_task_that_never_ends_gets_a_backup_though_no_mean_is_known(ledger):
    from pymapreduce.broker.dispatching import NO_MEAN_BACKUP

    job = add_job(ledger, maps=1)
    ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]  # A sits on it and keeps beating
    ledger.register(b"B", "", {"credit": 1}, T0)
    job.maps[0].started = T0
    ledger.dispatch(T0 + NO_MEAN_BACKUP / 2)
    assert not tasks_of(ledger)  # not yet
    ledger.dispatch(T0 + NO_MEAN_BACKUP + 1)
    [backup] = tasks_of(ledger)[b"B"]
    assert backup[:3] == key[:3]


def test_a_finished_job_lets_go_of_its_inputs(ledger):
    job = add_job(ledger, maps=1)
    job.held = 123
    job.finish(P.JOB_CANCELLED, {"message": "cancelled"})
    ledger.end_job(job)
    assert job.code == b"" and job.splits == [] and job.held == 0


def test_job_ids_and_names_cannot_forge_log_lines():
    import msgpack

    from pymapreduce.broker import submission

    blobs = (b"code", msgpack.packb([["files", [["/f", 0, 1]]]]))
    with pytest.raises(ValueError, match="printable"):
        submission.parse({"job_id": "a\n2099-01-01 CRITICAL forged", "splits": 1}, blobs, 1)
    spec = submission.parse({"job_id": "a", "name": "x\ny\x1b[31m", "splits": 1}, blobs, 1)
    assert spec.options["name"].isprintable()


def test_outputs_waiting_for_their_report_go_with_their_attempt_and_are_bounded(ledger):
    add_job(ledger, maps=2)
    w = ledger.register(b"A", "", {"credit": 2}, T0)
    ledger.dispatch(T0)
    keys = tasks_of(ledger)[b"A"]
    for key in keys:  # outputs pushed, no DONE: then the worker leaves (no blame)
        ledger.output(key.body(), tuple(map_output()), "")
    assert ledger._early and ledger._early_bytes > 0
    ledger.leave(b"A", "")
    assert not ledger._early and ledger._early_bytes == 0
    # more waiting outputs than the memory budget: refused, and the attempt fails
    ledger.config = BrokerConfig(bind="tcp://127.0.0.1:0", heartbeat_interval=0.2,
                                 liveness=1.0, memory_budget=10, max_message=50)
    w = ledger.register(b"B", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"B"]
    ledger.output(key.body(), (b"x" * 100,), "")
    assert not ledger._early and key not in w.running
    assert ledger.jobs["j"].tasks(key.kind)[key.index].failures == 1


def test_a_small_submit_of_many_tasks_counts_for_what_they_will_hold():
    import msgpack

    from pymapreduce.broker import submission

    blobs = (b"code", b"r", msgpack.packb([["mem", 1]] * 1000))
    spec = submission.parse({"job_id": "many", "splits": 2, "reducers": 1000}, blobs, 1)
    assert spec.held >= 2000 * submission.TASK_COST  # not the ~6 KB the message weighs


def test_a_failure_no_retry_can_mend_fails_the_job_once_a_second_attempt_says_so(ledger):
    job = add_job(ledger, maps=1)
    a = ledger.register(b"A", "", {"credit": 1}, T0)
    b = ledger.register(b"B", "", {"credit": 1}, T0)
    workers = {b"A": a, b"B": b}
    for n in range(2):
        ledger.dispatch(T0)
        [(route, [key])] = tasks_of(ledger).items()
        ledger.failed(workers[route], {**key.body(), "error": "LineTooLong: ...",
                                       "final": True})
        assert job.state == (P.JOB_RUNNING if n == 0 else P.JOB_FAILED)
    assert job.maps[0].failures == 2 < ledger.config.max_attempts


@pytest.mark.parametrize("stats", [
    {"records": -1}, {"records": True}, {"records": 1.0}, {"bytes": 1 << 62},
    {"bytes": "3"}, {"secs": -0.5}, {"secs": float("nan")}, {"secs": float("inf")},
    {"secs": True}, {"secs": "1"}, {"records": None}, [], None, {"counters": {"": 1}},
    {"counters": {"a": 1.5}}, {"sunk": 3}])
def test_a_report_with_a_bad_statistic_is_refused(stats):
    """The usual report (records, bytes, secs) is checked in one expression; whatever
    fails it takes the field-by-field path, which names the field. Both refuse the same."""
    from pymapreduce.broker.reports import clean_stats

    with pytest.raises(ValueError):
        clean_stats(stats)


def test_a_reports_statistics_keep_what_the_broker_reads_and_nothing_else():
    from pymapreduce.broker.reports import clean_stats

    assert clean_stats({}) == {"records": 0, "bytes": 0}
    assert clean_stats({"records": 3, "secs": 0}) == {"records": 3, "bytes": 0, "secs": 0}
    assert clean_stats({"records": 3, "bytes": 9, "secs": 0.25}) == {
        "records": 3, "bytes": 9, "secs": 0.25}
    assert clean_stats({"records": 3, "log": b"x", "other": 1}) == {"records": 3, "bytes": 0}
    assert clean_stats({"secs": None, "counters": {"a": 2}}) == {
        "records": 0, "bytes": 0, "counters": {"a": 2}}
    # the usual report is checked and passed on as it came; any other is copied field by
    # field, and a bad value in a usual-looking one is still refused
    usual = {"records": 3, "bytes": 9, "secs": 0.25}
    assert clean_stats(usual) is usual
    odd = {"records": 3, "bytes": 9, "secs": None}
    assert clean_stats(odd) == {"records": 3, "bytes": 9} and clean_stats(odd) is not odd
    for bad in ({"records": True, "bytes": 9, "secs": 1.0}, {"records": 3, "bytes": -1,
                                                               "secs": 1.0},
                {"records": 3, "bytes": 9, "secs": float("nan")},
                {"records": 3, "bytes": 9, "secs": "1"}):
        with pytest.raises(ValueError):
            clean_stats(bad)


def test_a_report_from_a_worker_the_broker_does_not_know_is_news_not_a_warning(ledger,
                                                                              caplog):
    """After a broker restart without its state every worker's next report comes from a
    worker it does not know: it is told to register, and the log says so as news (INFO),
    not as a bad message."""
    with caplog.at_level(logging.DEBUG, logger="pymapreduce"):
        assert ledger.reporter(b"unknown-worker", "", 0.0) is None
    assert any(isinstance(item, Send) and item.msg.command == P.RECONNECT
               for item in ledger.outbox)
    said = [r for r in caplog.records if "does not know" in r.getMessage()]
    assert said and all(r.levelno == logging.INFO for r in said)


def test_backups_that_land_on_stuck_workers_get_further_backups_on_proven_ones(ledger):
    """Two workers beat but never end what they hold (a hung mount, a hostile worker).
    A straggler's backup that lands on the other stuck one would leave its task with
    every attempt stuck: it gets another once it has run twice its limit, and idle
    workers that have committed tasks are given backups before those that never have."""

    job = add_job(ledger, maps=3)
    stuck = [ledger.register(r, "", {"credit": 1}, T0) for r in (b"S1", b"S2")]
    good = ledger.register(b"G", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    [g_key] = held[b"G"]
    ledger.done(good, [report(g_key)], tuple(map_output()))  # G commits, S1 and S2 hold
    assert good.done == 1 and job.done_maps == 1
    for task in job.maps:
        task.started = T0
    far = 10.0 ** 7  # (past any limit: the mean task time is measured on the real clock)
    ledger.dispatch(T0 + far)  # both stragglers are due a backup; only G is idle
    [backup] = tasks_of(ledger)[b"G"]
    ledger.done(good, [report(backup)], tuple(map_output()))  # its first attempt abandoned
    ledger.outbox.clear()
    (s_idle,) = [w for w in stuck if not w.running]
    assert job.done_maps == 2
    # the last straggler: G and the stuck worker that lost its attempt are idle; G, which
    # commits, gets the backup (before: the first idle one in order, which may be stuck)
    ledger._last_backup_scan = 0.0
    ledger.dispatch(T0 + 2 * far)
    got = tasks_of(ledger)
    assert list(got) == [b"G"] and s_idle.route not in got
    ledger.done(good, [report(got[b"G"][0])], tuple(map_output()))
    assert job.done_maps == 3


def test_a_task_whose_backup_landed_on_a_stuck_worker_gets_a_third_attempt(ledger):
    from pymapreduce.broker.dispatching import MAX_RUNNING, NO_MEAN_BACKUP

    job = add_job(ledger, "k", maps=1)
    stuck = [ledger.register(r, "", {"credit": 1}, T0) for r in (b"S1", b"S2")]
    ledger.dispatch(T0)
    (first,) = [r for r, keys in tasks_of(ledger).items() if keys]
    task = job.maps[0]
    task.started = T0
    limit = max(ledger.config.backup_after, NO_MEAN_BACKUP)  # (no task committed yet)
    ledger.dispatch(T0 + 1.5 * limit)  # its backup: on the other stuck worker, all idle
    assert len(task.running) == 2 and set(task.running.values()) == {b"S1", b"S2"}
    good = ledger.register(b"G", "", {"credit": 1}, T0 + 1.5 * limit)
    ledger.outbox.clear()
    ledger._last_backup_scan = 0.0
    ledger.dispatch(T0 + 1.9 * limit)  # not yet: a third is due at twice the limit
    assert len(task.running) == 2 and not good.running
    ledger._last_backup_scan = 0.0
    ledger.dispatch(T0 + 2.1 * limit)
    assert len(task.running) == MAX_RUNNING and b"G" in task.running.values()
    ledger.done(good, [report(next(iter(good.running)))], tuple(map_output()))
    assert task.state == "done" and not any(w.running for w in stuck)
    assert first in (b"S1", b"S2")


def test_an_output_of_no_pairs_is_kept_nowhere_and_fetched_as_no_bytes(ledger):
    """A map-only task (or a last reduce) that wrote no pairs: its output is not stored
    (a no-op task's store entry was a tenth of the broker's instructions per task), and a
    FETCH of it is answered with no bytes, which the client reads as no pairs."""
    from pymapreduce.patterns.records import EMPTY_COLUMNS

    assert pack([[], []]) == EMPTY_COLUMNS
    splits = [["mem", pack([[i, f"w{i}"]])] for i in range(2)]
    job = JobState("j", "j", b"code", splits, 0, True, b"client", T0,
                   options={"reducers": 0, "map_only": True})
    ledger.jobs["j"] = job
    ledger.scheduler.add(job)
    w = ledger.register(b"W", "", {"credit": 2}, T0)
    full = pack([["k"], [1]])
    keys = []
    for output in (EMPTY_COLUMNS, full):
        ledger.dispatch(T0)
        (key,) = tasks_of(ledger)[b"W"]
        ledger.done(w, [report(key, {"records": 1, "bytes": 4, "secs": 0.01})], (output,))
        keys.append(key)
    assert job.state == P.JOB_SUCCEEDED
    assert ("j", "out", keys[0].index) not in ledger.store
    assert ("j", "out", keys[1].index) in ledger.store
    from pymapreduce.broker.client_api import ClientAPI

    replies = []

    class Answering(ClientAPI):
        def __init__(self, store):
            self.store = store

        def _reply(self, peer, command, body, blobs=()):
            replies.append((command, [bytes(b) for b in blobs]))

    Answering(ledger.store)._answer_fetch(job, b"client", 1, 0, 2)
    command, blobs = replies[0]
    assert command == P.PART and blobs[keys[0].index] == b"" and \
        blobs[keys[1].index] == full


@pytest.mark.parametrize("word", [
    None, "x", [1], [1, 2, 3], ["map", 0], [0, "1"], [0, 2**70], {"index": 0}, [0, 12345]])
def test_a_replacements_word_on_what_its_dead_process_ran_is_checked(ledger, word):
    """A process's replacement names the attempt the dead one ran (workers/running.py):
    only an (index, attempt) of ints that the dead process held spares the others; any
    other word (malformed, or an attempt it did not hold) counts all, as none would."""
    job = add_job(ledger, maps=8)
    ledger.register(b"A", "", {"credit": 8}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)[b"A"]
    assert len(held) == 2  # (the dispatcher's pacing: two ahead before a task's time is known)
    ledger.register(b"B", "", {"credit": 8, "replaces": [b"A", "its process died", word]},
                    T0 + 1)
    assert [t.failures for t in job.maps] == [int(any(k.index == i for k in held))
                                              for i in range(8)]


def test_a_replacements_word_counts_the_named_attempt_alone(ledger):
    job = add_job(ledger, maps=8)
    ledger.register(b"A", "", {"credit": 8}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)[b"A"]
    assert len(held) == 2
    named = held[1]
    ledger.register(b"B", "", {"credit": 8, "replaces": [
        b"A", "its process 7 killed by SIGKILL", [named.index, named.attempt]]}, T0 + 1)
    assert [t.failures for t in job.maps] == [int(i == named.index) for i in range(8)]
    assert all(t.state == PENDING for t in job.maps)  # (all of them to be handed out again)
