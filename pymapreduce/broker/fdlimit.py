"""The broker's limit on open files, raised to what the system allows at start-up.

Every TCP connection to the broker holds a file descriptor, from the moment it is accepted
(before any key is checked) until it closes or fails its handshake (``HANDSHAKE_MS`` in
``patterns/sockets.py``). Under the common soft limit of 1,024, about a thousand idle
connections from a peer with no key used up the broker's descriptors: keyed clients were
locked out, and the broker could no longer open its journal or output files. The soft limit
is any process's to raise up to the hard one, so the broker does; what the hard limit is,
is the operator's choice (``ulimit -Hn``, systemd's ``LimitNOFILE=``).
"""

from __future__ import annotations

import logging

log = logging.getLogger("pymapreduce.broker")

LOW = 4096  # below this, a flood of idle connections still fills the table in moments
FALLBACK = 10240  # tried when the hard limit is refused (macOS caps the soft one there)
NR_OPEN = "/proc/sys/fs/nr_open"  # Linux's ceiling when the hard limit is "unlimited"


def _ceiling(hard: int, infinity: int) -> int:
    if hard != infinity:
        return hard
    try:
        with open(NR_OPEN) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit and log the result; returns (old
    soft limit, new soft limit), or None where there is no such limit (Windows). Never
    raises: a broker that cannot raise it runs with the limit it has, and says so."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _ceiling(hard, resource.RLIM_INFINITY)
    new = soft
    failure: Exception | None = None
    if soft != resource.RLIM_INFINITY:
        # some systems refuse a soft limit above a ceiling of their own (macOS: OPEN_MAX)
        for want in sorted({target, min(target, FALLBACK)}, reverse=True):
            if want <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                new = want
                break
            except (OSError, ValueError) as exc:
                failure = exc
    if new == soft and failure is not None:
        log.warning("cannot raise the limit on open files from %d to %d: %s", soft, target,
                    failure)
    if new != soft:
        log.info("limit on open files raised from %d to %d (each connection holds one)",
                 soft, new)
    if new != resource.RLIM_INFINITY and new < LOW:
        log.warning("the limit on open files is %d: idle connections from anyone who can "
                    "reach the broker's ports can use them all for a few seconds each; "
                    "raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) and firewall "
                    "the ports (see SECURITY.md)", new)
    return soft, new
