"""Total order: the client samples a job's inputs and cuts its keys into ranges.

A ``total_order`` job's output comes in one key order across its partitions (TeraSort's
sampler and range partitioner). Before submitting, the client

1. reads a bounded sample of the input records: for files, the first records of up to
   ``SAMPLE_SPLITS`` evenly spaced splits (the same splits the map tasks will read); for
   in-memory records, evenly spaced ones;
2. runs the job's ``map`` on them here, in the client process, with ``map_init`` and
   ``map_final`` (for a multi-step job, the earlier steps run whole on the sample first,
   and the last step's ``map`` gives the keys);
3. sorts the sampled keys (each occurrence counts, so ranges hold about equal numbers of
   map outputs) and cuts ``R - 1`` boundaries, which travel in the pickled job.

A map task then sends a key to partition ``bisect_left(boundaries, key)``: partition
``i`` holds keys greater than boundary ``i - 1`` and at most boundary ``i``, so every key
of partition ``i`` is at most every key of partition ``i + 1``, and each reduce task sorts
its own keys. The boundaries only decide how even the partitions are, never whether the
output is right: keys the sample missed, an empty sample, or one key holding most records
give uneven partitions (all of one key's records are in one partition), not a wrong order.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from .errors import BadOutput, ConfigError
from .inputs import TextInput, normalize_records, plan_file_splits, read_split
from .job import Job
from .lines import Unparsed
from .ordering import as_pair, grouped_key, is_total_order
from .shipping import dumps_keeping_filenames

# Input records the client maps to cut the boundaries. Hadoop's TeraSort samples 100,000
# keys from 10 splits; a Python map costs more per record than Java's, and R - 1 cuts of
# 10,000 keys are within a few percent of the true quantiles for the reducer counts a
# cluster of this kind runs (tens).
SAMPLE_RECORDS = 10_000
SAMPLE_SPLITS = 10  # file splits the sample is read from, evenly spaced over the input
# Bytes read at a time from each sampled split: about its share of the sample for lines
# of 100 bytes (more blocks are read if lines are longer). A map task's 1 MiB blocks made
# the sampler read and decode ten times the lines it took, a third of a 1M-record sort's
# submit.
SAMPLE_BLOCK = 128 * 1024


def ordered_step(job: Job, steps: list[Job] | None) -> Job | None:
    """The step whose output must be in key order: the job itself, or the last step of a
    multi-step job when the job or that step sets ``total_order``; None if not ordered.
    Only the last step's order is visible, so an earlier step asking for it is an error."""
    if steps is None:
        return job if is_total_order(job) else None
    for step in steps[:-1]:
        if is_total_order(step):
            raise ConfigError(f"total_order on {type(step).__name__}, a step before the last "
                              f"of {type(job).__name__}: only the final output's order is "
                              "kept; set total_order on the job or its last step")
    return steps[-1] if is_total_order(job) or is_total_order(steps[-1]) else None


def with_boundaries(job: Job, steps: list[Job] | None, inputs: Any, *, slots: int,
                    reducers: int, map_only: bool) -> Job:
    """A shallow copy of ``job`` carrying the key boundaries for ``reducers`` partitions of
    its ordered step's output (the caller pickles the copy; the user's job is unchanged).

    ConfigError if the ordered step cannot be ordered (no reduce partitions, its own
    ``partition``); BadOutput if the sampled keys do not compare with each other.
    """
    step = ordered_step(job, steps)
    assert step is not None
    name = type(step).__name__
    if map_only:
        raise ConfigError(f"{name} has total_order but runs map-only (reducers=0): the "
                          "order is made by the reduce partitions (give it at least one)")
    if type(step).partition is not Job.partition:
        raise ConfigError(f"{name} has total_order and its own partition(): total_order "
                          "partitions by key ranges; drop one of them")
    # (a job that may skip bad records leaves out the lines its format cannot read)
    keys = sample_keys(job, steps, sample_records(inputs, slots,
                                                  lenient=bool(job.skip_bad_records)))
    ordered = copy.copy(job)
    ordered.__dict__["_pmr_bounds"] = cut_boundaries(name, keys, reducers)
    return ordered


def sample_records(inputs: Any, slots: int, size: int = SAMPLE_RECORDS,
                   lenient: bool = False) -> list:
    """Up to about ``size`` input records, spread over the input; ``lenient``: lines a
    ``read_jsonl`` or ``read_csv`` input cannot read are left out (a job that may skip
    bad records), not a :class:`~pymapreduce.errors.BadRecord` raised here."""
    if not isinstance(inputs, TextInput):
        records = normalize_records(inputs)
        n = len(records)
        return records if n <= size else [records[i * n // size] for i in range(size)]
    splits, _ = plan_file_splits(inputs, slots)
    count = min(len(splits), SAMPLE_SPLITS)
    picked = [splits[i * len(splits) // count] for i in range(count)]
    per_split = max(1, size // count)
    records: list = []
    for split in picked:
        ranges = list(split.ranges)
        if inputs.fmt == "files":  # whole files: a few of each picked group
            for path, _, _ in ranges[: max(1, per_split // 100)]:
                with open(path, "rb") as f:
                    records.append((path, f.read()))
            continue
        reader = read_split(ranges, inputs.encoding, inputs.max_line_bytes,
                            inputs.with_path, inputs.fmt, list(inputs.columns) or None,
                            inputs.header, block=SAMPLE_BLOCK)
        reader.lenient = lenient
        records.extend(r for r in itertools.islice(reader, per_split)
                       if type(r[1]) is not Unparsed)
    return records


def sample_keys(job: Job, steps: list[Job] | None, records: list) -> list:
    """The keys the ordered step's ``map`` yields for ``records``, one per output pair,
    run on a fresh copy of the job (as a worker would unpickle it), so the user's
    objects are not changed."""
    import cloudpickle

    from .kernels import run_sequential  # (the workers' kernels: for an ordered job only)

    # (pickled as submit pickles it: code that travels by value, a job file's, keeps its
    # file name, so a traceback of the sample names the user's file and line)
    fresh = cloudpickle.loads(dumps_keeping_filenames(job))
    if steps is not None:
        fresh_steps = fresh.steps()
        for step in fresh_steps[:-1]:
            out = run_sequential(step, records)
            records = list(out.items()) if isinstance(out, dict) else out
        fresh = fresh_steps[-1]
    keys: list = []
    name = type(fresh).__name__
    try:
        if callable(getattr(fresh, "map_init", None)):
            fresh.map_init()
        # what map returns is read as a worker reads it: None is no pairs, anything
        # else that cannot be iterated is the job's BadOutput (not asked its truth value)
        for key, value in records:
            out = fresh.map(key, value)
            if out is not None:
                for pair in _pairs(fresh, "map", out):
                    keys.append(as_pair(fresh, "map", pair)[0])
        final = getattr(fresh, "map_final", None)
        out = final() if callable(final) else None
        if out is not None:
            for pair in _pairs(fresh, "map_final", out):
                keys.append(as_pair(fresh, "map_final", pair)[0])
    except BadOutput:
        raise
    except Exception as exc:
        exc.add_note(f"(raised by {name}.map in this process, on the sample of the inputs "
                     "that total_order reads to cut the key ranges)")
        raise
    # as the map tasks group them, so boundaries compare with their keys: a tuple holding
    # a list, ("a", [1]), is the key ("a", (1,)) there, and a list does not compare with it
    return [grouped_key(fresh, "map", k) for k in keys]


def _pairs(job: Any, method: str, out: Any) -> Any:
    """An iterator over ``out``, what ``method`` returned; BadOutput if it has none."""
    try:
        return iter(out)
    except TypeError:
        from .kernels import not_iterable

        raise not_iterable(job, method, out) from None


def cut_boundaries(name: str, keys: list, reducers: int) -> list:
    """``reducers - 1`` boundaries at even quantiles of the sorted ``keys`` (repeats
    allowed: a key that fills several ranges leaves the ranges after it empty)."""
    try:
        keys.sort()
    except TypeError as exc:
        kinds = sorted({type(k).__name__ for k in keys})
        raise BadOutput(f"{name} has total_order but its map's keys do not compare with "
                        f"each other ({exc}; key types in the sample: {', '.join(kinds)}): "
                        "a total order needs keys of one comparable kind") from None
    n = len(keys)
    if not n:
        return []  # nothing sampled: one range takes every key (correct, if uneven)
    return [keys[i * n // reducers] for i in range(1, reducers)]
