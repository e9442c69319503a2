"""A DONE batch whose first report names an attempt the worker no longer holds (a backup
attempt won, the task was handed elsewhere) must not shift the outputs of the reports
after it: each committed output is its own task's. Found while testing value_key, where
such a shift gave a reduce one map task's values twice and another's not at all."""

from __future__ import annotations

from pymapreduce.broker.tasks import MAP
from pymapreduce.patterns.records import pack, unpack
from pymapreduce.patterns.wire import AttemptKey

from .test_ledger import T0, add_job, report, tasks_of


def test_a_report_on_an_attempt_not_held_keeps_its_blobs_out_of_the_next(ledger):  # noqa: F811
    job = add_job(ledger, maps=1)
    a = ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    stale = AttemptKey(key[0], key[1], key[2], key[3] ^ 1)  # an attempt A does not hold
    mine, other = pack([["mine"], [[1]]]), pack([["stale"], [[2]]])
    ledger.done(a, [report(stale), report(key)], (other, mine))
    assert job.done_maps == 1
    committed = ledger.store.get((job.id, MAP, key[2], 0))
    assert unpack(bytes(committed)) == [["mine"], [[1]]]
