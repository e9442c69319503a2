"""The client: submits jobs, watches them, and reads their results."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from ..errors import (
    AuthenticationFailed,
    BrokerBusy,
    BrokerUnavailable,
    ConfigError,
    InputError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PyMapReduceError,
    UndecodableValue,
)
from ..job import Job
from ..job import pickle_results as wants_pickled_results
from ..patterns import compress
from ..patterns import config as timing
from ..patterns import protocol as P
from ..patterns.message import Message, frame_bytes
from ..patterns.records import KeyHashes, paused_gc, unpack_columns
from ..patterns.security import HandshakeWatch, PeerKeys
from ..patterns.sockets import DEFAULT_MAX_MESSAGE, check_endpoint, make_socket, recv, send
from ..shipping import gather_files
from .logs import TaskLogs, fetch_logs
from .submit import build_submission

# What each request is, in the words of an error message (protocol names stay inside).
REQUESTS = {P.HELLO: "a greeting", P.SUBMIT: "the job's submission", P.WATCH: "a status request",
            P.STATUS: "a status request", P.FETCH: "a request for results",
            P.CANCEL: "the cancel request", P.RELEASE: "the release of the job's results",
            P.JOBS: "a request for the job listing"}
FETCH_BATCH = 256  # output partitions asked for per FETCH (the broker caps the bytes)
# A request unanswered after this much silence is sent again (a broker that restarted
# lost it); at once when the connection is made again. Requests are idempotent.
RESEND_AFTER = 2.5
RESEND_LIMIT = 1 << 20  # requests larger than this are resent only on a new connection


# Status fields the client reads but a user has no use for (the request's number, how
# the result is assembled): status() and wait() leave them out.
INTERNAL_FIELDS = frozenset({"req", "map_only", "emits"})


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


class Client:
    """A connection to a broker at ``address`` (``tcp://HOST:PORT``).

    ``timeout`` bounds every request: a broker that does not answer within it raises
    :class:`~pymapreduce.BrokerUnavailable` instead of hanging. ``keys``: a key directory
    holding this client's keypair (``client.key_secret``, or ``key_name``) and the broker's
    public key (``broker.key``), for a secured broker; a refused key raises
    :class:`~pymapreduce.AuthenticationFailed` within moments. A Client is meant for one
    thread; use one Client per thread.
    """

    def __init__(self, address: str, *, timeout: float = timing.REQUEST_TIMEOUT,
                 keys: str | os.PathLike | PeerKeys | None = None, key_name: str = "client",
                 context: zmq.Context | None = None) -> None:
        self.address = check_endpoint(address)
        self.timeout = timeout
        if keys is not None and not isinstance(keys, PeerKeys):
            keys = PeerKeys.load(os.fspath(keys), key_name)
        self._own_context = context is None
        self.ctx = context or zmq.Context()
        self.sock = make_socket(self.ctx, zmq.DEALER, identity=b"c" + uuid.uuid4().bytes)
        if keys is not None:
            keys.apply(self.sock)
        # a refused key shows up only here: ZeroMQ itself would just retry for ever
        self.watch = HandshakeWatch(self.sock, address, has_keys=keys is not None)
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self._poller.register(self.watch.monitor, zmq.POLLIN)
        self.sock.connect(address)
        self._req = itertools.count(1)
        self._status: dict[str, dict] = {}  # latest status event per job
        self._reconnected = False  # the connection was made again since the last look
        self.max_frame = DEFAULT_MAX_MESSAGE  # raw bytes a compressed result may claim

    # -- plumbing ------------------------------------------------------------------------
    def _request(self, command: str, body: dict, blobs: tuple = (),
                 timeout: float | None = None, patient: bool = False) -> Message:
        """Send a request and return its reply.

        ``patient``: the reply may take long (a FETCH that waits for its partition); wait
        as long as the broker keeps talking (it sends a job's watchers a status every
        heartbeat), and give up only after ``timeout`` seconds of silence.
        """
        req = next(self._req)
        request = Message(command, {**body, "req": req}, blobs)
        small = sum(len(b) for b in blobs) <= RESEND_LIMIT
        queued = self._try_send(request)
        limit = self.timeout if timeout is None else timeout
        sent = heard = time.monotonic()
        deadline = sent + limit
        while True:
            wake = min(deadline, sent + RESEND_AFTER) if small else deadline
            msg = self._recv(wake if queued else min(wake, time.monotonic() + 0.05))
            now = time.monotonic()
            if msg is None:
                if now >= deadline:
                    raise BrokerUnavailable(
                        f"the broker at {self.address} did not answer "
                        f"{REQUESTS.get(command, 'a request')} within "
                        f"{limit:g}s (is it running, and is this the right address?)")
                if not queued:  # no room to send it yet: the broker reads nothing
                    queued = self._try_send(request)
                elif self._reconnected or (small and now - heard >= RESEND_AFTER):
                    self._reconnected = False  # the broker may have restarted: ask again
                    queued = self._try_send(request)
                    sent = now
                continue
            heard = now
            if msg.body.get("req") != req:
                if patient:
                    deadline = now + limit
                continue
            if msg.command == P.ERROR:
                code = msg.body.get("code")
                if code == "no-such-job":
                    raise JobNotFound(msg.body.get("message", "no such job"))
                if code == "job-failed":
                    raise job_failed(msg.body.get("status") or {})
                if code == "busy":
                    raise BrokerBusy(f"the broker is busy: {msg.body.get('message')}")
                if code == "forbidden":
                    raise AuthenticationFailed(
                        f"the broker at {self.address} refused "
                        f"{REQUESTS.get(command, 'a request')}: {msg.body.get('message')}")
                raise PyMapReduceError(f"the broker refused {REQUESTS.get(command, 'a request')}"
                                       f": {msg.body.get('message')}")
            return msg

    def _try_send(self, request: Message) -> bool:
        """Queue a request for the broker without waiting; False when its queue is full."""
        try:
            send(self.sock, request)
            return True
        except zmq.Again:
            return False

    def _recv(self, deadline: float) -> Message | None:
        """The next message before ``deadline`` (status events are noted on the way)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(left, 0.1) if self.watch.pending else left
            events = dict(self._poller.poll(max(1, int(wait * 1000))))
            if (self.watch.monitor in events or self.watch.pending) and self.watch.check():
                self._reconnected = True  # (check raises AuthenticationFailed on a refusal;
                return None  # True: connected again)
            if self.sock not in events:
                continue
            try:
                msg = recv(self.sock)
            except PyMapReduceError:
                continue  # a malformed frame: ignore it, keep waiting
            if msg.command == P.STATUS and "job_id" in msg.body:
                self._status[str(msg.body["job_id"])] = msg.body
            return msg

    # -- public API ----------------------------------------------------------------------
    def info(self) -> dict:
        """Cluster facts from the broker: ``workers``, ``slots``, running ``jobs``."""
        return dict(self._request(P.HELLO, {}).body)

    def submit(
        self,
        job: Job,
        inputs: Any,
        map_tasks: int | None = None,
        reducers: int | None = None,
        output_dir: str | os.PathLike | None = None,
        *,
        name: str | None = None,
        priority: float | None = None,
        requires: Any = None,
        overwrite: bool = True,
        files: Any = None,
        storage_options: dict | None = None,
        results: bool = True,
    ) -> JobHandle:
        """Submit ``job`` over ``inputs``; returns at once with a :class:`JobHandle`.

        ``inputs``: a dict, a list of pairs, a list of one-item dicts, any iterable of
        pairs, or :func:`~pymapreduce.read_text`. ``map_tasks`` cuts in-memory inputs
        (default: four per worker slot); ``reducers`` is R (default: one per worker slot).
        With ``output_dir``, ``wait()`` writes ``part-00000``... there (JSON lines); the
        directory is checked (and created) first, so a path that cannot be written fails
        here, before the job runs. ``overwrite=False`` refuses a directory that is not
        empty (the CLI's default); the default, True, replaces the part files of an
        earlier run there (other files are left alone).
        ``priority`` (default 1, or the job's ``priority``) weighs the job's share of the
        worker slots against other jobs'; ``requires`` (a set of tags, or the job's
        ``requires``) sends its tasks only to workers started with all those ``--tag``.
        ``files``: side files (paths, or ``{name: path}``) each task finds by name in its
        working directory, with the job's own ``Job.files`` (docs/travel.md).
        ``output_dir`` may be a URL (``s3://bucket/out``; ``storage_options``: fsspec's
        options for it, never credentials). The reducers write the part files there
        themselves, each partition committed once, and ``wait()`` commits the whole (no
        data passes through this client; docs/store.md). ``results=False``: the output is
        only in the part files, and the broker keeps none of it (``result()`` then
        refuses); the default also keeps it for ``result()``, as before.
        """
        output = None
        if results is not True and output_dir is None:
            raise ConfigError("results=False needs output_dir=: the output would go nowhere")
        if output_dir is not None:
            from ..store.commit import prepare_output

            output = prepare_output(output_dir, overwrite=overwrite, storage=storage_options,
                                    results=results)
        shipped = gather_files(job, files)  # a missing file: an error before anything is sent
        info = self.info()
        slots = max(1, int(info.get("slots", 1)))
        sub = build_submission(job, inputs, slots=slots, map_tasks=map_tasks,
                               reducers=reducers, name=name, priority=priority,
                               requires=requires, files=shipped)
        size = sum(len(b) for b in sub.blobs)
        limit = int(info.get("max_message", size))
        if type(info.get("max_message")) is int:  # (no plain frame is larger)
            self.max_frame = max(DEFAULT_MAX_MESSAGE, info["max_message"])
        if size > limit:  # the broker would drop the connection without a word
            raise InputError(
                f"the job (its code and files) and its in-memory inputs take "
                f"{size / 2**20:.1f} MiB, more than the "
                f"broker accepts in one message ({limit / 2**20:.1f} MiB): pass large inputs "
                "as files with read_text(), which workers read themselves")
        if output is not None:
            sub.body["output"] = output
        reply = self._request(P.SUBMIT, sub.body, sub.blobs)
        handle = JobHandle(self, sub.job_id, output_dir,
                           pickle_results=wants_pickled_results(job))
        handle.output = output
        handle._last = dict(reply.body)
        return handle

    def jobs(self) -> list[dict]:
        """The jobs the broker holds, oldest first: each one's status (state, progress per
        phase, counters, why it waits)."""
        return [public_status(j) for j in self._request(P.JOBS, {}).body["jobs"]]

    def workers(self) -> list[dict]:
        """The live workers: name, host, pid, tags, the tasks each holds, tasks done."""
        return list(self._request(P.JOBS, {}).body["workers"])

    def sinks(self) -> list[dict]:
        """The live sink daemons: name, address, whether they keep state, and the bytes
        and segments each took in and served (as of its last heartbeat)."""
        return list(self._request(P.JOBS, {}).body.get("sinks") or [])

    def job(self, job_id: str, *, pickle_results: bool = False) -> JobHandle:
        """A handle on a job submitted earlier (from this or another process).

        ``pickle_results``: unpickle result values that need it, as the job's own
        ``pickle_results = True`` does for the client that submitted it. This client cannot
        know the job's choice (the broker's word on it would be a worker's word in the end),
        so it is given here; only if you trust every worker key.
        """
        handle = JobHandle(self, job_id, None, pickle_results=pickle_results is True)
        handle.status()  # JobNotFound if the broker does not know it
        return handle

    def close(self) -> None:
        self.watch.close()
        self.sock.close(0)
        if self._own_context:
            self.ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        """Stop the job; its pending tasks are dropped and ``result()`` raises JobFailed."""
        self._last = dict(self.client._request(P.CANCEL, {"job_id": self.job_id}).body)

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
            wake = min(heard + client.timeout, now + RESEND_AFTER)
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
            if client._reconnected or now - heard >= RESEND_AFTER:
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
        for part, data in self._blobs(status, wait):
            yield self._decode(part, data, keys)

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

    def _decode(self, part: int, data: Any, keys: KeyHashes | None = None) -> tuple[list, list]:
        """One partition's columns; bytes that are not two equal columns, or that hold a
        pickle this handle may not load, raise UndecodableValue naming the partition."""
        if not len(data):
            return [], []
        try:
            data = compress.decompress(data, self.client.max_frame)
            with paused_gc():
                cols = unpack_columns(data, allow_pickle=self.pickle_results, keys=keys)
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
        whose ``reduce`` emits (a generator)."""
        self.wait(timeout)
        status = self._last
        map_only = status.get("map_only") or status.get("emits")
        out: Any = [] if map_only else {}
        add = out.extend if map_only else out.update
        with paused_gc():
            for keys, values in self._parts(status, keys=None if map_only else KeyHashes()):
                add(zip(keys, values))
        return out

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
        other keywords go to each ``tqdm`` bar (``ncols=80``, ``colour="green"``...)."""
        from ..progress import ProgressBars

        with ProgressBars(self.job_id, file=file, **tqdm_options) as bars:
            return self.wait(timeout, progress=bars)
