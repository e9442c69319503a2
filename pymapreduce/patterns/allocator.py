"""The C allocator and the frames a process lets go: their pages go back to the kernel.

glibc serves an allocation of at least its mmap threshold (128 KiB at start) with a mapping
of its own, unmapped when freed. The first time such a chunk is freed, glibc raises the
threshold to that chunk's size (up to 32 MiB), so that later buffers of that size come from
its heaps instead. A frame of a few MiB that ZeroMQ receives after that is allocated by its
I/O thread, in that thread's arena; once the frame is freed (a reduce task has decoded the
segment, the broker has sent a map output on) its pages stay resident in that arena, where
the Python objects made by the main thread never reuse them. Measured on the 256 MiB word
count: each reduce worker stayed at 160 MiB after letting every segment go
(benchmarks/RESULTS.md, "Whole-tree peak memory").

Two remedies, each where it costs least:

- The broker and sink daemons pin the threshold at glibc's starting value: their large
  buffers are frames, mapped and unmapped at once. An embedded cluster (local.py) asks for
  it in their environment (no cost at start); one started by hand calls ``mallopt``,
  unless its operator chose a setting in the environment.
- Worker processes do not: a map task's own large buffers (dict tables, decoded lines)
  would then be mapped afresh each time, which cost the word count's map tasks twice the
  page faults and about 8% more CPU. A reduce task instead hands the freed pages back with
  :func:`trim` as it lets each large segment go (``workers/runner.py``), about 0.1 ms a call.

Not glibc: nothing is done.
"""

from __future__ import annotations

import os
from typing import Any

MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's starting threshold, kept from rising
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc reads it when the process starts
MARKER = "PYMAPREDUCE_MALLOC"  # set beside ENV by local.py: the daemon takes both out
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
PINNED = ("broker", "sink")  # the daemons whose large buffers are frames (see above)
TRIM_MIN = 64 * 1024  # a freed buffer smaller than this is not worth a trim

_trim: Any = None  # malloc_trim, once looked up (False: there is none)


def daemon_env(env: dict[str, str], role: str) -> None:
    """Ask for the pinned threshold in the environment of a ``role`` daemon about to be
    started, if it is one of PINNED (and the user set none)."""
    if role in PINNED and ENV not in env and "mmap_threshold" not in env.get("GLIBC_TUNABLES", ""):
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


def trim() -> None:
    """Hand the free pages of every arena back to the kernel (glibc's ``malloc_trim``):
    what a buffer just freed held, wherever in the heap it was. Nothing elsewhere."""
    global _trim
    if _trim is None:
        try:
            import ctypes

            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)
