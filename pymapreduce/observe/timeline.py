"""When each attempt ran: the timeline from task start, placed on the broker's clock.

The broker knows when it handed an attempt out and when it heard the attempt's end; a
worker holds several attempts at once (its credit) and runs them one after the other, so
the time between is partly a wait in the worker's queue. No message says when an attempt
starts (that would be one more per task): the report that ends it says how long it ran,
as its worker measured it (DONE's ``secs``, FAILED's ``secs``). Monotonic clocks of two
hosts cannot be compared, durations can, so the attempt began to run at its end less that
duration, clamped to between its hand-out and its end: a worker is not trusted.

An attempt that ended without a run time has none to place: one abandoned (stopped
where it ran because another attempt of its task committed first, or its job ended: a
stopped attempt is not reported; only a report that crossed the ABANDON gives its run
time, ``EventLog.ran_abandoned``), one lost with its worker, one whose FAILED had no
usable run time. Its ``run`` is None and its ``run_from`` says ``"hand-out"``: it is
placed from when it was handed out, for all the time it was out, its wait in its worker's
queue and its run not told apart (it may have waited all of it and never run). An
attempt placed by a report says ``"report"``; one still running, None.
"""

from __future__ import annotations

from typing import Any

REPORT, HAND_OUT = "report", "hand-out"  # what placed an ended attempt's run (run_from)


def run_start(start: float, end: float | None, secs: Any) -> float | None:
    """When an attempt handed out at ``start`` and ended at ``end`` began to run, given
    the run time ``secs`` its worker reported: a negative one counts as none, one longer
    than the attempt was out as all of it; None if ``secs`` is no number or it has not
    ended."""
    if end is None or type(secs) not in (int, float) or secs != secs:  # (NaN)
        return None
    return min(end, max(start, end - max(0.0, secs)))


def place(rows: list[tuple]) -> list[dict]:
    """The attempts of a job with ``run`` (see :func:`run_start`), ``run_end`` and
    ``run_from``, what placed them: ``"report"``, or ``"hand-out"`` for an attempt that
    ended with no run time (``run`` None; see the module's docstring), or None while it
    runs. ``rows``: its attempt table's rows as ``(kind, index, number, worker, backup,
    step, start, end, outcome, note, run secs or None)``, the run time its report gave
    (DONE's or FAILED's, or one that crossed an abandoned attempt's ABANDON), in the order
    they were handed out.

    A worker process runs its attempts one after the other, in the order they were
    handed out (its queue is first in, first out), and reports several together (one
    DONE), which then have one end: when the broker heard it. So an attempt's run ended
    no later than the next one's began (:func:`_runs_of_a_worker`): ``run_end`` is when
    it ended by that reckoning (``end`` for the last, and for an attempt reported by
    itself with nothing after it), None when ``run`` is."""
    out = []
    by_worker: dict[str, list[dict]] = {}  # worker -> its attempts placed by a report
    for kind, index, number, worker, backup, step, start, end, outcome, note, secs in rows:
        run = run_start(start, end, secs)
        attempt = {"step": step, "kind": kind, "index": index, "task": f"{kind}-{index}",
                   "attempt": number, "worker": worker, "start": start,
                   "run": run,  # (not rounded: a time's repr is no longer, round() slow)
                   "run_end": None if run is None else end,
                   "run_from": REPORT if run is not None else HAND_OUT if end is not None
                   else None,
                   "end": end, "outcome": outcome, "backup": backup, "note": note}
        out.append(attempt)
        if run is not None:
            by_worker.setdefault(worker, []).append(attempt)
            attempt["_secs"] = secs
    for placed in by_worker.values():
        _runs_of_a_worker(placed)
    for attempt in out:
        attempt.pop("_secs", None)
    return out


def _runs_of_a_worker(placed: list[dict]) -> None:
    """One worker process's attempts that a report placed: each one's run ended no later
    than the next one's (in hand-out order) began, the last's at its end, each clamped to
    its hand-out as :func:`run_start` clamps."""
    placed.sort(key=lambda a: a["start"])  # (stable: in hand-out order within a message)
    until = float("inf")
    for attempt in reversed(placed):
        attempt["run_end"] = end = min(attempt["end"], until)
        until = attempt["run"] = run_start(attempt["start"], end, attempt["_secs"])
