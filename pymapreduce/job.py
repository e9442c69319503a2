"""The Job base class and the pure MapReduce kernels (no sockets, no processes).

Workers run these kernels; tests and benchmarks run :func:`run_sequential`, the reference
whose result every distributed run must equal.
"""

from __future__ import annotations

import contextlib
import inspect
import operator
import struct
import zlib
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, JobTimeout, PyMapReduceError, holding_value, short_repr
from .ordering import (  # noqa: F401 - task_steps: for the workers
    as_pair,
    combiner_of,
    group_key,
    is_total_order,
    range_bounds,
    task_steps,
)

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
    # a subclass of str, int or float is one dict key with the equal plain value (a
    # numpy.str_ and the str it equals, in one reduce group): hashed as that value, or
    # equal keys from two map tasks would reach two reducers (found by a red team)
    if isinstance(key, str):
        return zlib.crc32(str.encode(key, "utf-8", "surrogatepass"))
    if isinstance(key, int):  # (int's own hash: an IntEnum's is its name's, salted)
        return int.__hash__(key) & 0xFFFFFFFFFFFFFFFF
    if isinstance(key, float):
        return float.__hash__(key) & 0xFFFFFFFFFFFFFFFF
    # other types: their encoding, which must not depend on the process (true of
    # msgpack types and of objects whose pickle does not embed a set's order)
    return zlib.crc32(pack(key))


def pack(value: Any) -> bytes:
    """The record codec's ``pack`` (patterns/records.py), imported at the first key that
    needs it, which rebinds this module's ``pack`` to it: a module that only defines a
    job does not load msgpack and the codec's extension types, and a worker's later
    calls of :func:`stable_hash` go straight to the codec."""
    from .patterns.records import pack as codec_pack

    globals()["pack"] = codec_pack
    return codec_pack(value)


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
            what = f"counter names are str, got {type(name).__name__}"
            raise holding_value(TypeError(f"{what} {short_repr(name)}"), what, name,
                                "the counter name")
        name = str(name)  # a str subclass travels as a plain str
        if not 0 < len(name) <= MAX_COUNTER_NAME:
            shown = repr(name) if len(name) <= 60 else repr(name[:60])[:-1] + "...'"
            raise ValueError(f"counter name {shown} must have 1 to {MAX_COUNTER_NAME} "
                             f"characters, not {len(name)}")
        try:  # an int, a bool (True adds 1) or an integer type of a library (numpy.int64)
            n = operator.index(n)
        except TypeError:
            what = f"count({name!r}, n): n must be an int, got {type(n).__name__}"
            raise holding_value(TypeError(f"{what} {short_repr(n)}"), what, n,
                                "count's n") from None
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
        storage_options: dict | None = None,
        results: bool = True,
        memory: int | str | None = None,
    ) -> Any:
        """Run the job and return its result (a dict; a list of pairs for a map-only job).

        With no ``address`` an embedded :class:`~pymapreduce.LocalCluster` with ``workers``
        processes (default: one per core) is started for this run and torn down after it,
        whatever happens; ``heartbeat_interval`` and ``liveness`` configure its broker as
        the daemon's ``--heartbeat`` and ``--liveness`` do (a cluster at ``address`` has
        its own, so they are refused with it). ``output_dir``: also write the output there
        as ``part-NNNNN`` files; a path that cannot be written fails before the job runs,
        and ``overwrite=False`` refuses a directory that is not empty (default: replace
        the part files of an earlier run). The reducers write the part files themselves;
        ``output_dir`` may be a URL (``s3://bucket/out``, ``storage_options`` for it) and
        with ``results=False`` nothing of the output comes back: ``run`` returns the
        job's final status instead of its result (docs/store.md). ``files``: side files shipped with the
        job, as for :meth:`Client.submit <pymapreduce.Client.submit>`. ``progress=True``:
        draw a progress bar per phase while the job runs (:meth:`JobHandle.progress
        <pymapreduce.client.handle.JobHandle.progress>`; a terminal or a notebook); off by
        default, so a plain call prints nothing. ``dashboard``:
        the embedded broker serves its HTTP API (docs/observability.md), its URL printed
        on stderr. ``memory``: each embedded worker process's memory budget (bytes, or a
        size such as ``"256MB"``): past it, tasks spill to disk (docs/memory.md).
        A ``timeout`` that passes (JobTimeout) or Ctrl-C cancels the job, which this call
        alone knew of, and removes what its attempts wrote to ``output_dir``.
        """
        import sys as _sys

        from .client import Client
        from .client.submit import pickle_job
        from .inputs import TextInput
        from .local import LocalCluster
        from .shipping import gather_files

        cluster_options = {k: v for k, v in (("heartbeat_interval", heartbeat_interval),
                                             ("liveness", liveness),
                                             ("http", True if dashboard else None),
                                             ("memory", memory))
                           if v is not None}
        if address is not None and cluster_options:
            raise ConfigError(f"{', '.join(cluster_options)}: settings of the embedded "
                              "cluster; the broker at address= has its own (--heartbeat, "
                              "--liveness; its workers' --memory)")
        if results is not True and output_dir is None:
            raise ConfigError("results=False needs output_dir=: the output would go nowhere")
        if address is None:  # what would fail at submit fails before a cluster starts
            pickle_job(self)
            if isinstance(inputs, TextInput):
                inputs.files()
            if output_dir is not None:
                from .store.commit import prepare_output

                prepare_output(output_dir, overwrite=overwrite, storage=storage_options)
            gather_files(self, files)
        if address is not None:
            with Client(address, keys=keys) as client:
                handle = client.submit(
                    self, inputs, map_tasks=map_tasks, reducers=reducers, output_dir=output_dir,
                    overwrite=overwrite, files=files, storage_options=storage_options,
                    results=results)
                try:
                    if progress:
                        handle.progress(timeout=timeout)
                    if output_dir is not None and results is False:
                        return handle.wait(timeout=timeout)
                    return handle.result(timeout=timeout)
                except (JobTimeout, KeyboardInterrupt):
                    # no one else has its handle: don't leave it running unseen, nor its
                    # attempts' files in the output directory (docs/store.md)
                    with contextlib.suppress(PyMapReduceError):
                        handle.cancel()
                    raise
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
                storage_options=storage_options,
                results=results,
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


def emits(job: Job) -> bool:
    """Whether the job's ``reduce`` is a generator: it yields pairs instead of returning
    one value per key, and the result is a list of pairs. A ``total_order`` job without
    ``reduce`` emits each value with its key (a sort)."""
    reduce = getattr(type(job), "reduce", None)
    if reduce is None:
        return is_total_order(job)
    return inspect.isgeneratorfunction(reduce)


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
