"""Handing tasks out: credit, prefetch pacing, placement, backup attempts (no sockets).

A mixin of :class:`~pymapreduce.broker.ledger.Ledger`: which worker gets which pending
task, how many it may hold, and when a straggler gets a second attempt. Tasks go out as
TASKS messages in the ledger's outbox, one per job, with the job's code the first time a
worker sees it.
"""

from __future__ import annotations

import logging
import time
from array import array
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from ..patterns import protocol as P
from ..patterns.wire import AttemptKey, TaskItem
from ..speedups import UINT64, attempt_ids
from .submission import file_ranges
from .tasks import MAP, REDUCE, RUNNING, Task

if TYPE_CHECKING:
    from .ledger import WorkerState

log = logging.getLogger("pymapreduce.broker")

BACKUP_FACTOR = 2.0  # a straggler has run this many times its job's mean task time
BACKUP_SCAN_INTERVAL = 0.1  # seconds between looks for stragglers
# attempts of one task running at once: its first and up to two backups, the n-th once the
# task has run n times its straggler limit (a backup can land on a worker as stuck as the
# first: one that beats but never ends what it holds)
MAX_RUNNING = 3
_DONE = attrgetter("done")  # a worker's committed tasks
NO_MEAN_BACKUP = 10.0  # seconds before a backup when no task of the kind committed yet
_new = tuple.__new__  # (an AttemptKey made without its Python-level constructor)
_ATTEMPT = itemgetter(2)  # a TASKS item's attempt identifier (TaskItem.wire)
PREFETCH_SECONDS = 0.05  # work a worker holds queued beyond its running task


class Dispatching:
    """``dispatch()`` and backup tasks; mixed into the Ledger."""

    def dispatch(self, now: float | None = None) -> None:
        """Hand pending tasks to workers with credit (never to one that did not ask)."""
        pending = self.scheduler.pending()
        if not self.workers:
            return
        if not pending:
            self._backup(time.monotonic() if now is None else now)
            return
        # A worker holds a few tasks beyond the one it runs, so it never waits for the next:
        # about PREFETCH_SECONDS of work (many tiny tasks, one long one), and fewer near the
        # end of a phase, so the last tasks are not stuck behind a busy worker's queue.
        target = max(1, pending // (2 * len(self.workers)))
        # paced by the slowest job with pending tasks that the worker may take: a deep
        # queue of its tasks would hold a worker for long (and a job without a finished
        # task yet is unknown: 2 at most). A job no worker may take now (tags none of
        # them has, its sinks awaited) paces none: it would hold every other job's tiny
        # tasks to 2 a worker for as long as it waits.
        paces: dict[frozenset, list] = {}  # a job's required tags -> [unknown, slowest]
        for j in self.scheduler.jobs():
            if j.pending and not j.sinks_expected:
                pace = paces.get(j.requires)
                if pace is None:
                    pace = paces[j.requires] = [False, 0.0]
                if j.task_secs is None:
                    pace[0] = True
                elif j.task_secs > pace[1]:
                    pace[1] = j.task_secs
        for worker in list(self.workers.values()):
            eligible = unknown = False
            slowest = 0.0
            for required, (never, secs) in paces.items():
                if not required or required <= worker.tags:
                    eligible = True
                    unknown = unknown or never
                    slowest = max(slowest, secs)
            cap = 2 if unknown or not eligible else 1 + int(PREFETCH_SECONDS / max(slowest, 1e-6))
            room = min(worker.credit, target, cap) - len(worker.running)
            if room <= 0:
                continue
            tasks = self.scheduler.take(room, worker.route, self.workers, worker.tags)
            if not tasks:
                if not self.scheduler.pending():
                    return
                continue  # what is left failed on this worker: another one takes it
            self.workers.move_to_end(worker.route)
            self._send_checked(worker, tasks)

    def _backup(self, now: float) -> None:
        """Backup tasks (the paper's section 3.6): when nothing is pending and a worker is
        idle, a task that has run well past its job's mean task time gets a second attempt
        on that worker; whichever commits first wins, the other's output is dropped.

        A backup may land on a worker as stuck as the first one's (alive, beating, never
        ending what it holds: a hung mount, a hostile worker), so a task whose attempts
        all run on gets another, up to MAX_RUNNING at once, the n-th once it has run n
        times its limit; and the idle workers that have committed the most go first, so
        that a backup goes to a worker known to finish tasks before one that never has."""
        idle = [w for w in self.workers.values() if not w.running]
        if not idle or now - self._last_backup_scan < BACKUP_SCAN_INTERVAL:
            return
        self._last_backup_scan = now
        stragglers = []
        for job in self.jobs.values():
            if job.state != P.JOB_RUNNING or job.pending:
                continue
            for task in job.tasks(job.phase):
                running = len(task.running)
                if task.state != RUNNING or not 1 <= running < MAX_RUNNING:
                    continue
                mean = job.mean_duration(task.kind)
                # (no task of its kind has committed yet: a worker that sits on the first
                # ones, or is stuck, must not hold the job for ever)
                limit = max(self.config.backup_after, BACKUP_FACTOR * mean
                            if mean is not None else NO_MEAN_BACKUP)
                if now - task.started > limit * running:
                    stragglers.append((task.started, task))
        stragglers.sort(key=lambda pair: pair[0])  # the longest running first
        idle.sort(key=_DONE, reverse=True)  # (stable: otherwise in their order)
        # Each idle worker takes its share of them at once, up to about PREFETCH_SECONDS
        # of work: a worker stuck in one task (a hung mount) may hold a queue of tiny
        # tasks behind it, and one backup per idle worker a scan would take a second per
        # ten of them back. A straggler held by a worker that holds others may be queued
        # there, not started: its cost is its kind's mean; one its worker holds alone is
        # running, and costs at least what it has run (one alone a worker, as before);
        # with no mean known, one alone.
        share = -(-len(stragglers) // len(idle))
        at = 0
        for worker in idle:
            batch: list[Task] = []
            work = 0.0
            while at < len(stragglers) and len(batch) < min(share, worker.credit) \
                    and work < PREFETCH_SECONDS:
                task = stragglers[at][1]
                at += 1
                if worker.route in task.running.values():
                    continue
                mean = task.job.mean_duration(task.kind)
                if mean is None:
                    work += PREFETCH_SECONDS
                elif any(len(w.running) > 1 for w in map(self.workers.get,
                                                         task.running.values()) if w):
                    work += mean
                else:
                    work += max(mean, now - task.started)
                task.job.backups += 1
                log.info("%s %s straggles (%.1fs): backup attempt on %s", task.job.id,
                         task.name, now - task.started, worker.name)
                batch.append(task)
            if batch:
                self._send_checked(worker, batch, backup=True)

    def _send_tasks(self, worker: WorkerState, tasks: list[Task], backup: bool = False) -> None:
        """``backup``: they are backup attempts (the event log says so)."""
        by_job: dict[str, list[Task]] = {}
        for t in tasks:
            by_job.setdefault(t.job.id, []).append(t)
        for job_id, group in by_job.items():
            job = self.jobs[job_id]
            blobs: list[Any] = []
            body: dict = {"job": job_id, "reducers": job.reducers, "map_only": job.map_only}
            if job.steps:
                body["step"] = job.step
            if job.options.get("output"):  # the reducers write part files there
                body["output"] = job.options["output"]
            if job_id not in worker.known_jobs:
                body["code"] = len(blobs)
                blobs.append(job.code)
            items = []
            sent: list[tuple] = []  # store keys of the reduce segments in this message
            if job.options.get("skip"):
                body["ordinals"] = True  # report a failing record's ordinal
            if not job.map_only and any(t.kind == MAP for t in group):
                if job.sinks is None:  # the step's first dispatch fixes where its shuffle
                    self.assign_sinks(job)  # goes, for the whole step ([]: the broker)
                if job.sinks:
                    body["sinks"] = job.sinks  # partition r goes to sinks[r % n]
                    if self.secured:  # the keys that prove each sink is the real one
                        body["sink_keys"] = [self.sink_key(a) for a in job.sinks]
            route, held, splits = worker.route, worker.running, job.splits
            # (reduces counted for the event log, which would read each kind again: a map
            # job's message has none, and the usual map pays nothing for it)
            reduces = 0
            for t in group:
                attempt = t.start(route)
                held.add(_new(AttemptKey, (job_id, t.kind, t.index, attempt)))
                if t.kind == MAP:
                    split = splits[t.index]
                    if split[0] == "mem" and not t.skip:  # (the usual: TaskItem.wire's form)
                        items.append([MAP, t.index, attempt, ["mem", len(blobs)]])
                        blobs.append(split[1])
                        continue
                    if split[0] == "step":  # the output of the step before
                        key = (job.id, "s", split[1], split[2])
                        if key not in self.store:
                            log.error("%s: input %s of %s is missing", job.id, key, t.name)
                        desc = ["cols", len(blobs)]
                        blobs.append(self.store.get(key) if key in self.store else b"")
                    elif split[0] == "mem":
                        desc = ["mem", len(blobs)]
                        blobs.append(split[1])
                    else:  # file ranges, kept packed until now
                        desc = ["files", file_ranges(split), *split[2:]]
                    items.append(TaskItem(MAP, t.index, attempt, desc, sorted(t.skip)).wire())
                elif job.sinks:  # its sink streams the segments to it
                    reduces += 1
                    items.append(TaskItem(REDUCE, t.index, attempt,
                                          self.reduce_split(job, t.index)).wire())
                else:
                    reduces += 1
                    parts = job.map_parts[t.index]
                    items.append(TaskItem(REDUCE, t.index, attempt,
                                          ["segs", len(blobs), len(parts)]).wire())
                    segments = [(job_id, MAP, i, t.index) for i in parts]
                    blobs.extend(self.store.get(key) for key in segments)
                    sent.extend(segments)
            body["tasks"] = items
            if self.events.enabled:  # recorded once per message: its attempts read in C
                self.events.dispatched(job, group, array(UINT64, attempt_ids(items)
                                                         if attempt_ids is not None
                                                         else map(_ATTEMPT, items)),
                                       worker.name, backup, len(group) - reduces)
            body.update(self._codecs(job, worker, group))
            self._send(worker.route, P.TASKS, body, tuple(blobs), worker=True)
            worker.known_jobs.add(job_id)
            # sent: the reduce segments leave memory for files, where a retried attempt
            # still finds them (docs/ARCHITECTURE.md, "Memory of the whole process tree")
            if sent:
                self.store.release(sent)

    def _codecs(self, job: Any, worker: WorkerState, group: list[Task]) -> dict:
        """The codec fields of a TASKS body (broker/codecs.py): whether the tasks' outputs
        go to the client (the last step's reduce, or its maps when it has no reduce) or
        to other workers."""
        maps = any(t.kind == MAP for t in group)
        last = job.last_step
        return self.codec_census.fields(worker.codecs, job.options,
                                        not last or (maps and not job.map_only),
                                        last and (job.map_only or not maps))

    # -- job events ----------------------------------------------------------------------

    def _explain_waits(self) -> None:
        """Say, in each job's status, why its pending tasks are not handed out."""
        for job in self.scheduler.jobs():
            if not job.pending:
                job.waiting = ""
            elif job.sinks_expected:
                job.waiting = ("the sinks its step uses have not registered again since "
                               "the broker restarted (each has the broker's liveness "
                               "period to, or is taken for lost)")
            elif not self.workers:
                job.waiting = "no worker is connected"
            elif job.requires and not any(job.requires <= w.tags
                                          for w in self.workers.values()):
                job.waiting = ("no live worker has the tags " + ", ".join(sorted(job.requires))
                               + " it requires")
            elif job.active == 0 and job.dispatched is False:
                job.waiting = "every worker slot is busy with other jobs"
            else:
                job.waiting = ""
