"""The Job base class and the pure MapReduce kernels (no sockets, no processes).

Workers run these kernels; tests and benchmarks run :func:`run_sequential`, the reference
whose result every distributed run must equal.
"""

from __future__ import annotations

import inspect
import operator
import struct
import zlib
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from .errors import BadOutput, ConfigError
from .ordering import (  # noqa: F401 - task_steps: for the workers
    as_pair,
    combiner_of,
    group_key,
    is_total_order,
    range_bounds,
    task_steps,
)
from .patterns.records import pack

Groups = dict  # key -> list of values, in first-seen key order and input value order
# Outputs travel as columns, ``(keys, values)``: two flat lists encode and decode about
# twice as fast as a list of pairs, and a map task's partitions are built in one pass.
Columns = tuple

# Counters travel in each task's report and are journaled: names are bounded text, values
# 64-bit ints (what msgpack and SQLite carry), and a task holds a bounded number of them.
MAX_COUNTER_NAME = 200
MAX_COUNTERS = 1000
COUNTER_MIN, COUNTER_MAX = -(1 << 63), (1 << 63) - 1


def stable_hash(key: Any) -> int:
    """A hash of ``key`` that every process on every machine agrees on.

    Python salts ``hash()`` of str and bytes per process, so it cannot pick partitions.
    Numbers keep Python's own (unsalted) hash, so ``1``, ``1.0`` and ``True``, which are
    one dict key, land in one partition too.
    """
    t = type(key)
    if t is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if t is int or t is float or t is bool:
        return hash(key) & 0xFFFFFFFFFFFFFFFF
    if t is bytes:
        return zlib.crc32(key)
    if t is tuple or t is list:  # a list key is grouped as its tuple: the same partition
        h = 0x345678
        for item in key:
            h = zlib.crc32(struct.pack("<Q", stable_hash(item)), h)
        return h
    if t is frozenset:  # order-free: pickled sets follow each process's salted hashes
        return sum(stable_hash(item) for item in key) & 0xFFFFFFFFFFFFFFFF
    if key is None:
        return 0
    # other types: their encoding, which must not depend on the process (true of
    # msgpack types and of objects whose pickle does not embed a set's order)
    return zlib.crc32(pack(key))


class Job:
    """A MapReduce job: subclass it and define ``map`` and (usually) ``reduce``.

    - ``map(self, key, value)`` yields ``(key, value)`` pairs (or returns an iterable).
    - ``reduce(self, key, values)`` returns the value for ``key``; ``values`` is a list.
      Written as a generator, it *emits* instead: it yields ``(key, value)`` pairs, none
      or many for each input key, and the job's result is the list of those pairs.
      Without ``reduce`` (or with ``reducers=0``) the job is map-only and returns the
      map output as it is, a list of pairs.
    - ``map_init(self)`` / ``map_final(self)`` and ``reduce_init(self)`` /
      ``reduce_final(self)``, optional, run once per task attempt, before its first and
      after its last record or key (Hadoop's setup and cleanup, mrjob's ``*_init`` and
      ``*_final``); a ``_final`` hook may yield ``(key, value)`` pairs, which join the
      task's output (in-mapper combining: count in ``map``, yield the totals in
      ``map_final``).
    - ``combine(self, key, values)``, optional, runs on each map task's output before it
      leaves the worker, and returns one value (the paper's combiner).
    - ``partition(self, key, reducers)``, optional, picks a reduce partition; the default
      is a stable hash of the key.
    - ``total_order = True``: the output comes in one global key order across partitions
      (``results()``, ``result()``, the ``part-*`` files): the client samples the inputs
      and runs ``map`` on the sample before submitting, and partitions are key ranges
      (TeraSort's sampler and range partitioner; docs/order.md). Keys must compare with
      each other. Without a ``reduce``, such a job sorts: each value comes back as a pair
      with its key (Hadoop's identity reducer).
    - ``value_key(self, value)``, optional: each key's values reach ``reduce`` (and
      ``combine``) sorted by it, stably (a secondary sort, mrjob's ``SORT_VALUES``).

    ``map`` and the hooks yield tuples ``(key, value)`` (a 2-item list is taken as a pair
    too); anything else fails the job with :class:`~pymapreduce.BadOutput` naming the
    method and the value. A key that is a list (JSON-decoded data) is grouped as the tuple
    of its items (nested lists too): ``reduce`` and the results see the tuple.

    Attributes set on the instance travel with it to the workers (cloudpickle), so
    configuration, closures and lambdas work there. ``reducers`` and ``map_tasks`` may be
    set as class attributes to change the defaults of every run of the job.

    ``skip_bad_records`` (the paper's section 3.3): ``True``, or the most records that may
    be skipped, lets a job finish despite records its ``map`` cannot handle: a record on
    which ``map`` failed twice is left out of the next attempt, and the job's status lists
    it under ``skipped``. Default ``False``: a failing record fails its task.

    ``pickle_results``: results (reduce output, or a map-only job's output) travel as
    msgpack with safe extension types for tuples, sets, frozensets, big ints, complex,
    Decimal, Fraction, date/time/datetime/timedelta (zones: ``datetime.timezone``
    and ``zoneinfo``), UUID, OrderedDict, Counter, defaultdict (of a builtin type) and
    deque, all decoded without running code. A result that holds anything else (an
    instance of your own class, say) can only travel pickled, and unpickling runs code
    chosen by whoever made the bytes: a worker, or anyone holding a worker key. So by
    default such a result fails its task with :class:`~pymapreduce.ValueNeedsPickle`
    (naming the key and the type), and the client never unpickles results. Set
    ``pickle_results = True`` (class or instance attribute; for a multi-step job, on the
    job submitted, not its steps) when you trust every worker key; a client re-attaching
    with ``Client.job(job_id)`` must then pass ``pickle_results=True`` itself. Values
    passed between workers (map output, steps' inputs) may always be pickled.
    """

    reducers: int | None = None
    map_tasks: int | None = None
    skip_bad_records: bool | int = False
    priority: float = 1  # weight of the job's share of worker slots (submit(priority=))
    requires: frozenset = frozenset()  # worker tags its tasks need (submit(requires=))
    pickle_results: bool = False  # results may travel pickled: see the class docstring
    total_order: bool = False  # output in one key order across partitions: see above
    # code and data that travel with the job (docs/travel.md): side files (paths, or
    # {name: path}) each task finds by name in its working directory, and whether the
    # user's own modules travel by value (False: workers must be able to import them)
    files: Any = ()
    ship_modules: bool = True

    def map(self, key: Any, value: Any) -> Iterable[tuple[Any, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must define map(self, key, value)")

    def partition(self, key: Any, reducers: int) -> int:
        """The reduce partition, in ``range(reducers)``, that ``key`` goes to."""
        return stable_hash(key) % reducers

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``; totals reach the client as ``handle.counters``.

        ``name`` is a non-empty str of at most 200 characters, ``n`` an int (a bool counts
        as 0 or 1, so ``self.count("hits", line.startswith("x"))`` works, and so do integer
        types such as ``numpy.int64``; a float does not); a task may use
        at most 1000 distinct names, and a counter's total in one task must fit in a signed
        64-bit int. Anything else raises TypeError or ValueError here, in the user's code,
        so the task fails with a traceback naming the counter (and the job, after its
        retries, with that message) instead of sending a report the broker cannot take.
        """
        if not isinstance(name, str):
            raise TypeError(f"counter names are str, got {type(name).__name__} {name!r:.80}")
        name = str(name)  # a str subclass travels as a plain str
        if not 0 < len(name) <= MAX_COUNTER_NAME:
            shown = repr(name) if len(name) <= 60 else repr(name[:60])[:-1] + "...'"
            raise ValueError(f"counter name {shown} must have 1 to {MAX_COUNTER_NAME} "
                             f"characters, not {len(name)}")
        try:  # an int, a bool (True adds 1) or an integer type of a library (numpy.int64)
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"count({name!r}, n): n must be an int, got "
                            f"{type(n).__name__} {n!r:.80}") from None
        counters = self.__dict__.setdefault("_pmr_counters", {})
        total = counters.get(name)
        if total is None and len(counters) >= MAX_COUNTERS:
            raise ValueError(f"count({name!r}): a task may use at most {MAX_COUNTERS} "
                             "distinct counter names (counters are for totals, not per-key "
                             "values: emit those as map output)")
        total = (total or 0) + n
        if not COUNTER_MIN <= total <= COUNTER_MAX:
            raise ValueError(f"counter {name!r} would reach {total}, beyond a signed 64-bit int")
        counters[name] = total

    def run(
        self,
        inputs: Any = None,
        *,
        address: str | None = None,
        workers: int | None = None,
        map_tasks: int | None = None,
        reducers: int | None = None,
        output_dir: str | None = None,
        overwrite: bool = True,
        timeout: float | None = None,
        keys: str | None = None,
        heartbeat_interval: float | None = None,
        liveness: float | None = None,
        files: Any = None,
        progress: bool = False,
        dashboard: bool = False,
    ) -> Any:
        """Run the job and return its result (a dict; a list of pairs for a map-only job).

        With no ``address`` an embedded :class:`~pymapreduce.LocalCluster` with ``workers``
        processes (default: one per core) is started for this run and torn down after it,
        whatever happens; ``heartbeat_interval`` and ``liveness`` configure its broker as
        the daemon's ``--heartbeat`` and ``--liveness`` do (a cluster at ``address`` has
        its own, so they are refused with it). ``output_dir``: also write the output there
        as ``part-NNNNN`` files; a path that cannot be written fails before the job runs,
        and ``overwrite=False`` refuses a directory that is not empty (default: replace
        the part files of an earlier run). ``files``: side files shipped with the
        job, as for :meth:`Client.submit <pymapreduce.Client.submit>`. ``progress=True``:
        draw a progress bar per phase while the job runs (:meth:`JobHandle.progress
        <pymapreduce.client.client.JobHandle.progress>`; a terminal or a notebook); off by
        default, so a plain call prints nothing. ``dashboard``:
        the embedded broker serves its HTTP API (docs/observability.md), its URL printed
        on stderr.
        """
        import sys as _sys

        from .client import Client
        from .client.submit import pickle_job
        from .inputs import TextInput
        from .local import LocalCluster
        from .shipping import gather_files

        cluster_options = {k: v for k, v in (("heartbeat_interval", heartbeat_interval),
                                             ("liveness", liveness),
                                             ("http", True if dashboard else None))
                           if v is not None}
        if address is not None and cluster_options:
            raise ConfigError(f"{', '.join(cluster_options)}: settings of the embedded "
                              "cluster; the broker at address= has its own (--heartbeat, "
                              "--liveness)")
        if address is None:  # what would fail at submit fails before a cluster starts
            pickle_job(self)
            if isinstance(inputs, TextInput):
                inputs.files()
            if output_dir is not None:
                from .client.output import check_output_dir

                check_output_dir(output_dir, overwrite=overwrite)
            gather_files(self, files)
        if address is not None:
            with Client(address, keys=keys) as client:
                handle = client.submit(
                    self, inputs, map_tasks=map_tasks, reducers=reducers, output_dir=output_dir,
                    overwrite=overwrite, files=files)
                if progress:
                    handle.progress(timeout=timeout)
                return handle.result(timeout=timeout)
        with LocalCluster(workers=workers, keys=keys, **cluster_options) as cluster:
            if cluster.http_url:
                print(f"pymapreduce: dashboard at {cluster.http_url}", file=_sys.stderr,
                      flush=True)
            return self.run(
                inputs,
                address=cluster.address,
                keys=keys,
                map_tasks=map_tasks,
                reducers=reducers,
                output_dir=output_dir,
                overwrite=True,  # (checked above, before the cluster started)
                timeout=timeout,
                files=files,
                progress=progress,
            )

    def steps(self) -> list[Job] | None:
        """A multi-step job returns its steps: a list of jobs run one after the other,
        the output pairs of each the input records of the next, inside the cluster (like
        mrjob's MRStep). The last step's output is the job's result. Default: ``None``,
        a job of one step (this one)."""
        return None

    # -- introspection used by the kernels ---------------------------------------------
    def _has(self, name: str) -> bool:
        return callable(getattr(self, name, None))

    def _take_counters(self) -> dict:
        return self.__dict__.pop("_pmr_counters", None) or {}


def pickle_results(job: Job) -> bool:
    """Whether the job opted in to results that travel pickled (``Job.pickle_results``).

    The client and the workers each read it off the job object the user made (the client
    before pickling it, a worker after unpickling the client's bytes); no flag that a
    broker or a worker sends back can turn unpickling on in a client.
    """
    try:
        return getattr(job, "pickle_results", False) is True
    except Exception:  # a job's own __getattr__ that raises: it did not opt in
        return False


def is_map_only(job: Job, reducers: int | None) -> bool:
    """A job is map-only when it has no ``reduce`` (and is not ``total_order``, which sorts
    without one) or was asked for zero reducers."""
    return reducers == 0 or not (job._has("reduce") or is_total_order(job))


# -- kernels -----------------------------------------------------------------------------


_NO_RECORD = object()


class RecordFailed(Exception):
    """``map`` (or reading its input) failed at the record with key ``key``; the user's
    exception is the ``__cause__``."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = None if key is _NO_RECORD else key


COMBINE_EVERY = 64  # values a key may collect in a map task before they are combined


def emits(job: Job) -> bool:
    """Whether the job's ``reduce`` is a generator: it yields pairs instead of returning
    one value per key, and the result is a list of pairs. A ``total_order`` job without
    ``reduce`` emits each value with its key (a sort)."""
    reduce = getattr(type(job), "reduce", None)
    if reduce is None:
        return is_total_order(job)
    return inspect.isgeneratorfunction(reduce)


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
    mapper = job.map
    combiner = combiner_of(job)
    key = pair = _NO_RECORD
    try:
        _hook(job, "map_init")
        if combiner is None:
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
        key = _NO_RECORD
        if not groups and combiner is None:
            # in-mapper combining: map yielded nothing and map_final yields the task's
            # output, as a rule one pair per key; grouping it would make a list of one
            # value per key, to encode, decode and merge: it travels as flat pairs
            return FlatPairs(job, list(_hook(job, "map_final")))
        for pair in _hook(job, "map_final"):
            # (the tests inline: a final hook yields a whole task's output, in-mapper
            # combining's distinct keys; a call per pair cost 5% of such a map task)
            if type(pair) is not tuple or len(pair) != 2:
                pair = as_pair(job, "map_final", pair)
            k, v = pair
            try:
                groups[k].append(v)
            except TypeError:
                groups[group_key(job, "map_final", k)].append(v)
    except Exception as exc:
        raise RecordFailed(key) from _blame(job, pair, exc)
    return groups


class FlatPairs:
    """A map task's output as pairs of one value each, not grouped by key (see
    :func:`map_grouped`): ``pairs`` as ``map_final`` gave them, checked as they are
    partitioned (:func:`_partition_flat`), into segments flagged as holding single values."""

    __slots__ = ("job", "pairs")

    def __init__(self, job: Job, pairs: list) -> None:
        self.job = job
        self.pairs = pairs


def _blame(job: Job, pair: Any, exc: Exception) -> Exception:
    """The error to report for a map task that raised ``exc`` after the pair check: if
    the last output was a tuple of another length than 2, unpacking it failed (the map
    yielded a non-pair; a failure of the map itself comes after a good pair), else ``exc``.
    Checking the length here, not per pair, keeps the per-pair test to one type test."""
    if type(pair) is tuple and len(pair) != 2 and isinstance(exc, ValueError):
        try:
            as_pair(job, "map", pair)
        except BadOutput as bad:
            return bad
    return exc


def map_pairs(job: Job, records: Iterable[tuple[Any, Any]]) -> Columns:
    """Run ``map`` over records and keep its output as it is (map-only jobs)."""
    keys: list = []
    values: list = []
    add_key = keys.append
    add_value = values.append
    mapper = job.map
    key = pair = _NO_RECORD
    try:
        _hook(job, "map_init")
        for key, value in records:
            out = mapper(key, value)
            if out is not None:
                for pair in out:
                    if type(pair) is not tuple:
                        pair = as_pair(job, "map", pair)
                    k, v = pair
                    add_key(k)
                    add_value(v)
        key = _NO_RECORD
        for pair in _hook(job, "map_final"):
            k, v = as_pair(job, "map_final", pair)
            add_key(k)
            add_value(v)
    except Exception as exc:
        raise RecordFailed(key) from _blame(job, pair, exc)
    return keys, values


def finish_map(job: Job, groups: Groups, reducers: int) -> list[Columns]:
    """Combine each group (if the job has a combiner) and cut the groups into partitions.

    Each partition is ``(keys, values)``: with a combiner one combined value per key,
    without one the key's list of values (sorted by ``value_key`` if the job has one, so
    the reduce side merges sorted runs). One pass, one partition choice per key: a
    ``total_order`` job's by its key range, else the job's ``partition``, else a hash.
    """
    if isinstance(groups, FlatPairs):
        return _partition_flat(job, groups, reducers)
    combiner = combiner_of(job)
    if combiner is None and job._has("value_key"):
        value_key = job.value_key
        for values in groups.values():
            if len(values) > 1:
                values.sort(key=value_key)
    if reducers == 1 and combiner is None:
        return [(list(groups), list(groups.values()))]
    parts: list[Columns] = [([], []) for _ in range(reducers)]
    choose = _chooser(job, reducers)
    hashed = choose is _NO_CHOOSER  # the common case, inlined: stable_hash's str branch
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


def _partition_flat(job: Job, flat: FlatPairs, reducers: int) -> list[Columns]:
    """:func:`finish_map` of flat pairs, in one pass that checks each pair (as
    :func:`map_grouped` does), partitions it and appends it: segments ``(keys, values,
    True)``, True saying that each value is one value, not a key's list
    (:func:`merge_segments`)."""
    kparts: list[list] = [[] for _ in range(reducers)]
    vparts: list[list] = [[] for _ in range(reducers)]
    choose = _chooser(job, reducers)
    hashed = choose is _NO_CHOOSER  # (else ranges, the job's partition, or one reducer)
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


def _NO_CHOOSER(key: Any) -> int:  # (a marker: partition by the key's stable hash)
    raise AssertionError("not called")


def _chooser(job: Job, reducers: int) -> Any:
    """The partition of a key: a ``total_order`` job's by its key range, else the job's
    own ``partition``, else ``_NO_CHOOSER`` (by stable hash, which callers inline)."""
    bounds = range_bounds(job)
    if bounds is not None:
        last = reducers - 1

        def by_range(k: Any) -> int:
            try:
                p = bisect_left(bounds, k)
            except TypeError as exc:
                raise BadOutput(f"{type(job).__name__} has total_order but its map yielded "
                                f"the key {k!r:.80} ({type(k).__name__}), which does not "
                                f"compare with the sampled keys ({exc})") from None
            return last if p > last else p  # (cut for the job's reducers; never more)

        return by_range
    if type(job).partition is not Job.partition:
        custom = job.partition

        def by_custom(k: Any) -> int:
            p = custom(k, reducers)
            if type(p) is not int or not 0 <= p < reducers:
                raise ValueError(f"partition({k!r}, {reducers}) returned {p!r}, "
                                 "not an int in range")
            return p

        return by_custom
    if reducers == 1:
        return lambda k: 0
    return _NO_CHOOSER


def merge_segments(segments: Iterable[Columns], combined: bool) -> Groups:
    """Merge one partition's segments (in map-task order) into one group per key.

    ``combined``: the segments hold one combined value per key, not lists of values.
    """
    groups: Groups = defaultdict(list)  # a missing key costs C code, not a branch
    for segment in segments:
        keys, values = segment[0], segment[1]
        if combined or len(segment) > 2:  # one value per pair (flat pairs: finish_map)
            for k, v in zip(keys, values):
                groups[k].append(v)
        else:
            for k, vs in zip(keys, values):
                groups[k].extend(vs)
    return groups


def reduce_groups(job: Job, groups: Groups) -> Columns:
    """Run ``reduce`` on every group; keys come out sorted where they are comparable.

    An emitting ``reduce`` (a generator) gives the pairs it yields, in that order; the
    ``reduce_init``/``reduce_final`` hooks run around the task's keys. With ``value_key``
    each key's values are sorted by it first: the map tasks sent sorted runs, in map-task
    order, so the (stable) sort merges runs and ties keep input order. A ``total_order``
    job's keys must compare (BadOutput), and without ``reduce`` it emits each value with
    its key."""
    try:
        keys = sorted(groups)
    except TypeError as exc:
        if is_total_order(job):
            raise BadOutput(f"{type(job).__name__} has total_order but its keys do not "
                            f"compare with each other: {exc}") from None
        keys = list(groups)  # mixed key types: keep first-seen order
    if job._has("value_key"):
        value_key = job.value_key
        for k in keys:
            values = groups[k]
            if len(values) > 1:
                values.sort(key=value_key)
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
        for k in keys:
            for pair in reducer(k, groups[k]):
                if type(pair) is not tuple or len(pair) != 2:
                    pair = as_pair(job, "reduce", pair)
                out_keys.append(pair[0])
                out_values.append(pair[1])
    else:
        out_keys, out_values = keys, [reducer(k, groups[k]) for k in keys]
    for pair in _hook(job, "reduce_final"):
        ok, ov = as_pair(job, "reduce_final", pair)
        out_keys.append(ok)
        out_values.append(ov)
    return out_keys, out_values


MAX_STEPS = 200  # steps of one multi-step job


def job_steps(job: Job) -> list[Job] | None:
    """The steps of a multi-step job (validated), or None for a job of one step."""
    steps = job.steps()
    if steps is None:
        return None
    steps = list(steps)
    if not 0 < len(steps) <= MAX_STEPS or not all(isinstance(s, Job) for s in steps):
        raise TypeError(f"{type(job).__name__}.steps() must return 1 to {MAX_STEPS} "
                        "pymapreduce.Job instances")
    return steps


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

