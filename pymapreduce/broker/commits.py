"""Committing an attempt: its outputs stored (and named on disk), its counts added, the
next phase or step begun; the outputs a finished step no longer needs freed (no sockets).

A mixin of :class:`~pymapreduce.broker.ledger.Ledger`: the first attempt of a task to
commit wins; its other attempts are abandoned where they run.
"""

from __future__ import annotations

from typing import Any

from ..observe.reading import REPORTS
from ..patterns import protocol as P
from ..patterns.records import EMPTY_COLUMNS
from ..patterns.wire import KINDS, AttemptKey
from .recovery import STEP_DONE
from .reports import MAX_COUNT, MAX_SECS, peer_name
from .tasks import MAP, RUNNING, JobState

_new = tuple.__new__  # (an AttemptKey made without its Python-level constructor)
NO_PARTS: list = []  # (shared: read only) the partitions a map-only or reduce task adds to


def _no_pairs(blob: Any) -> bool:
    """Whether an output is the encoding of no pairs (``records.EMPTY_COLUMNS``)."""
    return len(blob) == 3 and bytes(blob.buffer if hasattr(blob, "buffer") else blob) == \
        EMPTY_COLUMNS


MAX_JOB_COUNTERS = 1000  # distinct counter names of one job (a task's report has its own cap)


class Commits:
    """``_commit`` and the naming of committed outputs; mixed into the Ledger."""

    def _commit(self, key: AttemptKey, stats: dict, blobs: list) -> None:
        task = self._attempt(key)
        if task is None:
            return
        job = task.job
        sunk = None
        if task.kind == MAP and not job.map_only and job.sinks:  # pushed to sinks
            expected, sunk = 0, self.sunk_parts(job, stats)
        else:
            expected = job.reducers if task.kind == MAP and not job.map_only else 1
            stats.pop("sunk", None)
        # a bad report fails its attempt; it never wedges
        if len(blobs) != expected or (expected == 0 and sunk is None):
            route = task.running.get(key.attempt)
            self.complain(peer_name(route, self.workers[route].key if route in
                                    self.workers else ""),
                          "%s %s: %d outputs where %d were due", job.id, task.name,
                          len(blobs), expected)
            worker = self.workers.get(route)
            if worker is not None:
                self._report_failed(worker, key, f"its worker reported {len(blobs)} outputs "
                                    f"where {expected} were due")
            else:
                self.events.failed(task, key.attempt, "malformed outputs", "", {}, False, True)
                self._attempt_failed(task, key.attempt, "malformed outputs", "", {})
            return
        names = stats.get("counters") or {}
        if names and len(job.counters) + len(names.keys() - job.counters.keys()) > \
                MAX_JOB_COUNTERS:
            job.finish(P.JOB_FAILED, {
                "message": f"its counters have more than {MAX_JOB_COUNTERS} distinct names "
                           f"(Job.count); {task.name} added {len(names)}", "task": task.name})
            self.end_job(job)
            return
        winner = self.workers.get(task.running.get(key.attempt))
        if winner is not None:
            winner.done += 1
        losers: dict[bytes, list[AttemptKey]] = {}
        for attempt, route in task.running.items():  # also any other attempt of the task
            other = key if attempt == key.attempt else AttemptKey(job.id, task.kind,
                                                                  task.index, attempt)
            self._forget(other)
            w = self.workers.get(route)
            if w is not None:
                w.running.discard(other)
                if other is not key:  # a backup race lost: stop it where it runs
                    losers.setdefault(route, []).append(other)
        for route, tasks in losers.items():
            self._abandon(route, job.id, tasks)
            self.events.abandoned(job, tasks, "another attempt of the task committed first")
        nonempty: list[int] = []
        step = job.step
        if sunk is not None:  # its segments are at the sinks: only their names are kept
            nonempty = sunk
            job.map_attempts[task.index] = key.attempt
        elif task.kind == MAP and not job.map_only:
            nonempty = [r for r, blob in enumerate(blobs) if len(blob)]
        written = [b for b in blobs if len(b)] if nonempty else blobs
        sums: list = []  # (CRC-32s of the files written, None: not durable)
        if sunk is not None:
            pass
        elif self.journal is None:  # (no files: the outputs' keys alone, no names)
            put = self.store.put
            for key_, blob in zip(self._output_keys(job, step, task.kind, task.index, nonempty),
                                  written):
                # (a result of no pairs is kept nowhere: its FETCH is answered with no
                # bytes, which the client reads as none; a state directory keeps even
                # these, as the files a restarted broker adopts)
                if key_[1] != "out" or not _no_pairs(blob):
                    put(key_, blob)
        else:
            sums = [self.store.put(key, blob, self._path(job, name)) for (key, name), blob in
                    zip(self._outputs(job, step, task.kind, task.index, nonempty), written)]
        stats = stats if isinstance(stats, dict) else {}
        secs = stats.pop("secs", None)
        noted = self.events.noted
        if noted is not None:  # EventLog.done's note, without a call per task
            try:
                records, nbytes = stats["records"], stats["bytes"]
            except KeyError:
                records, nbytes = stats.get("records", 0), stats.get("bytes", 0)
            # (its items added to a flat list: no object is kept per task)
            noted += (job.id, task.kind, task.index, key.attempt,
                      winner.name if winner is not None else "", secs or 0, records,
                      nbytes, len(blobs[0]) if len(blobs) == 1 else sum(map(len, blobs)))
        if isinstance(secs, (int, float)) and secs >= 0:
            job.task_secs = secs if job.task_secs is None else (
                0.8 * job.task_secs + 0.2 * secs)
        if task.skip:  # the report names them, also after a restart
            stats["skipped"] = list(task.skip.values())
        if self.journal is not None and sunk is not None:  # its segments are at sinks
            self.journal.commit(job.seq, step, task.kind, task.index,
                                {**stats, "sink": [key.attempt, job.sinks]}, nonempty)
        elif self.journal is not None:  # after its files: a commit row names complete files
            # (with the bytes it wrote: a restarted broker's flow counts them, its map
            # outputs being gone once spent)
            stats["out"] = len(blobs[0]) if len(blobs) == 1 else sum(map(len, blobs))
            self.journal.commit(job.seq, step, task.kind, task.index, stats, nonempty, sums)
        phase = job.phase
        job.commit(task, stats, nonempty)
        if job.phase != phase or job.step != step or job.state != P.JOB_RUNNING:
            self._moved_on(job, phase, step)
        elif job.fetch_waiters:
            self._serve_fetch_waiters(job)

    def _moved_on(self, job: JobState, phase: str, step: int) -> None:
        """After a commit that ended the job's phase, step or the job itself."""
        if (job.phase != phase or job.step != step) and job.state == P.JOB_RUNNING:
            self.events.phase(job)
        if job.step != step:
            if self.journal is not None:  # the step is over: its map outputs may go
                self.journal.commit(job.seq, step, STEP_DONE, 0, {}, [])
            self._spent(job)
        if job.state != P.JOB_RUNNING:
            self.end_job(job)
        elif job.fetch_waiters:
            self._serve_fetch_waiters(job)

    def _done_usual(self, worker: Any, results: list, blobs: tuple) -> tuple[int, int]:
        """The first reports of a DONE from ``worker`` committed on a short path, as long
        as they are the usual kind: ``(reports, blobs)`` it took; the rest go the long way
        (``Ledger.done``, which checks each and says what is wrong).

        Usual: a report of a well-formed key that ``worker`` holds, for a task whose only
        running attempt it is, of one output, inline in the message (a map-only task's or
        a reduce task's), with the usual statistics (both counts and a run time, nothing
        else, as ``clean_stats`` checks them), on a broker without a state directory and
        with no outputs waiting apart from their reports. A no-op task's report is one,
        and this path commits it with what ``_commit`` would do, less the calls and the
        checks that cannot apply (benchmarks/RESULTS.md, "Short paths for a DONE's usual
        reports")."""
        if self.journal is not None or self._early or self._awaiting:
            return 0, 0
        jobs, held, route, nb, name = (self.jobs, worker.running, worker.route, len(blobs),
                                       worker.name)
        noted = self.events.noted
        put = self.store.put
        n = pos = run = 0
        for item in results:
            if type(item) is not list or len(item) != 6 or pos >= nb:
                break
            job_id, kind, index, attempt, stats, nblobs = item
            if (nblobs != 1 or type(nblobs) is not int or type(job_id) is not str
                    or kind not in KINDS or type(index) is not int
                    or type(attempt) is not int or type(stats) is not dict
                    or len(stats) != 3):
                break
            key = _new(AttemptKey, (job_id, kind, index, attempt))
            job = jobs.get(job_id)
            if key not in held or job is None or job.state != P.JOB_RUNNING:
                break
            tasks = job.maps if kind == MAP else job.reduces
            if not 0 <= index < len(tasks) or (kind == MAP and not job.map_only):
                break
            task = tasks[index]
            if task.state != RUNNING or len(task.running) != 1 or task.skip or \
                    task.running.get(attempt) != route:
                break
            # the usual statistics, as clean_stats checks them (it returns such a report
            # as it is): both counts and a run time, of their types and ranges (inline: a
            # call a report cost more than the check; tests/test_done_short_path.py holds
            # the two to the same answers)
            records, nbytes, secs = stats.get("records"), stats.get("bytes"), stats.get("secs")
            if (type(records) is not int or type(nbytes) is not int
                    or not (type(secs) is float or type(secs) is int)
                    or not 0 <= records < MAX_COUNT or not 0 <= nbytes < MAX_COUNT
                    or not 0 <= secs < MAX_SECS):
                break
            # committed: what _commit does for such a report
            blob = blobs[pos]
            pos += 1
            n += 1
            worker.done += 1
            held.discard(key)
            step = job.step
            out = len(blob)
            if not job.steps or step == len(job.steps) - 1:  # (_output_keys)
                if out != 3 or not _no_pairs(blob):  # (no pairs: kept nowhere)
                    put((job_id, "out", index), blob)
            else:
                put((job_id, "s", step, index), blob)
            job.task_secs = secs if job.task_secs is None else (
                0.8 * job.task_secs + 0.2 * secs)
            phase = job.phase  # (_commit's ending, inline: a call a report saved)
            job.commit(task, stats, NO_PARTS)
            if job.phase != phase or job.step != step or job.state != P.JOB_RUNNING:
                if noted is not None:  # (what was committed is noted before what follows)
                    noted += (REPORTS, name, results, run, n - run, blobs, None, None, None)
                    run = n
                self._moved_on(job, phase, step)
            elif job.fetch_waiters:
                self._serve_fetch_waiters(job)
        # the log's note of the reports committed: the run of them as they came, read
        # when the turn's commits are recorded (EventLog.flush; no note a report)
        if noted is not None and n > run:
            noted += (REPORTS, name, results, run, n - run, blobs, None, None, None)
        return n, pos

    def _spent(self, job: JobState) -> None:
        """The next step began: the last step's map outputs are spent, and so are the
        inputs it read (the outputs of the step before it)."""
        self._durable()
        jid, old = job.id, job.step - 2
        self.store.discard_job(jid, lambda k: k[1] == MAP or (k[1] == "s" and k[2] <= old))

    @staticmethod
    def _output_keys(job: JobState, step: int, kind: str, index: int,
                     parts: list[int]) -> list[tuple]:
        """The store keys of :meth:`_outputs`, without their file names."""
        if kind == MAP and not (job.steps[step]["map_only"] if job.steps else job.map_only):
            return [(job.id, MAP, index, r) for r in parts]
        if not job.steps or step == len(job.steps) - 1:
            return [(job.id, "out", index)]
        return [(job.id, "s", step, index)]

    @staticmethod
    def _outputs(job: JobState, step: int, kind: str, index: int,
                 parts: list[int]) -> list[tuple[tuple, str]]:
        """Store keys and file names of a committed task's outputs: a map task's non-empty
        partitions (``parts``), or the one output of a reduce or map-only task (kept for
        the client after the last step, as the next step's input before it)."""
        keys = Commits._output_keys(job, step, kind, index, parts)
        if not keys:  # (a map task that wrote to no partition)
            return []
        if keys[0][1] == MAP:
            prefix = f"s{step}" if step else ""
            return [(key, f"{prefix}m{index}-{key[3]}") for key in keys]
        return [(keys[0], f"o{index}" if keys[0][1] == "out" else f"s{step}o{index}")]

    def _path(self, job: JobState, name: str) -> str | None:
        """The file a committed output of ``job`` is kept in (None: no state directory)."""
        return self.journal.output_path(job.seq, name) if self.journal is not None else None
