"""``python -m tests.held_sweep ARGS...``: ``pymapreduce ARGS`` (a daemon) with its start-up
sweeps of the temporary directory held, to see whether its start waits for them.

``patterns.owned.sweep`` is wrapped: its first call waits for a line on standard input
before it sweeps; each call, once done, writes ``["swept", PREFIX, [removed paths]]``
(JSON) as a line of its own on standard output. A test reads the daemon's ready line
while the sweep is held, then lets it go and reads what it removed."""

from __future__ import annotations

import json
import os
import sys
import threading

from pymapreduce.patterns import owned

_real = owned.sweep
_first = threading.Lock()
_waited: list[bool] = []


def _held_sweep(directory, prefix, *args, **kwargs):
    with _first:
        if not _waited:
            _waited.append(True)
            sys.stdin.readline()
    removed = _real(directory, prefix, *args, **kwargs)
    os.write(1, (json.dumps(["swept", prefix, removed]) + "\n").encode())  # (one write)
    return removed


owned.sweep = _held_sweep

if __name__ == "__main__":
    from pymapreduce.cli import main

    sys.argv = ["pymapreduce", *sys.argv[1:]]
    sys.exit(main())
