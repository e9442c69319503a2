"""``pymapreduce run mr_job_file.py [OPTIONS] INPUTS``: an mrjob job from the shell.

pymapreduce's own options (``--connect``, ``--workers``, ``--reducers``, ``--output``,
``--overwrite``, ``--timeout``, ``--keys``, ``--key-name``) come from this parser; everything else is the
job's command line, parsed by the job itself as mrjob parses it (input paths, its
passthrough and file options, ``--files``, ``--jobconf``...). The output is mrjob's:
protocol-encoded lines, to stdout or ``--output DIR/part-00000`` (then ``DIR/_SUCCESS``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import Any

from ...cli_output import embedded_where
from ...errors import PyMapReduceError


def mrjob_command(argv: list[str]) -> argparse.Namespace | None:
    """When ``argv`` is ``run FILE.py ...`` (or ``run FILE.py:Class ...``) and the file is
    an mrjob job, the parsed command for ``cli.main`` to run; else None. Only the file's
    text is read here (it names mrjob); the module is loaded when the command runs."""
    if len(argv) < 2 or argv[0] != "run":
        return None
    target, _, attr = argv[1].partition(":")
    if not target.endswith(".py") or not os.path.isfile(target):
        return None
    try:
        with open(target, "rb") as f:
            text = f.read()
    except OSError:
        return None
    if b"mrjob" not in text or (attr and b"MRJob" not in text):
        return None
    return argparse.Namespace(func=lambda _args: run_command(target, attr, argv))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pymapreduce run MR_JOB.py", allow_abbrev=False,
                                add_help=False)
    p.add_argument("--connect", help="a broker's address (default: an embedded cluster)")
    p.add_argument("--workers", type=int, help="embedded cluster size (default: cores)")
    p.add_argument("--reducers", type=int, help="reduce partitions (default: one per worker)")
    p.add_argument("--output", help="directory for the output file part-00000, then "
                   "_SUCCESS (default: stdout)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --output directory that is not empty")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.add_argument("--keys", metavar="DIR", help="CURVE key directory")
    p.add_argument("--key-name", default="client", help="this side's keypair in DIR")
    return p


def load_mrjob_class(target: str, attr: str) -> type:
    """The MRJob subclass in ``target`` (named ``attr``, or the only one defined there).
    The module is pickled by value, so workers need not have the file."""
    import cloudpickle

    try:
        from mrjob.job import MRJob
    except ImportError as exc:
        raise PyMapReduceError(f"{target} is an mrjob job, and mrjob cannot be imported "
                               f"here ({exc}): pip install mrjob") from None

    name = os.path.splitext(os.path.basename(target))[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(target)))  # as `python FILE.py`
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    cloudpickle.register_pickle_by_value(module)
    spec.loader.exec_module(module)
    if attr:
        cls = getattr(module, attr, None)
        if cls is None:
            raise PyMapReduceError(f"{target} defines no {attr!r}")
        return cls
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, MRJob) and v.__module__ == name]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise PyMapReduceError(f"{target} must define one MRJob subclass (found: {names}); "
                               f"name one as {target}:Class")
    return found[0]


def run_command(target: str, attr: str, argv: list[str]) -> int:
    """Run the mrjob job of ``target`` as ``pymapreduce run`` was asked to."""
    from ...local import LocalCluster

    options, rest = _parser().parse_known_args(argv[2:])
    if "-h" in rest or "--help" in rest:  # pymapreduce's options, then the job's own
        return _help(target, attr, rest)
    out_dir = options.output
    if out_dir and os.path.isdir(out_dir) and os.listdir(out_dir) and not options.overwrite:
        raise PyMapReduceError(f"--output {out_dir!r} exists and is not empty (as Hadoop "
                               "and mrjob, pymapreduce will not mix outputs); pass "
                               "--overwrite to replace its part files")
    if out_dir and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PyMapReduceError(f"--output {out_dir!r} exists and is not a directory")
    cluster = None
    if options.connect is None:
        # the embedded cluster sets off first: its broker and worker supervisor start
        # while this process imports the job's module (mrjob's own import is most of the
        # command's fixed cost), the supervisor importing mrjob and the adapter's steps
        # as well, before it forks the worker processes (so not each of them)
        cluster = LocalCluster(workers=options.workers, keys=options.keys,
                               preload=("pymapreduce.adapters.mrjob.steps", "mrjob.job"))
        cluster.launch()
    try:
        return _run_loaded(target, attr, argv, options, rest, cluster)
    finally:
        if cluster is not None:
            cluster.close()


def _help(target: str, attr: str, rest: list[str]) -> int:
    """``--help``: the options pymapreduce reads, then the job's (mrjob prints them)."""
    from . import prepare

    ours = _parser()
    ours.usage = argparse.SUPPRESS
    print("usage: pymapreduce run MR_JOB.py [pymapreduce's options] [the job's options] "
          "INPUT...\n\npymapreduce's " + ours.format_help().strip() + "\n\nThe job's "
          "own options follow (mrjob's parser; its runner options, -r and -c among them, "
          "are read and ignored: pymapreduce is the runner).\n", flush=True)
    cls = load_mrjob_class(target, attr)
    try:
        prepare(cls, rest)  # (mrjob prints its help and exits)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def _run_loaded(target: str, attr: str, argv: list[str], options: argparse.Namespace,
                rest: list[str], cluster: Any) -> int:
    from . import _run_on, prepare

    cls = load_mrjob_class(target, attr)
    from mrjob.job import MRJob

    if not (isinstance(cls, type) and issubclass(cls, MRJob)):  # a pymapreduce Job after all
        from ...cli import build_parser

        if cluster is not None:
            cluster.close()  # (the command starts its own, with its own options)
        args = build_parser().parse_args(argv)
        return args.func(args)
    job, plan, inputs = prepare(cls, rest)
    started = time.monotonic()
    out_dir = options.output
    location = None
    if out_dir:  # written under a hidden name, renamed when the job has succeeded
        from ...store.commit import begin_commit
        from ...store.output import Location

        os.makedirs(out_dir, exist_ok=True)
        location = Location(os.path.abspath(out_dir))
        begin_commit(location)  # (an earlier run's _SUCCESS: gone before anything else)
        part = os.path.join(out_dir, "part-00000")
        partial = os.path.join(out_dir, ".part-00000.partial")
        out = open(partial, "wb")
    else:
        out = sys.stdout.buffer
    done = None
    try:
        address = options.connect
        where = ""
        if cluster is not None:
            address = cluster.start().address
            where = embedded_where(cluster.workers)
        done = _run_on(address, job, plan, inputs, reducers=options.reducers,
                       timeout=options.timeout, keys=options.keys, key_name=options.key_name,
                       write=out.write, where=where,
                       say=lambda text: print(f"pymapreduce: {text}", file=sys.stderr,
                                              flush=True))
        out.flush()
    finally:
        if out is not sys.stdout.buffer:
            out.close()
            if done is not None:
                os.replace(partial, part)
            else:
                os.unlink(partial)
    if location is not None:  # as pymapreduce's own --output: _SUCCESS last
        from ...store.commit import end_commit

        end_commit(location, 1)
    print(f"pymapreduce: {cls.__name__} ran as job {done.job_id} in "
          f"{time.monotonic() - started:.2f}s", file=sys.stderr)
    for group, names in sorted(done.counters.items()):
        print(f"  {group}", file=sys.stderr)
        for name, n in sorted(names.items()):
            print(f"    {name}={n}", file=sys.stderr)
    return 0
