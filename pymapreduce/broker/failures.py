"""Failed attempts: retried elsewhere, counted against the task, bad records skipped, the
job failed once attempts run out (no sockets).

A mixin of :class:`~pymapreduce.broker.ledger.Ledger`: a FAILED report (or a malformed
DONE, or a lost worker) ends an attempt here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..patterns import protocol as P
from ..patterns.wire import AttemptKey, Failure
from .logstore import FAILED
from .reports import peer_name
from .tasks import ATTEMPT_MASK, MAP, NONE, PENDING, REDUCE, RUNNING, Task

if TYPE_CHECKING:
    from .ledger import WorkerState

log = logging.getLogger("pymapreduce.broker")

HOPELESS_AFTER = 2  # attempts that say no retry can mend them, before the job fails


class Failures:
    """``failed`` and what follows a failed attempt; mixed into the Ledger."""

    def _report_failed(self, worker: WorkerState, key: AttemptKey, error: str, tb: str = "",
                       position: dict | None = None, final: bool = False) -> None:
        """``worker`` says (or its malformed report shows) that attempt ``key`` failed."""
        worker.running.discard(key)
        self._forget(key)
        task = self._attempt(key)
        if task is not None:
            self.events.failed(task, key.attempt, error, tb, position, False, True)
            self._attempt_failed(task, key.attempt, error, tb,
                                 position if position else {"split": task.index}, final=final)

    def failed(self, worker: WorkerState, b: dict) -> None:
        """FAILED: an attempt ``worker`` holds raised (its error, traceback, position)."""
        failure = Failure.from_body(b)
        if failure is None or failure.key not in worker.running:
            self.complain(peer_name(worker.route, worker.key), "FAILED for an attempt it "
                          "does not hold: %.80r", failure and failure.key)
            if failure is not None:  # (one that crossed its ABANDON: how long it ran)
                self.events.ran_abandoned(failure.key.job, failure.key.attempt, failure.secs,
                                         worker.name)
            return
        task = self._attempt(failure.key)
        self.logs.keep(task, failure.key.attempt, worker.name, FAILED, failure.log)
        self.events.ran(task, failure.key.attempt, failure.secs)
        lost = failure.position.get("lost") if isinstance(failure.position, dict) else None
        if (task is not None and task.kind == REDUCE and lost is not None
                and self.segments_lost(task.job, task.index, lost)):
            # its input is gone, not its fault: the maps run again, then it does
            worker.running.discard(failure.key)
            self._forget(failure.key)
            self.events.failed(task, failure.key.attempt, failure.error, "",
                               failure.position, False, False)
            return
        self._report_failed(worker, failure.key, failure.error, failure.traceback,
                            failure.position, failure.final)

    def _attempt_failed(self, task: Task, attempt: int, error: str, tb: str,
                        position: Any, counted: bool = True, final: bool = False) -> None:
        """Count a failed attempt: retry the task, or fail the job once attempts run out.

        An attempt lost with its worker counts too: a task that kills the process running
        it (os._exit, a segfault, the OOM killer) must not kill workers forever. The retry
        goes to another worker where there is one. ``counted=False``: not the task's fault
        (its worker re-registered), so it is simply queued again. ``final``: its worker
        says no retry can mend it (an input line over its limit, a result that needs
        pickling): the job fails once a second attempt says so too (one worker's word is
        not enough to fail a job at once).
        """
        route = task.end(attempt)
        job = task.job
        if not counted:
            if not task.running and task.state == RUNNING:
                task.move(PENDING)
                job.pending.appendleft(task)
                self.events.retried(task)
            return
        task.failures += 1
        if route is not None:
            task.avoid_worker(route)
        # numbered as `pymapreduce logs` numbers attempts (1, 2, ...), not the whole id
        log.info("%s %s attempt %d failed: %s", job.id, task.name, attempt & ATTEMPT_MASK,
                 error)
        if self._skip_record(task, position):
            task.failures = max(0, task.failures - 2)  # the record is to blame, not the task
        if job.state != P.JOB_RUNNING:
            return
        task.hopeless += final
        if task.failures >= self.config.max_attempts or task.hopeless >= HOPELESS_AFTER:
            job.finish(P.JOB_FAILED, {
                # (a multi-step job's tasks are named within their step: which one, said)
                "message": (f"step {job.step + 1} of {len(job.steps)}: "
                            if len(job.steps) > 1 else "") +
                           f"{task.name} failed {task.failures} times; last error: {error}",
                "task": task.name,
                "position": position,
                "traceback": tb,
            })
            self.end_job(job)
        elif not task.running:
            task.move(PENDING)
            job.pending.appendleft(task)
            self.events.retried(task)

    def _skip_record(self, task: Task, position: Any) -> bool:
        """Skipping bad records (the paper's section 3.3): a record on which ``map`` failed
        twice is left out of the task's next attempts, if the job allows it."""
        limit = task.job.options.get("skip", 0)
        ordinal = position.get("ordinal") if isinstance(position, dict) else None
        if not limit or task.kind != MAP or type(ordinal) is not int or ordinal in task.skip:
            return False
        if task.bad is NONE:
            task.bad = {}
        task.bad[ordinal] = task.bad.get(ordinal, 0) + 1
        if task.bad[ordinal] < 2:
            return False
        job = task.job
        if limit > 0 and job.skips >= limit:
            job.finish(P.JOB_FAILED, {
                "message": f"more than {limit} bad records (skip_bad_records={limit}); "
                           f"{task.name} record {ordinal} failed twice too",
                "task": task.name, "position": position, "traceback": ""})
            self.end_job(job)
            return False
        job.skips += 1
        self.events.skipped(task, ordinal, position)
        where = {k: v for k, v in position.items() if k in ("key", "path", "split")}
        if task.skip is NONE:
            task.skip = {}
        task.skip[ordinal] = {"task": task.name, "record": ordinal, **where}
        log.info("%s %s: record %d failed twice, skipped from now on", job.id, task.name,
                 ordinal)
        return True
