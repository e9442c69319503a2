"""The client: submits jobs, watches them, and reads their results."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from typing import Any

import zmq

from ..errors import (
    AuthenticationFailed,
    BrokerBusy,
    BrokerUnavailable,
    ConfigError,
    InputError,
    JobNotFound,
    PyMapReduceError,
)
from ..job import Job
from ..job import pickle_results as wants_pickled_results
from ..patterns import config as timing
from ..patterns import protocol as P
from ..patterns.message import Message
from ..patterns.security import HandshakeWatch, PeerKeys
from ..patterns.sockets import (
    DEFAULT_MAX_MESSAGE,
    check_endpoint,
    check_resolves,
    make_socket,
    recv,
    send,
)
from ..shipping import gather_files
from .handle import JobHandle, job_failed, public_status
from .submit import build_submission

# What each request is, in the words of an error message (protocol names stay inside).
REQUESTS = {P.HELLO: "a greeting", P.SUBMIT: "the job's submission", P.WATCH: "a status request",
            P.STATUS: "a status request", P.FETCH: "a request for results",
            P.CANCEL: "the cancel request", P.RELEASE: "the release of the job's results",
            P.JOBS: "a request for the job listing"}
RESEND_LIMIT = 1 << 20  # requests larger than this are resent only on a new connection
# a request the broker answered "busy" (its share of the broker's time spent, or replies
# unread) is asked again after these pauses, doubling, for up to the request's timeout
BUSY_PAUSE, BUSY_PAUSE_MAX = 0.02, 0.5


class Client:
    """A connection to a broker at ``address`` (``tcp://HOST:PORT``, or a started
    :class:`~pymapreduce.LocalCluster`, whose broker's address it takes).

    ``timeout`` bounds every request: a broker that does not answer within it raises
    :class:`~pymapreduce.BrokerUnavailable` instead of hanging; a host name this machine
    does not know is a :class:`~pymapreduce.ConfigError` at once. ``keys``: a key directory
    holding this client's keypair (``client.key_secret``, or ``key_name``) and the broker's
    public key (``broker.key``), for a secured broker; a refused key raises
    :class:`~pymapreduce.AuthenticationFailed` within moments. A Client is meant for one
    thread; use one Client per thread.
    """

    def __init__(self, address: str, *, timeout: float = timing.REQUEST_TIMEOUT,
                 keys: str | os.PathLike | PeerKeys | None = None, key_name: str = "client",
                 context: zmq.Context | None = None) -> None:
        if not isinstance(address, str):  # a LocalCluster (anything with an address)
            given = address
            address = getattr(given, "address", None)
            if not isinstance(address, str) or not address:
                raise ConfigError(
                    f"Client wants a broker's address (tcp://HOST:PORT) or a started "
                    f"LocalCluster, not {type(given).__name__} {given!r:.80}")
        self.address = check_resolves(check_endpoint(address))
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
        self._in_use = threading.RLock()  # (its socket serves one thread at a time)
        self._status: dict[str, dict] = {}  # latest status event per job
        self._reconnected = False  # the connection was made again since the last look
        self.max_frame = DEFAULT_MAX_MESSAGE  # raw bytes a compressed result may claim

    # -- plumbing ------------------------------------------------------------------------
    def _request(self, command: str, body: dict, blobs: tuple = (),
                 timeout: float | None = None, patient: bool = False) -> Message:
        """Send a request and return its reply (from one thread at a time: a ZeroMQ
        socket is not shared between threads, and another thread's request now is an
        error that says so, not a reply taken by the wrong caller).

        ``patient``: the reply may take long (a FETCH that waits for its partition); wait
        as long as the broker keeps talking (it sends a job's watchers a status every
        heartbeat), and give up only after ``timeout`` seconds of silence.
        """
        if not self._in_use.acquire(blocking=False):
            raise PyMapReduceError(
                "this Client is in use by another thread: a Client (its ZeroMQ socket) "
                "serves one thread at a time; give each thread a Client of its own")
        try:
            return self._request_one(command, body, blobs, timeout, patient)
        finally:
            self._in_use.release()

    def _request_one(self, command: str, body: dict, blobs: tuple,
                     timeout: float | None, patient: bool) -> Message:
        req = next(self._req)
        request = Message(command, {**body, "req": req}, blobs)
        small = sum(len(b) for b in blobs) <= RESEND_LIMIT
        queued = self._try_send(request)
        limit = self.timeout if timeout is None else timeout
        sent = heard = time.monotonic()
        deadline = sent + limit
        # asked again while the broker is busy, for up to ``limit`` from its first "busy"
        # (a patient request may hear it long after it was sent)
        busy_until, pause = None, BUSY_PAUSE
        while True:
            # (from the last word either way: a patient request hears its job's status
            # long after it was sent, and a wake already past would poll nothing)
            wake = min(deadline, max(sent, heard) + timing.RESEND_AFTER) if small else deadline
            msg = self._recv(wake if queued else min(wake, time.monotonic() + 0.05))
            now = time.monotonic()
            if msg is None:
                if now >= deadline:
                    self.watch.check()
                    raise BrokerUnavailable(
                        f"the broker at {self.address} did not answer "
                        f"{REQUESTS.get(command, 'a request')} within "
                        f"{limit:g}s" + (self.watch.not_a_broker() or
                                         " (is it running, and is this the right address?)"))
                if not queued:  # no room to send it yet: the broker reads nothing
                    queued = self._try_send(request)
                elif self._reconnected or (small and now - heard >= timing.RESEND_AFTER):
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
                if code == "busy":  # it did not act on the request: ask again shortly
                    busy_until = now + limit if busy_until is None else busy_until
                    if now + pause > busy_until:
                        raise BrokerBusy(f"the broker is busy: {msg.body.get('message')}")
                    time.sleep(pause)
                    pause = min(BUSY_PAUSE_MAX, pause * 2)
                    queued = self._try_send(request)
                    sent = heard = time.monotonic()
                    deadline = sent + limit
                    continue
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
        try:
            reply = self._request(P.SUBMIT, sub.body, sub.blobs)
        except KeyboardInterrupt:
            # the broker may hold the job already, and no one has its handle to stop it
            self._cancel_unreturned(sub.job_id, output)
            raise
        handle = JobHandle(self, sub.job_id, output_dir,
                           pickle_results=wants_pickled_results(job))
        handle.output = output
        handle._last = dict(reply.body)
        return handle

    def _cancel_unreturned(self, job_id: str, output: Any) -> None:
        """Cancel a job whose submission was interrupted before its handle was returned
        (Ctrl-C while the broker had not answered): the CANCEL follows the SUBMIT on the
        same connection, so the broker reads it after the job, if the job reached it at all.
        Best effort, within a few seconds: the interrupt is what the caller sees."""
        try:
            self._request(P.CANCEL, {"job_id": job_id}, timeout=min(self.timeout, 5.0))
        except (PyMapReduceError, KeyboardInterrupt):
            pass
        if isinstance(output, dict):  # what its attempts may have written goes too
            from ..store.commit import abort_output

            with contextlib.suppress(Exception):
                abort_output(output, job_id)

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
