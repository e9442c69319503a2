"""A worker's tasks, from the TASKS message that brings them to the report that ends them.

Intake: a task joins the queue with its job, whose code (and shipped files) arrives once
per worker and is kept for the next ``JOB_CACHE`` jobs; running: in the state a task
starts from (``isolation.py``), its output captured (``capture.py``), the kernels of
``runner.py``, its outputs put at the sinks, inline in DONE or on the data socket.

``Tasks`` is a mixin of ``Worker`` (worker.py), which owns the sockets, the queue and the
reports: its methods are the worker's own, so a task costs no call or lookup more than
when they were written in ``Worker``.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any, NamedTuple

from ..errors import (
    BadOutput,
    BadRecord,
    InputDamaged,
    LineTooLong,
    OutputLinkRefused,
    UnencodableValue,
)
from ..job import pickle_results, task_steps
from ..patterns import compress
from ..patterns import protocol as P
from ..patterns.message import Message, frame_bytes
from ..patterns.sockets import send_within
from ..patterns.wire import KINDS, AttemptKey, TaskItem, attempt_number
from ..shipping import unpack_code
from .capture import attempt_log, register_sources
from .reporting import REPORT_SLACK
from .runner import USER_EXITS, TaskError, run_task
from .running import ENDED, LOADING, NONE, RUNNING
from .shuffle import SegmentsLost, SinkClient, SinkUnreachable, sink_input

log = logging.getLogger("pymapreduce.worker")

JOB_CACHE = 16  # unpickled jobs kept per process
# failures no retry can mend (said in FAILED); BadOutput: the job's code yields output
# the engine cannot use, the same on every attempt; OutputLinkRefused: a link planted in
# the output directory, there until someone removes it (store/localfs.py); BadRecord: a
# line that is not JSON or not a CSV row of its header, the same in the file every time;
# InputDamaged: a truncated or corrupt compressed input (not one unreadable for now)
HOPELESS = (LineTooLong, BadRecord, InputDamaged, UnencodableValue, BadOutput,
            OutputLinkRefused)
DATA_WAIT = 60.0  # seconds an output may wait for room at the sink before its task fails
NO_SKIP: list = []  # (shared: a task's list of records to skip is only read)
_new = tuple.__new__  # a named tuple made without its Python-level constructor



def reported(exc: BaseException, tb: str, where: dict) -> tuple[str, str]:
    """A failed attempt's error text and traceback as its report gives them. An engine
    error whose message shows one of the job's data values (``errors.holding_value``) is
    reported by its message without it, and the value goes in the position (``where``),
    which the broker shows the job's owner only: events, the dashboard and the daemons'
    logs leave it out (docs/observability.md). The task's own log keeps the whole text."""
    public = getattr(exc, "_pmr_public", None)
    value = getattr(exc, "_pmr_value", None)
    if type(public) is not str or type(value) is not str:
        return f"{type(exc).__name__}: {exc}", tb
    head, found, tail = tb.rpartition(str(exc))  # (the traceback's last line holds it)
    where["value"] = value
    label = getattr(exc, "_pmr_label", None)
    if type(label) is str and label:
        where["value_label"] = label  # (what the value is: no data, engine-made)
    return f"{type(exc).__name__}: {public}", (head + public + tail) if found else ""

class TaskAbandoned(BaseException):
    """Raised in the main thread to stop the running task: the broker no longer wants it
    (its job was cancelled or failed, another attempt won), or the worker is draining.
    A BaseException, so user code's ``except Exception`` does not swallow it."""


class Queued(NamedTuple):
    """A task waiting in a worker's queue, with what it needs of its TASKS message."""

    key: AttemptKey
    job: Any  # the unpickled job (or the step of a multi-step job)
    body: dict  # the TASKS body: reducers, map_only, ordinals
    split: list
    blobs: list
    skip: list
    safe_output: bool  # outputs reach the client: never as pickles unless it opted in
    workdir: str | None = None  # the job's directory (it shipped files): the task runs there
    output: dict | None = None  # the job's output location: this task writes its part file
    codec: str | None = None  # what its outputs may be compressed with (patterns/compress.py)


class Tasks:
    """Takes tasks in (``_enqueue``) and runs them (``_run_one``), for ``Worker``, whose
    attributes these methods use: ``jobs``, ``load_errors``, ``steps``, ``queue``,
    ``job_dirs``, ``state``, ``capture``, ``budget``, ``reports``, ``report_blobs``,
    ``data``, ``max_message``... and whose ``_fail`` reports a failed attempt."""

    def _enqueue(self, msg: Message) -> None:
        b = msg.body
        job_id = b["job"]
        blobs = list(msg.blobs)
        job = self.jobs.get(job_id)
        error = self.load_errors.get(job_id)
        slots, was = self.running_slots, None
        if slots is not None and ("code" in b or "step" in b):
            was, slots[0] = slots[0], LOADING  # (a death in the job's code: all count)
        if "code" in b:
            try:
                job = self._load(job_id, frame_bytes(blobs[b["code"]]))
            except (Exception, *USER_EXITS) as exc:  # (its unpickling is user code too)
                # remembered: the broker sends the code once per worker, and every later
                # task of this job must report the real cause too
                error = (f"cannot load the job's code: {type(exc).__name__}: {exc}",
                         traceback.format_exc())
                self.load_errors[job_id] = error
                while len(self.load_errors) > JOB_CACHE:
                    self.load_errors.pop(next(iter(self.load_errors)))
        elif job is None and error is None:
            error = ("this worker has no code for the job", "")
        # the opt-in is the submitted job's (a multi-step job's container), as on the client
        pickled_ok = job is not None and pickle_results(job)
        last = True
        if "step" in b and job is not None and error is None:  # one step of a multi-step job
            try:
                steps = self.steps.get(job_id)
                if steps is None:
                    steps = self.steps[job_id] = task_steps(job)
                    while len(self.steps) > JOB_CACHE:
                        self.steps.pop(next(iter(self.steps)))
                job = steps[int(b["step"])]
                last = int(b["step"]) == len(steps) - 1
            except (Exception, *USER_EXITS) as exc:
                error = (f"cannot get step {b['step']} of the job: {type(exc).__name__}: "
                         f"{exc}", traceback.format_exc())
        if was is not None:
            slots[0] = was
        workdir = self.job_dirs.get(job_id)
        # what a task's outputs are, by kind: they reach the client (reduce, or map of a
        # map-only last step) or go to other workers; the queued task's fields that follow
        client = {"map": last and bool(b["map_only"]), "reduce": last}
        tails = {kind: (to_client and not pickled_ok, workdir,
                        b.get("output") if to_client else None,
                        compress.task_codec(b, to_client))
                 for kind, to_client in client.items()}
        queue = self.queue
        for raw in b["tasks"]:
            # [kind, index, attempt, split] checked here as TaskItem.from_wire checks it
            # (the common form, without a call or an object per task); else by it
            if type(raw) is list and len(raw) == 4:
                kind, index, attempt, split = raw
                if kind not in KINDS or type(index) is not int \
                        or type(attempt) is not int or type(split) is not list:
                    kind = None
                skip: list = NO_SKIP
            else:
                kind = None
            if kind is None:
                try:
                    kind, index, attempt, split, skip = TaskItem.from_wire(raw)
                except ValueError as exc:
                    log.warning("dropped a malformed task from the broker: %s", exc)
                    continue
            key = _new(AttemptKey, (job_id, kind, index, attempt))
            if error is not None:
                self._fail(key, error[0], error[1], {"split": index})
            else:
                queue.append(_new(Queued, (key, job, b, split, blobs, skip) + tails[kind]))

    def _load(self, job_id: str, blob: Any) -> Any:
        """A job's code (and files: into its directory, before the code runs), unpickled
        in the state a task starts from, so what the unpickling runs leaves no trace."""
        import cloudpickle

        code, files = unpack_code(blob)
        workdir = self.job_dirs.make(job_id, files) if files else None
        self.state.enter(workdir)
        try:
            job = cloudpickle.loads(code)
        finally:
            self.state.restore()
        self.jobs[job_id] = job
        while len(self.jobs) > JOB_CACHE:
            self.jobs.popitem(last=False)
        self._prune_dirs()
        return job

    def _prune_dirs(self) -> None:
        """Remove the directories of jobs this process forgot and has no task of."""
        if len(self.job_dirs.dirs) > len(self.jobs) or any(
                j not in self.jobs for j in self.job_dirs.dirs):
            keep = set(self.jobs) | {q.key.job for q in self.queue}
            if self._current is not None:
                keep.add(self._current.job)
            self.job_dirs.prune(keep)

    # -- running tasks -------------------------------------------------------------------
    def _run_one(self, item: Queued) -> None:
        key, b = item.key, item.body
        job_id, kind, index, attempt = key
        started = time.monotonic()
        if job_id != self._sources_of:  # its tracebacks show the user's lines
            register_sources(self.jobs.get(job_id))
            self._sources_of = job_id
        tasklog = None
        slots = self.running_slots
        try:
            self._current = key
            if slots is not None:  # (running.py: named if this process dies)
                slots[0] = NONE
                slots[1] = index
                slots[2] = attempt
                slots[0] = RUNNING
            try:
                self.state.enter(item.workdir)
                try:  # (begin inside: a stop signal in it still has its streams put back)
                    tasklog = self.capture.begin(job_id)
                    # (compressed inputs are decompressed as the task reads them)
                    split, raw = item.split, item.blobs
                    if kind == "reduce" and split and split[0] == "sink":  # read at its sink
                        split, raw = sink_input(self._sink_client(), job_id, index, split)
                    blobs = compress.Inflating(raw, self.max_message)
                    outputs, stats = run_task(item.job, kind, split, blobs,
                                              b["reducers"], b["map_only"], skip=item.skip,
                                              ordinals=bool(b.get("ordinals")),
                                              safe_output=item.safe_output,
                                              budget=self.budget,
                                              columns=isinstance(item.output, dict),
                                              lines=isinstance(item.output, dict) and
                                              item.output.get("results") is False)
                finally:
                    self.capture.end()
                if self.stopped == key:  # its code caught the stop and went on: it ends here
                    raise TaskAbandoned("the broker abandoned this task")
                if isinstance(item.output, dict):  # its part file, under this attempt's name
                    from ..store.output import write_attempt

                    outputs = [write_attempt(item.output, job_id, index, attempt, outputs[0])]
                if self.slowdown > 1.0:
                    time.sleep((self.slowdown - 1.0) * (time.monotonic() - started))
            finally:
                self._current = None
                if slots is not None:
                    slots[0] = ENDED
                self.state.restore()
        except TaskAbandoned as exc:
            self.ended_badly = True
            log.info("%s %s-%d attempt %d stopped: %s", job_id, kind, index,
                     attempt_number(attempt), exc)
            if isinstance(item.output, dict):  # stopped while (or after) writing its file
                from ..store.output import discard_attempt

                discard_attempt(item.output, job_id, index, attempt)
            return
        except TaskError as exc:
            self.ended_badly = True
            cause = exc.cause
            tb = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
            where = {"split": index, **exc.position} if kind == "map" \
                else {**exc.position, "partition": index}
            if isinstance(cause, SegmentsLost):  # its maps run again (broker/sinkplan.py)
                where = {"lost": cause.maps, "sink": cause.address}
            # (a record the job may skip, named by its ordinal, is left to the skip logic)
            error, shown = reported(cause, tb, where)
            self._fail(key, error, shown, where,
                       final=isinstance(cause, HOPELESS) and "ordinal" not in where,
                       log=attempt_log(tasklog, tb), secs=time.monotonic() - started)
            return
        except Exception as exc:  # input that cannot be read, output that cannot be encoded
            self.ended_badly = True
            tb = traceback.format_exc()
            where = {"split": index} if kind == "map" else {"partition": index}
            error, shown = reported(exc, tb, where)
            self._fail(key, error, shown, where, final=isinstance(exc, HOPELESS),
                       log=attempt_log(tasklog, tb), secs=time.monotonic() - started)
            return
        self.tasks_done += 1
        # (not rounded: a float is 9 bytes on the wire either way, and round() to digits
        # cost 0.3 us, 2% of a no-op task)
        stats["secs"] = time.monotonic() - started  # paces the broker's prefetch
        if tasklog is not None and (tasklog.head or tasklog.tail):
            stats["log"] = tasklog.getvalue()  # (the broker keeps it apart from the stats)
        sinks = b.get("sinks") if kind == "map" and not b["map_only"] else None
        if item.codec is not None:  # (what may be compressed, and the codec to use)
            outputs = compress.compress_all(outputs, item.codec, (
                self.max_message if sinks else self.max_message - REPORT_SLACK))
        size = sum(map(len, outputs))
        if sinks:  # the partitions go to their sinks; DONE names the ones written
            self._current = key  # (a lost sink's broker abandons it while it waits)
            try:
                stats["sunk"] = self._sink_client().put(job_id, int(b.get("step", 0)), index,
                                                        attempt, sinks, outputs,
                                                        b.get("sink_keys"))
            except SinkUnreachable as exc:
                self._fail(key, str(exc), "", {"split": index})
                return
            except TaskAbandoned as exc:
                log.info("%s map-%d attempt %d stopped: %s", job_id, index,
                         attempt_number(attempt), exc)
                return
            finally:
                self._current = None
            nblobs = 0
        elif size <= P.INLINE_OUTPUT_LIMIT or self.data is None:
            nblobs = len(outputs)
            self.report_blobs.extend(outputs)
        elif size + REPORT_SLACK > self.max_message:  # the broker would drop it unread
            self._fail(key, f"the task's outputs take {size} bytes, "
                       f"more than the broker accepts in one message ({self.max_message}; "
                       "its --max-message-mb)", "", {"split": index})
            return
        else:
            if not send_within(self.data, Message(P.OUTPUT, key.body(), tuple(outputs)),
                               DATA_WAIT, lambda: not self._stop.is_set()):
                self._fail(key, f"the broker's data sink took no output for {DATA_WAIT:g}s",
                           "", {"split": index})
                return
            nblobs = -1
        if not self.reports:
            self._first_report = time.monotonic()
        self.reports.append([*key, stats, nblobs])  # (Report's wire form)

    def _sink_client(self) -> SinkClient:
        if self._sinks is None:
            # (a broker that asks us to register again knows none of our attempts: a
            # task waiting on a sink then stops waiting, so we register at once)
            self._sinks = SinkClient(self.ctx, lambda: self.max_message,
                                     lambda: not (self._stop.is_set()
                                                  or self._need_ready.is_set()), self.keys)
        return self._sinks
