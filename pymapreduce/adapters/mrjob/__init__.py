"""Run mrjob's ``MRJob`` subclasses, unchanged, on pymapreduce.

From Python::

    from pymapreduce.adapters import mrjob as pmr_mrjob
    from mrjob.examples.mr_word_freq_count import MRWordFreqCount

    run = pmr_mrjob.run(MRWordFreqCount, ["input.txt"])
    run.output          # bytes: what mrjob's inline runner writes, line for line
    run.counters        # {group: {counter: n}}, as mrjob's runner.counters() (summed)
    list(run.pairs())   # the lines read back through the job's OUTPUT_PROTOCOL

From the shell: ``pymapreduce run mr_job_file.py [JOB OPTIONS] INPUTS``. See docs/mrjob.md
for what is supported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ...job import Job
from .plan import Plan, make_plan


def _stdlib_distutils() -> None:
    """mrjob imports ``distutils`` (``find_executable``, ``LooseVersion``). Where
    setuptools is installed, its start-up hook makes that import load all of setuptools
    and ``pkg_resources`` to provide its own copy: 0.2-0.4 s, most of ``import mrjob.job``
    and so of a short mrjob job's run (the client, and the worker supervisor that imports
    mrjob before it forks the workers, each pay it). Python before 3.12 ships
    ``distutils``, with the same two functions: it is loaded here instead, before mrjob
    asks (docs/mrjob.md). Nothing is done if ``distutils`` is already loaded, on Python
    3.12 and later (no ``distutils`` of its own), or without setuptools' hook."""
    import sys

    if sys.version_info >= (3, 12) or "distutils" in sys.modules:
        return
    if not any(type(f).__name__ == "DistutilsMetaFinder" for f in sys.meta_path):
        return
    import importlib.machinery
    import importlib.util
    import sysconfig
    import warnings

    spec = importlib.machinery.PathFinder.find_spec("distutils",
                                                    [sysconfig.get_paths()["stdlib"]])
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["distutils"] = module
    try:
        with warnings.catch_warnings():  # (its deprecation notice is not the user's)
            warnings.simplefilter("ignore", DeprecationWarning)
            spec.loader.exec_module(module)
    except Exception:  # then mrjob gets setuptools' copy, as without this
        del sys.modules["distutils"]


_stdlib_distutils()  # (before anything here imports mrjob)

__all__ = ["MRJobRun", "PyMapReduceRunner", "as_job", "make_runner", "output_chunks", "prepare",
           "run"]


class MRJobAdapter(Job):
    """A multi-step pymapreduce job made of an MRJob's steps."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def steps(self) -> list[Job]:
        return [_step_job(self.plan, n) for n in range(len(self.plan.steps))]


def _step_job(plan: Plan, n: int) -> Job:
    from .steps import MRJobMap, MRJobStep

    return MRJobStep(plan, n) if plan.steps[n]["reducer"] else MRJobMap(plan, n)


def prepare(job_class: type, argv: list[str]) -> tuple:
    """``(MRJob instance, plan, pymapreduce inputs)`` for ``job_class`` run with the
    command line ``argv`` (input paths, and the job's own options: passthrough and file
    options, ``--files``, ``--jobconf``...), parsed by the job as mrjob parses it."""
    from ... import read_text
    from ...errors import ConfigError, InputError

    try:
        job = job_class(list(argv))
    except ValueError as exc:  # mrjob's argument errors, raised rather than printed
        raise ConfigError(f"{job_class.__name__}: {exc}") from None
    inputs = list(job.options.args)
    if not inputs or "-" in inputs:
        raise InputError("an mrjob job run by pymapreduce needs input paths (reading "
                         "stdin, '-', is not supported)")
    plan = make_plan(job, inputs)
    text = read_text(inputs, encoding="latin-1", with_path=True)  # latin-1: the bytes, 1:1
    files = text.files()
    if plan.steps[0]["source"] == "raw":  # mapper_raw: one task per file, (path, uri)
        return job, plan, [(path, path) for path in files]
    return job, plan, text


def as_job(plan: Plan) -> Job:
    """The pymapreduce job that runs ``plan`` (a single step runs as itself)."""
    return _step_job(plan, 0) if len(plan.steps) == 1 else MRJobAdapter(plan)


def output_chunks(plan: Plan, pairs: Iterable[tuple[Any, bytes]]) -> Iterator[bytes]:
    """The job's output bytes from its last step's output pairs, in mrjob's order: a
    map-only last step's as they come (input order); a reducer's by reduce key (the key's
    bytes, as mrjob's sort), what ``reducer_init``/``reducer_final`` wrote last. Each
    partition arrives sorted, so the sort is a merge of runs."""
    if not plan.steps[-1]["reducer"]:
        for _, chunk in pairs:
            yield chunk
        return
    out = list(pairs)
    out.sort(key=_output_order)
    for _, chunk in out:
        yield chunk


def _output_order(pair: tuple) -> tuple:
    key = pair[0]
    return (True, b"") if key is None else (False, key)


@dataclass
class MRJobRun:
    """What :func:`run` returns: the output bytes, counters, and the job's identity."""

    job: Any  # the MRJob instance made from the arguments
    output: bytes
    counters: dict = field(default_factory=dict)  # {group: {counter: total}}
    job_id: str = ""

    def pairs(self) -> Iterator[tuple[Any, Any]]:
        """The output lines read back through the job's output protocol (mrjob's
        ``parse_output``)."""
        return self.job.parse_output([self.output])


def run(job_class: type, inputs: Iterable[str] | str, args: Iterable[str] = (), *,
        address: str | None = None, workers: int | None = None,
        reducers: int | None = None, timeout: float | None = None,
        keys: str | None = None) -> MRJobRun:
    """Run the ``MRJob`` subclass ``job_class`` over the files ``inputs`` on pymapreduce:
    on the cluster at ``address``, or on an embedded one with ``workers`` processes.

    ``args`` are the job's own command-line options (``['--sample-size', '10']``).
    Raises :class:`~pymapreduce.JobFailed` if a task fails for good (its message names
    the user's exception), :class:`~pymapreduce.ConfigError` for what the adapter does
    not run (Hadoop streaming commands, Spark and jar steps, ARCHIVES).
    """
    from ...local import LocalCluster

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    job, plan, inputs_ = prepare(job_class, [*args, *map(os.fspath, inputs)])
    if address is not None:
        return _run_on(address, job, plan, inputs_, reducers=reducers, timeout=timeout,
                       keys=keys)
    from . import steps  # noqa: F401  (imported before the workers fork: not by each)

    with LocalCluster(workers=workers, keys=keys) as cluster:
        return _run_on(cluster.address, job, plan, inputs_, reducers=reducers,
                       timeout=timeout, keys=keys)


def _run_on(address: str, job: Any, plan: Plan, inputs: Any, *, reducers: int | None,
            timeout: float | None, keys: str | None, key_name: str = "client",
            write: Any = None, say: Callable[[str], None] | None = None,
            where: str = "") -> MRJobRun:
    """Run on the cluster at ``address``; with ``write``, the output goes to it chunk by
    chunk (as it arrives, for a map-only last step) instead of into ``MRJobRun.output``.

    A job this call stops waiting for (Ctrl-C, ``timeout``) is cancelled, so that it
    does not go on unwatched on a shared broker. ``say``: how the command tells its user
    the job's id once submitted (``where`` it runs) and that it was cancelled."""
    from ...cli_output import cancel_unwatched
    from ...client import Client
    from ...errors import JobTimeout
    from .task import counters_by_group

    map_tasks = len(inputs) if isinstance(inputs, list) else None
    with Client(address, keys=keys, key_name=key_name) as client:
        handle = client.submit(as_job(plan), inputs, map_tasks=map_tasks, reducers=reducers,
                               name=type(job).__name__)
        try:
            if say is not None:
                say(f"job {handle.job_id} {where or f'submitted to {address}'}")
            handle.wait(timeout)
            chunks = output_chunks(plan, handle.results())
            if write is None:
                output = b"".join(chunks)
            else:
                output = b""
                for chunk in chunks:
                    write(chunk)
        except (KeyboardInterrupt, JobTimeout):
            cancel_unwatched(handle, say if not where else None)  # (embedded: it stops too)
            raise
        counters = counters_by_group(handle.counters)
        handle.release()
    return MRJobRun(job=job, output=output, counters=counters, job_id=handle.job_id)


class PyMapReduceRunner:
    """A stand-in for ``mr_job.make_runner()``, so code written against mrjob's runner API
    runs the job on pymapreduce instead::

        mr_job = MRWordFreqCount(["input.txt"])
        with make_runner(mr_job) as runner:
            runner.run()
            for key, value in mr_job.parse_output(runner.cat_output()):
                ...

    ``counters()`` is mrjob's shape, a list with one dict for the job (pymapreduce sums a
    job's counters over its steps)."""

    def __init__(self, mr_job: Any, *, address: str | None = None, workers: int | None = None,
                 reducers: int | None = None, timeout: float | None = None,
                 keys: str | None = None) -> None:
        self.mr_job = mr_job
        self.options = dict(address=address, workers=workers, reducers=reducers,
                            timeout=timeout, keys=keys)
        self._done: MRJobRun | None = None

    def run(self) -> None:
        self._done = run(type(self.mr_job), [], list(self.mr_job._cl_args), **self.options)

    def cat_output(self) -> Iterator[bytes]:
        if self._done is None:
            raise ValueError("Run the job before streaming output")
        yield self._done.output

    def counters(self) -> list[dict]:
        return [self._done.counters] if self._done is not None else []

    def __enter__(self) -> PyMapReduceRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self._done = None


def make_runner(mr_job: Any, **options: Any) -> PyMapReduceRunner:
    """mrjob's ``mr_job.make_runner()``, running on pymapreduce (options as :func:`run`)."""
    return PyMapReduceRunner(mr_job, **options)
