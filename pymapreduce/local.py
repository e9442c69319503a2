"""LocalCluster: a broker and worker processes on loopback, the embedded default."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .cli_errors import debug_from_env
from .client import Client
from .errors import ConfigError, PyMapReduceError
from .patterns import config as timing
from .spill.budget import parse_size
from .workers.capture import ECHO_ENV

READY_LINE = re.compile(r"pymapreduce broker ready: (\S+)")
HTTP_IN_READY = re.compile(r"; http (http://\S+/)")

if TYPE_CHECKING:
    from .forkstart import ForkedProcess


def _echo_fds(task_stdout: str = "stdout") -> tuple[int, ...]:
    """Copies of this process's stdout and stderr for the workers, so that what a task
    prints reaches the user's terminal (``workers/capture.py``); none if either stream
    has no file descriptor (a notebook: task output is then only in the task logs).
    ``task_stdout="stderr"``: what tasks print to stdout goes to stderr too (a command
    whose stdout is its result)."""
    fds: list[int] = []
    out = sys.stderr if task_stdout == "stderr" else sys.stdout
    try:
        for stream in (out, sys.stderr):
            stream.flush()  # what the user printed before the job comes first
            fds.append(os.dup(stream.fileno()))
    except (AttributeError, OSError, ValueError):
        for fd in fds:
            os.close(fd)
        return ()
    return tuple(fds)


class LocalCluster:
    """Start a broker and ``workers`` worker processes (default: one per core) on loopback.

    Use it as a context manager; every process it started is stopped on exit, whether the
    block ended normally, raised, or was interrupted with Ctrl-C. The processes also watch
    this process and exit if it dies without cleaning up. ``keys``: a key directory with
    broker, worker and client keypairs and allowlists (``pymapreduce keys cluster DIR``
    makes one) to run it secured; clients then pass ``keys=cluster.keys``.
    ``heartbeat_interval`` and ``liveness`` are the broker's ``--heartbeat`` and
    ``--liveness``: a worker silent for ``liveness`` seconds is taken for dead.
    ``log_level``: what the broker and workers log on stderr. By default only errors:
    their warnings are meant for the operator of a shared cluster (open-file limits,
    restarted worker processes, spilling), and a job's own failure reaches its caller
    as ``JobFailed``. ``PYMAPREDUCE_DEBUG=1`` in the environment makes it ``INFO``.
    What tasks print reaches this process's stdout and stderr as they run (and their task
    logs); ``task_stdout="stderr"`` sends what they print to stdout to stderr instead.
    ``http``: serve the dashboard (``True``: on a free loopback port; see ``http_url``).
    ``events=False``: the broker keeps no event log (``--no-events``; no ``http`` then).
    ``memory``: each worker process's memory budget (bytes, or a size such as
    ``"256MB"``), the workers' ``--memory``: past it, tasks spill to disk
    (docs/memory.md); default unbounded. ``sinks``: sink daemons to start (map outputs
    go to them, not through the broker; docs/sinks.md); default none, the broker is the
    sink. With ``keys``, they use the directory's ``sink`` keypair.
    """

    def __init__(self, workers: int | None = None, *, start_timeout: float = 30.0,
                 log_level: str | None = None, keys: str | os.PathLike | None = None,
                 heartbeat_interval: float = timing.HEARTBEAT_INTERVAL,
                 liveness: float = timing.LIVENESS, task_stdout: str = "stdout",
                 http: bool | str = False, events: bool = True,
                 memory: int | str | None = None, sinks: int = 0,
                 start_method: str | None = None, preload: Iterable[str] = ()) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        if not 0 < heartbeat_interval < liveness:
            raise ConfigError(f"need 0 < heartbeat_interval < liveness, got "
                              f"{heartbeat_interval} and {liveness}")
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        if task_stdout not in ("stdout", "stderr"):
            raise ConfigError(f"task_stdout must be 'stdout' or 'stderr', got {task_stdout!r}")
        self.task_stdout = task_stdout
        self.workers = workers or os.cpu_count() or 1
        self.start_timeout = start_timeout
        if log_level is None:
            log_level = "INFO" if debug_from_env() else "ERROR"
        self.log_level = log_level
        self.keys = os.fspath(keys) if keys is not None else None
        self.address = ""
        # the broker's read-only HTTP server (observe/): True = loopback, any free port
        self.http = "127.0.0.1:0" if http is True else (http or None)
        self.http_url = ""  # once started (with keys: its token added)
        self.events = events  # False: the broker keeps no event log (--no-events)
        if http and not events:
            raise ConfigError("the HTTP server serves the event log: http cannot be given "
                              "with events=False")
        # each worker process's memory budget (``--memory``), checked here, not at start
        self.memory = parse_size(memory) if memory is not None else None
        if type(sinks) is not int or sinks < 0:
            raise ConfigError(f"sinks must be a count of sink daemons, got {sinks!r}")
        self.sinks = sinks  # sink daemons (docs/sinks.md); 0: the broker is the sink
        from .forkstart import choose_start_method

        choose_start_method(start_method)  # (a wrong name fails here; chosen at start)
        self._start_method = start_method
        self.start_method = ""  # once started: "fork" or "spawn"
        self._broker: subprocess.Popen | ForkedProcess | None = None
        self._worker: subprocess.Popen | ForkedProcess | None = None
        self._sinks: list[subprocess.Popen | ForkedProcess] = []
        # modules the worker supervisor imports before it forks the worker processes
        # (``pymapreduce worker --preload``): while this process imports them too, when
        # launch() was called before (the mrjob command does: adapters/mrjob/cli.py)
        if isinstance(preload, str) or not all(isinstance(m, str) for m in preload):
            raise ConfigError(f"preload must be module names, got {preload!r}")
        self.preload = tuple(preload)
        self._launched: float | None = None  # launch()'s deadline, until start() ends

    @property
    def broker_pid(self) -> int | None:
        return self._broker.pid if self._broker else None

    @property
    def broker_args(self) -> list[str]:
        """The broker's command line (a forked broker's /proc cmdline is this process's)."""
        return list(self._broker.args) if self._broker else []

    @property
    def worker_pid(self) -> int | None:
        """The pid of the worker supervisor (its children are the worker processes)."""
        return self._worker.pid if self._worker else None

    def _spawn(self, *args: str, stdout=None, stdin=None,
               echo: tuple[int, ...] = ()) -> subprocess.Popen:
        env = dict(os.environ)
        if echo:  # task output is echoed to this process's stdout and stderr
            env[ECHO_ENV] = ",".join(map(str, echo))
        argv = [*args, "--parent-pid", str(os.getpid()), "--log-level", self.log_level]
        if self.keys is not None:
            argv += ["--keys", self.keys]
        if self.start_method == "fork":  # a copy of this process, no new Python
            try:
                return self._fork(argv, env, stdout=stdout, stdin=stdin, echo=echo)
            except OSError:  # (e.g. ENOMEM: a large process under strict overcommit)
                self.start_method = "spawn"
        # the daemons import what this process imports, from where it imports it (jobs
        # defined in its modules, and this very pymapreduce): its path, in its order, and
        # PYTHONSAFEPATH so that `-m` does not put the current directory first (a
        # pymapreduce/ folder there, a source checkout, would run in the daemons instead)
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        if "PYTHONSAFEPATH" not in env:  # (the daemon unsets it again: __main__.py)
            env["PYTHONSAFEPATH"] = env["PYMAPREDUCE_SAFEPATH"] = "1"
        cmd = [sys.executable, "-m", "pymapreduce", *argv]
        # a session of their own: Ctrl-C reaches this process, which then stops them in order
        return subprocess.Popen(cmd, stdout=stdout, stdin=stdin, env=env,
                                start_new_session=True, pass_fds=echo)

    @staticmethod
    def _fork(argv: list[str], env: dict[str, str], *, stdout=None, stdin=None,
              echo: tuple[int, ...] = ()) -> ForkedProcess:
        """``pymapreduce ARGV`` in a forked child (forkstart.py): what ``env`` adds to
        this process's environment is set in the child's; pipes as Popen's PIPE."""
        from .forkstart import fork_daemon

        changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
        return fork_daemon(argv, name=f"pmr-{argv[0]}", env=changed,
                           stdin_pipe=stdin is subprocess.PIPE,
                           stdout_pipe=stdout is subprocess.PIPE, pass_fds=echo)

    def start(self) -> LocalCluster:
        """Start the processes and wait until every worker has registered."""
        if self._launched is None:
            if self._broker is not None:  # (started already: `with cluster.start():`)
                return self
            self.launch()
        # a full start_timeout from here: what this process did since launch() (imports)
        # is not the daemons' time
        deadline = max(self._launched, time.monotonic() + self.start_timeout)
        self._launched = None
        try:
            self.address = self._read_ready(deadline)
            assert self._worker is not None and self._worker.stdin is not None
            try:
                self._worker.stdin.write(self.address.encode() + b"\n")
                self._worker.stdin.close()
            except BrokenPipeError:  # it died at start: said by _wait_workers
                pass
            self._sinks = [self._spawn("sink", "--connect", self.address,
                                       "--name", f"local-sink-{i}", stdout=subprocess.DEVNULL)
                           for i in range(self.sinks)]
            self._wait_workers(deadline)
        except BaseException:
            self.close()
            raise
        return self

    def launch(self) -> LocalCluster:
        """The first half of :meth:`start`: the broker and the worker supervisor set off
        (they import what they need and bind while this process goes on), without
        waiting for them; :meth:`start` then waits until every worker has registered.
        What this process does in between overlaps their start (the mrjob command imports
        the job's module meanwhile, and the supervisor ``preload``s it)."""
        if self._launched is not None or self._broker is not None:
            raise ConfigError("this LocalCluster was started already")
        if os.environ.get(timing.WORKER_ENV):
            raise ConfigError(
                "a job's code tried to start an embedded cluster inside a worker process: a "
                "module the workers import runs a job when imported; put that code under "
                "`if __name__ == \"__main__\":`")
        from .forkstart import choose_start_method, preload

        deadline = time.monotonic() + self.start_timeout
        self.start_method = choose_start_method(self._start_method)
        fork = self.start_method == "fork"
        try:
            if fork:  # (what the daemons share, imported once here: forkstart.py)
                preload("cli")
            self._broker = self._spawn("broker", "--bind", "tcp://127.0.0.1:0",
                                       "--heartbeat", repr(float(self.heartbeat_interval)),
                                       "--liveness", repr(float(self.liveness)),
                                       *(("--http", self.http) if self.http else ()),
                                       *(() if self.events else ("--no-events",)),
                                       stdout=subprocess.PIPE)
            # the workers start (Python, imports) while the broker does, and read its
            # address, once it is known, from their standard input
            if fork:
                preload("worker")
                if self.sinks:
                    preload("sink")
            echo = _echo_fds(self.task_stdout)
            try:
                memory = ("--memory", str(self.memory)) if self.memory else ()
                preloads = [a for m in self.preload for a in ("--preload", m)]
                self._worker = self._spawn("worker", "--connect", "-",
                                           "--processes", str(self.workers), *memory,
                                           *preloads, stdout=subprocess.DEVNULL,
                                           stdin=subprocess.PIPE, echo=echo)
            finally:
                for fd in echo:
                    os.close(fd)
        except BaseException:
            self.close()
            raise
        self._launched = deadline
        return self

    def _http_url(self, ready: str) -> None:
        """The dashboard's URL from the broker's ready line (with its token, if keyed)."""
        found = HTTP_IN_READY.search(ready)
        if found:
            from .observe.cli import TOKEN_FILE, load_token

            url = found.group(1)
            if self.keys is not None:
                url += "?token=" + load_token(os.path.join(self.keys, TOKEN_FILE), False)
            self.http_url = url

    def _read_ready(self, deadline: float) -> str:
        assert self._broker is not None and self._broker.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self._broker.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    line = self._broker.stdout.readline().decode(errors="replace")
                    match = READY_LINE.search(line)
                    if match:
                        self._http_url(line)
                        return match.group(1)
                    if not line:
                        raise PyMapReduceError(
                            f"the local broker exited (code {self._broker.wait()}) before "
                            "it was ready; its error is above")
        finally:
            sel.close()
        raise PyMapReduceError(f"the local broker was not ready within {self.start_timeout}s")

    def _wait_workers(self, deadline: float) -> None:
        with Client(self.address, timeout=max(1.0, deadline - time.monotonic()),
                    keys=self.keys) as client:
            while True:
                info = client.info()
                if (info.get("workers", 0) >= self.workers
                        and info.get("sinks", 0) >= self.sinks):
                    return
                for sink in self._sinks:
                    if sink.poll() is not None:
                        raise PyMapReduceError(
                            f"a local sink exited (code {sink.returncode}) at start")
                if self._worker is not None and self._worker.poll() is not None:
                    raise PyMapReduceError(
                        f"the local workers exited (code {self._worker.returncode}) at start")
                if time.monotonic() > deadline:
                    raise PyMapReduceError(
                        f"{self.workers} local workers (and {self.sinks} sinks) did not "
                        f"register within {self.start_timeout}s")
                time.sleep(0.002)  # (a round trip to the broker on loopback: cheap)

    def close(self) -> None:
        """Stop the workers and sinks, then the broker; kill whatever does not stop in
        time. The broker stops last: a worker that leaves says BYE to it, and one whose
        broker is already gone waits out its linger (50 ms) before it exits."""
        self._stop((self._worker, *self._sinks))
        self._stop((self._broker,))
        self._worker = self._broker = None
        self._sinks = []
        self._launched = None

    @staticmethod
    def _stop(procs) -> None:
        from .forkstart import wait_popen

        procs = [p for p in procs if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            if not wait_popen(proc, 5.0):  # (the moment it exits, not up to 50 ms after)
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stdin):
                if pipe is not None:
                    try:
                        pipe.close()
                    except BrokenPipeError:  # (unread bytes left in a pipe to a dead process)
                        pass

    @property
    def sink_pids(self) -> list[int]:
        """The pids of the sink daemons (``sinks=``)."""
        return [p.pid for p in self._sinks]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
