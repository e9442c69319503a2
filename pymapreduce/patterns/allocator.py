"""The daemons' C allocator: large freed buffers go back to the kernel at once.

glibc serves an allocation of at least its mmap threshold (128 KiB at start) with a mapping
of its own, unmapped when freed. The first time such a chunk is freed, glibc raises the
threshold to that chunk's size (up to 32 MiB), so that later buffers of that size come from
its heaps instead. In a daemon that is the wrong trade: a frame of a few MiB that ZeroMQ
receives is allocated by its I/O thread, in that thread's arena; once the frame is freed
(a reduce task has decoded the segment, the broker has sent a map output on) its pages
stay resident in that arena, where the Python objects made by the main thread never reuse
them. Measured on the 256 MiB word count: each reduce worker stayed at 160 MiB after
letting every segment go; with the threshold pinned, 114 MiB (benchmarks/RESULTS.md,
"Whole-tree peak memory").

So a daemon pins the threshold at glibc's own starting value: large buffers are mapped and
unmapped, as they are before the first raise. An embedded cluster (local.py) asks for it
in the daemons' environment (no cost at start); a daemon started by hand sets it with
``mallopt`` unless its operator chose a setting in the environment. Not glibc: nothing.
"""

from __future__ import annotations

import os

MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's starting threshold, kept from rising
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc reads it when the process starts
MARKER = "PYMAPREDUCE_MALLOC"  # set beside ENV by local.py: the daemon takes both out
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def daemon_env(env: dict[str, str]) -> None:
    """Ask for the pinned threshold in the environment of a daemon about to be started
    (unless the user set one)."""
    if ENV not in env and "mmap_threshold" not in env.get("GLIBC_TUNABLES", ""):
        env[ENV] = str(MMAP_THRESHOLD)
        env[MARKER] = "1"


def pin_mmap_threshold() -> bool:
    """Keep this process's mmap threshold at MMAP_THRESHOLD; True if the environment
    glibc read at start set it (local.py's request, or the operator's own setting) or
    this call did. Call it early in a daemon: buffers allocated before keep their place."""
    if os.environ.pop(MARKER, None) is not None:  # local.py's: glibc has applied it
        os.environ.pop(ENV, None)  # (what tasks start gets the usual allocator)
        return True
    if ENV in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return True  # the operator's own setting
    try:
        import ctypes

        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False
