"""The broker's side of observability: the EVENTS client request, and starting HTTP.

EVENTS (``pymapreduce events``): a client asks for the events after a cursor, of one job
or of every job it may see, and polls again with the ``next`` cursor it is given. Over the
broker's own client socket, so it needs no HTTP server and keys work as for every other
request: a client key sees its own jobs' events only, an admin key (or anyone on a broker
without keys) sees every job's, and the cluster's own (workers joining and lost).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ..errors import AddressInUse, ConfigError
from ..patterns import protocol as P
from ..patterns.message import Message
from .cli import TOKEN_FILE, load_token

MAX_EVENTS_REPLY = 500  # events in one EVENTS reply (the client asks again for more)


def on_events(broker: Any, peer: bytes, msg: Message) -> None:
    """EVENTS {job?, since?}: the events after ``since`` (at most MAX_EVENTS_REPLY)."""
    body = msg.body
    job = body.get("job")
    since = body.get("since", 0)
    if (job is not None and not isinstance(job, str)) or type(since) is not int:
        raise ValueError("EVENTS wants a job id (or none) and an integer cursor 'since'")
    events = broker.ledger.events
    if not events.enabled:
        broker._reply(peer, P.ERROR, {"req": body.get("req"), "code": "unavailable",
                                      "message": "this broker keeps no event log (it was "
                                                 "started with --no-events)"})
        return
    if job is not None:
        state = broker.jobs.get(job)
        if state is None or not broker._may_act(state):
            broker._reply(peer, P.ERROR, {"req": body.get("req"), "code": "no-such-job",
                                          "message": f"no job {job[:100]!r} this client may "
                                                     "see on this broker"})
            return
    # a client key's jobs' events are read from its jobs (all jobs' newest, filtered,
    # may be other clients' alone: they would take the log's cap, and its cursor past
    # its own events)
    mine = None if job is not None or broker.allow is None or \
        broker.allow.is_admin(broker._peer_key) else f"key {broker._peer_key}"
    out, gap = events.since_gap(since, job, limit=MAX_EVENTS_REPLY, tenant=mine)
    last = out[-1]["seq"] if out else max(since, 0)
    reply = {"req": body.get("req"), "events": out, "next": last, "seq": events.seq}
    if gap:  # (the reader fell behind past what the log keeps: it is told, not left to guess)
        reply["skipped"] = True
    if job is not None:
        reply["state"] = broker.jobs[job].state
    # (up to 500 events with tracebacks, made fresh per request: held bounded, as LOGS)
    broker._reply_held(peer, P.EVENTS, reply)


def start_http(broker: Any) -> Any:
    """Bind and start a broker's HTTP server (``config.http``); a ConfigError if it may
    not listen where asked (beyond loopback needs keys, hence a token, or http_public)."""
    from .server import Observatory, is_loopback_host, parse_http  # (only with --http)

    cfg = broker.config
    host, _ = parse_http(cfg.http)
    if not is_loopback_host(host) and cfg.http_token is None and not cfg.http_public:
        raise ConfigError(f"refusing to serve HTTP on {host} beyond loopback without keys: "
                          "anyone who can reach it would see every job; give the broker "
                          "--keys (then requests need its token) or --http-public")
    token = cfg.http_token
    if token is None and cfg.keys_dir:  # keys without a token given: the key dir's
        token = load_token(os.path.join(cfg.keys_dir, TOKEN_FILE), create=True)
    try:
        return Observatory(broker, cfg.http, token, check_host=not cfg.http_public)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"cannot serve HTTP on {cfg.http}: the address is in use "
                               "(port 0 lets the OS pick a free one)") from None
        raise ConfigError(f"cannot serve HTTP on {cfg.http}: {exc.strerror or exc}") from None
