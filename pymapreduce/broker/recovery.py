"""A restarted broker's recovery from its state directory, and damaged output files.

A mixin of :class:`~pymapreduce.broker.ledger.Ledger`, kept apart so the ledger holds the
live protocol and this file what a broker does with what a previous one left behind.

Whatever the journal holds, the broker starts: a job whose rows or files cannot be
trusted is restored as failed, with a message naming the file, never silently empty or
with a wrong result. Output files are checked against the CRC-32 journaled with them:
a bad map output of a step still in progress makes that map task run again; a bad
result (or an input the job still needs) fails the job.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ..errors import OutputDamaged
from ..patterns import protocol as P
from .submission import held_bytes
from .tasks import DONE, MAP, PENDING, REDUCE, JobState

log = logging.getLogger("pymapreduce.broker")

STEP_DONE = "done"  # the journal's row for a finished step of a multi-step job
_SPENT = object()  # the sums of a map commit put back for a finished job (_with_spent_maps)


def _with_spent_maps(job: JobState, saved: Any) -> list:
    """The commits of ``saved`` to replay. A finished job of one step whose journal lacks
    some map commits (rows not written while its state directory was full) but has a
    commit for every reduce partition: the missing maps' outputs were spent by those
    reduces, so they are put back, without outputs, before the first reduce commit, and
    the job is restored with its result instead of failed. (A partition without a
    commit may have been empty, or lost its commit too: that cannot be told apart, so
    such a job is failed as before.) Otherwise the commits as they are."""
    commits = list(saved.commits)
    if saved.state != P.JOB_SUCCEEDED or job.steps or job.map_only:
        return commits
    maps = {c[2] for c in commits if c[0] == 0 and c[1] == MAP}
    reduces = sorted({c[2] for c in commits if c[0] == 0 and c[1] == REDUCE})
    missing = [i for i in range(len(job.maps)) if i not in maps]
    if not missing or reduces != list(range(job.reducers)):
        return commits
    log.warning("job %s: %d of its map commits are not in the journal (its state directory "
                "was full), but all its reduce commits are: restored with its result",
                job.id, len(missing))
    first = next(i for i, c in enumerate(commits) if c[0] == 0 and c[1] == REDUCE)
    spent = [(0, MAP, i, {}, reduces, _SPENT) for i in missing]
    return commits[:first] + spent + commits[first:]


class Recovery:
    """``recover()`` and the handling of damaged outputs; mixed into the Broker."""

    def recover(self) -> None:
        """Reload the journaled jobs: committed tasks stay committed (their outputs are
        files in the state directory, checked), tasks that were running are pending
        again. A job that cannot be carried on is restored as failed, saying why."""
        now = time.monotonic()
        for saved in self.journal.load():
            flow: dict = {}  # kind -> [records, bytes in, bytes out] of its commits
            steps: dict = {}  # step -> {kind: bytes out} of its commits
            try:
                job = self._recover_job(saved, now, flow, steps)
            except Exception as exc:  # whatever a job or worker reported: the broker starts
                log.exception("job %s cannot be recovered", saved.id)
                job = self._unrecoverable(saved, now, (
                    f"it could not be recovered from the journal {self.journal.path} "
                    f"({type(exc).__name__}: {exc}): submit it again"))
                self.scheduler.remove(job)
            if job.state != P.JOB_RUNNING:  # its inputs are no longer needed
                job.code, job.splits, job.held = b"", [], 0
            self.jobs[job.id] = job
            self.events.job_submitted(job, recovered=True)
            if flow and job.id == saved.id:
                self.events.restore_flow(job.id, flow, steps.get(job.step))
            log.info("job %s recovered from the journal: %s, %d/%d maps and %d/%d reduces "
                     "committed", job.id, job.state, job.done_maps, len(job.maps),
                     job.done_reduces, 0 if job.map_only else job.reducers)
            # (if it ended before a history was kept)
            self.history.record(job, self.events.result_bytes(job), now)
        self.expect_sinks(now)  # the sinks the recovered jobs' steps use (sinkplan.py)
        self.journal.flush()

    def _unrecoverable(self, saved: Any, now: float, message: str) -> JobState:
        """A failed stand-in for a job the journal cannot give back (its outputs freed)."""
        jid = saved.id
        self.store.discard_job(jid)
        name = saved.options.get("name", "") if isinstance(saved.options, dict) else ""
        job = JobState(jid, str(name)[:200], b"", [], 1, True, None, now,
                       options={"name": str(name)[:200]})
        job.seq = saved.seq
        job.finish(P.JOB_FAILED, {"message": message})
        self.journal.finish(job.seq, job.state, job.error, time.time())
        return job

    def _recover_job(self, saved: Any, now: float, flow: dict | None = None,
                     steps: dict | None = None) -> JobState:
        """The job ``saved`` as the journal gives it back; ``flow``: filled with what its
        commits read and wrote, per kind (the dashboard's flow); ``steps``: with what
        they wrote, per step and kind (the last step's last phase: the job's result)."""
        flow = {} if flow is None else flow
        steps = {} if steps is None else steps

        def commit(task: Any, stats: dict, parts: list, outputs: list = ()) -> None:
            step = job.step  # (the task's: its commit may end the step)
            job.commit(task, stats, parts, restored=True)
            into = flow.setdefault(task.kind, [0, 0, 0])
            for i, name in enumerate(("records", "bytes")):
                n = stats.get(name, 0)
                into[i] += n if type(n) is int and 0 <= n < 1 << 62 else 0
            out = stats.get("out")  # (journaled since the flow is restored)
            if not (type(out) is int and 0 <= out < 1 << 62):
                out = 0
                for _, path in outputs:  # (else the files its outputs are served from)
                    try:
                        out += os.path.getsize(path) if path else 0
                    except OSError:
                        pass
            into[2] += out
            of_step = steps.setdefault(step, {})
            of_step[task.kind] = of_step.get(task.kind, 0) + out

        if saved.damage:
            return self._unrecoverable(saved, now, saved.damage)
        o = saved.options
        job = JobState(saved.id, o.get("name", ""), saved.code, saved.splits,
                       o["reducers"], o["map_only"], None, now, options=o)
        job.seq = saved.seq
        job.held = held_bytes(saved.code, saved.splits)  # (its client's limits count it)
        running = saved.state == P.JOB_RUNNING
        problem = ""  # why the job cannot be carried on (names the file)
        if saved.damaged_commits and (not running or job.steps):
            problem = (f"{saved.damaged_commits} of its commit rows in the journal "
                       f"{self.journal.path} are damaged: run the job again")
        finished = {c[0] for c in saved.commits if c[1] == STEP_DONE}
        needed: dict[int, str] = {}  # step -> a damaged output of it, needed by the next
        for step, kind, index, stats, parts, sums in _with_spent_maps(job, saved):
            if kind == STEP_DONE:
                continue
            tasks = job.tasks(kind)
            if sums is _SPENT:  # (a map commit the journal missed, of a finished job)
                commit(tasks[index], stats, parts)
                continue
            if step != job.step or not 0 <= index < len(tasks) or tasks[index].state == DONE:
                continue
            if kind == MAP and "sink" in stats:  # its segments are at a sink, not here
                if self.restore_sink_commit(job, index, stats.pop("sink")):
                    commit(tasks[index], stats, parts)
                continue
            # outputs of the step in progress, of the step before (its inputs) and of the
            # last step (the result) are kept; older ones were deleted when spent
            outputs = [(k, self._path(job, n))
                       for k, n in self._outputs(job, step, kind, index, parts)]
            bad = self._adopt_outputs(outputs, sums)
            if bad and running and step not in finished and outputs[0][0][1] == MAP:
                log.warning("%s: %s; %s-%d runs again", job.id, bad, kind, index)
                continue  # a map output of the step in progress: the task runs again
            if bad and any(k[1] == "out" for k, _ in outputs):
                problem = problem or f"{bad}: run the job again"
            elif bad and outputs[0][0][1] == "s":
                needed.setdefault(step, bad)
            commit(tasks[index], stats, parts, outputs)
            if job.step != step:
                self._spent(job)
        if job.state == P.JOB_RUNNING and job.step - 1 in needed:
            problem = problem or f"{needed[job.step - 1]}, an input of its step {job.step + 1}"
        if saved.state == P.JOB_SUCCEEDED and job.state != P.JOB_SUCCEEDED:
            problem = problem or (f"the journal {self.journal.path} holds only part of its "
                                  "commits (its state directory was full): run it again")
        if problem and saved.state not in (P.JOB_FAILED, P.JOB_CANCELLED):
            log.error("job %s failed on recovery: %s", job.id, problem)
            job.state = P.JOB_RUNNING  # (so that finish() records the failure)
            job.finish(P.JOB_FAILED, {"message": problem})
            self.journal.finish(job.seq, job.state, job.error, time.time())
        elif running and job.state == P.JOB_RUNNING:
            job.pending.clear()
            job.pending.extend(t for t in job.tasks(job.phase) if t.state == PENDING)
            self.scheduler.add(job)
        elif job.state == P.JOB_RUNNING:  # it ended before the crash
            job.finish(saved.state, saved.error)
        else:  # it ended during recovery (every task was committed)
            self.journal.finish(job.seq, job.state, job.error, time.time())
        # elapsed times go on from before the restart (wall clock, as journaled)
        wall = time.time()
        submitted_at = o.get("submitted_at")
        if isinstance(submitted_at, (int, float)):
            job.submitted = now - max(0.0, wall - submitted_at)
            if job.finished is not None and isinstance(saved.ended, (int, float)):
                job.finished = job.submitted + max(0.0, saved.ended - submitted_at)
        return job

    def _adopt_outputs(self, outputs: list[tuple[tuple, str]], sums: list | None) -> str:
        """Serve a recovered commit's outputs from their files, each checked against its
        journaled CRC-32; returns what is wrong with the first bad one ("" if none)."""
        if not isinstance(sums, list) or len(sums) != len(outputs):
            sums = [None] * len(outputs)  # (a journal written before checksums)
        bad = ""
        for (key, path), crc in zip(outputs, sums):
            try:
                self.store.adopt(key, path, crc if type(crc) is int else None)
            except OutputDamaged as exc:
                bad = bad or str(exc)
        return bad

    # -- while running -------------------------------------------------------------------
    def _output_damaged(self, key: tuple, message: str) -> None:
        """A file read back does not match its CRC (``Store.on_damage``): its job fails,
        naming the file, instead of computing or returning something wrong."""
        job = self.jobs.get(key[0])
        if job is None or job.state in (P.JOB_FAILED, P.JOB_CANCELLED):
            return
        error = {"message": f"{message}: run the job again"}
        if job.state == P.JOB_RUNNING:
            job.finish(P.JOB_FAILED, error)
            self.end_job(job)
            return
        job.state = P.JOB_RUNNING  # a succeeded job whose result is damaged
        job.finish(P.JOB_FAILED, error)
        if self.journal is not None:
            self.journal.finish(job.seq, job.state, job.error, time.time())
        self._publish(job, time.monotonic())

    def _send_checked(self, worker: Any, tasks: list, backup: bool = False) -> None:
        """``_send_tasks``, surviving an input file found damaged on the way: that job has
        failed (``_output_damaged``), and the tasks of other jobs not handed out yet go
        back to their queues."""
        try:
            self._send_tasks(worker, tasks, backup)
        except OutputDamaged:
            for t in reversed(tasks):
                if t.state == PENDING and t.job.state == P.JOB_RUNNING \
                        and t not in t.job.pending:
                    t.job.pending.appendleft(t)
