"""Process helpers shared by the benchmarks that run daemons: children, liveness, ready
lines, reaping. Every process is found and signalled by its PID, never by its name."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time

PR_SET_CHILD_SUBREAPER = 36


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, T, Z...), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return None


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def status_mib(pid: int, field: str = "VmRSS") -> float | None:
    """A memory figure of a live process in MiB from /proc (``VmRSS`` resident now,
    ``VmHWM`` its peak), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds a live process has used, its ended threads' included
    (/proc/PID/stat, in 10 ms ticks); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def sched_cpu_seconds(pid: int) -> float:
    """CPU seconds a process's threads have run so far: Linux's scheduler statistics, in
    nanoseconds (/proc/PID/stat counts in 10 ms ticks: too coarse for a short run)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            pass
    return total / 1e9


def rss_mib(pid: int) -> float:
    """Resident MiB of a process (NaN when it is gone)."""
    mib = status_mib(pid)
    return float("nan") if mib is None else mib


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_daemon(proc: subprocess.Popen) -> None:
    """kill -9 of a worker daemon: its supervisor and its processes."""
    kids = children(proc.pid)
    proc.kill()
    for pid in kids:
        signal_pid(pid, signal.SIGKILL)
    proc.wait()


def reap(pid: int) -> None:
    """Collect ``pid`` if it became our child (we are a subreaper) and has exited."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has exited (reaping those we adopted); returns the survivors."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while True:
        still = []
        for pid in left:
            if alive(pid):
                still.append(pid)
            else:
                reap(pid)  # a zombie we adopted: collect it
        left = still
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def our_children() -> list[int]:
    """Every child of this process, whichever of its threads forked or adopted it."""
    pids = []
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(x) for x in f.read().split())
    return pids


def become_subreaper() -> None:
    """Adopt the orphans of the daemons we kill, so we can reap them (no zombies left)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def read_ready(proc: subprocess.Popen, pattern: re.Pattern, timeout: float = 30.0) -> re.Match:
    """Wait for the daemon's ready line on its stdout."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline().decode(errors="replace")
                if not line:
                    raise RuntimeError(f"pid {proc.pid} exited ({proc.wait()}) before its "
                                       "ready line")
                m = pattern.search(line)
                if m:
                    return m
    finally:
        sel.close()
    raise TimeoutError(f"pid {proc.pid}: no line matching {pattern.pattern!r} in {timeout}s")
