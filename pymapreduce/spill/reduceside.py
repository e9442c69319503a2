"""A reduce task under a memory budget: its partition merged as a stream.

The partition's segments (map outputs, in map-task order) are decoded one pair at a time
(:func:`~pymapreduce.spill.runs.segment_pairs`) into groups, as
:func:`~pymapreduce.kernels.merge_segments` builds them. While they fit (the task's data
under its share of the budget) nothing changes: ``reduce`` gets each key's values as a
list, the output is today's. Past the budget, the groups are sorted by key (and, with
``value_key``, each key's values by it) and spilled as a run; at the end the runs are
merged as one stream (``heapq.merge``, at most MAX_FANIN runs at once) and cut into keys.

A key's values then reach ``reduce`` as a **list** if they fit under the budget, and as a
**ValuesStream** (a one-pass iterator) once they do not: a hot key of any size is reduced
in bounded memory, provided ``reduce`` iterates its values once (``sum(values)``, ``for v
in values``) rather than indexing them or taking ``len``. Values keep today's order (map
task, then input; with ``value_key``, sorted by it, ties in that order).

A plain sort's reduce (``rangesort.py``) merges its segments, each already a sorted run,
straight into its output: nothing is spilled and nothing held but the read buffers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from ..errors import BadOutput
from ..job import Job, emits
from ..kernels import _NO_RECORD, KeyFailed, _blame, _hook, reduce_groups
from ..ordering import as_pair, is_total_order
from ..patterns.records import unpack
from ..rangesort import RUNS
from .budget import CHECK_EVERY, Budget, TaskFiles
from .runs import (
    ColumnsWriter,
    fan_in,
    file_segment_triples,
    merge,
    order_of,
    segment_chunks,
    segment_flag,
    segment_header,
    segment_pairs,
    segment_triples,
    sort_keys,
    triple_key,
    write_run,
)

_END = object()
EXPANSION = 8  # decoded bytes per encoded byte assumed when deciding to decode a segment whole


class ValuesStream:
    """A hot key's values, one pass: what ``reduce`` gets for a key whose values do not
    fit in the memory budget. Iterate it once; ``len`` and indexing are not supported."""

    __slots__ = ("key", "_head", "_pairs", "next_pair", "_done")

    def __init__(self, key: Any, head: list, pairs: Iterator[tuple]) -> None:
        self.key = key
        self._head: list | None = head  # the values read before the budget ran out
        self._pairs = pairs
        self.next_pair: Any = _END  # the first pair of the next key, once reached
        self._done = False

    def __iter__(self) -> Iterator[Any]:
        head, self._head = self._head, None
        if head is None:
            raise RuntimeError("a ValuesStream is one pass: its values were iterated already")
        head.reverse()  # popped from the end: the values read go as they are given
        while head:
            yield head.pop()
        key = self.key
        for pair in self._pairs:
            if pair[0] != key:
                self.next_pair = pair
                self._done = True
                return
            yield pair[2]
        self._done = True

    def finish(self) -> Any:
        """Skip what ``reduce`` left unread; the next key's first pair (or the end)."""
        if not self._done:
            if self._head is not None:
                self._head = None
            key = self.key
            for pair in self._pairs:
                if pair[0] != key:
                    self.next_pair = pair
                    break
            self._done = True
        return self.next_pair

    def __repr__(self) -> str:
        return f"<ValuesStream of key {self.key!r:.60}>"


def _grouped(pairs: Iterator[tuple], budget: Budget) -> Iterator[tuple]:
    """``(key, values)`` from a key-ordered stream of ``(key, stream, value)`` triples
    (:func:`~pymapreduce.spill.runs.merge`): a list while a key's values fit, a
    :class:`ValuesStream` once they pass the budget."""
    pending = next(pairs, _END)
    while pending is not _END:
        key = pending[0]
        values = [pending[2]]
        pending = _END
        check = CHECK_EVERY
        stream = None
        for pair in pairs:
            if pair[0] != key:
                pending = pair
                break
            values.append(pair[2])
            if len(values) >= check:
                check += CHECK_EVERY
                if budget.over():
                    stream = ValuesStream(key, values, pairs)
                    break
        if stream is None:
            yield key, values
        else:
            del values  # (the stream holds them, and lets them go as they are read)
            yield key, stream
            pending = stream.finish()


def reduce_spilling(job: Job, segments: Iterator[Any], budget: Budget, files: TaskFiles,
                    safe: bool) -> Any:
    """A reduce task's output under a budget: ``(keys, values)`` columns if it fitted
    (to pack as today), else its encoded bytes (``safe``: without pickles).
    ``segments``: the partition's encoded segments, each dropped by the caller's iterator
    once read. A segment that fits the room left (EXPANSION times its bytes) is decoded
    whole, as today; a larger one is read pair by pair."""
    combined = job._has("combine")
    value_key = job.value_key if job._has("value_key") else None
    groups: dict = defaultdict(list)
    runs: list = []
    n = 0
    check = budget.every

    def checkpoint() -> None:
        """Every ``budget.every`` values: spill what is grouped if the budget is over."""
        nonlocal check, groups
        check = n + budget.every
        if budget.over():
            runs.append(_spill(job, groups, value_key, files))
            groups = defaultdict(list)
            budget.released()

    for blob in segments:
        if not len(blob):
            continue
        if len(blob) * EXPANSION < budget.limit - budget.used():
            # it fits: decoded whole and merged as merge_segments does (no check per pair)
            keys, values, single = _decoded(blob, combined)
            if single:
                for k, v in zip(keys, values):
                    groups[k].append(v)
            else:
                for k, vs in zip(keys, values):
                    groups[k].extend(vs)
            pairs = keys = values = None
            n += budget.every
        else:
            single = combined or segment_header(blob)[0] == 3
            # (values lists: a hot key's in chunks, never decoded at once)
            pairs = segment_pairs(blob) if single else segment_chunks(blob)
            for k, v in pairs:
                if single:
                    groups[k].append(v)
                    n += 1
                else:
                    groups[k].extend(v)
                    n += len(v)  # (values, not pairs: a hot key's list is one pair)
                if n >= check:
                    checkpoint()
        if n >= check:
            checkpoint()
        del blob, pairs
    if not runs:
        return reduce_groups(job, groups)
    if groups:
        runs.append(_spill(job, groups, value_key, files))
    del groups
    budget.released()
    budget.spills += len(runs)
    types = set().union(*(r.types for r in runs))
    if is_total_order(job) and len(types) > 1 and not types <= {int, float, bool}:
        raise BadOutput(f"{type(job).__name__} has total_order but its keys do not "
                        f"compare with each other (key types: "
                        f"{', '.join(sorted(t.__name__ for t in types))})")
    key = triple_key(order_of(types), value_key)
    runs = fan_in(files, runs, key)
    merged = merge([r.triples(0, i) for i, r in enumerate(runs)], key)
    out = ColumnsWriter(files, safe=safe)
    _reduce_stream(job, _grouped(merged, budget), out)
    return out.finish()


def _decoded(blob: Any, combined: bool) -> tuple[list, list, bool]:
    """A segment decoded whole: its keys, its values, and whether each value is one value
    (combined, or a flagged segment) rather than a key's list; ValueError if it is not
    the ``[keys, values(, flag)]`` a map task writes."""
    segment = unpack(blob, allow_pickle=True)
    if (type(segment) is not list or len(segment) not in (2, 3)
            or type(segment[0]) is not list or type(segment[1]) is not list
            or len(segment[0]) != len(segment[1])):
        raise ValueError("a map output segment that is not [keys, values]")
    return segment[0], segment[1], combined or len(segment) > 2


def _spill(job: Job, groups: dict, value_key: Any, files: TaskFiles) -> Any:
    """``groups`` as one run of pairs: keys in order, each key's values in theirs."""
    types = set(map(type, groups))
    keys = list(groups)
    sort_keys(keys, order_of(types), job)
    if value_key is not None:
        for values in groups.values():
            if len(values) > 1:
                values.sort(key=value_key)
    return write_run(files, [((k, v) for k in keys for v in groups[k])], types)


def _reduce_stream(job: Job, keyed: Iterator[tuple], out: ColumnsWriter) -> None:
    """:func:`~pymapreduce.kernels.reduce_groups` over a stream of ``(key, values)``,
    writing its pairs to ``out``."""
    reducer = job.reduce if job._has("reduce") else None
    _hook(job, "reduce_init")
    add = out.add
    if reducer is None:  # a total_order job without reduce: each value with its key
        for k, values in keyed:
            for v in values:
                add(k, v)
    elif emits(job):
        for k, values in keyed:  # (a failure of the merge itself names no key)
            out = _NO_RECORD
            try:
                for pair in (out := reducer(k, values)):
                    if type(pair) is not tuple or len(pair) != 2:
                        pair = as_pair(job, "reduce", pair)
                    add(pair[0], pair[1])
            except Exception as exc:
                raise KeyFailed(k) from _blame(job, _NO_RECORD, exc, out, "reduce")
    else:
        for k, values in keyed:
            try:
                value = reducer(k, values)
            except Exception as exc:
                raise KeyFailed(k) from exc
            add(k, value)
    for pair in _hook(job, "reduce_final"):
        ok, ov = as_pair(job, "reduce_final", pair)
        add(ok, ov)


def merge_sorted_segments(job: Job, segments: list, out: ColumnsWriter) -> bytes:
    """A plain sort's reduce: its segments (sorted runs, in map-task order) merged into
    ``out``, pairs of equal keys in map-task order (the runner uses today's
    ``merge_runs`` instead when the decoded partition fits: :func:`fits_decoded`)."""
    streams = []
    for blob in segments:
        if len(blob):
            streams.append((segment_triples(blob, len(streams)), segment_flag(blob)))
    return _merge_runs_into(job, streams, out)


def merge_sorted_files(job: Job, paths: list[str], out: ColumnsWriter) -> bytes:
    """:func:`merge_sorted_segments` over segments spooled to files (read from a sink):
    the merge holds a few read buffers per segment, not the partition."""
    streams: list = []
    for path in paths:
        streams.append(file_segment_triples(path, len(streams)))
    return _merge_runs_into(job, streams, out)


def _merge_runs_into(job: Job, runs: list[tuple[Any, Any]], out: ColumnsWriter) -> bytes:
    """Merge ``(triples, flag)`` runs into ``out``: each must be sorted runs (RUNS)."""
    if any(flag != RUNS for _, flag in runs):
        raise ValueError("a map output segment is not sorted runs: the map task ran "
                         "on a pymapreduce that does not make them")
    streams = [triples for triples, _ in runs]
    try:
        out.extend(merge(streams, None), triples=True)
    except TypeError as exc:
        raise BadOutput(f"{type(job).__name__} has total_order but its keys do not "
                        f"compare with each other: {exc}") from None
    return out.finish()


def fits_decoded(segments: list, budget: Budget) -> bool:
    """Whether ``segments`` decoded at once would fit the room left in the budget."""
    return sum(len(b) for b in segments) * EXPANSION < budget.limit - budget.used()
