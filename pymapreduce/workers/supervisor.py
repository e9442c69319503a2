"""The ``pymapreduce worker`` daemon: N worker processes, restarted when they crash.

The supervisor forks its first children before it creates a ZeroMQ context (the one of
its heartbeat socket), and each child makes its own; children restarted later are forked
with that context alive, which is safe as long as they never touch it (they do not), and
perhaps while the start-up sweep's thread runs, which never holds a dead daemon's
directory lock across a fork (``_forking``). Children die with the supervisor (PR_SET_PDEATHSIG on
Linux, and a parent check everywhere else), so ``kill -9`` of the supervisor leaves no
orphan behind; the broker re-queues their tasks when their heartbeats stop. The supervisor
also beats for its live children (``voucher.py``), so a child whose user code holds the
GIL for a long time is not taken for dead, and says when they have registered with the
broker, in one line for all of them (``registrations.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import deque

from ..errors import AuthenticationFailed
from ..patterns import compress, owned
from ..patterns import protocol as P
from ..patterns.config import WORKER_ENV
from ..patterns.security import PeerKeys
from ..patterns.wakeup import SignalWakeup
from ..spill import budget as spill_budget
from ..spill.budget import private_root, remove_process_dir
from .isolation import last_words, remove_roots_of, sweep_stale_roots
from .registrations import Registrations
from .running import RunningPage
from .voucher import Voucher
from .worker import Worker

log = logging.getLogger("pymapreduce.worker")

EXIT_AUTH = 77  # a child whose key the broker refused: restarting it cannot help
RESTART_WINDOW = 10.0  # seconds over which crashes are counted
RESTART_BURST = 5  # crashes of one slot in the window before restarts slow down
REAP_INTERVAL = 0.1


_prctl = None  # libc's prctl, looked up once by the supervisor (False: there is none)


def _lookup_prctl() -> None:
    global _prctl
    if _prctl is None:
        try:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl = False  # not Linux: the parent check in the worker loop covers it


# worker processes keep what tasks write to descriptors 1 and 2 in their logs
# (capture.FdCapture) unless this is 0, false, no or off in the worker daemon's
# environment (docs/logs.md)
CAPTURE_FDS_ENV = "PYMAPREDUCE_CAPTURE_FDS"
CAPTURE_OFF = frozenset({"0", "false", "no", "off"})


def capture_fds_wanted() -> bool:
    """Whether CAPTURE_FDS_ENV leaves the capture on (off: 0, false, no, off)."""
    return os.environ.get(CAPTURE_FDS_ENV, "").strip().lower() not in CAPTURE_OFF


def _die_with_parent() -> None:
    _lookup_prctl()  # (done before the first fork: each child only calls it)
    if _prctl:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Supervisor:
    """Keeps ``processes`` workers connected to ``connect`` alive until stopped."""

    def __init__(self, connect: str, processes: int, *, credit: int = P.DEFAULT_CREDIT,
                 parent_pid: int | None = None, keys: PeerKeys | None = None,
                 slowdown: float = 1.0, tags: tuple = (), memory: int | None = None,
                 spill_dir: str | None = None) -> None:
        self.connect = connect
        self.memory = memory  # bytes each worker process's tasks may hold (None: unbounded)
        # where they spill: a directory of this daemon's own (a process's is named by its
        # pid in it), removed when the daemon stops
        self.spill_dir = spill_dir
        self.spill_root = private_root(spill_dir) if memory is not None else None
        self.tags = tuple(tags)
        self.slowdown = slowdown
        self.keys = keys
        self.exit_code = 0
        self.processes = processes
        self.credit = credit
        self.parent_pid = parent_pid
        self.children: dict[int, int] = {}  # pid -> slot
        self.identities: dict[int, bytes] = {}  # pid -> the worker's identity at the broker
        # slot -> [identity, why, blame] of a process that died: its replacement tells the
        # broker, which re-queues the dead one's tasks at once instead of after its
        # liveness, counting the loss against the attempt named by blame alone (running.py)
        self.dead: dict[int, list] = {}
        self.pages: dict[int, RunningPage] = {}  # pid -> its running attempt's page
        self.crashes: dict[int, deque] = {}
        self.restarts = 0
        self._stopping = False
        # before the first fork: the children share its page of the broker's beat interval
        self.voucher = Voucher(connect, keys)
        # ... and its page of their registrations, which the supervisor says once for all
        self.registrations = Registrations(processes, connect)
        # held by a fork and by the start-up sweep's thread while it holds a dead daemon's
        # directory lock (a child forked then would hold that lock for its whole life)
        self._forking = threading.Lock()
        self.sweeping: threading.Thread | None = None  # the start-up sweep's thread

    def _spawn(self, slot: int) -> None:
        me = os.getpid()
        identity = uuid.uuid4().bytes
        replaces = self.dead.pop(slot, None)
        running = RunningPage()  # (where the child writes its running attempt: running.py)
        with self._forking:
            pid = os.fork()
        if pid:
            self.children[pid] = slot
            self.identities[pid] = identity
            self.pages[pid] = running
            return
        code = 0
        try:  # the child: never returns into the supervisor's code
            for page in self.pages.values():  # (its siblings' are not its to write)
                page.close()
            os.environ[WORKER_ENV] = "1"  # (an embedded cluster refuses to start in here)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            _die_with_parent()
            if os.getppid() != me:
                os._exit(0)
            worker = Worker(self.connect, credit=self.credit, parent_pid=me, keys=self.keys,
                            slowdown=self.slowdown, name=f"{os.uname().nodename}:{os.getpid()}",
                            identity=identity, replaces=replaces, tags=self.tags,
                            on_welcome=self.voucher.learned,
                            on_registered=lambda yes: self.registrations.mark(slot, yes),
                            supervisor=self.voucher.identity if self.voucher.enabled else None,
                            memory=self.memory, spill_dir=self.spill_root,
                            capture_fds=capture_fds_wanted(),
                            running=running)
            # SIGTERM drains: finished work is reported, the running and queued tasks
            # are handed back (the broker re-queues them at once), then the process exits
            signal.signal(signal.SIGTERM, lambda *_: worker.drain())
            worker.run()
        except AuthenticationFailed as exc:
            logging.getLogger("pymapreduce.worker").error("%s", exc)
            code = EXIT_AUTH
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            logging.getLogger("pymapreduce.worker").exception("worker process crashed")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def start(self) -> None:
        # what every child needs at its start, loaded once here for all the forks
        # instead of by each child on its way to registering: ctypes (prctl) and the
        # codecs it announces (zstandard)
        _lookup_prctl()
        compress.available()
        for slot in range(self.processes):
            self._spawn(slot)
        # what daemons killed before left on this host (their job and spill directories,
        # which their own supervisor could not remove): gone once no process holds them.
        # After the forks, on a thread of its own (as the broker's and a sink's): anyone
        # may plant entries with the prefixes, and 120,000 of them took 1.8 s to look at,
        # which must hold neither the ready line nor a restart (a fork waits at most for
        # one directory's removal: self._forking)
        self.sweeping = owned.in_background([
            lambda: sweep_stale_roots(self._forking),
            lambda: spill_budget.sweep_stale_roots(self.spill_dir, self._forking)])

    def stop(self, *_: object) -> None:
        self._stopping = True

    def serve_forever(self) -> None:
        """Reap, restart and vouch for children until stopped; then stop them all."""
        wakeup = SignalWakeup()  # SIGTERM ends the nap at once (patterns/wakeup.py)
        try:
            self.voucher.open()
            while not self._stopping:
                self._reap()
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    log.warning("parent process is gone; stopping the workers")
                    break
                now = time.monotonic()
                self.voucher.beat(now, self.identities)
                line = self.registrations.step(now)
                if line is not None:
                    log.info("%s", line)
                wakeup.sleep(min(REAP_INTERVAL, self.voucher.interval / 2))
        finally:
            wakeup.close()
            self.shutdown()
            self.voucher.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            identity = self.identities.pop(pid, None)
            page = self.pages.pop(pid, None)
            blame = page.blame() if page is not None else None
            if page is not None:
                page.close()
            if slot is not None:  # (killed: its job directories are still there)
                words = last_words(pid)  # (what it wrote to 1 and 2 and never reported)
                if words:
                    log.warning("worker process %d (%s) wrote before it ended:\n%s", pid,
                                _describe(status), words.rstrip("\n"))
                self._remove_files(pid)
                self.registrations.gone(slot)
            if slot is None or self._stopping:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_AUTH:
                log.error("authentication with the broker failed (see above); stopping")
                self.exit_code = EXIT_AUTH
                self._stopping = True
                return
            log.warning("worker process %d ended (%s); restarting it", pid, _describe(status))
            if identity is not None:  # (and the attempt it ran: only that one counts)
                self.dead[slot] = [identity, f"its process {pid} {_describe(status)}",
                                   blame]
            history = self.crashes.setdefault(slot, deque(maxlen=RESTART_BURST))
            now = time.monotonic()
            history.append(now)
            if len(history) == RESTART_BURST and now - history[0] < RESTART_WINDOW:
                time.sleep(1.0)  # a crash loop: don't spin
            self.restarts += 1
            self._spawn(slot)

    def _remove_files(self, pid: int) -> None:
        """What a gone child left on disk: its jobs' directories and its spilled runs
        (a process killed mid-task could not remove them itself)."""
        remove_roots_of(pid)
        if self.spill_root is not None:
            remove_process_dir(self.spill_root, pid)

    def shutdown(self, grace: float = 3.0) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.children.pop(pid, None)
                self._remove_files(pid)
            else:
                time.sleep(0.005)  # (children exit within milliseconds of SIGTERM)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self._remove_files(pid)
        self.children.clear()
        for page in self.pages.values():
            page.close()
        self.pages.clear()
        if self.spill_root is not None:
            shutil.rmtree(self.spill_root, ignore_errors=True)
            spill_budget.release_root(self.spill_root)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
