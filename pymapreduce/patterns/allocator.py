"""Pages of large buffers a process has let go, handed back to the kernel at once.

glibc serves an allocation of at least its mmap threshold (128 KiB at start) with a mapping
of its own, unmapped when freed. The first time such a chunk is freed, glibc raises the
threshold to that chunk's size (up to 32 MiB), so that later buffers of that size come from
its heaps instead. A frame of a few MiB that ZeroMQ receives after that is allocated by its
I/O thread, in that thread's arena; once the frame is freed (a reduce task has decoded the
segment, the broker has sent a map output on) its pages stay resident in that arena, where
the Python objects made by the main thread never reuse them. Measured on the 256 MiB word
count: each reduce worker stayed at 160 MiB after letting every segment go
(benchmarks/RESULTS.md, "Whole-tree peak memory").

So a process that has just let a large buffer go calls :func:`trim` (glibc's
``malloc_trim``, about 0.1 ms here): a reduce task as it drops each segment
(``workers/runner.py``), the broker after sending reduce segments on (``broker/sink.py``).
Pinning the threshold instead (``mallopt``) was measured and rejected: it made a map task's
own large buffers (dict tables, decoded lines) fresh mappings each time, twice the page
faults and ~8% more CPU in the word count's map tasks, and 20-40% more CPU for the
broker's receiving of frames. Not glibc: nothing is done.
"""

from __future__ import annotations

from typing import Any

TRIM_MIN = 64 * 1024  # a freed buffer smaller than this is not worth a trim

_trim: Any = None  # malloc_trim, once looked up (False: there is none)


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
