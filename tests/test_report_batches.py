"""A DONE batch whose first report is for an attempt the worker no longer holds (a backup
attempt won meanwhile): the reports after it keep their own outputs.

Found by tests/test_mrjob.py: a worker batched the stale report of a map attempt that had
lost to its backup with the report of a reduce attempt; the broker skipped the stale
report but not its output blobs, and committed the map attempt's partition as the reduce
task's output (a key vanished from the job's result, or the result held map values)."""

from __future__ import annotations

from pymapreduce.patterns.records import pack, unpack

from .test_ledger import T0, add_job, map_output, report, tasks_of


def test_a_stale_report_in_a_batch_does_not_lend_its_outputs_to_the_next(ledger):  # noqa: F811
    job = add_job(ledger, maps=2)
    a = ledger.register(b"A", "", {"credit": 2}, T0)
    b = ledger.register(b"B", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    key_a = held[b"A"][0]
    key_b = held[b"B"][0]
    ledger.done(b, [report(key_b)], tuple(map_output()))  # B is done, A straggles
    job.maps[key_a[2]].started = T0 - 10.0
    ledger.dispatch(T0 + 10.0)
    [backup] = tasks_of(ledger)[b"B"]
    ledger.done(b, [report(backup)], tuple(map_output()))  # the backup wins
    ledger.dispatch(T0 + 10.0)
    [reduce_key] = [k for k in tasks_of(ledger).get(b"A", []) if k[1] == "reduce"]
    reduced = pack([["w"], [2]])
    # A's batch: its lost map attempt (one inline blob), then its reduce attempt
    ledger.done(a, [report(key_a), report(reduce_key)], (map_output()[0], reduced))
    assert job.state == "succeeded"
    output = ledger.store.get((job.id, "out", reduce_key[2]))
    assert unpack(bytes(output)) == [["w"], [2]]  # the reduce's own output, not map A's


def test_usual_reports_of_a_non_ascii_job_id_still_fit_the_broker_s_header():
    """(A red team's find: the usual reports' bound counted the job id's characters, and
    200 emoji are 800 bytes; with as many reports as the bound let through unmeasured, the
    header was over what the broker decodes, and it would have dropped the message.)"""
    from pymapreduce.broker.submission import parse
    from pymapreduce.patterns.message import BROKER_LIMITS
    from pymapreduce.workers.reporting import GROUP_HEADER, USUAL_REPORT, done_messages

    job_id = "\U0001F600" * 200
    parse({"job_id": job_id, "splits": 1}, (b"code", b"\x91\x92\xa3mem\x02", b"\x90"), 1)
    report = [job_id, "reduce", 99_999, 3, {"records": 1, "bytes": 1, "secs": 0.5}, 0]
    reports = [list(report) for _ in range(GROUP_HEADER // USUAL_REPORT)]
    for msg in done_messages(reports, [], 64 << 20):
        assert len(msg.encode()[0]) <= BROKER_LIMITS.header
