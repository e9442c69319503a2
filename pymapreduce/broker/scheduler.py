"""Which pending tasks go to a worker that has credit.

Jobs take turns (round-robin), so a small job submitted behind a big one starts at once
instead of waiting for the big one's queue to drain.
"""

from __future__ import annotations

from collections import OrderedDict

from .tasks import JobState, Task


class Scheduler:
    """Round-robin over the jobs that have pending tasks."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, JobState] = OrderedDict()

    def add(self, job: JobState) -> None:
        self._jobs[job.id] = job

    def remove(self, job: JobState) -> None:
        self._jobs.pop(job.id, None)

    def pending(self) -> int:
        return sum(len(j.pending) for j in self._jobs.values())

    def take(self, n: int) -> list[Task]:
        """Up to ``n`` tasks, taken in turn from each job with pending tasks."""
        out: list[Task] = []
        while len(out) < n:
            job = next((j for j in self._jobs.values() if j.pending), None)
            if job is None:
                break
            # this job had its turn: it goes to the back of the line
            self._jobs.move_to_end(job.id)
            share = max(1, (n - len(out)) // max(1, self._runnable()))
            while job.pending and share:
                out.append(job.pending.popleft())
                share -= 1
        return out

    def _runnable(self) -> int:
        return sum(1 for j in self._jobs.values() if j.pending)
