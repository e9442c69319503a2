"""File operations under a local output root that never follow a symbolic link below it.

Whoever can write the output directory ``OUT`` can replace ``OUT/_temporary`` (or
``OUT/_temporary/<job>``) by a link to a directory of someone else's. Paths joined and
opened as text would follow it: attempts would write there, the commit would rename the
victim's files into ``OUT`` and delete the victim's directory. So every name below the
root is reached one component at a time from an open descriptor of its parent
(``dir_fd``), each directory opened with ``O_NOFOLLOW``, each file created with
``O_NOFOLLOW``: a link on the way raises :class:`OutputLinkRefused` naming it, and
nothing goes through it. The root itself is the user's choice and may be a link.
Names are relative to the root and ``/``-separated (``output.py`` makes them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from ..errors import OutputLinkRefused

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def refused(root: str, parts: list[str]) -> OutputLinkRefused:
    """The error for the name ``parts`` under ``root``: a link, or not a directory."""
    path = os.path.join(root, *parts)
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        link = True  # (gone meanwhile: it was one when it was opened)
    if link:
        exc = OutputLinkRefused(
            f"{path} is a symbolic link: pymapreduce does not follow links inside an "
            "output directory (anyone who can write it could point one elsewhere); "
            "remove it and run the job again")
    else:
        exc = OutputLinkRefused(f"{path} is not a directory: remove it and run the job "
                                "again")
    exc.errno = errno.ELOOP if link else errno.ENOTDIR  # (the message alone is its text)
    return exc


@contextlib.contextmanager
def parent(root: str, name: str, create: bool = False) -> Iterator[tuple[int, str]]:
    """``(descriptor of the directory holding name, name's last component)``, each
    directory below ``root`` opened without following a link (OutputLinkRefused);
    ``create``: directories that are missing are made. FileNotFoundError (naming the
    path) when one is missing and not ``create``."""
    parts = name.split("/")
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts[:-1], 1):
            if create:
                with contextlib.suppress(FileExistsError):  # (a link there: refused next)
                    os.mkdir(part, dir_fd=fd)
            try:
                sub = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise refused(root, parts[:depth]) from None
                raise OSError(exc.errno, exc.strerror,
                              os.path.join(root, *parts[:depth])) from None
            os.close(fd)
            fd = sub
        yield fd, parts[-1]
    finally:
        os.close(fd)


def create(root: str, name: str) -> int:
    """A new (or emptied) file ``name`` opened for writing, its directories made: the
    descriptor. OutputLinkRefused if a link is on the way or at the name itself."""
    with parent(root, name, create=True) as (fd, last):
        try:
            return os.open(last, _NEW_FILE, 0o666, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refused(root, name.split("/")) from None
            raise OSError(exc.errno, exc.strerror, os.path.join(root, *name.split("/"))) \
                from None


def lstat(root: str, name: str) -> os.stat_result | None:
    """``name``'s own status (a link's, not its target's); None if it is not there."""
    try:
        with parent(root, name) as (fd, last):
            return os.stat(last, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def rename(root: str, src: str, dst: str) -> None:
    """``src`` to ``dst``, replacing it (the names themselves, never what a link at
    either points to)."""
    with parent(root, src) as (sfd, slast), parent(root, dst) as (dfd, dlast):
        os.replace(slast, dlast, src_dir_fd=sfd, dst_dir_fd=dfd)


def unlink(root: str, name: str) -> None:
    """Delete the file (or link) ``name`` if it is there."""
    try:
        with parent(root, name) as (fd, last):
            os.unlink(last, dir_fd=fd)
    except FileNotFoundError:
        pass


def rmdir(root: str, name: str) -> None:
    """Delete the empty directory ``name`` (OSError if it is not one, or not empty)."""
    with parent(root, name) as (fd, last):
        os.rmdir(last, dir_fd=fd)


def remove_tree(root: str, name: str) -> None:
    """Delete the directory ``name`` and everything below it, if there (what cannot be
    deleted is left); a link at ``name`` is neither followed nor removed, one on the way
    to it raises OutputLinkRefused."""
    try:
        with parent(root, name) as (fd, last):
            _remove_dir(fd, last)
    except FileNotFoundError:
        pass


def _empty(fd: int) -> None:
    """Delete what the open directory ``fd`` holds, links as themselves, never what they
    point to (``shutil.rmtree``'s ``dir_fd`` is Python 3.11's)."""
    with os.scandir(fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for entry, is_dir in names:
        if not is_dir:
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=fd)
            continue
        _remove_dir(fd, entry)


def _remove_dir(fd: int, name: str) -> None:
    """Delete the directory ``name`` of the open directory ``fd`` with what it holds; one
    that is not there, not a directory, or a link (also one put there meanwhile) is left."""
    try:
        sub = os.open(name, _DIR, dir_fd=fd)
    except OSError:
        return
    try:
        _empty(sub)
    finally:
        os.close(sub)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=fd)
