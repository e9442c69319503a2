"""The ``pymapreduce`` command: run jobs, and the broker and worker daemons of a cluster."""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import re
import signal
import sys
import traceback

from .cli_errors import DEBUG_ENV, debug_from_env, report_error
from .cli_help import DESCRIPTION, EPILOG, version
from .cli_output import (  # noqa: F401 (print_listing: its old home)
    TERMINAL_LIMIT,
    print_job,
    print_listing,
    write_untrusted,
)
from .cli_sink import add_sink_parser
from .errors import (
    AddressInUse,
    AuthenticationFailed,
    BrokerUnavailable,
    ConfigError,
    JobFailed,
    JobTimeout,
    PyMapReduceError,
    StateError,
)
from .observe import cli as observe_cli
from .patterns.protocol import DEFAULT_CREDIT

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_ADDRESS_IN_USE = 4
EXIT_TIMEOUT = 5
EXIT_STATE = 6  # the broker's state directory is damaged or full: it will not start
EXIT_AUTH = 77  # the broker refused our key (also a worker daemon's exit code)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM to `pymapreduce run` (128 + 15, as a shell reports it)


class Terminated(KeyboardInterrupt):
    """SIGTERM to ``pymapreduce run`` (``kill PID``, a scheduler's time limit), raised where
    the command is, as Ctrl-C is: its job is cancelled and its embedded cluster stopped
    on the way out, instead of the job left running on a shared broker."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()

# The first matching class gives a failed command's exit code.
EXIT_CODES = (
    (JobFailed, EXIT_JOB_FAILED),
    (BrokerUnavailable, EXIT_UNAVAILABLE),
    (AddressInUse, EXIT_ADDRESS_IN_USE),
    (JobTimeout, EXIT_TIMEOUT),
    (AuthenticationFailed, EXIT_AUTH),
    (StateError, EXIT_STATE),
    (PyMapReduceError, EXIT_USAGE),
)


def cmd_broker(args: argparse.Namespace) -> int:
    """``pymapreduce broker``: cli_daemons.py, imported by the daemon commands only."""
    from .cli_daemons import cmd_broker

    return cmd_broker(args)


def cmd_worker(args: argparse.Namespace) -> int:
    """``pymapreduce worker``: cli_daemons.py, imported by the daemon commands only."""
    from .cli_daemons import cmd_worker

    return cmd_worker(args)


def _backup_after(text: str) -> float:
    if text.strip().lower() in ("off", "none", "never"):
        return float("inf")
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be a number of seconds or 'off'")
    return value


def cmd_status(args: argparse.Namespace) -> int:
    from .client import Client
    from .client.client import public_status

    with Client(args.connect, timeout=args.timeout, keys=args.keys,
                key_name=args.key_name) as client:
        if args.job_id:
            body = client.job(args.job_id).status()
            if args.json:
                print(json.dumps(body, indent=2, default=repr))
            else:
                shown = io.StringIO()
                print_job(body, shown)
                write_untrusted(shown.getvalue(), sys.stdout)
            return EXIT_OK
        listing = client._request("JOBS", {}).body
    jobs = [public_status(j) for j in listing["jobs"]]
    if args.json:
        print(json.dumps({"jobs": jobs, "workers": listing["workers"],
                          "sinks": listing.get("sinks") or []}, indent=2, default=repr))
        return EXIT_OK
    shown = io.StringIO()
    print_listing(jobs, listing["workers"], shown, listing.get("sinks"))
    write_untrusted(shown.getvalue(), sys.stdout)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """What a job's task attempts printed and logged (all tasks, or one: TASK)."""
    from .client import Client
    from .client.logs import fetch_logs

    if args.task is not None and not re.fullmatch(r"(map|reduce)-\d+", args.task):
        # (the broker would answer with no logs, which reads as "it printed nothing")
        raise ConfigError(f"no task {args.task!r}: tasks are named map-N and reduce-N "
                          "(map-0, reduce-3), as the log headers and `status` show them")
    with Client(args.connect, timeout=args.timeout, keys=args.keys,
                key_name=args.key_name) as client:
        logs = fetch_logs(client, args.job_id, args.task)
        if args.task is not None and not logs:
            # a task the job never had would read as "it printed nothing"
            status = client.job(args.job_id).status()
            check_task_exists(status, args.task)
    text = logs.text()
    if not text and args.task is not None and logs.attempts == 0:
        # nor would one that never ran (a reduce task of a job that failed in its maps)
        state = status.get("state")
        why = (f"the job {state} before it could run" if state in ("failed", "cancelled")
               else "no attempt of it has started yet")
        print(f"pymapreduce: no logs for task {args.task} of job {args.job_id}: it never "
              f"ran ({why})", file=sys.stderr)
        return EXIT_OK
    if not text:
        what = f"task {args.task} of job" if args.task else "job"
        print(f"pymapreduce: no logs for {what} {args.job_id} (its tasks printed and logged "
              "nothing, or their logs were not kept)", file=sys.stderr)
        return EXIT_OK
    write_untrusted(text, sys.stdout)
    return EXIT_OK


def check_task_exists(status: dict, task: str) -> None:
    """ConfigError when a one-step job's ``status`` has no task named ``task`` (``map-N``,
    ``reduce-N``): the names it has, or that it is map-only. (A multi-step job's steps
    have their own task counts: any name may be one of them.)"""
    step = status.get("step") or [1, 1]
    if step[-1] != 1:
        return
    kind, _, index = task.partition("-")
    count = (status.get("maps" if kind == "map" else "reduces") or [0, 0])[-1]
    if len(index) <= 18 and int(index) < count:  # (more digits: no job has that many)
        return
    job = status.get("job_id", "?")
    if not count:
        raise ConfigError(f"job {job} has no task {task}: it is a map-only job"
                          if kind == "reduce" else f"job {job} has no task {task}")
    names = f"task is {kind}-0" if count == 1 else f"tasks are {kind}-0 to {kind}-{count - 1}"
    raise ConfigError(f"job {job} has no task {task}: its {kind} {names}")


def cmd_cancel(args: argparse.Namespace) -> int:
    from .client import Client

    with Client(args.connect, timeout=args.timeout, keys=args.keys,
                key_name=args.key_name) as client:
        handle = client.job(args.job_id)
        before = handle.status()["state"]
        if before in ("succeeded", "failed", "cancelled"):
            print(f"job {args.job_id}: already {before}, nothing to cancel")
            return EXIT_OK
        handle.cancel()
        state = handle.status()["state"]
    print(f"job {args.job_id}: {state}")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from .patterns import security

    if args.action == "generate":
        public, secret = security.generate(args.dir, args.name)
        print(f"public key: {public}\nsecret key: {secret} (keep it on this host only)")
    elif args.action == "authorize":
        target = security.authorize(args.dir, args.role, args.key_file)
        article = "an" if args.role[0] in "aeiou" else "a"
        print(f"{args.key_file} may now connect as {article} {args.role}: {target} "
              "(a running broker picks it up within a second, or at once on SIGHUP)")
    else:
        security.cluster_keys(args.dir)
        print(f"broker, worker, client and sink keypairs in {args.dir}, worker, client and "
              "sink authorized")
    return EXIT_OK


class _GivenOnce(argparse.Action):
    """An option that may be given once: argparse keeps the last of two silently, and
    ``--output a --output b`` wrote to b only, where a user expected both or an error."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = getattr(namespace, self.dest, None)
        if given is not None:
            parser.error(f"{option_string} given twice ({given} and {values}): give it once")
        setattr(namespace, self.dest, values)


class _Version(argparse.Action):
    """``--version``: the version is looked up (importlib.metadata, ~15 ms) only when
    asked for, not each time a daemon parses its command line."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"pymapreduce {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pymapreduce", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version,
                        help="show the program's version number and exit")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of any error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands", help="one of:")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", default="INFO", metavar="LEVEL",
                       help="DEBUG, INFO, WARNING or ERROR (default INFO)")
        p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)

    def keys(p: argparse.ArgumentParser, name: str) -> None:
        p.add_argument("--keys", metavar="DIR",
                       help="CURVE key directory (see `pymapreduce keys`); without it, no "
                       "authentication")
        p.add_argument("--key-name", default=name,
                       help=f"this side's keypair in DIR (default {name})")

    def request(p: argparse.ArgumentParser) -> None:
        """The options of a command that asks a broker one thing (status, logs...)."""
        p.add_argument("--connect", required=True, metavar="ADDR",
                       help="the broker's address, e.g. tcp://HOST:5555")
        p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                       help="give up if the broker does not answer within this (default 5)")
        keys(p, "client")

    b = sub.add_parser("broker", help="run a cluster's broker daemon (it hands out tasks)")
    b.add_argument("--bind", default="tcp://127.0.0.1:5555", metavar="ADDR",
                   help="control address for clients and workers (default "
                   "tcp://127.0.0.1:5555; port 0: the OS picks)")
    b.add_argument("--data-bind", metavar="ADDR",
                   help="address for workers' task outputs (default: same host, any port)")
    b.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                   help="heartbeat interval (default 1)")
    b.add_argument("--liveness", type=float, default=5.0, metavar="SECONDS",
                   help="seconds of silence after which a worker is taken for dead")
    b.add_argument("--max-attempts", type=int, default=4, metavar="N",
                   help="attempts per task (default 4)")
    b.add_argument("--result-ttl", type=float, default=3600.0, metavar="SECONDS",
                   help="how long a finished job is kept: its outputs for its client to "
                        "fetch, its status for `pymapreduce status` (default 3600)")
    b.add_argument("--memory-budget-mb", type=float, default=1024,
                   help="task output held in memory before spilling to disk")
    b.add_argument("--spill-dir", metavar="DIR",
                   help="where outputs beyond the memory budget go (default: a temporary "
                        "directory)")
    b.add_argument("--backup-after", type=_backup_after, default=0.25, metavar="SECONDS",
                   help="backup tasks: a task still running this long (and twice its job's "
                        "mean) gets a second attempt on an idle worker; 'off' disables them "
                        "(default 0.25)")
    b.add_argument("--max-jobs", type=int, default=1000,
                   help="unfinished jobs held at once; more are refused (default 1000)")
    b.add_argument("--max-jobs-per-client", type=int, default=100,
                   help="unfinished jobs of one client key (without keys: one connection) "
                        "(default 100)")
    b.add_argument("--max-mb-per-client", type=float, default=2048,
                   help="MiB of job code and in-memory inputs one client's unfinished jobs "
                        "may hold in the broker (default 2048)")
    b.add_argument("--list-all-jobs", action="store_true",
                   help="listings (pymapreduce status) show every client's jobs; by default "
                        "a client key sees its own, an admin key (keys authorize DIR admin) "
                        "sees all")
    b.add_argument("--state-dir", metavar="DIR",
                   help="journal jobs and keep committed outputs here, so that a broker "
                        "restarted on the same DIR carries on its jobs (default: none; a "
                        "restart loses every job)")
    b.add_argument("--fsync", choices=["never", "commit"], default="never",
                   help="with --state-dir, what a power loss may take: 'never' fsyncs, so "
                        "the last seconds of commits and accepted jobs (a killed broker "
                        "loses nothing either way); 'commit' fsyncs each commit and output "
                        "file, so nothing acknowledged (default never)")
    b.add_argument("--insecure", action="store_true",
                   help="allow listening beyond loopback without authentication")
    b.add_argument("--max-message-mb", type=float, default=1024,
                   help="larger messages are refused (default 1024)")
    b.add_argument("--compression", choices=["auto", "on", "off"], default="auto",
                   help="compress map outputs and results with zstd where peers decode it: "
                        "'auto' when listening beyond loopback (default auto; "
                        "docs/compression.md)")
    observe_cli.add_broker_options(b)
    keys(b, "broker")
    common(b)
    b.set_defaults(func=cmd_broker)

    w = sub.add_parser("worker", help="run worker processes for a broker (they run tasks)")
    w.add_argument("--connect", required=True, metavar="ADDR",
                   help="the broker's address, e.g. tcp://HOST:5555 (-: read it from the "
                        "first line of standard input)")
    w.add_argument("--processes", type=int, metavar="N",
                   help="worker processes (default: one per core)")
    w.add_argument("--credit", type=int, default=DEFAULT_CREDIT, metavar="N",
                   help=f"most tasks a process may hold at once (default {DEFAULT_CREDIT}; "
                        "the broker queues about 50 ms of work)")
    w.add_argument("--tag", action="append", metavar="TAG",
                   help="a placement label (repeatable: --tag gpu --tag bigmem); jobs that "
                        "require tags run only on workers that have them all")
    w.add_argument("--slowdown", type=float, default=1.0, metavar="F",
                   help="debugging: make this worker F times slower (it idles F-1 times "
                        "each task's duration after it), to try stragglers and backup tasks")
    w.add_argument("--memory", metavar="SIZE",
                   help="memory budget of each worker process's tasks, e.g. 256MB or 1GiB: "
                        "past it, map and reduce tasks spill sorted runs to disk "
                        "(default: unbounded; docs/memory.md)")
    w.add_argument("--spill-dir", metavar="DIR",
                   help="where tasks over --memory spill (default: $TMPDIR or /tmp)")
    w.add_argument("--preload", action="append", metavar="MODULE",
                   help="a module to import once, before the worker processes start, so "
                        "that each has it from the start (repeatable: the libraries your "
                        "jobs import, e.g. --preload numpy)")
    keys(w, "worker")
    common(w)
    w.set_defaults(func=cmd_worker)
    add_sink_parser(sub, common)

    r = sub.add_parser("run", help="run a job over text files and print or write its output",
                       description="Run JOB over the lines of INPUTS, on an embedded cluster "
                       "(default) or a broker's (--connect). The output pairs are printed "
                       "on stdout as JSON lines ([key, value]), or written to --output DIR; "
                       "progress and a summary go to stderr.")
    r.add_argument("job", help="FILE.py:JobClass or module:JobClass (FILE.py alone: the one "
                   "Job subclass it defines)")
    r.add_argument("inputs", nargs="+",
                   help="input files, globs ('data/*.txt', quoted) or directories (the files "
                        "below them); .gz, .bz2, .xz, .zst files are decompressed")
    r.add_argument("--connect", metavar="ADDR",
                   help="a broker's address (default: an embedded cluster)")
    r.add_argument("--workers", type=int, metavar="N",
                   help="embedded cluster size (default: cores)")
    r.add_argument("--reducers", type=int, metavar="N",
                   help="reduce partitions (default: one per worker)")
    r.add_argument("--memory", metavar="SIZE",
                   help="embedded cluster: each worker process's memory budget (as worker "
                        "--memory; default unbounded)")
    r.add_argument("--split-bytes", type=int, metavar="BYTES", help="bytes per map task")
    r.add_argument("--encoding", default="utf-8", metavar="NAME",
                   help="the files' encoding (default utf-8)")
    r.add_argument("--max-line-bytes", type=int, default=64 << 20, metavar="BYTES",
                   help="a longer line fails its task (default 64 MiB)")
    r.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                   help="embedded cluster: heartbeat interval, seconds (default 1)")
    r.add_argument("--liveness", type=float, default=5.0, metavar="SECONDS",
                   help="embedded cluster: a worker silent this long is dead (default 5)")
    r.add_argument("--priority", type=float, metavar="WEIGHT",
                   help="the job's weight in sharing workers with other jobs (default 1)")
    r.add_argument("--require", action="append", metavar="TAG",
                   help="run only on workers with this --tag (repeatable)")
    r.add_argument("--output", metavar="DIR", action=_GivenOnce,
                   help="write the output as part-NNNNN files (JSON lines) into DIR instead "
                        "of printing it; DIR must be new or empty, unless --overwrite")
    r.add_argument("--overwrite", action="store_true",
                   help="with --output: replace the part files of an earlier run in DIR "
                        "(other files there are left alone)")
    r.add_argument("--limit", type=int, metavar="N",
                   help="print only the first N pairs (0: all). Default: all of them, "
                        f"except on a terminal the first {TERMINAL_LIMIT:,}")
    # code and data that travel with the job (docs/travel.md)
    r.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="a job constructor argument (repeatable); VALUE is a Python literal "
                        "when it parses as one (3, 0.5, 'x', [1, 2], True), else a string")
    r.add_argument("--file", action="append", metavar="PATH",
                   help="a side file shipped with the job (repeatable); tasks open it by "
                        "its base name in their working directory")
    r.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up waiting for the job after this many seconds (a broker at "
                        "--connect that does not answer at all: after this, or 10 s if sooner)")
    r.add_argument("--progress-every", type=float, metavar="SECONDS",
                   help="when stderr is not a terminal, a progress line every SECONDS "
                        "(default 5, or $PYMAPREDUCE_PROGRESS_EVERY; 0: at each status, "
                        "about one a heartbeat); a terminal gets live bars")
    keys(r, "client")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="list a broker's jobs and workers, or show one job",
                       description="Without JOB_ID: the broker's jobs (running ones and "
                       "those finished within the result TTL, an hour by default) and its "
                       "workers, as two tables. With JOB_ID: that job's state, progress, "
                       "counters and error.")
    s.add_argument("job_id", nargs="?", metavar="JOB_ID",
                   help="a job id (as `run` and the listing print it)")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    request(s)
    s.set_defaults(func=cmd_status)

    c = sub.add_parser("cancel", help="cancel a queued or running job",
                       description="Stop a job: its pending tasks are dropped and running "
                       "ones stopped on the workers; its client's wait raises JobFailed.")
    c.add_argument("job_id", metavar="JOB_ID", help="the job to cancel")
    request(c)
    c.set_defaults(func=cmd_cancel)

    lg = sub.add_parser("logs", help="what a job's tasks printed and logged",
                        description="What each attempt of a job's tasks wrote to stdout "
                        "and stderr and logged (its first and last 32 KiB), with the "
                        "traceback of a failed attempt, under a header line per attempt. "
                        "Kept by the broker while the job is listed by `status` (docs/logs.md).")
    lg.add_argument("job_id", metavar="JOB_ID", help="a job id (as `run` and `status` print it)")
    lg.add_argument("task", nargs="?", metavar="TASK",
                    help="only this task's attempts (map-3, reduce-0)")
    request(lg)
    lg.set_defaults(func=cmd_logs)

    k = sub.add_parser("keys", help="make and authorize CURVE keys (a cluster's "
                       "authentication)")
    ksub = k.add_subparsers(dest="action", required=True, metavar="ACTION", title="actions",
                            help="one of:")
    kg = ksub.add_parser("generate", help="write a keypair NAME.key / NAME.key_secret into DIR")
    kg.add_argument("dir", metavar="DIR", help="where to write it (created if missing)")
    kg.add_argument("name", metavar="NAME", help="broker, worker, client, or any name")
    ka = ksub.add_parser("authorize", help="let a public key in: a client, worker or sink")
    ka.add_argument("dir", metavar="DIR", help="the broker's key directory")
    ka.add_argument("role", choices=["client", "worker", "sink", "admin"], metavar="ROLE",
                    help="client, worker, sink, or admin (a client key that may see, cancel "
                         "and release every job)")
    ka.add_argument("key_file", metavar="KEY_FILE", help="the peer's NAME.key (public) file")
    kc = ksub.add_parser("cluster", help="broker, worker, client and sink keys in one "
                         "directory, authorized: for one machine or a test")
    kc.add_argument("dir", metavar="DIR", help="where to write them (created if missing)")
    k.set_defaults(func=cmd_keys)
    observe_cli.add_commands(sub, request)
    for command in sub.choices.values():  # `pymapreduce run ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=argparse.SUPPRESS)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """``pymapreduce run``: cli_run.py, imported by that command only (it loads the
    progress display and job-file loading, which a daemon never runs)."""
    from .cli_run import cmd_run

    return cmd_run(args)


def __getattr__(name: str):
    # (PEP 562) cli_run's helpers, importable from here as before
    if name in ("job_params", "load_job_class", "make_job"):
        from . import cli_run

        return getattr(cli_run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends in a line ``pymapreduce: error: ...`` on stderr
    and a non-zero exit code (EXIT_CODES; a bug in pymapreduce: EXIT_INTERNAL)."""
    if argv is None:  # this process's own command: it exits when the command is done
        if sys.argv[1:2] == ["run"]:  # (the daemons have their own SIGTERM: a drain)
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return _main(sys.argv[1:])
        finally:
            _leaving()
    return _main(argv)


def _leaving() -> None:
    """The command is done and the process exits next: the standard streams flushed, then
    the objects left frozen (``gc.freeze``), so that the interpreter's last garbage
    collections do not go over them all again. With mrjob imported (and setuptools with
    it) they took 0.12-0.19 s of every ``pymapreduce run mr_job.py``; what holds a file
    or a socket is still closed as the modules are torn down, by its references."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # (closed: a reader that went away, `| head`)
            pass
    gc.freeze()


# Names a newcomer tries for a command that has another name here
COMMAND_ALIASES = {"jobs": "status", "list": "status", "ls": "status", "ps": "status",
                   "workers": "status", "job": "status", "submit": "run", "start": "run",
                   "kill": "cancel", "stop": "cancel", "log": "logs", "key": "keys",
                   "dashboard": "dashboard-url", "event": "events"}


def _unknown_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The error for a first word that names no command (with the command meant, where
    one is near), or None; argparse's own says only "invalid choice"."""
    first = 0
    while first < len(argv) and argv[first] == "--debug":
        first += 1
    if first == len(argv) or argv[first].startswith("-"):
        return None  # (no command, or an option first: argparse's own message)
    word = argv[first]
    commands = [name for action in parser._actions
                if isinstance(action, argparse._SubParsersAction) for name in action.choices]
    if word in commands:
        return None
    import difflib

    meant = COMMAND_ALIASES.get(word.lower()) or next(iter(
        difflib.get_close_matches(word, commands, n=1, cutoff=0.6)), None)
    hint = f"; did you mean `pymapreduce {meant}`?" if meant else ""
    return (f"pymapreduce: error: {word!r} is not a command{hint} (commands: "
            f"{', '.join(commands)}; `pymapreduce COMMAND --help` for one)")


def _main(argv: list[str]) -> int:
    args = None
    if argv[:1] == ["run"]:  # (the daemons do not import the adapter)
        from .adapters.mrjob.cli import mrjob_command  # `run MR_JOB.py`: docs/mrjob.md

        args = mrjob_command(argv)
    if args is None:
        parser = build_parser()
        if (error := _unknown_command(parser, argv)) is not None:
            print(error, file=sys.stderr)
            return EXIT_USAGE
        args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or debug_from_env()
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `pymapreduce status ... | head`: the reader had enough
        sys.stderr.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print("pymapreduce: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        print("pymapreduce: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PyMapReduceError as exc:
        if debug:
            traceback.print_exc()
        write_untrusted(f"pymapreduce: error: {exc}\n", sys.stderr)  # (a worker's words)
        return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
    except Exception as exc:  # user input, user code, or a bug: cli_errors tells them apart
        return report_error(exc, debug=debug)
