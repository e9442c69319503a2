"""Which pending task goes to a worker that has room: weighted max-min fair share.

Shares are taken in two steps: between clients (each client key, or without keys each
client connection, gets an equal share of the workers), then between the jobs of one
client by their priority; so a priority a client sets for its jobs moves worker time among
its own jobs only, never away from another client's.

Weighted fair queuing over worker time: each job counts the seconds of work it was handed
(``served``: each task charged its job's mean task run time, as workers report it), and
the next task goes to the job with the least ``served / priority`` among the jobs with a
pending task this worker may run (its tags meet the job's ``requires``). Over any stretch
of time a job with priority 3 gets three times the worker time of a job with priority 1,
and a job of short tasks gets many of them for each long task of another job. A job that
needs less than its share simply has nothing pending, so the rest goes to the others:
max-min fairness, without computing shares.

A job cannot bank service while it has nothing pending (just submitted, or waiting for
its last maps before its reduces): its count is kept within ``LAG`` seconds of the
scheduler's virtual clock (the score of the last task handed out), so a newcomer gets the
next free slot and then its share, not every slot until it has caught up. Ties go to the
job served least recently, so equal jobs take turns. Within a job, tasks go in order (a
retry first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .tasks import JobState, Task

MAX_PASSED = 64  # retries looked past in one take, waiting for another worker
LAG = 0.5  # seconds of work a job may be behind the virtual clock
UNKNOWN_COST = 0.05  # seconds charged for a task of a job none of whose tasks finished yet


class Scheduler:
    """The jobs that may have pending tasks, least recently served first."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, JobState] = OrderedDict()
        self.clock = 0.0  # virtual time: the score of the last client served
        self._tenants: dict[str, float] = {}  # client -> seconds of work it was handed
        self._inner: dict[str, float] = {}  # client -> the score of its last job served

    def add(self, job: JobState) -> None:
        self._jobs[job.id] = job

    def remove(self, job: JobState) -> None:
        self._jobs.pop(job.id, None)
        if not any(j.tenant == job.tenant for j in self._jobs.values()):
            self._tenants.pop(job.tenant, None)  # (a client with no job left)
            self._inner.pop(job.tenant, None)

    def jobs(self):
        """The jobs, least recently served first (a live view: do not add or remove
        while iterating)."""
        return self._jobs.values()

    def pending(self) -> int:
        return sum(len(j.pending) for j in self._jobs.values())

    def take(self, n: int, route: bytes | None = None, workers: Any = (),
             tags: frozenset = frozenset()) -> list[Task]:
        """Up to ``n`` tasks for the worker ``route`` (with ``tags``), one at a time: to the
        client furthest below its share, and of its jobs to the one furthest below its
        share. A task that failed on this worker is left for another one, as long as one of
        ``workers`` (the live ones) has not failed it too."""
        out: list[Task] = []
        done: set[str] = set()  # jobs with nothing (more) for this worker
        while len(out) < n:
            # the candidates, by client: each client's jobs share what that client gets
            by_tenant: dict[str, list[JobState]] = {}
            for job in self._jobs.values():
                if not job.pending or job.id in done:
                    continue
                if (job.requires and not job.requires <= tags) or job.sinks_expected:
                    done.add(job.id)
                    continue
                by_tenant.setdefault(job.tenant, []).append(job)
            if not by_tenant:
                break
            floor = self.clock - LAG
            tenant, tenant_score = min(
                ((t, max(self._tenants.get(t, 0.0), floor)) for t in by_tenant),
                key=lambda pair: pair[1])
            jobs = by_tenant[tenant]
            inner = self._inner.get(tenant, 0.0) - LAG  # (its own clock: no banking)
            best, best_score = min(((j, max(j.served / j.priority, inner)) for j in jobs),
                                   key=lambda pair: pair[1])
            # alone, a job takes the whole batch at once (the common case, and the hot
            # path for many tiny tasks); among others, one task per turn
            alone = len(by_tenant) == 1 and len(jobs) == 1
            want = n - len(out) if alone and not best.pending[0].avoid else 1
            taken = 0
            pending = best.pending
            while taken < want and pending:
                if pending[0].avoid:  # (it failed somewhere: _next decides who runs it)
                    task = self._next(best, route, workers)
                    if task is None:
                        break
                else:  # (the usual task: the first, without a call)
                    task = pending.popleft()
                out.append(task)
                taken += 1
            if not taken:
                done.add(best.id)
                continue
            self._jobs.move_to_end(best.id)
            cost = (best.task_secs if best.task_secs is not None else UNKNOWN_COST) * taken
            best.served = best_score * best.priority + cost
            self._tenants[tenant] = tenant_score + cost
            self._inner[tenant] = max(self._inner.get(tenant, 0.0), best_score)
            self.clock = max(self.clock, tenant_score)
        return out

    @staticmethod
    def _next(job: JobState, route: bytes | None, workers: Any) -> Task | None:
        """The job's first pending task this worker should run (None: none of them)."""
        passed: list[Task] = []
        task = None
        while job.pending:
            candidate = job.pending.popleft()
            if route in candidate.avoid and len(passed) < MAX_PASSED and any(
                    w not in candidate.avoid for w in workers):
                passed.append(candidate)
                continue
            task = candidate
            break
        if passed:
            job.pending.extendleft(reversed(passed))
        return task
