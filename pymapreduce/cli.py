"""``pymapreduce broker | worker | run | status | cancel | keys``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

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

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_ADDRESS_IN_USE = 4
EXIT_TIMEOUT = 5
EXIT_STATE = 6  # the broker's state directory is damaged or full: it will not start
EXIT_AUTH = 77  # the broker refused our key (also a worker daemon's exit code)
EXIT_INTERRUPTED = 130

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

PRINT_LIMIT = 10_000  # output pairs printed to the terminal when no --output is given


def _setup_logging(level: str, role: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format=f"pymapreduce {role} %(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)


def _watch_parent(parent_pid: int | None, on_gone) -> None:
    if parent_pid is None:
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        on_gone()

    threading.Thread(target=watch, name="pmr-parent-watch", daemon=True).start()


def _is_loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost" or endpoint.startswith(("ipc://", "inproc://")):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _backup_after(text: str) -> float:
    if text.strip().lower() in ("off", "none", "never"):
        return float("inf")
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be a number of seconds or 'off'")
    return value


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import Broker, BrokerConfig, fdlimit
    from .patterns.sockets import check_endpoint

    _setup_logging(args.log_level, "broker")
    fdlimit.raise_fd_limit()  # each connection holds a descriptor, also one that never says hello
    for endpoint in filter(None, (args.bind, args.data_bind)):
        check_endpoint(endpoint)  # (a malformed address is not "beyond loopback")
    beyond = [e for e in filter(None, (args.bind, args.data_bind)) if not _is_loopback(e)]
    if beyond and not args.keys and not args.insecure:
        print(f"pymapreduce broker: refusing to listen on {beyond[0]} beyond loopback "
              "without authentication: whoever can submit a job runs code on every worker. "
              "Give --keys DIR (see `pymapreduce keys`), or pass --insecure to do it anyway "
              "on a network you trust.", file=sys.stderr)
        return EXIT_USAGE
    config = BrokerConfig(bind=args.bind, data_bind=args.data_bind,
                          heartbeat_interval=args.heartbeat, liveness=args.liveness,
                          max_attempts=args.max_attempts,
                          memory_budget=int(args.memory_budget_mb * 1024 * 1024),
                          spill_dir=args.spill_dir, keys_dir=args.keys,
                          state_dir=args.state_dir, fsync=args.fsync,
                          backup_after=args.backup_after,
                          max_jobs=args.max_jobs,
                          max_jobs_per_client=args.max_jobs_per_client,
                          max_bytes_per_client=int(args.max_mb_per_client * 1024 * 1024),
                          list_all_jobs=args.list_all_jobs,
                          insecure=bool(beyond) and not args.keys,
                          max_message=int(args.max_message_mb * 1024 * 1024))
    broker = Broker(config)
    try:
        address = broker.bind()
    except AddressInUse as exc:
        print(f"pymapreduce broker: {exc}", file=sys.stderr)
        broker.close()
        return EXIT_ADDRESS_IN_USE
    except StateError:  # its state directory lost or damaged jobs: said by main()
        broker.close()
        raise
    if config.insecure:
        logging.getLogger("pymapreduce.broker").warning(
            "listening on %s WITHOUT authentication (--insecure)", address)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    signal.signal(signal.SIGHUP, lambda *_: broker.reload_keys())
    signal.signal(signal.SIGINT, lambda *_: broker.stop())
    _watch_parent(args.parent_pid, broker.stop)
    secured = "CURVE, keys from " + args.keys if args.keys else "no authentication"
    print(f"pymapreduce broker ready: {address} (data {broker.data_address}; {secured})",
          flush=True)
    broker.serve_forever()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from .patterns.security import PeerKeys
    from .patterns.sockets import check_endpoint
    from .workers import Supervisor

    _setup_logging(args.log_level, "worker")
    check_endpoint(args.connect)
    if args.processes is not None and args.processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {args.processes}")
    processes = args.processes or os.cpu_count() or 1
    keys = PeerKeys.load(args.keys, args.key_name) if args.keys else None
    if args.slowdown < 1:
        raise ConfigError(f"--slowdown must be at least 1, got {args.slowdown}")
    sup = Supervisor(args.connect, processes, credit=args.credit, parent_pid=args.parent_pid,
                     slowdown=args.slowdown, tags=tuple(args.tag or ()),
                     keys=keys)
    signal.signal(signal.SIGTERM, sup.stop)
    signal.signal(signal.SIGINT, sup.stop)
    sup.start()
    print(f"pymapreduce worker ready: {processes} process{'es' if processes > 1 else ''} "
          f"for {args.connect}", flush=True)
    sup.serve_forever()
    return sup.exit_code


def load_job_class(spec: str):
    """``path/to/file.py:ClassName`` or ``package.module:ClassName`` -> the class."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
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
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PyMapReduceError(f"{target} defines no {attr!r}") from None


class Progress:
    """A one-line progress bar on a terminal: tasks done / total, per phase."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, status: dict) -> None:
        if not self.enabled:
            return
        line = "  ".join(
            f"{phase} {done}/{total} {self._bar(done, total)}"
            for phase, (done, total) in (("map", status["maps"]), ("reduce", status["reduces"]))
            if total
        )
        self.stream.write(f"\r{line}  {status.get('elapsed', 0):.1f}s ")
        self.stream.flush()

    @staticmethod
    def _bar(done: int, total: int, width: int = 20) -> str:
        filled = int(width * done / max(total, 1))
        return "[" + "#" * filled + "." * (width - filled) + "]"

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def cmd_run(args: argparse.Namespace) -> int:
    from .client import Client
    from .inputs import read_text
    from .local import LocalCluster

    job = load_job_class(args.job)()
    inputs = read_text(args.inputs, split_bytes=args.split_bytes, encoding=args.encoding,
                       max_line_bytes=args.max_line_bytes)
    inputs.files()  # a path that matches nothing fails here, before any process starts
    cluster = None
    started = time.monotonic()
    try:
        address = args.connect
        if address is None:
            cluster = LocalCluster(workers=args.workers, keys=args.keys,
                                   heartbeat_interval=args.heartbeat,
                                   liveness=args.liveness).start()
            address = cluster.address
        with Client(address, keys=args.keys, key_name=args.key_name) as client:
            handle = client.submit(job, inputs, map_tasks=None, reducers=args.reducers,
                                   output_dir=args.output, priority=args.priority,
                                   requires=set(args.require or ()) or None)
            print(f"pymapreduce: job {handle.job_id} submitted to {address}", file=sys.stderr)
            progress = Progress(sys.stderr)
            try:
                status = handle.wait(timeout=args.timeout, progress=progress)
            except (KeyboardInterrupt, JobTimeout) as exc:
                if isinstance(exc, JobTimeout):
                    print(f"pymapreduce: {exc}", file=sys.stderr)
                if cluster is None:  # a shared broker: don't leave the job running unseen
                    handle.cancel()
                    print(f"pymapreduce: job {handle.job_id} cancelled, so that it does not "
                          "go on unwatched", file=sys.stderr)
                if isinstance(exc, JobTimeout):
                    return EXIT_TIMEOUT
                raise
            finally:
                progress.end()
            if args.output is None:
                _print_pairs(handle.results())
            handle.release()
    finally:
        if cluster is not None:
            cluster.close()
    seconds = status.get("elapsed") or (time.monotonic() - started)
    mb = status["bytes"] / 1e6
    print(f"{status['job_id']}: {status['records']} records, {status['bytes']} bytes; the "
          f"job ran {seconds:.2f}s on the cluster ({mb / max(seconds, 1e-9):.1f} MB/s)"
          + (f"; output in {args.output}" if args.output else ""), file=sys.stderr)
    return EXIT_OK


def _print_pairs(pairs) -> None:
    n = 0
    for k, v in pairs:
        n += 1
        if n <= PRINT_LIMIT:
            print(json.dumps([k, v], ensure_ascii=False, default=repr))
    if n > PRINT_LIMIT:
        print(f"... {n - PRINT_LIMIT} more pairs not shown; use --output DIR to keep them all",
              file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from .client import Client

    with Client(args.connect, timeout=args.timeout, keys=args.keys,
                key_name=args.key_name) as client:
        if args.job_id:
            body = client.job(args.job_id).status()
            body.pop("req", None)
            print(json.dumps(body, indent=2, default=repr))
            return EXIT_OK
        listing = client._request("JOBS", {}).body
    if args.json:
        print(json.dumps({"jobs": listing["jobs"], "workers": listing["workers"]}, indent=2,
                         default=repr))
        return EXIT_OK
    print_listing(listing["jobs"], listing["workers"], sys.stdout)
    return EXIT_OK


def print_listing(jobs: list[dict], workers: list[dict], out) -> None:
    """The cluster as two tables: jobs (state, progress per phase, counters) and workers."""
    print(f"jobs ({len(jobs)})", file=out)
    rows = [["JOB", "STATE", "PRIO", "MAP", "REDUCE", "ELAPSED", "COUNTERS / WHY IT WAITS"]]
    for j in jobs:
        extra = j.get("waiting") or (j.get("error") or {}).get("message", "")
        if not extra and j.get("counters"):
            extra = ", ".join(f"{k}={v}" for k, v in sorted(j["counters"].items()))
        rows.append([j["job_id"], j["state"], f"{j.get('priority', 1):g}",
                     "{}/{}".format(*j["maps"]),
                     "{}/{}".format(*j["reduces"]) if j["reduces"][1] else "-",
                     f"{j['elapsed']:.1f}s", extra[:80]])
    _table(rows, out)
    print(f"\nworkers ({len(workers)})", file=out)
    rows = [["WORKER", "HOST", "PID", "TAGS", "HOLDS", "DONE", "CURRENT TASK"]]
    for w in workers:
        rows.append([w["name"], w["host"], str(w["pid"]), ",".join(w["tags"]) or "-",
                     str(w["held"]), str(w["done"]), w["tasks"][0] if w["tasks"] else "idle"])
    _table(rows, out)


def _table(rows: list[list[str]], out) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


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
        print(f"broker, worker and client keypairs in {args.dir}, worker and client authorized")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pymapreduce", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
        p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)

    def keys(p: argparse.ArgumentParser, name: str) -> None:
        p.add_argument("--keys", metavar="DIR",
                       help="CURVE key directory (see `pymapreduce keys`); without it, no "
                       "authentication")
        p.add_argument("--key-name", default=name,
                       help=f"this side's keypair in DIR (default {name})")

    b = sub.add_parser("broker", help="run the broker daemon")
    b.add_argument("--bind", default="tcp://127.0.0.1:5555",
                   help="control address for clients and workers (port 0: the OS picks)")
    b.add_argument("--data-bind", help="data-plane sink address (default: same host, any port)")
    b.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat interval, seconds")
    b.add_argument("--liveness", type=float, default=5.0,
                   help="seconds of silence after which a worker is taken for dead")
    b.add_argument("--max-attempts", type=int, default=4, help="attempts per task")
    b.add_argument("--memory-budget-mb", type=float, default=1024,
                   help="task output held in memory before spilling to disk")
    b.add_argument("--spill-dir", help="where outputs beyond the budget go")
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
    keys(b, "broker")
    common(b)
    b.set_defaults(func=cmd_broker)

    w = sub.add_parser("worker", help="run N worker processes for a broker")
    w.add_argument("--connect", required=True, help="the broker's control address")
    w.add_argument("--processes", type=int, help="worker processes (default: cores)")
    w.add_argument("--credit", type=int, default=32, help="tasks a process may hold queued")
    w.add_argument("--tag", action="append", metavar="TAG",
                   help="a placement label (repeatable: --tag gpu --tag bigmem); jobs that "
                        "require tags run only on workers that have them all")
    w.add_argument("--slowdown", type=float, default=1.0, metavar="F",
                   help="debugging: make this worker F times slower (it idles F-1 times "
                        "each task's duration after it), to try stragglers and backup tasks")
    keys(w, "worker")
    common(w)
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("run", help="run a job over text files")
    r.add_argument("job", help="FILE.py:JobClass or module:JobClass")
    r.add_argument("inputs", nargs="+", help="input files or globs")
    r.add_argument("--connect", help="a broker's address (default: an embedded cluster)")
    r.add_argument("--workers", type=int, help="embedded cluster size (default: cores)")
    r.add_argument("--reducers", type=int, help="reduce partitions (default: one per worker)")
    r.add_argument("--split-bytes", type=int, help="bytes per map task")
    r.add_argument("--encoding", default="utf-8", help="the files' encoding (default utf-8)")
    r.add_argument("--max-line-bytes", type=int, default=64 << 20,
                   help="a longer line fails its task (default 64 MiB)")
    r.add_argument("--heartbeat", type=float, default=1.0,
                   help="embedded cluster: heartbeat interval, seconds (default 1)")
    r.add_argument("--liveness", type=float, default=5.0,
                   help="embedded cluster: a worker silent this long is dead (default 5)")
    r.add_argument("--priority", type=float,
                   help="the job's weight in sharing workers with other jobs (default 1)")
    r.add_argument("--require", action="append", metavar="TAG",
                   help="run only on workers with this --tag (repeatable)")
    r.add_argument("--output", help="directory for part-NNNNN files (default: print)")
    r.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    keys(r, "client")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="cluster facts, or one job's status")
    s.add_argument("--connect", required=True)
    s.add_argument("job_id", nargs="?")
    s.add_argument("--json", action="store_true", help="the listing as JSON")
    s.add_argument("--timeout", type=float, default=5.0)
    keys(s, "client")
    s.set_defaults(func=cmd_status)

    c = sub.add_parser("cancel", help="cancel a running job")
    c.add_argument("--connect", required=True)
    c.add_argument("job_id")
    c.add_argument("--timeout", type=float, default=5.0)
    keys(c, "client")
    c.set_defaults(func=cmd_cancel)

    k = sub.add_parser("keys", help="make and authorize CURVE keys")
    ksub = k.add_subparsers(dest="action", required=True)
    kg = ksub.add_parser("generate", help="write a keypair NAME.key / NAME.key_secret into DIR")
    kg.add_argument("dir")
    kg.add_argument("name", help="broker, worker, client, or any name")
    ka = ksub.add_parser("authorize", help="let a public key in, as a client or a worker")
    ka.add_argument("dir", help="the broker's key directory")
    ka.add_argument("role", choices=["client", "worker", "admin"],
                    help="admin: a client key that may see, cancel and release every job")
    ka.add_argument("key_file", help="the peer's NAME.key (public) file")
    kc = ksub.add_parser("cluster", help="broker, worker and client keys in one directory, "
                         "authorized: for one machine or a test")
    kc.add_argument("dir")
    k.set_defaults(func=cmd_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from .adapters.mrjob.cli import mrjob_command  # `run MR_JOB.py`: docs/mrjob.md

    args = mrjob_command(argv) or build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `pymapreduce status ... | head`: the reader had enough
        sys.stderr.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("pymapreduce: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PyMapReduceError as exc:
        print(f"pymapreduce: {exc}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
