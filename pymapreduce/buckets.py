"""Hash buckets inside a reduce partition: the shuffle of one value per key, cut so that a
reduce task merges its segments a cache-sized piece at a time.

A map task that partitions by hash (no ``total_order``, no ``partition`` of the job's own)
picks ``stable_hash(key) % (reducers * BUCKETS)``: that number modulo ``reducers`` is the
partition, as it always was, and divided by ``reducers`` a bucket inside it. Each
partition's keys go out bucket by bucket, and the segment says where each bucket ends:
``[keys, values, cuts]``, ``cuts`` a list of BUCKETS offsets. The third item still means
what it meant in a flagged segment (``kernels.py: _partition_flat``): one value per key.
Readers that do not look at it (the spilling reduce side, ``spill/``) take it as the flag.

Why: a reduce task appends each pair's value to its key's list, and with many distinct
keys (the 256 MiB word count: 233,000 per partition, 2.3 million pairs from 32 map tasks)
the dict and the lists it touches lie all over memory, so each pair costs several cache
misses (0.4 us). Merging ROUND segments one bucket at a time keeps a bucket's dict and
lists in cache while they are hit again: the reduce task took 1.08 CPU s instead of
1.6 (``benchmarks/RESULTS.md``, the kernel section). Values keep map-task order within each
key, because each bucket is merged over the segments in their order.

Buckets are only cut when equal keys are sure to share a bucket and to compare with
every other key of the job: all keys of the segment ``str``, or all ``int``
(``type(k) is``, no subclass). Any other key type, a custom partitioner, range partitions,
and a map task that spilled (``spill/mapside.py``) send plain segments, and a reduce task
that meets one merges as before (:func:`merge_whole`).
"""

from __future__ import annotations

import operator
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from . import speedups
from .job import Job, stable_hash
from .ordering import as_pair, group_key
from .patterns.records import pack

BUCKETS = 32  # hash buckets per reduce partition
# Segments decoded and merged bucket by bucket at a time. More reuse the cache better but
# hold their decoded keys at once (about 5 MB a segment of 72,000 keys): on the 256 MiB
# word count's reduce task, 8 took 1.0 CPU s and 37 MB more at the peak than 4, which
# take 1.08 s and, with each segment's bytes let go once decoded (workers/runner.py),
# peak where the merge of whole segments did (2: 1.12 s).
ROUND = 4
# Segments are merged whole when the first holds fewer pairs than this per bucket in a
# round: a small task's buckets would cost a slice and a loop each for a few pairs.
MIN_BUCKET_PAIRS = 256
DICT_ITEMS = type({}.items())  # what a dict's items() is (a Counter's too)


def join_buckets(kb: list[list], vb: list[list], reducers: int, kinds: int) -> list:
    """The partitions of a map task from its ``reducers * BUCKETS`` bucket lists (index
    ``bucket * reducers + partition``): ``(keys, values, cuts)`` each, or ``(keys,
    values, True)`` (no cuts) unless ``kinds`` says the keys were all ``str`` (0) or all
    ``int`` (2, checked here for a stray ``str``)."""
    if kinds == 2 and any(type(k) is str for keys in kb for k in keys):
        kinds = 3
    parts = []
    for p in range(reducers):
        keys: list = []
        values: list = []
        cuts = []
        for i in range(p, len(kb), reducers):
            keys += kb[i]
            values += vb[i]
            cuts.append(len(keys))
        parts.append((keys, values, cuts if kinds in (0, 2) else True))
    return parts


class Packed(list):
    """A map task's partitions packed (``b""`` for an empty one), as a task sends them."""


def pack_parts(parts: list) -> Packed:
    """Each partition ``(keys, values, third)`` packed as a list, ``b""`` if empty."""
    # (as lists: a tuple would be packed twice, once inside its extension)
    return Packed(pack(list(p)) if p[0] else b"" for p in parts)


def bucket_parts(kb: list[list], vb: list[list], reducers: int, kinds: int,
                 packed: bool = False) -> list:
    """:func:`join_buckets`; ``packed``: its partitions packed (:func:`pack_parts`), in
    C straight from the buckets when every key and value is of a type it writes
    (``speedups.pack_buckets``: the same bytes, without the joined lists)."""
    if packed:
        fast = speedups.pack_buckets
        if fast is not None and (out := fast(kb, vb, reducers)) is not None:
            return Packed(out)
        return pack_parts(join_buckets(kb, vb, reducers, kinds))
    return join_buckets(kb, vb, reducers, kinds)


def combine_buckets(groups: dict, combiner: Any, reducers: int, packed: bool = False) -> list:
    """``kernels.finish_map`` of a combining job partitioned by hash: each group
    combined, then into its partition's hash bucket (``packed``: :func:`bucket_parts`)."""
    n = reducers * BUCKETS
    if packed and (one_pass := speedups.bucket_groups_pack) is not None:
        # combined, bucketed and packed in one pass, each key read once (None: a key or
        # value it does not write; the keys it combined are lists of one again, so the
        # ways below call the combiner for none of them twice)
        if (out := one_pass(groups, reducers, BUCKETS, combiner)) is not None:
            return Packed(out)
    fast = speedups.bucket_groups
    if fast is not None:  # (the loop below in C, each key combined as it is reached)
        kb, vb, kinds = fast(groups, n, stable_hash, combiner)
        return bucket_parts(kb, vb, reducers, kinds, packed)
    kb = [[] for _ in range(n)]
    vb = [[] for _ in range(n)]
    kinds = 0  # key types other than str met: 2 int, 4 anything else
    crc32 = zlib.crc32
    for k, values in groups.items():
        v = values[0] if len(values) == 1 else combiner(k, values)
        if type(k) is str:  # (stable_hash's str branch, inlined)
            p = crc32(k.encode("utf-8", "surrogatepass")) % n
        else:
            kinds |= 2 if type(k) is int else 4
            p = stable_hash(k) % n
        kb[p].append(k)
        vb[p].append(v)
    return bucket_parts(kb, vb, reducers, kinds, packed)


def flat_buckets(job: Job, pairs: Any, reducers: int, packed: bool = False) -> list:
    """``kernels._partition_flat`` partitioned by hash: each pair checked (unless they
    are a dict's items), then into its partition's hash bucket (``packed``:
    :func:`bucket_parts`)."""
    n = reducers * BUCKETS
    if packed and (one_pass := speedups.bucket_pack) is not None:
        # bucketed and packed in one pass over the pairs, each key read once (None:
        # a pair, key or value it does not write, and nothing done: the ways below)
        if (out := one_pass(pairs, reducers, BUCKETS)) is not None:
            return Packed(out)
    fast = speedups.bucket_pairs
    if fast is not None:  # (the loops below in C; None: a pair it leaves to them)
        done = fast(pairs, n, stable_hash if type(pairs) is DICT_ITEMS else None)
        if done is not None:
            return bucket_parts(done[0], done[1], reducers, done[2], packed)
    kb: list[list] = [[] for _ in range(n)]
    vb: list[list] = [[] for _ in range(n)]
    kinds = 0
    crc32 = zlib.crc32
    if type(pairs) is DICT_ITEMS:  # (pairs of two, hashable keys: nothing to check)
        for k, v in pairs:
            if type(k) is str:
                p = crc32(k.encode("utf-8", "surrogatepass")) % n
            else:
                kinds |= 2 if type(k) is int else 4
                p = stable_hash(k) % n
            kb[p].append(k)
            vb[p].append(v)
        return bucket_parts(kb, vb, reducers, kinds, packed)
    for pair in pairs:
        if type(pair) is not tuple or len(pair) != 2:
            pair = as_pair(job, "map_final", pair)
        k, v = pair
        if type(k) is str:
            p = crc32(k.encode("utf-8", "surrogatepass")) % n
        else:
            if type(k) is int:
                kinds |= 2
            else:
                kinds |= 4
                try:
                    hash(k)  # (the reduce side groups by it)
                except TypeError:
                    k = group_key(job, "map_final", k)
            p = stable_hash(k) % n
        kb[p].append(k)
        vb[p].append(v)
    return bucket_parts(kb, vb, reducers, kinds, packed)


def merge_whole(groups: dict, segments: Iterable, combined: bool) -> None:
    """Merge segments into ``groups`` (a defaultdict(list)) in the order given, each as a
    whole: a value appended per pair (``combined``, or a segment with a third item), or
    a key's list of values extended."""
    fast = speedups.append_pairs
    for segment in segments:
        keys, values = segment[0], segment[1]
        if combined or len(segment) > 2:
            if fast is not None and type(keys) is list and type(values) is list:
                fast(groups, keys, values, 0, len(keys))  # (the loop below, in C)
                continue
            for k, v in zip(keys, values):
                groups[k].append(v)
        else:
            for k, vs in zip(keys, values):
                groups[k].extend(vs)


def merge_bucketed(segments: Iterable, combined: bool) -> dict:
    """Merge segments (in map-task order) into one group per key: bucket by bucket,
    ROUND segments at a time, while every segment has cuts of the same shape, else as a
    whole (:func:`merge_whole`). The result is a dict of lists."""
    it: Iterator = iter(segments)
    batch = list(islice(it, 1))  # (decided on the first: the others are not held for it)
    shape = _shape(batch)
    if shape is None or len(batch[0][0]) * ROUND < MIN_BUCKET_PAIRS * BUCKETS:
        groups: dict = defaultdict(list)
        merge_whole(groups, batch, combined)
        del batch
        merge_whole(groups, it, combined)
        return groups
    batch += islice(it, ROUND - 1)
    parts = [defaultdict(list) for _ in range(BUCKETS)]
    fast = speedups.append_pairs
    while batch:
        if _shape(batch, shape) is None:  # a plain segment: the rest merged whole
            groups = _union(parts)
            merge_whole(groups, batch, combined)
            merge_whole(groups, it, combined)
            return groups
        for b, groups in enumerate(parts):
            for keys, values, cuts in batch:
                lo = cuts[b - 1] if b else 0
                hi = cuts[b]
                if lo >= hi:
                    continue
                if fast is not None and type(keys) is list and type(values) is list:
                    fast(groups, keys, values, lo, hi)  # (the loop below, in C)
                else:
                    for k, v in zip(keys[lo:hi], values[lo:hi]):
                        groups[k].append(v)
        batch = list(islice(it, ROUND))
    return _union(parts)


def _shape(batch: list, shape: type | None = None) -> type | None:
    """The key type (``str`` or ``int``) of every segment of ``batch`` (and ``shape`` if
    given), or None when one has no valid cuts. Cuts come from another process: BUCKETS
    ints, in order, from 0 up to the segment's end."""
    for segment in batch:
        if len(segment) != 3 or type(segment[2]) is not list:
            return None
        keys, cuts = segment[0], segment[2]
        if (len(cuts) != BUCKETS or not keys or cuts[-1] != len(keys)
                or any(type(c) is not int for c in cuts) or cuts[0] < 0
                or not all(map(operator.le, cuts, islice(cuts, 1, None)))):
            return None
        mine = type(keys[0])
        if mine is not str and mine is not int:
            return None
        if shape is None:
            shape = mine
        elif mine is not shape:
            return None
    return shape


def _union(parts: list[dict]) -> dict:
    """The buckets' groups as one dict (the first bucket's, a defaultdict). A key in two
    buckets would lose one list: that is a segment whose cuts lie, and fails the task."""
    total = sum(map(len, parts))
    groups = parts[0]
    for other in islice(parts, 1, None):
        groups.update(other)
        other.clear()  # (its table freed as the union's grows: not both held at the end)
    if len(groups) != total:
        raise ValueError("map output segments whose hash buckets disagree: a key in two "
                         "buckets")
    return groups
