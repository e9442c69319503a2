"""``pymapreduce sink``: a sink daemon for a broker (docs/sinks.md)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable

from .errors import AddressInUse, ConfigError


def add_sink_parser(sub: argparse._SubParsersAction,
                    common: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser("sink", help="run a sink daemon (it carries a shuffle, not the broker)")
    s.add_argument("--connect", required=True, metavar="ADDR",
                   help="the broker's control address, e.g. tcp://HOST:5555")
    s.add_argument("--bind", default="tcp://127.0.0.1:0", metavar="ADDR",
                   help="where workers reach this sink (default tcp://127.0.0.1:0; give a "
                        "fixed port for a sink that restarts with --state-dir)")
    s.add_argument("--state-dir", metavar="DIR",
                   help="keep segments here across restarts (default: a temporary "
                        "directory, removed at exit)")
    s.add_argument("--name", default="", help="how the broker's listings name this sink")
    s.add_argument("--keys", metavar="DIR",
                   help="CURVE key directory: sink.key_secret, broker.key and workers/*.key "
                        "(see `pymapreduce keys`); without it, no authentication")
    s.add_argument("--key-name", default="sink", help="this side's keypair in DIR (default "
                                                      "sink)")
    s.add_argument("--insecure", action="store_true",
                   help="listen beyond loopback without keys anyway")
    common(s)
    s.set_defaults(func=cmd_sink)


def cmd_sink(args: argparse.Namespace) -> int:
    from .cli import EXIT_ADDRESS_IN_USE, EXIT_OK, EXIT_USAGE
    from .cli_daemons import _is_loopback, _setup_logging, _watch_parent
    from .patterns.sockets import check_endpoint
    from .sinks import SinkDaemon

    _setup_logging(args.log_level, "sink")
    check_endpoint(args.connect)
    check_endpoint(args.bind)
    host = args.bind.split("://", 1)[-1].rsplit(":", 1)[0]
    if host in ("*", "0.0.0.0", "[::]", "::"):
        raise ConfigError(f"--bind {args.bind}: a sink tells workers its address, so give "
                          "the host name or address they reach it at, not a wildcard")
    if not _is_loopback(args.bind) and not args.keys and not args.insecure:
        print(f"pymapreduce: error: sink: refusing to listen on {args.bind} beyond loopback "
              "without authentication: map outputs hold a job's data. Give --keys DIR (see "
              "`pymapreduce keys`), or pass --insecure to do it anyway on a network you "
              "trust.", file=sys.stderr)
        return EXIT_USAGE
    sink = SinkDaemon(args.connect, bind=args.bind, state_dir=args.state_dir, name=args.name,
                      keys_dir=args.keys, key_name=args.key_name)
    try:
        address = sink.start()
    except AddressInUse as exc:
        print(f"pymapreduce: error: sink: {exc}", file=sys.stderr)
        sink.close()
        return EXIT_ADDRESS_IN_USE
    signal.signal(signal.SIGTERM, sink.stop)
    signal.signal(signal.SIGINT, sink.stop)
    _watch_parent(args.parent_pid, sink.stop)
    print(f"pymapreduce sink ready: {address} for {args.connect}"
          f"{' (state ' + args.state_dir + ')' if args.state_dir else ''}"
          f"{'; CURVE, keys from ' + args.keys if args.keys else '; no authentication'}",
          flush=True)
    try:
        sink.serve_forever()
    finally:
        sink.close()
        logging.getLogger("pymapreduce.sink").info("sink %s stopped", address)
    return EXIT_OK
