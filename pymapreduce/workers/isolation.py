"""Each job's tasks in a worker process: their own directory, and a clean process state.

A worker process runs the tasks of many jobs one after another. What one job's code does
to the process must not reach the next job's tasks, so around every task the worker puts
back what it found (see docs/travel.md for the list):

- ``os.environ`` (variables set, changed or removed by the task),
- the current directory,
- ``sys.path``, and the modules imported from a job's directory (shipped ``.py`` files),
- the handlers of the signals the worker relies on (SIGUSR1 stops an abandoned task,
  SIGTERM drains, SIGINT is the supervisor's) and of SIGALRM, with any pending alarm,
- the umask (a job that made its files private would make the next job's files so too).

Module globals of the user's own modules are fresh per job without anything done here:
those modules travel by value (``shipping.py``) and are rebuilt each time a job's code is
unpickled. Installed modules are the worker's own: what a job does to their globals stays.

A job that ships files (``submit(files=)``) gets a directory of its own in this process,
made when its code arrives, holding those files read-only; its tasks run there. The
directory goes when the worker forgets the job (``JOB_CACHE``) or exits.
"""

from __future__ import annotations

import _signal  # getsignal without the enum conversion: restore runs after every task
import glob
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
from typing import Any

from .. import shipping
from ..patterns import owned

log = logging.getLogger("pymapreduce.worker")

# the signals whose handlers a task may not keep changed (SIGKILL/SIGSTOP cannot be)
GUARDED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGUSR1", "SIGTERM", "SIGINT",
                                                     "SIGHUP", "SIGALRM", "SIGCHLD")
                        if hasattr(signal, n))


ROOT_PREFIX = "pymapreduce-worker-"  # + the worker process's pid + "-" + mkdtemp's letters
CAPTURE_PREFIX = "fds-"  # + a number: a file descriptors 1 and 2 point at (FdCapture)
LAST_WORDS = 64 * 1024  # bytes of a dead process's capture files the supervisor logs


class JobDirs:
    """The per-job directories of one worker process, under one temporary root."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.dirs: dict[str, str] = {}  # job id -> its directory
        self._made = 0
        self._owner: int | None = None  # the lock saying the root's owner lives (owned.py)

    def make(self, job_id: str, files: list[tuple[str, bytes]]) -> str:
        """The job's directory with ``files`` in it (made once per job; the names were
        checked by ``shipping.unpack_code``, and are checked again here)."""
        path = self.dirs.get(job_id)
        if path is not None and os.path.isdir(path):
            return path
        self._root()
        self._made += 1
        # not named after the job id: that is the client's text, this is a path; and made
        # by mkdtemp, not by a counter, so a task that made its job's next sibling in
        # advance (a link, say) cannot stop the next job with files from loading
        path = tempfile.mkdtemp(prefix=f"job-{self._made}-", dir=self.root)
        try:
            for name, data in files:
                self._write(path, name, data)
        except BaseException:  # (a full disk): no half-filled directory is used later
            self._remove(path)
            raise
        self.dirs[job_id] = path
        return path

    def _root(self) -> str:
        """This process's root directory, made if it is not there."""
        if self.root is None or not os.path.isdir(self.root):
            self._release()
            self.root = tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-")
            self._owner = owned.claim(self.root)  # (a later daemon's start sweeps it if
            # this process is killed and its supervisor with it)
        return self.root

    def capture_file(self) -> tuple[int, str]:
        """A new file for descriptors 1 and 2 (capture.FdCapture), in this process's root,
        opened for appending: ``(fd, path)``. Named, not unlinked, so that the supervisor
        can read what a process that died wrote last (``last_words``)."""
        self._made += 1
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(8):  # (a name no task can make first: a task runs in this process)
            name = f"{CAPTURE_PREFIX}{self._made}-{os.urandom(6).hex()}"
            path = os.path.join(self._root(), name)
            try:
                return os.open(path, flags, 0o600), path
            except FileExistsError:
                continue
        raise FileExistsError(f"no new capture file name in {self._root()}")

    @staticmethod
    def _write(path: str, name: str, data: bytes) -> None:
        shipping.check_file_name(name)
        target = os.path.join(path, name)
        if os.path.dirname(target) != path:  # (cannot happen after the check: a belt)
            raise ValueError(f"job file {name!r} would leave the job's directory")
        # O_EXCL: never through a link, never over a file already there (a duplicate)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(target, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # shared by tasks

    def get(self, job_id: str) -> str | None:
        return self.dirs.get(job_id)

    def prune(self, keep: set) -> None:
        """Remove the directories of jobs not in ``keep`` (jobs forgotten, no task left)."""
        for job_id in [j for j in self.dirs if j not in keep]:
            self._remove(self.dirs.pop(job_id))

    def close(self) -> None:
        """Remove every directory (the worker exits)."""
        self.dirs.clear()
        if self.root is not None:
            self._remove(self.root)
            self.root = None
        self._release()

    def _release(self) -> None:
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None

    @staticmethod
    def _remove(path: str) -> None:
        def writable(func, p, exc_info) -> None:  # a task may have made things read-only
            try:
                os.chmod(os.path.dirname(p), 0o700)
                if not os.path.islink(p):  # (chmod follows a link: never to its target)
                    os.chmod(p, 0o700)
                func(p)
            except OSError:
                pass

        shutil.rmtree(path, onerror=writable)
        if os.path.exists(path):
            log.warning("could not remove job directory %s", path)


def sweep_stale_roots(guard: Any = None) -> list[str]:
    """Remove the job directories of worker processes that are gone and whose supervisor
    could not remove them (it was killed too): a worker daemon does this as it starts
    (``guard``: see ``owned.sweep``)."""
    return owned.sweep(tempfile.gettempdir(), ROOT_PREFIX, JobDirs._remove, guard,
                       keep=_pid_exists)


def _pid_exists(name: str) -> bool:
    """Whether the process a root is named after (``pymapreduce-worker-PID-...``) still
    exists, a zombie included: a process killed a moment ago has released its lock, but
    its supervisor has yet to reap it and read its last words (``last_words``) before
    removing its directories itself; another daemon starting meanwhile leaves them."""
    pid = name[len(ROOT_PREFIX):].partition("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # (another user's process: it exists)
        return True
    return True


def last_words(pid: int) -> str:
    """What a worker process that ended wrote to descriptors 1 and 2 and never reported
    (capture.FdCapture's files in its root): the output of the task that killed it, a C
    library's failed assertion, Python's own fatal error; the last LAST_WORDS bytes of
    each file, oldest file first. Only regular files of this user, never through a link,
    and only in a root whose owner is gone (as :func:`remove_roots_of` checks: the same
    pid may be a live process of another daemon in another pid namespace); the supervisor
    reads them as it reaps the process, before ``remove_roots_of``. What the process read
    and reported is a hole at the file's start (capture._punch), skipped."""
    pattern = os.path.join(glob.escape(tempfile.gettempdir()), f"{ROOT_PREFIX}{pid}-*")
    found = []
    for root in glob.glob(pattern):
        lock = owned.lock_if_gone(root)
        if lock is None:  # its owner lives, or it is not ours to read
            continue
        try:
            for path in glob.glob(os.path.join(glob.escape(root), f"{CAPTURE_PREFIX}*")):
                words = _words_of(path)
                if words is not None:  # (named fds-N-RANDOM: by N, oldest first)
                    number = path.rpartition(CAPTURE_PREFIX)[2].partition("-")[0]
                    found.append((int(number) if number.isdigit() else 0, *words))
        finally:
            os.close(lock)
    found.sort()
    return "".join((f"[... {before} bytes before ...]\n" if before else "") +
                   data.decode("utf-8", "replace") for _, before, data in found)


def _words_of(path: str) -> tuple[int, bytes] | None:
    """``(bytes left out before, the last LAST_WORDS bytes)`` of one capture file's data
    (after its hole), or None (not a regular file of ours, empty, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or not st.st_size:
            return None
        try:
            first = os.lseek(fd, 0, os.SEEK_DATA)  # (past the hole of what was reported)
        except OSError:  # ENXIO: all of it a hole
            return None
        # a hole ends on a block's edge: what was reported reads as zeros up to where
        # the unread bytes begin
        block = os.pread(fd, 1 << 16, first)
        begin = first + len(block) - len(block.lstrip(b"\0"))
        start = max(begin, st.st_size - LAST_WORDS)
        data = os.pread(fd, LAST_WORDS, start)
    except OSError:
        return None
    finally:
        os.close(fd)
    return start - begin, data


def remove_roots_of(pid: int) -> None:
    """Remove the job directories a worker process left behind (it was killed): the
    supervisor calls this as it reaps the process. Only real directories of this user are
    removed (the temporary directory may be shared with other users), and of those only
    the ones no process holds: the same pid may be a live worker process of another
    daemon in another pid namespace (a container sharing /tmp), or one that reused it."""
    pattern = os.path.join(glob.escape(tempfile.gettempdir()), f"{ROOT_PREFIX}{pid}-*")
    for path in glob.glob(pattern):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if not any(os.path.lexists(os.path.join(path, name))
                   for name in (owned.OWNER, owned.OWNER + ".new")):
            JobDirs._remove(path)  # (killed before it claimed it)
            continue
        fd = owned.lock_if_gone(path)
        if fd is None:  # its owner lives (or its .owner is not ours to judge)
            continue
        try:
            JobDirs._remove(path)
        finally:
            os.close(fd)


class ProcessState:
    """The process state a task must not keep changed, captured once and put back after
    each task (``enter`` before it, ``restore`` after it)."""

    def __init__(self) -> None:
        self.captured = False
        self.env: dict[str, str] = {}
        self.raw_env: dict | None = None  # os.environ's encoded dict: compared 100x faster
        self.cwd = ""
        self.path: list[str] = []
        self.handlers: dict[int, object] = {}
        self.handled: tuple = ()  # the handlers of GUARDED_SIGNALS, in order (compared at once)
        self.umask = 0o022
        self.job_dir: str | None = None

    def capture(self) -> None:
        """Take the worker's own state as the one every task starts from."""
        self.env = dict(os.environ)
        raw = getattr(os.environ, "_data", None)
        self.raw_env = dict(raw) if isinstance(raw, dict) else None
        self.cwd = os.getcwd()
        self.path = list(sys.path)
        self.handlers = {s: _signal.getsignal(s) for s in GUARDED_SIGNALS}
        self.handled = tuple(self.handlers.values())
        self.umask = os.umask(0o022)  # (read by setting it: there is no getter)
        os.umask(self.umask)
        self.captured = True

    def enter(self, job_dir: str | None) -> None:
        """Before a task (or loading a job's code): into its job's directory, if it has
        one, with that directory first on ``sys.path`` (shipped ``.py`` files import)."""
        if not self.captured:
            self.capture()
        self.job_dir = job_dir
        if job_dir is not None:
            os.chdir(job_dir)
            sys.path.insert(0, job_dir)
        shipping.set_task_dir(shipping.NO_FILES if job_dir is None else job_dir)

    def restore(self) -> None:
        """After a task: put back everything ``capture`` took, whatever the task did."""
        shipping.set_task_dir(None)
        raw = getattr(os.environ, "_data", None)
        if (raw != self.raw_env if self.raw_env is not None else True) and \
                os.environ != self.env:
            for name in [n for n in os.environ if n not in self.env]:
                del os.environ[name]
            for name, value in self.env.items():
                if os.environ.get(name) != value:
                    os.environ[name] = value
        try:
            if os.getcwd() != self.cwd:
                os.chdir(self.cwd)
        except OSError:  # the task removed the directory it was in
            os.chdir(self.cwd)
        if sys.path != self.path:
            sys.path[:] = self.path
        if self.job_dir is not None:
            self._forget_modules(self.job_dir)
            self.job_dir = None
        # (all of them compared at once, in C: a task seldom changes one)
        if tuple(map(_signal.getsignal, GUARDED_SIGNALS)) != self.handled:
            getsignal = _signal.getsignal
            for signum, handler in self.handlers.items():
                now = getsignal(signum)
                if now is not handler and now != handler and handler is not None:
                    signal.signal(signum, handler)
        if hasattr(signal, "alarm"):
            signal.alarm(0)  # an alarm a task left would fire in the next one
        os.umask(self.umask)  # (one system call: cheaper than asking first)

    @staticmethod
    def _forget_modules(job_dir: str) -> None:
        """Drop modules imported from the job's directory: the next job may ship another
        file of the same name."""
        prefix = os.path.join(job_dir, "")
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str) and path.startswith(prefix):
                del sys.modules[name]
