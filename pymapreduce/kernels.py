"""The pure MapReduce kernels that workers run (no sockets, no processes): map a split and
group its output by key, combine and partition it; merge a partition's segments and reduce
them; and :func:`run_sequential`, the reference whose result every distributed run must
equal."""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from operator import length_hint
from types import TracebackType
from typing import Any

from . import speedups
from .buckets import DICT_ITEMS, Packed, combine_buckets, flat_buckets, merge_bucketed, pack_parts
from .errors import BadOutput, holding_value, short_repr
from .job import Columns, Groups, Job, emits, is_map_only, job_steps, stable_hash
from .ordering import (
    as_pair,
    combiner_of,
    group_key,
    is_total_order,
    range_bounds,
    uncomparable,
)

_NO_RECORD = object()


class RecordFailed(Exception):
    """``map`` (or reading its input) failed at the record with key ``key``; the user's
    exception is the ``__cause__``."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = None if key is _NO_RECORD else key
        # False: no record's fault (a task hook such as map_final, a spill that failed)
        self.of_record = key is not _NO_RECORD


class KeyFailed(Exception):
    """``reduce`` (or the sort of a key's values by ``value_key``) failed at the key
    ``key``; the user's exception is the ``__cause__``. Found on the failure path only
    (see :func:`reduce_groups`): nothing is noted per key on the way."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


COMBINE_EVERY = 64  # values a key may collect in a map task before they are combined


def _hook(job: Job, name: str) -> Iterable[tuple[Any, Any]]:
    """Run a task hook (``map_init``, ``map_final``...) if the job has one; what a
    ``_final`` hook yields (or returns) is more output pairs."""
    hook = getattr(job, name, None)
    if hook is None:
        return ()
    out = hook()
    return () if out is None or name.endswith("_init") else out


def map_grouped(job: Job, records: Iterable[tuple[Any, Any]]) -> Groups:
    """Run ``map`` over records and group its output by key (keys in first-seen order).

    With a ``combine``, a key's values are combined whenever COMBINE_EVERY of them have
    piled up, so a map task holds about one value per distinct key instead of one per
    record: on two cores sharing a memory bus that halved word count's map time. As in
    Hadoop, a combiner may therefore run several times on parts of a key's values, and
    must accept its own outputs among its inputs (sum, min, max, set union do).

    Each output is checked to be a tuple (one type test; lists and errors take a slow
    path, and unpacking it checks its length: see :func:`_blame`), and a key that cannot
    be hashed is given to :func:`group_key`.
    """
    groups: Groups = defaultdict(list)
    combiner = combiner_of(job)
    run_hook(job, "map_init")
    group_records(job, groups, records, combiner)
    if not groups and combiner is None:
        # in-mapper combining: map yielded nothing and map_final yields the task's
        # output, as a rule one pair per key; grouping it would make a list of one
        # value per key, to encode, decode and merge: it travels as flat pairs
        return FlatPairs(job, final_pairs(job))
    group_final(job, groups)
    return groups


def final_pairs(job: Job) -> Any:
    """What ``map_final`` yields, as a list; a dict's ``items()`` (a Counter's, in-mapper
    combining) is kept as it is: its pairs are tuples of two with hashable keys, so they
    are partitioned straight from the dict, unchecked and uncopied (``buckets.py``)."""
    out = run_hook(job, "map_final")
    if type(out) is DICT_ITEMS:
        return out
    try:
        return list(out)
    except Exception as exc:
        raise RecordFailed(_NO_RECORD) from _blame(job, _NO_RECORD, exc, out, "map_final")


def run_hook(job: Job, name: str) -> Iterable[tuple[Any, Any]]:
    """:func:`_hook`, its failure a :class:`RecordFailed` of no record."""
    try:
        return _hook(job, name)
    except Exception as exc:
        raise RecordFailed(_NO_RECORD) from exc


def group_records(job: Job, groups: Groups, records: Iterable[tuple[Any, Any]],
                  combiner: Any, key: Any = _NO_RECORD) -> Any:
    """Run ``map`` over ``records`` into ``groups`` (a ``defaultdict(list)``), combining
    a key's values every COMBINE_EVERY with ``combiner`` (None: no combiner); the loops of
    :func:`map_grouped`, also run over slices of a task's records by a task under a memory
    budget (``spill/mapside.py``). Returns the key of the last record read, ``key`` if
    there was none; a failure is a :class:`RecordFailed` naming the record it failed at."""
    mapper = job.map
    pair = out = _NO_RECORD
    fast = speedups.group_pairs
    try:
        if fast is not None and type(groups) is defaultdict and groups.default_factory is list:
            # the loops below, in C; a pair it leaves (not a tuple of two, a key that
            # cannot be hashed: given back in a tuple of one) goes through _one_pair, and
            # the C loop goes on after it
            for key, value in records:
                out = mapper(key, value)
                if out is not None:
                    pairs = iter(out)
                    while (left := fast(groups, pairs, combiner, COMBINE_EVERY)) is not None:
                        pair = left[0]
                        _one_pair(job, groups, pair, combiner)
        elif combiner is None:
            for key, value in records:
                out = mapper(key, value)
                if out is not None:
                    for pair in out:
                        if type(pair) is not tuple:
                            pair = as_pair(job, "map", pair)
                        k, v = pair
                        try:
                            groups[k].append(v)
                        except TypeError:
                            groups[group_key(job, "map", k)].append(v)
        else:
            for key, value in records:
                out = mapper(key, value)
                if out is not None:
                    for pair in out:
                        if type(pair) is not tuple:
                            pair = as_pair(job, "map", pair)
                        k, v = pair
                        try:
                            values = groups[k]
                        except TypeError:
                            k = group_key(job, "map", k)
                            values = groups[k]
                        values.append(v)
                        if len(values) >= COMBINE_EVERY:
                            values[:] = [combiner(k, values)]
    except Exception as exc:
        raise RecordFailed(key) from _blame(job, pair, exc, out)
    return key


def _one_pair(job: Job, groups: Groups, pair: Any, combiner: Any) -> None:
    """A pair of ``map``'s output that the C loop left to Python: the loops of
    :func:`group_records` for one pair."""
    if type(pair) is not tuple:
        pair = as_pair(job, "map", pair)
    k, v = pair  # (a tuple of another length: the ValueError that _blame explains)
    try:
        values = groups[k]
    except TypeError:
        k = group_key(job, "map", k)
        values = groups[k]
    values.append(v)
    if combiner is not None and len(values) >= COMBINE_EVERY:
        values[:] = [combiner(k, values)]


def _final_pair(job: Job, groups: Groups, pair: Any) -> None:
    """One pair that ``map_final`` yielded, checked and into ``groups``."""
    if type(pair) is not tuple or len(pair) != 2:
        pair = as_pair(job, "map_final", pair)
    k, v = pair
    try:
        groups[k].append(v)
    except TypeError:
        groups[group_key(job, "map_final", k)].append(v)


def group_final(job: Job, groups: Groups) -> None:
    """What ``map_final`` yields, into ``groups``."""
    pair = out = _NO_RECORD
    fast = speedups.group_pairs
    try:
        out = _hook(job, "map_final")
        if fast is not None and type(groups) is defaultdict and groups.default_factory is list:
            pairs = iter(out)  # (the loop in C; a pair it leaves to _final_pair)
            while (left := fast(groups, pairs, None, 1)) is not None:
                pair = left[0]
                _final_pair(job, groups, pair)
            return
        for pair in out:  # (without the C loops)
            _final_pair(job, groups, pair)
    except Exception as exc:
        raise RecordFailed(_NO_RECORD) from _blame(job, pair, exc, out, "map_final")


class FlatPairs:
    """A map task's output as pairs of one value each, not grouped by key (see
    :func:`map_grouped`): ``pairs`` as ``map_final`` gave them, checked as they are
    partitioned (:func:`_partition_flat`), into segments flagged as holding single values."""

    __slots__ = ("job", "pairs")

    def __init__(self, job: Job, pairs: list) -> None:
        self.job = job
        self.pairs = pairs


def _blame(job: Job, pair: Any, exc: Exception, out: Any = _NO_RECORD,
           method: str = "map") -> Exception:
    """The error to report for a map task that raised ``exc`` after the pair check: if
    the last output was a tuple of another length than 2, unpacking it failed (the map
    yielded a non-pair; a failure of the map itself comes after a good pair), else ``exc``.
    Checking the length here, not per pair, keeps the per-pair test to one type test.
    ``out``: what ``method`` last returned; one that cannot be iterated (``return 5``)
    is why the loop over it failed (a TypeError raised inside ``map`` comes while a
    generator or an iterable is being read, never from a value that is neither)."""
    if isinstance(exc, TypeError) and out is not _NO_RECORD and out is not None:
        try:
            iter(out)
        except TypeError:
            return not_iterable(job, method, out)
    if type(pair) is tuple and len(pair) != 2 and isinstance(exc, ValueError):
        try:
            as_pair(job, method, pair)
        except BadOutput as bad:
            return at_yield(bad, exc, out)
    if isinstance(exc, BadOutput):  # (a non-pair, a key that cannot be grouped)
        return at_yield(exc, exc, out)
    return exc


def at_yield(bad: BadOutput, exc: Exception, out: Any) -> BadOutput:
    """``bad``, its traceback ending at the user's ``yield`` of the output it blames: the
    line at which ``out``, the generator that yielded it, is suspended, after the frame
    of the kernel's loop that caught ``exc``; ``bad`` as it is if ``out`` is no suspended
    generator (a list returned, or a generator that has ended). The error path only: the
    pair check itself stays one type test."""
    frame = getattr(out, "gi_frame", None)
    if frame is None or getattr(out, "gi_running", False):
        return bad
    user = TracebackType(None, frame, frame.f_lasti, frame.f_lineno)
    loop = exc.__traceback__
    tb = user if loop is None else TracebackType(user, loop.tb_frame, loop.tb_lasti,
                                                 loop.tb_lineno)
    bad.__suppress_context__ = True  # (the unpacking's ValueError says nothing more)
    return bad.with_traceback(tb)


def not_iterable(job: Job, method: str, out: Any) -> BadOutput:
    """The error for ``method`` (``map``, ``map_final``) having returned ``out``, which
    cannot be iterated (``return 5``), where pairs were due."""
    what = (f"{type(job).__name__}.{method} returned {{}} (of type {type(out).__name__}), "
            "not an iterable of (key, value) pairs: yield the pairs, or return a list of them")
    return holding_value(BadOutput(what.format(short_repr(out))), what.format("a value"), out,
                         f"{method}'s return value")


def bad_partition(job: Job, key: Any, p: Any, reducers: int) -> BadOutput:
    """The error for ``partition(key, reducers)`` having returned ``p``, no partition:
    BadOutput, as the same code returns the same on every attempt (not retried
    --max-attempts times); its public text names ``p``'s type, or says an int is out of
    range, and the key goes in the failure's position (errors.holding_value)."""
    name = f"{type(job).__name__}.partition"
    wanted = f"range(0, {reducers})"
    shown = (f"an int outside {wanted}" if type(p) is int
             else f"a value of type {type(p).__name__}, not an int in {wanted}")
    return holding_value(
        BadOutput(f"{name}({short_repr(key)}, {reducers}) returned {short_repr(p)}, not an "
                  f"int in {wanted}"),
        f"{name}(key, {reducers}) returned {shown}", key, "partition's key")


def map_pairs(job: Job, records: Iterable[tuple[Any, Any]]) -> Columns:
    """Run ``map`` over records and keep its output as it is (map-only jobs)."""
    keys: list = []
    values: list = []
    run_hook(job, "map_init")
    pair_records(job, keys.append, values.append, records)
    pair_final(job, keys.append, values.append)
    return keys, values


def pair_records(job: Job, add_key: Any, add_value: Any,
                 records: Iterable[tuple[Any, Any]], key: Any = _NO_RECORD) -> Any:
    """Run ``map`` over ``records``, each pair's key and value given to ``add_key`` and
    ``add_value``: the loop of :func:`map_pairs`, also run over slices of a task's records
    under a memory budget. Returns the key of the last record read (``key`` if none); a
    failure is a :class:`RecordFailed` naming the record it failed at."""
    mapper = job.map
    pair = out = _NO_RECORD
    try:
        for key, value in records:
            out = mapper(key, value)
            if out is not None:
                for pair in out:
                    if type(pair) is not tuple:
                        pair = as_pair(job, "map", pair)
                    k, v = pair
                    add_key(k)
                    add_value(v)
    except Exception as exc:
        raise RecordFailed(key) from _blame(job, pair, exc, out)
    return key


def pair_final(job: Job, add_key: Any, add_value: Any) -> None:
    """What ``map_final`` yields, checked to be pairs, to ``add_key`` and ``add_value``."""
    out = _NO_RECORD
    try:
        out = _hook(job, "map_final")
        for pair in out:
            k, v = as_pair(job, "map_final", pair)
            add_key(k)
            add_value(v)
    except Exception as exc:
        raise RecordFailed(_NO_RECORD) from _blame(job, _NO_RECORD, exc, out, "map_final")


def finish_map_packed(job: Job, groups: Groups, reducers: int) -> list[bytes]:
    """:func:`finish_map`'s partitions packed as a map task sends them (``b""`` for an
    empty one); partitioned by hash, packed in C straight from the hash buckets where
    it can (``buckets.bucket_parts``)."""
    parts = finish_map(job, groups, reducers, packed=True)
    return parts if isinstance(parts, Packed) else pack_parts(parts)


def finish_map(job: Job, groups: Groups, reducers: int,
               packed: bool = False) -> list[Columns]:
    """Combine each group (if the job has a combiner) and cut the groups into partitions.

    Each partition is ``(keys, values)``: with a combiner one combined value per key,
    without one the key's list of values (sorted by ``value_key`` if the job has one, so
    the reduce side merges sorted runs). One pass, one partition choice per key: a
    ``total_order`` job's by its key range, else the job's ``partition``, else a hash;
    by hash, a combining job's partitions are ``(keys, values, cuts)``, cut into hash
    buckets for the reduce side's merge (``buckets.py``).
    """
    if isinstance(groups, FlatPairs):
        return _partition_flat(job, groups, reducers, packed)
    combiner = combiner_of(job)
    if combiner is None and job._has("value_key"):
        value_key = job.value_key
        for values in groups.values():
            if len(values) > 1:
                values.sort(key=value_key)
    if reducers == 1 and combiner is None:
        return [(list(groups), list(groups.values()))]
    if combiner is not None and _hashed(job):
        return combine_buckets(groups, combiner, reducers, packed)
    choose = _chooser(job, reducers)
    hashed = choose is None  # the common case, inlined: stable_hash's str branch
    fast = speedups.bucket_pairs
    if hashed and combiner is None and fast is not None:  # (the loop below, in C)
        kb, vb, _ = fast(groups.items(), reducers, stable_hash)
        return list(zip(kb, vb))
    parts: list[Columns] = [([], []) for _ in range(reducers)]
    crc32 = zlib.crc32
    for k, values in groups.items():
        if combiner is not None:
            v = values[0] if len(values) == 1 else combiner(k, values)
        else:
            v = values
        if hashed:
            if type(k) is str:
                p = crc32(k.encode("utf-8", "surrogatepass")) % reducers
            else:
                p = stable_hash(k) % reducers
        else:
            p = choose(k)
        keys, vals = parts[p]
        keys.append(k)
        vals.append(v)
    return parts


def _partition_flat(job: Job, flat: FlatPairs, reducers: int,
                    packed: bool = False) -> list[Columns]:
    """:func:`finish_map` of flat pairs, in one pass that checks each pair (as
    :func:`map_grouped` does), partitions it and appends it: segments ``(keys, values,
    True)``, True saying that each value is one value, not a key's list
    (:func:`merge_segments`); partitioned by hash, the third item is the list of the
    partition's hash buckets' ends instead (``buckets.py``), which says the same."""
    if _hashed(job):
        return flat_buckets(job, flat.pairs, reducers, packed)
    kparts: list[list] = [[] for _ in range(reducers)]
    vparts: list[list] = [[] for _ in range(reducers)]
    choose = _chooser(job, reducers)
    hashed = choose is None  # (else ranges, the job's partition, or one reducer)
    crc32 = zlib.crc32
    for pair in flat.pairs:
        if type(pair) is not tuple or len(pair) != 2:
            pair = as_pair(job, "map_final", pair)
        k, v = pair
        if type(k) is str:
            if hashed:
                p = crc32(k.encode("utf-8", "surrogatepass")) % reducers
            else:
                p = choose(k)
        else:
            try:
                hash(k)  # (the reduce side groups by it)
            except TypeError:
                k = group_key(job, "map_final", k)
            p = stable_hash(k) % reducers if hashed else choose(k)
        kparts[p].append(k)
        vparts[p].append(v)
    return [(kparts[p], vparts[p], True) for p in range(reducers)]


def _hashed(job: Job) -> bool:
    """Whether the job's partitions are picked by stable hash: no ``total_order`` ranges,
    no ``partition`` of its own (then buckets are cut inside them: ``buckets.py``)."""
    return range_bounds(job) is None and type(job).partition is Job.partition


def _chooser(job: Job, reducers: int) -> Any:
    """The partition of a key: a ``total_order`` job's by its key range, else the job's
    own ``partition``, else None (by stable hash, which callers inline)."""
    bounds = range_bounds(job)
    if bounds is not None:
        last = reducers - 1

        def by_range(k: Any) -> int:
            try:
                p = bisect_left(bounds, k)
            except TypeError as exc:
                raise uncomparable(job, k, exc) from None
            return last if p > last else p  # (cut for the job's reducers; never more)

        return by_range
    if type(job).partition is not Job.partition:
        custom = job.partition

        def by_custom(k: Any) -> int:
            p = custom(k, reducers)
            if type(p) is not int or not 0 <= p < reducers:
                raise bad_partition(job, k, p, reducers)
            return p

        return by_custom
    if reducers == 1:
        return lambda k: 0
    return None


def merge_segments(segments: Iterable[Columns], combined: bool) -> Groups:
    """Merge one partition's segments (in map-task order) into one group per key.

    ``combined``: the segments hold one combined value per key, not lists of values.
    """
    return merge_bucketed(segments, combined)  # (by hash bucket where they are cut)


def reduce_groups(job: Job, groups: Groups) -> Columns:
    """Run ``reduce`` on every group; keys come out sorted where they are comparable.

    An emitting ``reduce`` (a generator) gives the pairs it yields, in that order; the
    ``reduce_init``/``reduce_final`` hooks run around the task's keys. With ``value_key``
    each key's values are sorted by it first: the map tasks sent sorted runs, in map-task
    order, so the (stable) sort merges runs and ties keep input order. A ``total_order``
    job's keys must compare (BadOutput), and without ``reduce`` it emits each value with
    its key."""
    try:
        keys = list(groups)
        if (fast := speedups.sort_strs) is None or (ordered := fast(keys)) is None:
            keys.sort()  # (not all exact str, or no C loops: what sorted() does)
        else:
            keys = ordered
    except TypeError as exc:
        if is_total_order(job):
            raise BadOutput(f"{type(job).__name__} has total_order but its keys do not "
                            f"compare with each other: {exc}") from None
        keys = list(groups)  # mixed key types: keep first-seen order
    if job._has("value_key"):
        value_key = job.value_key
        try:
            for k in keys:
                values = groups[k]
                if len(values) > 1:
                    values.sort(key=value_key)
        except Exception as exc:
            raise KeyFailed(k) from exc
    reducer = job.reduce if job._has("reduce") else None
    _hook(job, "reduce_init")
    if reducer is None:  # a total_order job without reduce: each value with its key
        out_keys = []
        out_values = []
        for k in keys:
            values = groups[k]
            out_keys.extend([k] * len(values))
            out_values.extend(values)
    elif emits(job):
        out_keys = []
        out_values = []
        out = _NO_RECORD
        try:
            for k in keys:
                for pair in (out := reducer(k, groups[k])):
                    if type(pair) is not tuple or len(pair) != 2:
                        pair = as_pair(job, "reduce", pair)
                    out_keys.append(pair[0])
                    out_values.append(pair[1])
        except Exception as exc:  # (the key and the yield to blame: the loop's own)
            raise KeyFailed(k) from _blame(job, _NO_RECORD, exc, out, "reduce")
    else:
        # a list's iterator says how far it got: the key that failed, found on the
        # failure path, costs the comprehension nothing per key
        pending = iter(keys)
        try:
            out_values = [reducer(k, groups[k]) for k in pending]
        except Exception as exc:
            raise KeyFailed(keys[len(keys) - length_hint(pending) - 1]) from exc
        out_keys = keys
    for pair in _hook(job, "reduce_final"):
        ok, ov = as_pair(job, "reduce_final", pair)
        out_keys.append(ok)
        out_values.append(ov)
    return out_keys, out_values


def run_sequential(job: Job, records: Iterable[tuple[Any, Any]]) -> Any:
    """The reference run in this process: what every distributed run must return."""
    steps = job_steps(job)
    if steps is not None:
        out: Any = records
        for step in steps:
            out = run_sequential(step, out.items() if isinstance(out, dict) else out)
        return out
    if is_map_only(job, None):
        return list(zip(*map_pairs(job, records)))
    groups = map_grouped(job, records)
    if isinstance(groups, FlatPairs):
        groups = merge_segments(_partition_flat(job, groups, 1), combined=False)
    keys, values = reduce_groups(job, groups)
    if emits(job):
        return list(zip(keys, values))
    return dict(zip(keys, values))

