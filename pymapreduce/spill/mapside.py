"""A map task under a memory budget: Hadoop's sort buffer.

Map output is grouped in memory as :func:`~pymapreduce.kernels.map_grouped` groups it
(the combiner folding every COMBINE_EVERY values of a key), by the same loops, over slices
of the records; between slices (``budget.every`` records: up to CHECK_EVERY) the process's
resident set is read, and once the task's data passes its share of the budget, the
groups are combined (the combiner runs on each spill), cut into partitions, sorted by key
within each partition and written as one run, a file with a section per partition; the
memory is freed and mapping goes on. At the end, a task that never spilled finishes as
today (:func:`~pymapreduce.kernels.finish_map`, the same bytes); one that did spills its
last groups too and merges its runs, partition by partition, into one output segment per
partition in today's format: ``[keys, values]``, keys in order, where without a combiner a
key may appear once per run, each time with a list of its values (the reduce side extends
a key's list with each; value order is kept: runs are merged in the order they were
written). With a combiner each key appears once, its runs' values combined.

A plain sort (``total_order`` without ``reduce``, ``rangesort.py``) spills its pairs as
sorted runs cut at the range boundaries and merges them into ``[keys, values, RUNS]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import islice
from typing import Any

from ..job import Job
from ..kernels import (
    _NO_RECORD,
    FlatPairs,
    RecordFailed,
    final_pairs,
    finish_map,
    finish_map_packed,
    group_final,
    group_records,
    pair_final,
    pair_records,
    run_hook,
)
from ..ordering import combiner_of, range_bounds
from ..rangesort import RUNS, _incomparable, cut_runs, pack_runs
from .budget import Budget, TaskFiles
from .runs import CHUNK_PAIRS, ColumnsWriter, merge, order_of, sort_keys, triple_key, write_run

_SLICE_START = object()  # the key before a slice's first record


def _named(exc: Exception, budget: Budget, files: TaskFiles | None = None) -> Exception:
    """A spill's OSError that names no file (a write to a full disk) with the directory
    it spilled to (the task's, else its budget's, as made so far: never made here), so
    that the task's error says where room is missing."""
    if isinstance(exc, OSError) and exc.filename is None:
        where = (files.path if files else None) or budget._dir or "its spill directory"
        named = OSError(exc.errno, f"{exc.strerror or exc} (spilling to {where})")
        named.__cause__ = exc
        return named
    return exc


def map_spilling(job: Job, records: Iterable[tuple[Any, Any]], reducers: int,
                 budget: Budget, files: TaskFiles) -> list:
    """A map task's output segments (bytes per partition, ``b""`` when empty), its
    buffered output spilled to runs in ``files`` whenever it passes the budget."""
    combiner = combiner_of(job)
    groups: dict = defaultdict(list)
    runs: list = []
    run_hook(job, "map_init")
    it = iter(records)
    # records in slices of budget.every, the budget checked between them: the loops over
    # records and pairs are map_grouped's own (group_records), with no count per record
    while group_records(job, groups, islice(it, budget.every), combiner,
                        _SLICE_START) is not _SLICE_START:
        if groups and budget.over():  # (user state alone: nothing to spill)
            try:
                runs.append(_spill_groups(job, groups, reducers, files))
            except Exception as exc:  # (a failing spill is no record's fault)
                raise RecordFailed(_NO_RECORD) from _named(exc, budget, files)
            groups = defaultdict(list)
            budget.released()
    if not groups and not runs and combiner is None:
        flat = FlatPairs(job, final_pairs(job))
        try:
            return finish_map_packed(job, flat, reducers)
        except Exception as exc:
            raise RecordFailed(_NO_RECORD) from exc
    group_final(job, groups)
    if not runs:  # it fitted: today's output, the same bytes
        return finish_map_packed(job, groups, reducers)
    try:
        if groups:
            runs.append(_spill_groups(job, groups, reducers, files))
            del groups
            budget.released()
        budget.spills += len(runs)
        return [_merge_partition(job, runs, p, combiner, files) for p in range(reducers)]
    except OSError as exc:
        named = _named(exc, budget, files)
        if named is exc:
            raise
        raise named from exc


def _spill_groups(job: Job, groups: dict, reducers: int, files: TaskFiles) -> Any:
    """Write ``groups`` as one run: combined (or value-sorted), partitioned, key-sorted."""
    parts = finish_map(job, groups, reducers)  # combines, sorts values, partitions
    combiner = combiner_of(job)
    types = set().union(*(set(map(type, keys)) for keys, *_ in parts))
    order = order_of(types)
    sections = []
    for keys, values, *_ in parts:
        index = dict(zip(keys, range(len(keys))))  # (keys are unique within a run)
        ordered = list(keys)
        sort_keys(ordered, order, job)
        section = [(k, values[index[k]]) for k in ordered]
        if combiner is None and any(len(v) > CHUNK_PAIRS for _, v in section):
            section = _chunked(section)
        sections.append(section)
    return write_run(files, sections, types)


def _chunked(section: list) -> list:
    """A hot key's values list cut into lists of CHUNK_PAIRS, one pair each (the reduce
    side extends a key's list with each): a run's items, and so the merge's heap, hold
    a bounded number of values at a time."""
    out = []
    for k, values in section:
        if len(values) <= CHUNK_PAIRS:
            out.append((k, values))
        else:
            out += [(k, values[i:i + CHUNK_PAIRS]) for i in range(0, len(values), CHUNK_PAIRS)]
    return out


def _merge_partition(job: Job, runs: list, p: int, combiner: Any, files: TaskFiles) -> bytes:
    """Partition ``p`` of every run merged into one segment (today's format)."""
    order = order_of(set().union(*(r.types for r in runs)))
    streams = [r.triples(p, i) for i, r in enumerate(runs) if r.sections[p][1]]
    if not streams:
        return b""
    out = ColumnsWriter(files)
    merged = merge(streams, triple_key(order))
    if combiner is None:
        out.extend(merged, triples=True)
        return out.finish()
    last: Any = _NO_RECORD
    pending: list = []
    for k, _, v in merged:
        if pending and k != last:
            out.add(last, pending[0] if len(pending) == 1 else combiner(last, pending))
            pending = []
        last = k
        pending.append(v)
    if pending:
        out.add(last, pending[0] if len(pending) == 1 else combiner(last, pending))
    return out.finish()


# -- a plain sort ------------------------------------------------------------------------

def map_runs_spilling(job: Job, records: Iterable[tuple[Any, Any]], reducers: int,
                      budget: Budget, files: TaskFiles) -> list:
    """:func:`~pymapreduce.rangesort.map_runs` and its packing under a budget: pairs
    buffered, spilled as sorted runs cut at the range boundaries, merged per partition."""
    runs: list = []
    keys, values = _map_into(job, records, budget, lambda keys, values: runs.append(
        _spill_pairs(job, keys, values, reducers, files)))
    if not runs:  # it fitted: today's kernels on the pairs
        return pack_runs(cut_runs(job, keys, values, reducers))
    if keys:
        runs.append(_spill_pairs(job, keys, values, reducers, files))
        del keys, values
        budget.released()
    budget.spills += len(runs)
    return [_merge_sorted(job, [r for r in runs if r.sections[p][1]], p, files)
            for p in range(reducers)]


def _spill_pairs(job: Job, keys: list, values: list, reducers: int, files: TaskFiles) -> Any:
    """Sort pairs by key (stably), cut them at the boundaries, write them as a run."""
    parts = cut_runs(job, keys, values, reducers)
    del keys, values
    types = set().union(*(map(type, k) for k, _ in parts))
    return write_run(files, [zip(k, v) for k, v in parts], types)


def _merge_sorted(job: Job, runs: list, p: int, files: TaskFiles) -> bytes:
    """Partition ``p`` of sorted runs merged (stably) into ``[keys, values, RUNS]``."""
    if not runs:
        return b""
    out = ColumnsWriter(files, flag=RUNS)
    try:
        out.extend(merge([r.triples(p, i) for i, r in enumerate(runs)], None), triples=True)
    except TypeError:
        raise _incomparable(job, [], range_bounds(job) or []) from None
    return out.finish()



# -- a map-only task -----------------------------------------------------------------------

def map_only_spilling(job: Job, records: Iterable[tuple[Any, Any]], budget: Budget,
                      files: TaskFiles, safe: bool) -> Any:
    """A map-only task's output under a budget: ``(keys, values)`` columns if it fitted
    (packed as today by the caller), else its encoded bytes: past the budget the pairs
    go to a :class:`~pymapreduce.spill.runs.ColumnsWriter` (files) in the order mapped,
    and only the encoded output is held at the end (``safe``: as for the client)."""
    writer: list = []  # the ColumnsWriter, once the budget is passed

    def spill(keys: list, values: list) -> None:
        if not writer:
            writer.append(ColumnsWriter(files, safe=safe))
            budget.spills += 1
        writer[0].extend(zip(keys, values))

    keys, values = _map_into(job, records, budget, spill)
    out = writer[0] if writer else None
    if out is None:
        return keys, values
    out.extend(zip(keys, values))
    return out.finish()


def _map_into(job: Job, records: Iterable[tuple[Any, Any]], budget: Budget,
              spill: Any) -> tuple[list, list]:
    """:func:`~pymapreduce.kernels.map_pairs` under a budget: the pairs as columns,
    given to ``spill(keys, values)`` and dropped whenever they pass it; the rest
    returned."""
    keys: list = []
    values: list = []
    run_hook(job, "map_init")
    it = iter(records)
    while pair_records(job, keys.append, values.append, islice(it, budget.every),
                       _SLICE_START) is not _SLICE_START:  # (slices, as in map_spilling)
        if keys and budget.over():
            try:
                spill(keys, values)
            except Exception as exc:  # (a failing spill is no record's fault)
                raise RecordFailed(_NO_RECORD) from _named(exc, budget)
            keys, values = [], []
            budget.released()
    pair_final(job, keys.append, values.append)
    return keys, values
