"""A worker's task statistics, checked before the broker adds them up (no sockets here).

Every field of a DONE comes from another process: a worker key may be rogue, and a
legitimate job may have put odd values into its counters. The broker reads a report's
shape with ``patterns/wire.Report`` and acts on it only if the sender holds the attempt it
names; statistics that fail these checks fail that attempt with the reason, so nothing a
worker sends can leave a job waiting for ever.
"""

from __future__ import annotations

from typing import Any

from ..patterns.security import key_name

MAX_COUNTERS = 1000  # distinct counters in one task's report
MAX_COUNTER_NAME = 200  # characters
MAX_PARTS = 1 << 20  # partitions a map task may say it pushed to sinks
MAX_COUNT = 1 << 62  # one report's counts; the job's totals saturate at the int64 range
MAX_SECS = 1e9  # a report's run time is under this (seconds)
USUAL = frozenset({"records", "bytes", "secs"})  # what most reports hold, and nothing else


def clean_stats(stats: Any) -> dict:
    """A task's statistics with every field checked: ``records`` and ``bytes`` counts,
    ``secs`` (its run time) and ``counters`` (name -> int).

    The usual report (both counts and a run time, nothing else) is returned as it is once
    checked, not copied (it is the broker's own, decoded from its message; a copy per task
    was 1% of the broker's instructions on a no-op task). Any other is a new dict of the
    checked fields, so nothing unchecked is ever passed on."""
    if type(stats) is dict and stats.keys() <= USUAL:  # (the usual report, checked at once)
        records, nbytes, secs = stats.get("records", 0), stats.get("bytes", 0), \
            stats.get("secs")
        if type(records) is int and type(nbytes) is int and 0 <= records < MAX_COUNT \
                and 0 <= nbytes < MAX_COUNT:
            if len(stats) == 3 and (type(secs) is float or type(secs) is int) \
                    and 0 <= secs < MAX_SECS:
                return stats  # (all three fields, each checked)
            if secs is None:
                return {"records": records, "bytes": nbytes}
            if (type(secs) is float or type(secs) is int) and 0 <= secs < MAX_SECS:
                return {"records": records, "bytes": nbytes, "secs": secs}
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
        if type(secs) not in (int, float) or not 0 <= secs < MAX_SECS:
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
    sunk = stats.get("sunk")
    if sunk is not None:  # partitions pushed to sinks (checked against the job at commit)
        if not isinstance(sunk, list) or len(sunk) > MAX_PARTS:
            raise ValueError(f"sunk must be a list of at most {MAX_PARTS} partitions")
        out["sunk"] = sunk
    return out


def peer_name(route: bytes | None, key: str = "") -> str:
    """How logs name a peer: its key when the broker is secured, else its identity."""
    if key:
        return f"key {key_name(key)}"
    return route.hex() if route else "?"
