"""Which pending tasks go to a worker that has credit.

Jobs take turns (round-robin), so a small job submitted behind a big one starts at once
instead of waiting for the big one's queue to drain.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .tasks import JobState, Task

MAX_PASSED = 64  # retries looked past in one take, waiting for another worker


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

    def take(self, n: int, route: bytes | None = None, workers: Any = ()) -> list[Task]:
        """Up to ``n`` tasks for the worker ``route``, taken in turn from each job with
        pending tasks. A task that failed on this worker is left for another one, as long
        as one of ``workers`` (the live ones) has not failed it too."""
        out: list[Task] = []
        tried: set[str] = set()  # jobs with nothing left for this worker
        while len(out) < n:
            jobs = [j for j in self._jobs.values() if j.pending and j.id not in tried]
            if not jobs:
                break
            share = max(1, (n - len(out)) // len(jobs))
            for job in jobs:  # one round: each job its share, then to the back of the line
                if len(out) >= n:
                    break
                self._jobs.move_to_end(job.id)
                want = min(share, n - len(out))
                passed: list[Task] = []
                while job.pending and want:
                    task = job.pending.popleft()
                    if route in task.avoid and len(passed) < MAX_PASSED and any(
                            w not in task.avoid for w in workers):
                        passed.append(task)
                        continue
                    out.append(task)
                    want -= 1
                if passed:
                    job.pending.extendleft(reversed(passed))
                    tried.add(job.id)
        return out
