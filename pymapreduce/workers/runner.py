"""Running one task: inputs in, user code through the kernels, encoded partitions out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from ..inputs import read_file_split
from ..job import (
    Job,
    combine_groups,
    iter_pairs,
    map_grouped,
    map_pairs,
    merge_segments,
    partition_groups,
    reduce_groups,
)
from ..patterns.message import frame_bytes
from ..patterns.records import pack, paused_gc, unpack


class Counted:
    """Iterates over records, remembering how many it handed out and the last key."""

    __slots__ = ("_it", "n", "last_key")

    def __init__(self, records: Iterable) -> None:
        self._it = records
        self.n = 0
        self.last_key: Any = None

    def __iter__(self) -> Iterator:
        for record in self._it:
            self.n += 1
            self.last_key = record[0]
            yield record


class TaskError(Exception):
    """User code failed in a task; carries where in the input it happened."""

    def __init__(self, cause: BaseException, position: dict) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.position = position


def run_task(job: Job, kind: str, desc: list, blobs: list, reducers: int, map_only: bool):
    """Run a map or reduce task; returns ``(output blobs, stats)``.

    A map task of a job with reducers yields one blob per partition (``b""`` when empty);
    a map-only map task and a reduce task yield one blob of ``[key, value]`` pairs.
    """
    with paused_gc():
        return _run_task(job, kind, desc, blobs, reducers, map_only)


def _run_task(job: Job, kind: str, desc: list, blobs: list, reducers: int, map_only: bool):
    job._take_counters()  # counters belong to the task that produced them
    if kind == "map":
        records, nbytes, where = _open_split(desc, blobs)
        counted = Counted(records)
        try:
            if map_only:
                out = [pack(map_pairs(job, counted))]
            else:
                groups = map_grouped(job, counted)
                if job._has("combine"):
                    groups = combine_groups(job, groups)
                out = [pack(p) if p else b"" for p in partition_groups(job, groups, reducers)]
        except Exception as exc:
            raise TaskError(exc, {**where, "record": counted.n - 1, "key": _short(counted.last_key)}) from exc
        stats = {"records": counted.n, "bytes": nbytes}
    else:
        first, n = desc[1], desc[2]
        try:
            groups = merge_segments(unpack(frame_bytes(b)) for b in blobs[first : first + n])
            out = [pack(reduce_groups(job, groups))]
        except Exception as exc:
            raise TaskError(exc, {"partition": desc}) from exc
        stats = {}
    counters = job._take_counters()
    if counters:
        stats["counters"] = counters
    return out, stats


def _open_split(desc: list, blobs: list) -> tuple[Iterable, int, dict]:
    if desc[0] == "mem":
        blob = frame_bytes(blobs[desc[1]])
        return iter_pairs(unpack(blob)), len(blob), {}
    _, path, start, end = desc
    nbytes = (end - start) if end >= 0 else os.path.getsize(path)
    return read_file_split(path, start, end), nbytes, {"path": path, "start": start, "end": end}


def _short(value: Any) -> Any:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
