"""A worker process's memory budget: how big it is, when a task is over it, and where the
runs a task spills go (and how they are removed).

The budget is checked against the process's resident set (``/proc/self/statm``), not an
estimate of object sizes: it sees every byte a task holds (decoded records, the user's own
state, encoded inputs and outputs), at about 10 µs a reading, taken every
:data:`CHECK_EVERY` records or pairs. What counts is the growth over the process's
resident set when the task started, less the input it was handed (the interpreter,
its libraries and the job's code, about 40 MiB, do not count; a reduce task's encoded
segments do), so ``--memory 256MB`` means 256 MB for a task's data. A task spills once that growth passes
:data:`SPILL_SHARE` of the budget; the rest is headroom for what the spill itself needs
(merge buffers, the task's encoded output, which is sent as bytes).

After a spill the freed memory is handed back to the kernel (``malloc_trim``), so the
resident set falls again and the next reading means something; without it, glibc keeps
freed heap pages and every later check would find the task still over.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from ..errors import ConfigError
from ..patterns import allocator, owned

CHECK_EVERY = 1024  # records (map) or pairs (reduce) between two readings of the RSS
FIRST_CHECK = 16  # ... at a task's start, before it is known how heavy its records are
SPILL_SHARE = 0.5  # of the budget that buffered data may take before a task spills
RUN_SHARE = 8  # a new run needs growth of 1/RUN_SHARE of the limit since the last one
MIN_BUDGET = 16 << 20  # below this the interpreter's own noise is the budget
DIR_PREFIX = "pymapreduce-spill-"  # a worker daemon's private directory (mkdtemp)
_OWNERS: dict[str, int] = {}  # a private_root's path -> the descriptor holding its lock

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20,
          "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parse_size(text: Any) -> int:
    """Bytes in a size as an operator writes it: ``256MB``, ``1.5GiB``, ``300m``, or an
    int of bytes. ConfigError for anything else, or a size below 16 MiB."""
    if isinstance(text, bool):
        raise ConfigError(f"a memory budget is a size such as '256MB', not {text!r}")
    if isinstance(text, (int, float)):
        nbytes = int(text)
    else:
        match = _SIZE.match(str(text))
        unit = match and _UNITS.get(match.group(2).lower())
        if not match or unit is None:
            raise ConfigError(f"cannot read the memory budget {text!r}: write a size such "
                              "as 256MB, 1GiB or 512m")
        nbytes = int(float(match.group(1)) * unit)
    if nbytes < MIN_BUDGET:
        bare = isinstance(text, int) or str(text).strip().isdigit()
        hint = f" (a number alone counts bytes: did you mean {text}MB?)" if bare else ""
        raise ConfigError(f"a memory budget of {nbytes} bytes is too small: at least "
                          f"{MIN_BUDGET >> 20} MiB, {MIN_BUDGET} bytes{hint}")
    return nbytes


def rss_bytes() -> int:
    """This process's resident set in bytes (0 where /proc is missing: never over)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Budget:
    """The memory budget of one worker process and the directory its tasks spill to.

    ``nbytes``: the budget; ``spill_dir``: a directory private to this process's user
    (its supervisor's :func:`private_root`), in which the process's own directory is
    named by its pid; without one, a fresh private directory is made (``mkdtemp``) on
    first use. Never a predictable name in a shared directory such as /tmp, where
    another local user could make it first and so read or replace the runs."""

    def __init__(self, nbytes: int, spill_dir: str | None = None) -> None:
        self.nbytes = nbytes
        self.process_baseline = self.baseline = rss_bytes()
        self.limit = int(nbytes * SPILL_SHARE)
        self.spill_dir = spill_dir
        self._dir: str | None = None
        self.spills = 0  # runs written by the running task (reported in its stats)
        self.mark = self.baseline  # the resident set after the last release
        self.every = CHECK_EVERY  # records or pairs until the next reading
        self._last = self.baseline

    def over(self) -> bool:
        """Whether the task's data passed the share of the budget it may buffer, and has
        grown by 1/RUN_SHARE of it since the last spill (from the lowest reading since:
        a reduce task lets its segments go as it reads them): what a task holds besides
        its buffer (its encoded input, say) never makes a storm of tiny runs.

        Also sets :attr:`every`, the records until the next reading: fewer while the
        resident set grows fast (records of megabytes), back up to CHECK_EVERY when not."""
        rss = rss_bytes()
        step = self.limit // (4 * RUN_SHARE)
        grown, self._last = rss - self._last, rss
        if grown > step and self.every > 1:
            self.every = max(1, self.every // max(2, grown // max(step, 1)))
        elif grown < step // 4 and self.every < CHECK_EVERY:
            self.every = min(CHECK_EVERY, self.every * 2)
        if rss < self.mark:  # (the task let input go: its buffer grows from here)
            self.mark = rss
        return rss - self.baseline > self.limit and rss - self.mark >= self.limit // RUN_SHARE

    def used(self) -> int:
        """Bytes held over the process's baseline now."""
        return max(0, rss_bytes() - self.baseline)

    def released(self) -> None:
        """Buffers were just freed: give the pages back, so the resident set tells the
        truth at the next check."""
        allocator.trim()
        self.mark = self._last = rss_bytes()

    def start_task(self, held: int = 0) -> None:
        """A task begins, holding ``held`` bytes of input already (a reduce task's
        segments): the budget counts from the resident set now, less those, so what the
        process holds that is not the task's (the job's code and the modules it imported)
        is not counted, and what the task was given is."""
        self.spills = 0
        rss = rss_bytes()
        if rss - self.process_baseline - held > self.limit // 4:
            self.released()  # (what earlier tasks freed but the allocator kept)
            rss = rss_bytes()
        self.baseline = max(self.process_baseline, rss - held)
        self.mark = self._last = rss
        self.every = FIRST_CHECK  # (doubling to CHECK_EVERY while records are light)

    @property
    def dir(self) -> str:
        """This process's spill directory (made when first asked for)."""
        if self._dir is None:
            if self.spill_dir is not None:
                self._dir = os.path.join(self.spill_dir, str(os.getpid()))
                os.makedirs(self._dir, mode=0o700, exist_ok=True)
            else:
                self._dir = tempfile.mkdtemp(prefix=DIR_PREFIX)
        return self._dir

    def task_dir(self) -> TaskFiles:
        """A fresh directory for one task's runs, made on first use and removed when the
        task ends however it ends (``with budget.task_dir() as files:``)."""
        return TaskFiles(self)


class TaskFiles:
    """One task's spill directory: made on first use, removed on exit (success, error, or
    an abandoned task's TaskAbandoned). A process killed outright cannot run this: its
    supervisor removes the process's whole directory when it reaps it
    (:func:`remove_process_dir`)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.path: str | None = None
        self.count = 0

    def new_path(self, what: str) -> str:
        """A new file name in the task's directory (the directory made if need be)."""
        if self.path is None:
            self.path = tempfile.mkdtemp(prefix="task-", dir=self.budget.dir)
        self.count += 1
        return os.path.join(self.path, f"{what}-{self.count:05d}")

    def __enter__(self) -> TaskFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def private_root(spill_dir: str | None) -> str:
    """A new directory only this user can enter, in ``spill_dir`` (default ``$TMPDIR``):
    a worker daemon's, holding a directory per worker process (named by its pid).
    ConfigError naming the directory if it cannot be made."""
    try:
        if spill_dir is not None:
            os.makedirs(spill_dir, exist_ok=True)
        path = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=spill_dir)
        # held by the daemon and the worker processes it forks: when they are all gone
        # (killed), the next daemon to start removes the directory (patterns/owned.py)
        _OWNERS[path] = owned.claim(path)
        return path
    except OSError as exc:
        raise ConfigError(f"cannot make a spill directory in {spill_dir or tempfile.gettempdir()!r}"
                          f" (--spill-dir): {exc.strerror or exc}") from None


def sweep_stale_roots(spill_dir: str | None, guard: Any = None) -> list[str]:
    """Remove the spill directories of worker daemons that were killed (no process holds
    their lock), in ``spill_dir`` (default ``$TMPDIR``), as a worker daemon starts
    (``guard``: see ``owned.sweep``)."""
    return owned.sweep(spill_dir or tempfile.gettempdir(), DIR_PREFIX, guard=guard)


def release_root(path: str) -> None:
    """The daemon removed its spill directory: let its lock go."""
    fd = _OWNERS.pop(path, None)
    if fd is not None:
        os.close(fd)


def remove_process_dir(root: str, pid: int) -> None:
    """Remove what the worker process ``pid`` spilled (its supervisor calls this when it
    reaps the process, which may have been killed mid-task)."""
    shutil.rmtree(os.path.join(root, str(pid)), ignore_errors=True)
