"""``pymapreduce run``: the job a command line names (FILE.py:Class, module:Class or FILE.py, with
``-p name=value`` parameters), its inputs, and running it on an embedded cluster or a
broker with progress on stderr and the output on stdout or in part files."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import time

from .cli_output import cancel_unwatched, embedded_where, print_limit, print_pairs
from .errors import JobTimeout, PyMapReduceError
from .patterns import config as timing
from .progress import progress_period, summary_lines, watch


def load_job_class(spec: str):
    """``path/to/file.py:ClassName`` or ``package.module:ClassName`` -> the class; a bare
    ``path/to/file.py`` -> the one Job subclass that file defines (as ``run mr_job.py``
    finds an mrjob file's one MRJob).

    A missing file, module or class is a PyMapReduceError (one line, exit 2) that names the
    jobs the module does define; an error raised by the module's own code while it is
    imported keeps its traceback."""
    target, colon, attr = spec.rpartition(":")
    if not colon and spec.endswith(".py"):
        target, attr = spec, ""  # FILE.py alone: its only job
    elif not target or not attr:
        raise PyMapReduceError(f"job {spec!r} is not of the form FILE.py:Class or module:Class")
    if target.endswith(".py") or os.sep in target:
        if not os.path.isfile(target):
            raise PyMapReduceError(f"job file {target!r} does not exist")
        name = os.path.splitext(os.path.basename(target))[0]
        # as `python FILE.py` would: modules beside the job file are importable
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        module_spec = importlib.util.spec_from_file_location(name, target)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        import cloudpickle

        # the workers need not have the file; and registered before it runs, a job it runs
        # at import (no `if __name__ == "__main__":`) does not make the workers import it
        cloudpickle.register_pickle_by_value(module)
        _import_job_module(target, lambda: module_spec.loader.exec_module(module))
    else:
        # as `python -m pymapreduce` has it: modules in the current directory import (the
        # console script's sys.path starts with its own bin directory instead)
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = _import_job_module(target, lambda: importlib.import_module(target))
    jobs = _jobs_defined(module)
    names = ", ".join(cls.__name__ for cls in jobs)
    if not attr:
        if len(jobs) == 1:
            return jobs[0]
        if not jobs:
            raise PyMapReduceError(f"{target} defines no pymapreduce.Job subclass")
        raise PyMapReduceError(f"{target} defines {len(jobs)} jobs ({names}): name one, as "
                               f"{target}:{jobs[0].__name__}")
    try:
        return getattr(module, attr)
    except AttributeError:
        known = f"its jobs: {names}" if jobs else "and no pymapreduce.Job subclass"
        raise PyMapReduceError(f"{target} defines no {attr!r} ({known})") from None


def _jobs_defined(module) -> list[type]:
    """The Job subclasses ``module`` itself defines (not those it imports), in order."""
    from .job import Job

    return [value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Job) and value is not Job
            and value.__module__ == module.__name__]


def _import_job_module(target: str, load):
    """``load()``, with a missing module or a syntax error as one clear line."""
    try:
        return load()
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise PyMapReduceError(f"no module named {target!r} (looked in the current "
                                   "directory and on sys.path; for a file elsewhere, give "
                                   "FILE.py:Class)") from None
        raise PyMapReduceError(f"importing {target}: {exc} (is it installed here?)") from None
    except SyntaxError as exc:
        raise PyMapReduceError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None


def job_params(pairs: list[str] | None) -> dict:
    """``-p name=value`` options as constructor keyword arguments: a value that parses as
    a Python literal (``ast.literal_eval``: numbers, strings in quotes, lists, dicts, True,
    None...) is that value, anything else is the string as typed."""
    params: dict = {}
    for pair in pairs or ():
        name, eq, text = pair.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise PyMapReduceError(f"-p {pair!r}: give a parameter as name=value")
        if name in params:
            raise PyMapReduceError(f"-p {name}: given twice")
        try:
            params[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            params[name] = text
    return params


def make_job(spec: str, pairs: list[str] | None = None):
    """The job ``spec`` names, built with the ``-p`` parameters; a class that is not a
    Job, or parameters its constructor does not take, are one clear line."""
    from .job import Job

    cls = load_job_class(spec)
    params = job_params(pairs)
    if not (isinstance(cls, type) and issubclass(cls, Job)):
        raise PyMapReduceError(f"{spec} is not a pymapreduce.Job subclass")
    try:
        signature = inspect.signature(cls)
        signature.bind(**params)
    except TypeError as exc:
        given = ", ".join(params) or "none"
        # the parameters as -p names them: no annotations (`nodes: 'int'`, `-> 'None'`)
        bare = signature.replace(return_annotation=inspect.Signature.empty, parameters=[
            p.replace(annotation=inspect.Parameter.empty)
            for p in signature.parameters.values()])
        raise PyMapReduceError(f"{cls.__name__}{bare}: {exc} (parameters given with -p "
                               f"name=value: {given})") from None
    except ValueError:  # no signature to check (a C-level constructor): let it say
        pass
    return cls(**params)


def job_inputs(job, paths: list[str], **options):
    """The input of ``pymapreduce run``: the files named, as ``read_text(paths, **options)``
    reads them, unless the job says how its files are read with a method
    ``read_inputs(self, paths, **options)`` returning ``read_text(..., with_path=True)``,
    ``read_files(...)``, ``read_csv(...)`` or ``read_jsonl(...)`` (Hadoop's input format).
    ``options``: the command line's ``split_bytes``, ``encoding`` and ``max_line_bytes``."""
    from .inputs import TextInput, read_text

    reader = getattr(job, "read_inputs", None)
    if reader is None:
        return read_text(paths, **options)
    inputs = reader(list(paths), **options)
    if not isinstance(inputs, TextInput):
        raise PyMapReduceError(f"{type(job).__name__}.read_inputs() returned "
                               f"{type(inputs).__name__}, not the result of read_text(), "
                               "read_files(), read_csv() or read_jsonl()")
    return inputs


def cmd_run(args: argparse.Namespace) -> int:
    """Run the job over the input files; the output pairs on stdout or in --output."""
    from .cli import EXIT_OK, EXIT_TIMEOUT  # (cli imports this module)
    from .client import Client
    from .local import LocalCluster
    from .shipping import gather_files
    from .store.commit import prepare_output
    from .store.urls import is_url

    job = make_job(args.job, args.param)
    inputs = job_inputs(job, args.inputs, split_bytes=args.split_bytes,
                        encoding=args.encoding, max_line_bytes=args.max_line_bytes)
    inputs.files()  # a path that matches nothing fails here, before any process starts
    if args.output is not None:  # so does an output that cannot be written, or is taken
        prepare_output(args.output, overwrite=args.overwrite)  # (a path, or a URL)
    elif args.overwrite:
        raise PyMapReduceError("--overwrite replaces the part files in --output DIR; give "
                               "--output too, or leave --overwrite out")
    gather_files(job, args.file)  # as does a missing --file (read again at submit)
    period = progress_period(args.progress_every)  # and a bad progress period
    memory = getattr(args, "memory", None)
    if memory is not None and args.connect is not None:
        raise PyMapReduceError("--memory sets the embedded cluster's workers; the workers of "
                               "the broker at --connect have their own (worker --memory)")
    cluster = None
    started = time.monotonic()
    try:
        address = args.connect
        if address is None:
            cluster = LocalCluster(workers=args.workers, keys=args.keys,
                                   heartbeat_interval=args.heartbeat,
                                   liveness=args.liveness, memory=memory,
                                   task_stdout="stderr").start()  # stdout: the pairs
            address = cluster.address
        # (a broker at --connect that does not answer is given up after --timeout too, when
        # it is shorter than a request's usual wait; an embedded one is this command's own)
        limit = (timing.REQUEST_TIMEOUT if args.timeout is None or cluster is not None
                 else max(0.1, min(timing.REQUEST_TIMEOUT, args.timeout)))
        with Client(address, keys=args.keys, key_name=args.key_name, timeout=limit) as client:
            # a total-order job's map runs on a sample here, in this process: what it prints
            # goes to stderr, as its tasks' prints do, so stdout holds the pairs only
            with contextlib.redirect_stdout(sys.stderr):
                handle = client.submit(job, inputs, map_tasks=None, reducers=args.reducers,
                                       output_dir=args.output, priority=args.priority,
                                       # the reducers write the part files; a local
                                       # --output may not be shared with a cluster's
                                       # workers: the data then comes home, as before
                                       results=args.output is None or (
                                           cluster is None and not is_url(args.output)),
                                       requires=set(args.require or ()) or None,
                                       files=args.file)
            where = (f"submitted to {address}" if cluster is None else
                     embedded_where(cluster.workers))
            try:  # (a Ctrl-C just after the job's id is said cancels it too)
                print(f"pymapreduce: job {handle.job_id} {where}", file=sys.stderr)
                status = watch(handle, timeout=args.timeout, stream=sys.stderr,
                               period=period, started=started)
            except (KeyboardInterrupt, JobTimeout) as exc:
                if isinstance(exc, JobTimeout):
                    print(f"pymapreduce: {exc}", file=sys.stderr)
                # cancelled (on an embedded cluster too, which then stops): what its
                # attempts wrote to --output goes with it (docs/store.md)
                cancel_unwatched(handle, None if cluster is not None else lambda text: print(
                    f"pymapreduce: {text}", file=sys.stderr))
                if isinstance(exc, JobTimeout):
                    return EXIT_TIMEOUT
                raise
            if args.output is None:
                print_pairs(handle.results(), limit=print_limit(args.limit, sys.stdout))
            handle.release()  # (its outputs; `status` still lists it until the result TTL)
    finally:
        if cluster is not None:
            cluster.close()
    # after the pairs, so that it is the last thing said (time, records, bytes, counters)
    for line in summary_lines(status, wall=time.monotonic() - started, output=args.output):
        print(line, file=sys.stderr)
    return EXIT_OK
