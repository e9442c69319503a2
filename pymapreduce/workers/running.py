"""Which attempt a worker process was running when it died, for its supervisor to say.

A worker process holds up to its credit of attempts: one running, the others queued or
finished and not reported yet. When the process dies (a task's ``os._exit``, a segfault,
the OOM killer), the broker re-queues them all; without more to go on it counts the loss
against every one of them, since any of them may have killed the process, and a task that
kills its worker must fail in the end. That made queued attempts pay for another task's
crash: a task sharing a process with a crashing one ran out of attempts without ever
running (the chaos tests needed ``--max-attempts 10``).

So each worker process writes the attempt it starts, and that it ended it, into a page of
memory it shares with its supervisor (made before the fork: a few stores a task, no
system call), and marks the loading of a job's code. The supervisor reads the page once
the process is gone and hands it to the replacement process, which names it in its
registration (``replaces``); the broker then counts the loss against that attempt alone
if the dead process held it (it ran, or it had ended and not been reported: its report
may be what killed the process), and re-queues the others without counting. In every
other case (nothing started yet, a job's code loading, an attempt the process no longer
held, no supervisor to say) every held attempt counts, as before.
"""

from __future__ import annotations

import mmap

NONE, RUNNING, ENDED, LOADING = 0, 1, 2, 3


class RunningPage:
    """A page shared by a worker process (which writes) and its supervisor (which reads
    it after the process ended): ``slots`` is ``[state, index, attempt]`` as 64-bit ints.
    The worker's task loop writes them inline (tasks.py: ``state = NONE``, the index and
    the attempt, then ``state = RUNNING``; a death between the stores names none); an
    attempt identifier is 50 random bits, so with its index it names one held attempt."""

    __slots__ = ("page", "slots")

    def __init__(self) -> None:
        self.page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared: kept over fork
        self.slots = memoryview(self.page).cast("q")

    def blame(self) -> list | None:
        """``[index, attempt]`` of the attempt that was running or had just ended, or
        None (nothing started, a job's code loading)."""
        state, index, attempt = self.slots.tolist()[:3]
        return [index, attempt] if state in (RUNNING, ENDED) else None

    def close(self) -> None:
        try:
            self.slots.release()
            self.page.close()
        except (BufferError, ValueError):
            pass

