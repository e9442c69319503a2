"""Commands of observability: ``pymapreduce events`` and ``pymapreduce dashboard-url``,
and the broker's ``--http`` options (its token file)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import ConfigError
from ..patterns import protocol as P

# the events that end a job (events.py names a job's events job-<state>)
TERMINAL_EVENTS = frozenset(f"job-{s}" for s in P.JOB_TERMINAL)

TOKEN_FILE = "http.token"  # in the broker's key directory
POLL_SECONDS = 0.5  # between EVENTS requests while following


def token_path(keys: str | None, given: str | None) -> str | None:
    """Where a broker's HTTP token is: ``--http-token-file``, else DIR/http.token with
    ``--keys DIR``, else nowhere (a keyless loopback broker needs none)."""
    if given:
        return given
    return os.path.join(keys, TOKEN_FILE) if keys else None


def load_token(path: str, create: bool) -> str:
    """The token in ``path``; made (random, readable by its owner only) if missing and
    ``create``."""
    try:
        with open(path, encoding="ascii") as f:
            token = f.read().strip()
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"no HTTP token at {path}: a broker started with --http "
                              "and --keys writes it there") from None
        import secrets  # (hmac, hashlib: only a keyed broker with --http makes a token)

        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
        return token
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the HTTP token file {path}: {exc}") from None
    if len(token) < 16:
        raise ConfigError(f"the HTTP token in {path} is too short (16 characters at least)")
    return token


def broker_token(args: argparse.Namespace) -> str | None:
    """The token a broker's HTTP server asks for (None: none), made if missing."""
    if not getattr(args, "http", None):
        return None
    path = token_path(args.keys, args.http_token_file)
    return load_token(path, create=True) if path else None


def add_broker_options(b: argparse.ArgumentParser) -> None:
    b.add_argument("--http", metavar="HOST:PORT",
                   help="serve the read-only dashboard API, events and /metrics here (port "
                        "0: the OS picks; the ready line names the URL); beyond loopback "
                        "only with --keys or --http-public")
    b.add_argument("--http-public", action="store_true",
                   help="allow --http beyond loopback without keys (anyone who reaches it "
                        "sees every job's names, counters and errors)")
    b.add_argument("--no-events", dest="events", action="store_false",
                   help="keep no event log (then `pymapreduce events`, --http and the "
                        "dashboard are unavailable): the broker spends a few percent less "
                        "per task (benchmarks/RESULTS.md)")
    b.add_argument("--http-token-file", metavar="FILE",
                   help="the token HTTP requests must carry (made if missing); default with "
                        "--keys DIR: DIR/http.token")


def add_commands(sub: Any, request: Callable) -> None:
    """The ``events`` and ``dashboard-url`` commands; ``request`` adds the options every
    command that asks a broker has (--connect, --timeout, keys)."""
    e = sub.add_parser("events", help="follow a broker's job and task events (JSON lines)",
                       description="Print events as JSON lines as they happen: jobs "
                       "submitted, attempts dispatched, done, failed (with tracebacks and "
                       "input positions), retried, lost with a worker... With JOB_ID, that "
                       "job's events, ending when it ends. A client key sees its own jobs' "
                       "events; an admin key every job's and the workers'.")
    e.add_argument("job_id", nargs="?", metavar="JOB_ID")
    e.add_argument("--since", type=int, default=0, metavar="SEQ",
                   help="only events after this sequence number (default: all still held)")
    e.add_argument("--no-follow", action="store_true",
                   help="print the events held now and exit")
    request(e)
    e.set_defaults(func=cmd_events)
    d = sub.add_parser("dashboard-url", help="the URL (with its token) of a broker's "
                       "HTTP server", description="Print URL with the token a broker "
                       "started with --http and --keys DIR wrote to DIR/http.token (run it "
                       "where that file is).")
    d.add_argument("url", metavar="URL", help="the http://HOST:PORT/ the broker printed")
    d.add_argument("--keys", metavar="DIR", help="the broker's key directory")
    d.add_argument("--http-token-file", metavar="FILE", help="the token file instead")
    d.add_argument("--client", metavar="NAME", help="a URL that shows only the jobs of "
                   "this client key (NAME.key in DIR or DIR/clients, or a .key file), "
                   "not every job")
    d.set_defaults(func=cmd_dashboard_url)


def cmd_dashboard_url(args: argparse.Namespace) -> int:
    from .scopes import client_public_key, client_token

    path = token_path(args.keys, args.http_token_file)
    url = args.url if args.url.endswith("/") else args.url + "/"
    if not path:
        if args.client:
            raise ConfigError("--client needs the broker's token: give --keys DIR (or "
                              "--http-token-file)")
        print(url)
        return 0
    token = load_token(path, create=False)
    if args.client:
        token = client_token(token, client_public_key(args.client, args.keys))
    print(f"{url}?token={token}")
    return 0


def follow(client: Any, job: str | None, since: int, out: TextIO, keep_going: bool = True,
           sleep: Callable[[float], None] = time.sleep,
           warn: Callable[[str], None] | None = None) -> int:
    """Print events after ``since`` as JSON lines; with ``keep_going``, poll for more
    until the job (if one is named) ends. Returns the last cursor. ``warn``: told when
    the broker says events were skipped (the reader fell behind what it keeps)."""
    from ..client.logs import request_patiently

    while True:
        body: dict = {"since": since}
        if job:
            body["job"] = job
        reply = request_patiently(client, P.EVENTS, body).body
        if reply.get("skipped") and warn is not None:
            warn("pymapreduce events: some events were skipped: this reader fell further "
                 "behind than the broker keeps (a job's newest 2000 events, or all jobs' "
                 "newest 10000)")
        for event in reply.get("events", []):
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            if job and event.get("type") in TERMINAL_EVENTS:
                keep_going = False
        out.flush()
        since = reply.get("next", since)
        more = len(reply.get("events", [])) and reply.get("seq", since) > since
        if job and reply.get("state") in P.JOB_TERMINAL and not more:
            return since
        if not keep_going and not more:
            return since
        if not more:
            sleep(POLL_SECONDS)


def cmd_events(args: argparse.Namespace) -> int:
    from ..client import Client

    with Client(args.connect, timeout=args.timeout, keys=args.keys,
                key_name=args.key_name) as client:
        follow(client, args.job_id, args.since, sys.stdout, keep_going=not args.no_follow,
               warn=lambda text: print(text, file=sys.stderr, flush=True))
    return 0
