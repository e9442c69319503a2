"""``pymapreduce broker`` and ``pymapreduce worker``: the daemons' commands, and what every
daemon command shares (``cli_sink.py`` too): its logging, its parent watch, the loopback
test that decides whether listening without keys is refused.

Imported by the daemon commands only (``cli.py``'s ``cmd_broker`` and ``cmd_worker``), so
a client's ``run``, ``status`` or ``logs`` does not load it; an embedded cluster's client
imports it before it forks its daemons (``forkstart.preload``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from .cli import EXIT_ADDRESS_IN_USE, EXIT_OK, EXIT_USAGE
from .errors import AddressInUse, ConfigError, StateError
from .observe import cli as observe_cli


def _setup_logging(level: str, role: str) -> None:
    # --log-level is the daemon's own (the "pymapreduce" loggers); the root keeps Python's
    # default WARNING, so a job's own loggers log in its tasks as in a plain script, however
    # quiet the daemon is (an embedded cluster's daemons log errors only)
    logging.basicConfig(level=logging.WARNING,
                        format=f"pymapreduce {role} %(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("pymapreduce").setLevel(getattr(logging, level.upper(), logging.INFO))


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


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import Broker, BrokerConfig, fdlimit
    from .broker.daemon import tune_collector
    from .patterns import compress
    from .patterns.sockets import check_endpoint

    _setup_logging(args.log_level, "broker")
    compress.check_env()
    fdlimit.raise_fd_limit()  # each connection holds a descriptor, also one that never says hello
    for endpoint in filter(None, (args.bind, args.data_bind)):
        check_endpoint(endpoint)  # (a malformed address is not "beyond loopback")
    beyond = [e for e in filter(None, (args.bind, args.data_bind)) if not _is_loopback(e)]
    if beyond and not args.keys and not args.insecure:
        print(f"pymapreduce: error: broker: refusing to listen on {beyond[0]} beyond loopback "
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
                          max_jobs=args.max_jobs, result_ttl=args.result_ttl,
                          max_jobs_per_client=args.max_jobs_per_client,
                          max_bytes_per_client=int(args.max_mb_per_client * 1024 * 1024),
                          list_all_jobs=args.list_all_jobs,
                          http=args.http, http_public=args.http_public, events=args.events,
                          http_token=observe_cli.broker_token(args),
                          insecure=bool(beyond) and not args.keys,
                          compression=args.compression,
                          max_message=int(args.max_message_mb * 1024 * 1024))
    broker = Broker(config)
    try:
        address = broker.bind()
    except AddressInUse as exc:
        print(f"pymapreduce: error: broker: {exc}", file=sys.stderr)
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
    if broker.http_url:  # (with keys, `pymapreduce dashboard-url` adds the token)
        secured += f"; http {broker.http_url}"
    print(f"pymapreduce broker ready: {address} (data {broker.data_address}; {secured})",
          flush=True)
    tune_collector()  # (this process is the broker's own)
    broker.serve_forever()
    say_stopped(broker, config.state_dir)
    return EXIT_OK


def say_stopped(broker, state_dir: str | None) -> None:
    """The broker's last log line: what became of its unfinished jobs (an operator who
    stops a broker without --state-dir must hear that they are gone)."""
    from .patterns import protocol as P

    log = logging.getLogger("pymapreduce.broker")
    unfinished = sum(1 for j in broker.ledger.jobs.values() if j.state == P.JOB_RUNNING)
    if state_dir:
        log.info("stopped; %d unfinished job(s) kept in %s: a broker started again on it "
                 "carries them on", unfinished, state_dir)
    elif unfinished:
        log.warning("stopped; %d unfinished job(s) lost with it (without --state-dir a "
                    "broker keeps no job across a restart)", unfinished)
    else:
        log.info("stopped")


def preload_modules(names: Iterable[str]) -> None:
    """``--preload``: import each module here, in the supervisor, before it forks its
    worker processes (an embedded cluster's supervisor does it while its client imports
    the same modules). A module that cannot be imported is an error naming it."""
    import importlib

    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"--preload {name!r}: not a module name")
        try:
            importlib.import_module(name)
        except Exception as exc:  # (its own code's failure, too: said, not a traceback)
            raise ConfigError(f"--preload {name}: cannot import it here "
                              f"({type(exc).__name__}: {exc})") from None


def cmd_worker(args: argparse.Namespace) -> int:
    from .patterns import compress
    from .patterns import protocol as P
    from .patterns.security import PeerKeys
    from .patterns.sockets import check_endpoint
    from .spill.budget import parse_size
    from .workers import Supervisor

    compress.check_env()

    _setup_logging(args.log_level, "worker")
    preload_modules(getattr(args, "preload", None) or ())
    if args.connect == "-":  # (imports done: an embedded cluster starts us with its broker)
        args.connect = sys.stdin.readline().strip()
        if not args.connect:
            raise ConfigError("--connect -: standard input ended before a broker's address")
    check_endpoint(args.connect)
    if args.processes is not None and args.processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {args.processes}")
    processes = args.processes or os.cpu_count() or 1
    keys = PeerKeys.load(args.keys, args.key_name) if args.keys else None
    if args.slowdown < 1:
        raise ConfigError(f"--slowdown must be at least 1, got {args.slowdown}")
    if not 1 <= args.credit <= P.MAX_CREDIT:  # (a broker would take it as 1, or the cap)
        raise ConfigError(f"--credit must be 1 to {P.MAX_CREDIT}, got {args.credit}")
    memory = parse_size(args.memory) if args.memory is not None else None
    if args.spill_dir is not None and memory is None:
        raise ConfigError("--spill-dir is where tasks over --memory spill: give --memory too")
    sup = Supervisor(args.connect, processes, credit=args.credit, parent_pid=args.parent_pid,
                     slowdown=args.slowdown, tags=tuple(args.tag or ()),
                     keys=keys, memory=memory, spill_dir=args.spill_dir)
    signal.signal(signal.SIGTERM, sup.stop)
    signal.signal(signal.SIGINT, sup.stop)
    sup.start()
    # (ready to work, not yet registered: each process registers with the broker once it
    # answers, and warns when it has not after the liveness timeout; the supervisor says
    # when they have: "2 of 2 processes registered with ADDR", workers/registrations.py)
    print(f"pymapreduce worker ready: {processes} process{'es' if processes > 1 else ''} "
          f"connecting to {args.connect}", flush=True)
    sup.serve_forever()
    return sup.exit_code
