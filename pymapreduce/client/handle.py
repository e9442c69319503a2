"""A submitted job: :class:`JobHandle` (its status, its wait, its results and output
files) and the status helpers the client and the CLI share."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import (
    BrokerBusy,
    BrokerUnavailable,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PyMapReduceError,
    UndecodableValue,
)
from ..patterns import compress
from ..patterns import config as timing
from ..patterns import protocol as P
from ..patterns.message import Message, frame_bytes
from ..patterns.records import EMPTY_COLUMNS, KeyHashes, paused_gc, unpack_columns
from .logs import TaskLogs, fetch_logs

if TYPE_CHECKING:
    from .client import Client

FETCH_BATCH = 1024  # output partitions asked for per FETCH (the broker caps the bytes)

# Status fields the client reads but a user has no use for (the request's number, how
# the result is assembled): status() and wait() leave them out.
INTERNAL_FIELDS = frozenset({"req", "map_only", "emits"})


def gives_pairs(status: dict) -> bool:
    """Whether a job's output is a list of pairs (map-only, or an emitting ``reduce``),
    in which a key may come many times, rather than one dict of distinct keys."""
    return bool(status.get("map_only") or status.get("emits"))


def public_status(status: dict) -> dict:
    """A job's status as the user sees it: without INTERNAL_FIELDS."""
    return {k: v for k, v in status.items() if k not in INTERNAL_FIELDS}


def job_failed(status: dict) -> JobFailed:
    """The JobFailed a failed or cancelled job's final status describes."""
    err = status.get("error") or {}
    job_id = str(status.get("job_id", "?"))
    return JobFailed(
        f"job {job_id} {status.get('state', 'failed')}: {err.get('message', 'no reason given')}",
        job_id=job_id,
        task=err.get("task", ""),
        position=err.get("position"),
        remote_traceback=err.get("traceback", ""),
    )


class JobHandle:
    """A submitted job: its status, its result, its output files.

    Results are decoded without unpickling unless ``pickle_results`` (from the submitted
    job's ``Job.pickle_results``, or given to :meth:`Client.job`): a value that arrives
    pickled then raises :class:`~pymapreduce.PickledValueRefused`, and nothing runs.
    """

    def __init__(self, client: Client, job_id: str, output_dir: str | os.PathLike | None,
                 *, pickle_results: bool = False) -> None:
        self.client = client
        self.job_id = job_id
        self.output_dir = output_dir
        self.pickle_results = pickle_results
        self._last: dict = {}
        self._written = False
        self.output: dict | None = None  # where the reducers write (docs/store.md)

    def status(self) -> dict:
        """The job's state, progress per phase, counters and input statistics (see
        docs/cli.md for every field)."""
        self._last = dict(self.client._request(P.STATUS, {"job_id": self.job_id}).body)
        return public_status(self._last)

    @property
    def counters(self) -> dict:
        """User counters (``Job.count``), each committed task counted exactly once.

        Current: while the job is not known to have ended, reading this asks the broker
        (so it is right after ``results()``, and on a handle from ``Client.job``); after
        the end, the final counts are kept (also once the job is released)."""
        if self._last.get("state") not in P.JOB_TERMINAL:
            try:
                self.status()
            except PyMapReduceError:  # gone or unreachable: what was last heard
                pass
        return dict(self._last.get("counters") or {})

    def logs(self, task: str | None = None) -> TaskLogs:
        """What the job's task attempts printed and logged, one entry per attempt that
        did (``task``: only that task's, e.g. ``"map-3"``). Each entry is a dict with
        ``task``, ``attempt``, ``worker``, ``state`` (``done``/``failed``), ``step`` and
        ``text``; a failed attempt's text ends with its traceback. ``.text()`` gives them
        all as one text. Kept by the broker, bounded, until the job is released or
        expires; only the job's owner (or an admin key) may read them."""
        return fetch_logs(self.client, self.job_id, task)

    def cancel(self) -> None:
        """Stop the job; its pending tasks are dropped and ``result()`` raises JobFailed.
        With the handle that submitted it with an output directory, what its attempts
        wrote there is removed (running attempts remove theirs as they stop)."""
        self._last = dict(self.client._request(P.CANCEL, {"job_id": self.job_id}).body)
        if isinstance(self.output, dict) and self._last.get("state") != P.JOB_SUCCEEDED:
            from ..store.commit import abort_output

            abort_output(self.output, self.job_id)

    def wait(self, timeout: float | None = None,
             progress: Callable[[dict], None] | None = None) -> dict:
        """Block until the job ends; returns its final status.

        Raises JobFailed if it failed or was cancelled, JobTimeout after ``timeout``
        seconds. The broker sends a status at least every second while a job runs; when it
        goes silent (it died, or the network broke) the client keeps asking, and a broker
        restarted with its state directory answers and carries on the job. After the
        client's ``timeout`` of silence: BrokerUnavailable; a broker that restarted without
        its state no longer knows the job: JobNotFound.
        """
        client = self.client
        status = self._watch()
        end = None if timeout is None else time.monotonic() + timeout
        heard = time.monotonic()
        while status.get("state") not in P.JOB_TERMINAL:
            if progress is not None:
                progress(public_status(status))
            now = time.monotonic()
            wake = min(heard + client.timeout, now + timing.RESEND_AFTER)
            msg = client._recv(wake if end is None else min(wake, end))
            now = time.monotonic()
            if msg is not None:
                heard = now
                status = client._status.get(self.job_id, status)
                continue
            if end is not None and now >= end:
                why = f": {status['waiting']}" if status.get("waiting") else ""
                raise JobTimeout(f"job {self.job_id} still {status.get('state', 'running')} "
                                 f"after {timeout:g}s{why}")
            if now - heard >= client.timeout:
                raise BrokerUnavailable(
                    f"lost contact with the broker at {client.address}: nothing heard for "
                    f"{now - heard:.1f}s while waiting for job {self.job_id}")
            if client._reconnected or now - heard >= timing.RESEND_AFTER:
                status = self._watch()  # ask again: the broker may have restarted
                heard = time.monotonic()
        self._last = status
        if progress is not None:
            progress(public_status(status))
        output = self.output or status.get("output")
        if status["state"] != P.JOB_SUCCEEDED:
            if isinstance(output, dict) and self.output is not None:
                from ..store.commit import abort_output

                abort_output(output, self.job_id)  # its attempts' files: no part file
            raise job_failed(status)
        if isinstance(output, dict) and not self._written:
            self._commit(output, status)
        return public_status(status)

    def _commit(self, output: dict, status: dict) -> None:
        """The job succeeded: its part files committed, then ``_SUCCESS`` (docs/store.md;
        a handle that did not submit the job commits only an unfinished output)."""
        from ..store.commit import commit_job

        commit_job(output, self.job_id, status, self._blobs(status),
                   again=self.output is not None, decode=self._decode)
        self._written = True

    def _no_results(self, status: dict) -> None:
        from ..store.commit import refuse_results

        refuse_results(self.job_id, self.output or status.get("output"))

    def _watch(self) -> dict:
        """Subscribe to the job's status events; returns its status now."""
        try:
            return dict(self.client._request(P.WATCH, {"job_id": self.job_id}).body)
        except BrokerUnavailable:
            if not self._last:
                raise
            raise BrokerUnavailable(
                f"lost contact with the broker at {self.client.address}: no answer for "
                f"{self.client.timeout:g}s while waiting for job {self.job_id} (a broker "
                "restarted with its --state-dir within that time carries on the job)") from None
        except JobNotFound:
            if not self._last:
                raise
            raise JobNotFound(
                f"the broker at {self.client.address} no longer knows job {self.job_id}: it "
                "restarted without its state (start it with --state-dir DIR to carry jobs "
                "over a restart), or the job was released; submit the job again") from None

    def _parts(self, status: dict, wait: bool = False,
               keys: KeyHashes | None = None) -> Iterator[tuple[list, list]]:
        """Each output partition's ``(keys, values)``, in order, a batch of small ones per
        request. ``wait``: ask for partitions not done yet, and get each when it is.
        ``keys``: check key hashes across partitions (for one dict of them all)."""
        self._no_results(status)
        pairs = gives_pairs(status)  # (keys may repeat: not checked as a dict's)
        for part, data in self._blobs(status, wait):
            yield self._decode(part, data, keys, pairs)

    def _blobs(self, status: dict, wait: bool = False) -> Iterator[tuple[int, Any]]:
        """Each output partition's bytes as the broker holds them, in order."""
        total = int(status["parts"])
        part = 0
        while part < total:
            body = {"job_id": self.job_id, "part": part, "count": FETCH_BATCH, "wait": wait}
            reply = self._fetch(body, wait)
            if not reply.blobs:
                raise PyMapReduceError(f"the broker sent no data for partition {part}")
            for i, blob in enumerate(reply.blobs):
                yield part + i, frame_bytes(blob)
            part += len(reply.blobs)

    def _fetch(self, body: dict, wait: bool) -> Message:
        """One FETCH, asked again (with growing pauses, for up to the client's timeout)
        while the broker says it is busy."""
        deadline = time.monotonic() + self.client.timeout
        pause = 0.05
        while True:
            try:
                return self.client._request(P.FETCH, body, patient=wait)
            except BrokerBusy:
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(1.0, pause * 2)

    def _decode(self, part: int, data: Any, keys: KeyHashes | None = None,
                pairs: bool = False) -> tuple[list, list]:
        """One partition's columns; bytes that are not two equal columns, or that hold a
        pickle this handle may not load, raise UndecodableValue naming the partition.
        ``pairs``: a list of pairs (map-only, emitting reduce), whose keys may repeat."""
        if not len(data) or (len(data) == 3 and data == EMPTY_COLUMNS):  # (no pairs)
            return [], []
        try:
            data = compress.decompress(data, self.client.max_frame)
            with paused_gc():
                cols = unpack_columns(data, allow_pickle=self.pickle_results, keys=keys,
                                      pairs=pairs)
        except UndecodableValue as exc:
            raise type(exc)(f"job {self.job_id}, output partition {part}: {exc}") from None
        # (a third item: the commit record of a part file the reducer wrote, store/)
        if (type(cols) not in (list, tuple) or len(cols) not in (2, 3)
                or type(cols[0]) is not list
                or type(cols[1]) is not list or len(cols[0]) != len(cols[1])):
            raise UndecodableValue(f"job {self.job_id}, output partition {part}: not two "
                                   "columns of keys and values")
        return cols[0], cols[1]

    def results(self, timeout: float | None = None) -> Iterator[tuple[Any, Any]]:
        """The output pairs, one partition at a time, as the partitions are done: the first
        arrive while later reduce tasks still run, and an output larger than memory streams.

        With ``timeout`` (or an ``output_dir``), the job is first waited for as a whole.
        """
        if timeout is not None or self.output_dir is not None:
            self.wait(timeout)
            status = self._last
        else:
            status = self._watch()
            self._no_results(status)
            if status.get("step", [1, 1])[1] > 1:  # its output exists after its last step
                self.wait()
                status = self._last
            if status.get("state") in P.JOB_TERMINAL and status["state"] != P.JOB_SUCCEEDED:
                raise job_failed(status)
        for keys, values in self._parts(status, wait=True):
            yield from zip(keys, values)
        try:  # every partition is in: the final status (its counters) is current now
            self.status()
        except PyMapReduceError:  # (released meanwhile, or unreachable: results are whole)
            pass

    def result(self, timeout: float | None = None) -> Any:
        """The job's result: a dict, or the list of output pairs for a map-only job or one
        whose ``reduce`` emits (a generator). An output that holds a key twice (a
        ``reduce_final`` that yields one key in each reduce task) raises
        PyMapReduceError naming it, rather than lose values: ``results()`` has them all."""
        self.wait(timeout)
        status = self._last
        map_only = gives_pairs(status)
        out: Any = [] if map_only else {}
        add = out.extend if map_only else out.update
        self._no_results(status)
        hashes = None if map_only else KeyHashes()
        with paused_gc():
            for part, data in self._blobs(status):
                if not len(data):  # no pairs (most partitions of a job of tiny tasks)
                    continue
                keys, values = self._decode(part, data, hashes, map_only)
                before = len(out)
                add(zip(keys, values))
                if not map_only and len(out) != before + len(keys):
                    raise self._repeated_key(status)
        return out

    def _repeated_key(self, status: dict) -> PyMapReduceError:
        """The error for a dict result whose output holds a key twice (a ``reduce_final``
        yields it in every reduce task, or after ``reduce`` returned it): a dict would
        keep one of its values and lose the others without a word. The partitions are
        read again to name the key (this is the error's path only)."""
        where: dict = {}
        for part, (keys, _) in enumerate(self._parts(status)):
            for key in keys:
                if key in where:
                    first = where[key]
                    places = (f"partition {part}, twice" if first == part
                              else f"partitions {first} and {part}")
                    return PyMapReduceError(
                        f"job {self.job_id}: its output holds the key {key!r:.80} more "
                        f"than once (reduce {places}: a reduce_final yields it in each "
                        "reduce task, or as well as reduce), and result() is a dict, "
                        "which would keep one of its values and lose the others: read "
                        "every pair with results(), or write them with output_dir=")
                where[key] = part
        return PyMapReduceError(f"job {self.job_id}: its output holds a key more than once")

    def release(self) -> None:
        """Tell the broker this job's outputs are no longer needed."""
        self.client._request(P.RELEASE, {"job_id": self.job_id})

    def progress(self, timeout: float | None = None, *, file: Any = None,
                 **tqdm_options: Any) -> dict:
        """Wait for the job (as :meth:`wait`) while drawing a progress bar per phase:
        tasks done of the phase's tasks, and the input records and bytes read so far
        (tqdm: a text bar in a terminal, a widget in a Jupyter notebook). Returns the final
        status; the bars are closed however the wait ends, and JobFailed, JobTimeout or
        KeyboardInterrupt then propagate. ``file``: where text bars go (default stderr);
        other keywords go to each ``tqdm`` bar (``ncols=80``, ``colour="green"``...).

        Without ``file``, when stderr is neither a terminal nor a notebook's (a file, a
        pipe, a CI log), the progress is a plain line every few seconds and one at the
        end instead, as ``pymapreduce run`` writes it there: a bar's cursor moves would
        pile up in such a log. ``PYMAPREDUCE_PROGRESS_EVERY`` sets the seconds."""
        from ..progress import ProgressBars, plain_progress

        if file is None and plain_progress(sys.stderr):
            return self._progress_lines(timeout, sys.stderr)
        with ProgressBars(self.job_id, file=file, **tqdm_options) as bars:
            return self.wait(timeout, progress=bars)

    def _progress_lines(self, timeout: float | None, stream: Any) -> dict:
        """:meth:`progress` as plain lines on ``stream``, as ``pymapreduce run`` writes
        them there (a failed or interrupted wait's summary included), and one with how
        the job ended."""
        from ..progress import describe, progress_period, watch

        status = watch(self, timeout=timeout, stream=stream, period=progress_period())
        print(f"pymapreduce: {self.job_id} {status.get('state', 'ended')}: "
              f"{describe(status)}", file=stream, flush=True)
        return status
