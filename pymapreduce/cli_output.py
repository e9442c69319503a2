"""What the ``pymapreduce`` commands print: ``run``'s output pairs (JSON lines, streamed)
and progress bar, and ``status``'s tables and job view.

Pairs go to stdout as they arrive from the broker (one output partition at a time), in
batches written with one call, so neither the client's memory nor the time per pair grows
with the output. Everything is printed when stdout is a file or a pipe; on a terminal the
first ``TERMINAL_LIMIT`` are, and stderr says how many more there were and how to get them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from .errors import describe_position as _describe_position

TERMINAL_LIMIT = 10_000  # pairs shown on a terminal by default (more scroll by unread)
BATCH = 4096  # pairs encoded and written at once

_encode_json = json.JSONEncoder(ensure_ascii=False, default=repr).encode


def _encode(pair: list) -> str:
    """A pair's JSON line; an int of any size in full (``client/output.whole_ints``)."""
    try:
        return _encode_json(pair)
    except ValueError:  # (an int past Python's digits limit; else it raises again)
        from .client.output import whole_ints

        with whole_ints():
            return _encode_json(pair)


def print_limit(requested: int | None, out: TextIO) -> int | None:
    """The number of pairs to print: ``requested`` (``--limit``; 0 means all), else all
    of them unless ``out`` is a terminal, where TERMINAL_LIMIT."""
    if requested is not None:
        return requested or None
    return TERMINAL_LIMIT if _isatty(out) else None


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: not a terminal
        return False


def print_pairs(pairs: Iterable[tuple[Any, Any]], out: TextIO | None = None,
                err: TextIO | None = None, limit: int | None = None) -> int:
    """Write each pair as a JSON line ``[key, value]`` (values JSON cannot hold as their
    ``repr``), up to ``limit`` pairs (None: all); the rest are counted, and if there were
    any, a line on ``err`` says how many and how to see them. Returns the pairs seen."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    n = 0
    batch: list[str] = []
    it = iter(pairs)
    for k, v in it:
        n += 1
        batch.append(_encode([k, v]))
        if len(batch) >= BATCH:
            _flush(batch, out)
        if limit is not None and n >= limit:
            break
    _flush(batch, out)
    if limit is not None:
        more = sum(1 for _ in it)
        if more:
            out.flush()
            print(f"pymapreduce: printed the first {limit} pairs; {more} more not shown. "
                  "For all of them: redirect stdout to a file (> out.jsonl) or a pipe "
                  "(all are printed then), pass --limit 0, or --output DIR for part files",
                  file=err)
        n += more
    out.flush()
    return n


def write_untrusted(text: str, out: TextIO) -> None:
    """Write text that carries a worker's words (a job's error and traceback, its logs):
    on a terminal its control characters are shown escaped, not obeyed (an escape
    sequence in an exception message could rewrite the screen); elsewhere as it is."""
    from .client.logs import printable

    out.write(printable(text) if _isatty(out) else text)


def _flush(batch: list[str], out: TextIO) -> None:
    if batch:
        batch.append("")  # a newline after the last line too
        out.write("\n".join(batch))
        batch.clear()


def print_job(status: dict, out: TextIO) -> None:
    """One job's status (``pymapreduce status --connect ADDR JOB_ID``) as labelled lines:
    state, progress per phase, input read, counters, and why it waits or failed."""
    rows = [("job", f"{status.get('job_id', '?')} ({status.get('name', '?')})")]
    state = str(status.get("state", "?"))
    if status.get("released"):
        state += " (its results were released by its client)"
    rows.append(("state", state))
    step = status.get("step") or [1, 1]
    if step[1] > 1:
        rows.append(("step", f"{step[0]} of {step[1]}"))
    for label, key in (("map", "maps"), ("reduce", "reduces")):
        done, total = status.get(key) or (0, 0)
        if total or label == "map":
            rows.append((label, f"{done}/{total} tasks done"))
    rows.append(("input", f"{status.get('records', 0)} records, {status.get('bytes', 0)} bytes"))
    rows.append(("elapsed", f"{float(status.get('elapsed', 0)):.1f}s"))
    if status.get("priority", 1) != 1 or status.get("requires"):
        rows.append(("placement", f"priority {status.get('priority', 1):g}; requires "
                     + (", ".join(status.get("requires") or ()) or "no tags")))
    counters = status.get("counters") or {}
    if counters:
        rows.append(("counters", ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))))
    for label, key in (("backups", "backups"), ("recovered", "recovered")):
        if status.get(key):
            rows.append((label, str(status[key])))
    if status.get("skipped"):
        rows.append(("skipped", f"{len(status['skipped'])} bad records (see --json)"))
    if status.get("waiting"):
        rows.append(("waiting", str(status["waiting"])))
    error = status.get("error") or {}
    if error:
        message = str(error.get("message", ""))
        task = str(error.get("task") or "")
        rows.append(("error", message if task in message else f"{task}: {message}"))
        if error.get("position"):
            rows.append(("input at", describe_position(error["position"])))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}", file=out)
    if error.get("traceback"):
        print("\nremote traceback (from the worker):\n" + str(error["traceback"]).rstrip(),
              file=out)


def describe_position(position: Any) -> str:
    """Where in the input a failing record was, in the words of ``JobFailed``'s
    ``Input:`` line (``file /data/a.txt, the line at byte 1234 (map split 3)``), so
    ``status`` and a failed ``run`` say it alike."""
    return _describe_position(position) or (str(position) if position else "unknown")


def print_listing(jobs: list[dict], workers: list[dict], out,
                  sinks: list[dict] | None = None) -> None:
    """The cluster as tables: jobs (state, progress per phase, counters), workers, and
    sink daemons when there are any."""
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
    if sinks:
        print(f"\nsinks ({len(sinks)})", file=out)
        rows = [["SINK", "ADDRESS", "STATE DIR", "IN", "OUT", "SEGMENTS"]]
        for s in sinks:
            rows.append([str(s.get("name")), str(s.get("address")),
                         "yes" if s.get("durable") else "no", _size(s.get("in", 0)),
                         _size(s.get("out", 0)), str(s.get("segments", 0))])
        _table(rows, out)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[str]], out) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


@contextlib.contextmanager
def quiet_when_stdout_closes() -> Iterator[None]:
    """Run the block (a script's printing, ``examples/*.py``); if standard output's reader
    goes away first (``python script.py | head -1``), end the process with status 0 and
    no traceback, as ``pymapreduce`` commands do: what was left to print goes nowhere.
    Standard output is flushed at the end of the block, so a reader gone before the last
    bytes is caught here too, not by the interpreter's last flush. A BrokenPipeError
    while standard output still has a reader (a socket's, a child's pipe) is raised."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise
        for stream in (sys.stdout, sys.stderr):
            if stream is sys.stdout or _reader_gone(stream):
                with contextlib.suppress(OSError, ValueError):
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, stream.fileno())  # (its unwritten bytes go there)
                    os.close(devnull)
        raise SystemExit(0) from None


def _reader_gone(stream: TextIO) -> bool:
    """Whether the pipe or socket ``stream`` writes to has no reader any longer (poll says
    POLLERR or POLLHUP); True where that cannot be asked (no poll, no descriptor)."""
    try:
        import select

        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True


def embedded_where(workers: int) -> str:
    """How ``run`` says where its job runs on an embedded cluster of ``workers``."""
    return f"running on an embedded cluster of {workers} worker " \
           f"process{'es' if workers != 1 else ''}"


def cancel_unwatched(handle: Any, say: Any = None) -> None:
    """Cancel a job its command stops waiting for (Ctrl-C, SIGTERM, ``--timeout``), so
    that it does not go on unwatched on a shared broker; ``say``: how the command tells
    its user so (None on an embedded cluster, which stops with it)."""
    from .errors import PyMapReduceError

    with contextlib.suppress(PyMapReduceError):
        handle.cancel()
    if say is not None:
        say(f"job {handle.job_id} cancelled, so that it does not go on unwatched")
