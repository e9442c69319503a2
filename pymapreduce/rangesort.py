"""The kernels of a plain sort: a ``total_order`` job with no ``reduce`` (TeraSort).

Such a job's output is each map output pair, in key order (Hadoop's identity reducer):
there is nothing to group, so these kernels do not group. A map task sorts its pairs by
key (a stable sort: equal keys keep input order) and cuts them at the range boundaries
the client sampled, ``R - 1`` binary searches in the sorted keys instead of one per pair;
each partition goes out as a sorted run. A reduce task puts its runs one after the other
in map-task order and sorts them stably, which merges sorted runs in about linear time
(Python's sort finds the runs). The output is what grouping gave (values of one key in
map-task order, then input order), at less than half the cost: no dict of one-value
lists per key on either side, one list of values instead of a list per key on the wire.

Jobs with a ``combine``, a ``value_key`` or a ``partition`` of their own, and jobs
without boundaries, take the general kernels of ``job.py``. A map task and a reduce task
of one job make the same choice (the same job); the runs carry a marker all the same
(``[keys, values, RUNS]``), so that a worker that does not know them fails the task
instead of misreading the values.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from . import speedups
from .errors import BadOutput
from .job import Columns, Job
from .kernels import map_pairs
from .ordering import grouped_key, is_total_order, range_bounds, uncomparable
from .patterns.records import pack

RUNS = 1  # the third item of a map output segment holding sorted runs
# Key types that are hashable as they are (grouping would keep them as they are); any
# other type is checked, and made a key as grouping makes it (a list: its tuple)
PLAIN_KEYS = frozenset({str, int, float, bytes, bool})


class EncodedLines(NamedTuple):
    """A plain sort's reduce output as its part file's bytes, JSON lines in key order
    (:func:`merge_runs_lines`), the pairs they hold, and (for a client that keeps
    results) those pairs packed as ``pack([keys, values])``."""

    data: bytes
    records: int
    packed: bytes | None = None


def merge_runs_lines(segments: list, columns: bool = False) -> EncodedLines | None:
    """A reduce task's output as its part file's lines, merged from its segments' bytes
    (``speedups.merge_runs_json``: no str object made per key and value, to be sorted,
    written out again and freed; 15 ms instead of 40 for a TeraSort reduce task's 125,000
    pairs), and, with ``columns``, its pairs packed in that order as well (their items'
    bytes copied). None without the C loops, or for segments that are not runs of str as
    map tasks pack them (the caller decodes them and runs :func:`merge_runs`). The lines
    are what :func:`merge_runs`'s columns give, written: equal keys in segment order."""
    fast = speedups.merge_runs_json
    out = fast(segments, columns) if fast is not None else None
    return None if out is None else EncodedLines(*out)


def plain_sort(job: Job) -> bool:
    """Whether ``job`` runs on these kernels: ``total_order`` with boundaries, and no
    ``reduce``, ``combine``, ``value_key`` or ``partition`` of its own."""
    return (is_total_order(job) and range_bounds(job) is not None
            and not (job._has("reduce") or job._has("combine") or job._has("value_key"))
            and type(job).partition is Job.partition)


def map_runs(job: Job, records: Iterable[tuple[Any, Any]], reducers: int) -> list[Columns]:
    """Run ``map`` over records; its pairs sorted by key, cut into ``reducers`` ranges."""
    return cut_runs(job, *map_pairs(job, records), reducers)


def cut_runs(job: Job, keys: list, values: list, reducers: int) -> list[Columns]:
    """Pairs sorted by key (stably), cut into ``reducers`` ranges at the boundaries."""
    if not set(map(type, keys)) <= PLAIN_KEYS:
        keys = [grouped_key(job, "map", k) for k in keys]
    bounds = range_bounds(job) or []
    try:
        keys, values = sort_pairs(keys, values)
    except TypeError:
        raise _incomparable(job, keys, bounds) from None
    cuts = [0]
    for bound in bounds[:reducers - 1]:  # (boundaries are cut for the job's reducers)
        try:
            cuts.append(bisect_right(keys, bound, cuts[-1]))
        except TypeError:
            raise _incomparable(job, keys, bounds) from None
    cuts += [len(keys)] * (reducers + 1 - len(cuts))
    return [(keys[a:b], values[a:b]) for a, b in zip(cuts, cuts[1:])]


def sort_pairs(keys: list, values: list) -> tuple[list, list]:
    """The pairs stably sorted by key, as two new lists: in one C pass for lists whose
    keys are all exact str (``speedups.sort_pairs``: the keys' order found as
    :func:`arg_sort` finds it, and both columns read in that order without an int object
    or a tuple per pair: a TeraSort task's 125,000 pairs in 9 ms instead of 21), else
    :func:`arg_sort` and :func:`in_order`, whose TypeError says the keys do not compare."""
    fast = speedups.sort_pairs
    if fast is not None and type(keys) is list and type(values) is list and len(
            keys) == len(values) and (out := fast(keys, values)) is not None:
        return out[0], out[1]
    order = arg_sort(keys)
    keys, values = in_order(order, keys, values)
    del order  # (before the lists: a task under a memory budget spills with this)
    return list(keys), list(values)


def arg_sort(keys: list) -> list[int]:
    """The keys' indexes in the keys' order, stably (equal keys by index): in C for a
    list of exact str (``speedups.str_order``: a TeraSort map task's 83,000 keys in 5
    ms instead of 21), else ``sorted``, whose TypeError says they do not compare."""
    fast = speedups.str_order
    if fast is not None and type(keys) is list and (order := fast(keys)) is not None:
        return order
    return sorted(range(len(keys)), key=keys.__getitem__)


def in_order(order: list[int], *columns: list) -> list[Sequence]:
    """Each column's items in ``order`` (a tuple each; lists when there are fewer than
    two). One ``itemgetter`` of the order, called on each column: reading the items in
    sorted order is reading them all over memory, and this costs two thirds of
    ``list(map(column.__getitem__, order))`` (no call through the method per item)."""
    if len(order) < 2:
        return [[column[i] for i in order] for column in columns]
    take = itemgetter(*order)
    return [take(column) for column in columns]


def _incomparable(job: Job, keys: list, bounds: list) -> BadOutput:
    """The error for keys that do not sort: the first key that does not compare with the
    sampled boundaries, named, or else keys that do not compare with each other."""
    for k in keys:
        try:
            bisect_right(bounds, k)
        except TypeError as exc:
            return uncomparable(job, k, exc)
    kinds = sorted({type(k).__name__ for k in keys})
    return BadOutput(f"{type(job).__name__} has total_order but its map's keys do not "
                     f"compare with each other (key types: {', '.join(kinds)})")


def pack_runs(parts: list[Columns]) -> list:
    """The map task's output segments: ``[keys, values, RUNS]``, ``b""`` for an empty
    partition (as the general kernels' segments)."""
    fast = speedups.pack_columns
    if fast is not None and type(parts) is list and (out := fast(parts, RUNS)) is not None:
        return out  # (in C: the same bytes, each item read ahead of its turn)
    return [pack([keys, values, RUNS]) if keys else b"" for keys, values in parts]


def merge_runs(job: Job, segments: Iterable[Any], types: set | None = None) -> Columns:
    """A reduce task's output: its segments' pairs (sorted runs, in map-task order), in
    key order; pairs of equal keys keep their order (map task, then input). ``types``:
    a set to add the keys' and values' types to, read in the order they were decoded
    (each object is next to the one before it: about half the time of reading them in
    key order, after the sort)."""
    keys: list = []
    values: list = []
    for segment in segments:
        if type(segment) is not list or len(segment) != 3 or segment[2] != RUNS:
            raise ValueError("a map output segment is not sorted runs: the map task ran "
                             "on a pymapreduce that does not make them")
        keys += segment[0]
        values += segment[1]
        if types is not None:
            types.update(map(type, segment[0]))
            types.update(map(type, segment[1]))
    try:
        return sort_pairs(keys, values)  # (lists: a tuple would travel as a tuple)
    except TypeError as exc:
        raise BadOutput(f"{type(job).__name__} has total_order but its keys do not "
                        f"compare with each other: {exc}") from None
