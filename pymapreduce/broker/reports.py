"""What a worker reports, checked before the broker acts on it (no sockets here).

Every field of a DONE or FAILED comes from another process: a worker key may be rogue,
and a legitimate job may have put odd values into its counters. A report names an
attempt by ``(job, kind, index, attempt)``; the broker acts on it only if the sender
holds that attempt, and a report whose other fields are malformed fails that attempt
with the reason, so nothing a worker sends can leave a job waiting for ever.
"""

from __future__ import annotations

from typing import Any

from .tasks import MAP, REDUCE

MAX_COUNTERS = 1000  # distinct counters in one task's report
MAX_COUNTER_NAME = 200  # characters
MAX_COUNT = 1 << 62  # one report's counts; the job's totals saturate at the int64 range


def attempt_key(fields: Any) -> tuple | None:
    """``(job_id, kind, index, attempt)`` from a report's four naming fields, or None when
    they are not of those types (so the key can be looked up and compared safely)."""
    if not isinstance(fields, list) or len(fields) != 4:
        return None
    job, kind, index, attempt = fields
    if (type(job) is not str or kind not in (MAP, REDUCE) or type(index) is not int
            or type(attempt) is not int):
        return None
    return job, kind, index, attempt


def report_fields(item: list, blobs_left: int) -> tuple[dict, int]:
    """The checked ``(stats, nblobs)`` of one DONE result ``[job, kind, index, attempt,
    stats, nblobs]``; ``nblobs`` is -1 (outputs on the data plane) or how many of the
    message's remaining ``blobs_left`` blobs are its outputs. ValueError says what is
    wrong."""
    if len(item) != 6:
        raise ValueError(f"a result has {len(item)} fields, not 6")
    stats, nblobs = item[4], item[5]
    if type(nblobs) is not int or not -1 <= nblobs <= blobs_left:
        raise ValueError(f"it names {nblobs!r:.40} output blobs; the message has {blobs_left}")
    return clean_stats(stats), nblobs


def clean_stats(stats: Any) -> dict:
    """A task's statistics with every field checked: ``records`` and ``bytes`` counts,
    ``secs`` (its run time) and ``counters`` (name -> int)."""
    if not isinstance(stats, dict):
        raise ValueError(f"its statistics are a {type(stats).__name__}, not a map")
    out: dict = {}
    for name in ("records", "bytes"):
        value = stats.get(name, 0)
        if type(value) is not int or not 0 <= value < MAX_COUNT:
            raise ValueError(f"{name} is {value!r:.40}, not a count")
        out[name] = value
    secs = stats.get("secs")
    if secs is not None:
        if type(secs) not in (int, float) or not 0 <= secs < 1e9:
            raise ValueError(f"secs is {secs!r:.40}, not a duration")
        out["secs"] = secs
    counters = stats.get("counters")
    if counters is not None:
        if not isinstance(counters, dict) or len(counters) > MAX_COUNTERS:
            raise ValueError(f"counters must be a map of at most {MAX_COUNTERS} entries")
        for name, value in counters.items():
            if type(name) is not str or not 0 < len(name) <= MAX_COUNTER_NAME:
                raise ValueError(f"counter name {name!r:.60} is not a string of 1 to "
                                 f"{MAX_COUNTER_NAME} characters")
            if type(value) is not int or not -MAX_COUNT < value < MAX_COUNT:
                raise ValueError(f"counter {name!r:.60} is {value!r:.40}, not an int")
        out["counters"] = dict(counters)
    return out
