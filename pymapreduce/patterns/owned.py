"""Directories that tell whether their owner still lives, so that what a killed daemon
left in a shared temporary directory can be removed by the next one to start.

The owner of such a directory holds an exclusive ``flock`` on a file in it (``.owner``)
for as long as it runs; the kernel lets the lock go when the last process holding the
open file ends, however it ends (``kill -9``, the OOM killer). A daemon starting up tries,
on a thread of its own (:func:`in_background`), to take the lock of each such directory it
finds: taken, nobody owns it any longer, and
it is removed; held, it is left. Unlike a pid in the name, this cannot mistake a live
owner in another pid namespace, or a new process that reused a dead one's pid, for a
dead one. Only real directories of this user are looked at; a directory without the
file (made by a version without it, or by something else) is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterable
from typing import Any

OWNER = ".owner"

log = logging.getLogger("pymapreduce")


def claim(path: str) -> int:
    """Take ownership of the new directory ``path``: the open file descriptor holding its
    lock, to keep open for as long as the directory is in use (children forked meanwhile
    hold it too).

    The file is locked under another name and only then renamed ``.owner``: a daemon
    sweeping at that moment never finds an ``.owner`` that nobody holds yet (it would
    take the lock first and remove the new directory under its owner)."""
    pending = os.path.join(path, OWNER + ".new")
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(pending, os.path.join(path, OWNER))
    except OSError:
        os.close(fd)
        raise
    return fd


def lock_if_gone(path: str) -> int | None:
    """If ``path`` is a real directory of this user whose ``.owner`` is a regular file
    nobody holds (its owner is gone): an open descriptor holding its lock, to close once
    the directory is removed. Else None: a directory held, someone else's, without the
    file, or whose ``.owner`` is not a plain file (a link, a FIFO: never waited on)."""
    uid = os.getuid()
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            return None
        fd = os.open(os.path.join(path, OWNER),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            os.close(fd)
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its owner runs
        os.close(fd)
        return None
    return fd


def sweep(directory: str, prefix: str, remove: Any = None,
          guard: Any = None, keep: Any = None) -> list[str]:
    """Remove the directories named ``prefix...`` in ``directory`` whose owners are gone
    (with ``remove(path)``, default ``shutil.rmtree`` ignoring errors); returns their
    paths. Never raises: a directory that cannot be read is left. ``guard``: a lock held
    from taking a directory's lock until letting it go, for a process that forks while
    the sweep runs on another thread (a child forked meanwhile would hold the lock too).
    ``keep(name)``: true for a name to leave alone whatever its lock says."""
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        if keep is not None and keep(name):
            continue
        path = os.path.join(directory, name)
        with guard if guard is not None else contextlib.nullcontext():
            fd = lock_if_gone(path)
            if fd is None:
                continue
            try:
                if remove is None:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    remove(path)
            finally:
                os.close(fd)
        if not os.path.exists(path):
            removed.append(path)
    if removed:
        log.info("removed %d director%s left by daemons that were killed: %s", len(removed),
                 "y" if len(removed) == 1 else "ies", ", ".join(removed[:5]))
    return removed


def in_background(sweeps: Iterable[Callable[[], Any]]) -> threading.Thread:
    """Run ``sweeps`` (calls of :func:`sweep`, or of what wraps it) one after the other on
    a daemon thread of their own, started here: a daemon's start-up does not wait for
    them. Anyone may plant entries with a daemon's prefix in a shared temporary directory
    (120,000 of them took 1.8 s to look at). The thread is returned (tests join it)."""
    sweeps = list(sweeps)

    def run() -> None:
        for one in sweeps:
            try:
                one()
            except Exception:  # (sweep never raises; a wrapper's fault must not show)
                log.exception("sweeping the temporary directory failed")

    thread = threading.Thread(target=run, name="pmr-sweep", daemon=True)
    thread.start()
    return thread
