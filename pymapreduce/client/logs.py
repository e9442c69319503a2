"""Task logs as a client reads them: one entry per attempt that printed or logged.

The text comes from a worker running a job's code: it is untrusted, so it is decoded
without failing (bad UTF-8 becomes U+FFFD), never interpreted, and :func:`printable`
neutralises what a terminal would act on (escape sequences that move the cursor, retitle
the window, or hide text) before the CLI shows it there.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ..errors import BrokerBusy
from ..patterns import protocol as P

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that
# can make a terminal show text in another order than it is
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class TaskLogs(list):
    """A job's task logs, oldest first: each a dict with ``task`` (``map-3``), ``attempt``
    (1, 2, ...), ``worker`` (the process, ``host:pid``), ``state`` (``done`` or
    ``failed``), ``step`` (1 for a one-step job) and ``text`` (what the attempt printed and
    logged; a failed attempt's ends with its traceback). ``dropped``: how many logs the
    broker left out to stay within its bounds. ``attempts``: asked for one task's logs
    and given none, how many attempts of it the broker has started (0: it never ran, as
    a reduce task of a job that failed in its map phase); None where the broker does not
    say (there are logs, a multi-step job, an older broker)."""

    dropped: int = 0
    attempts: int | None = None

    def text(self) -> str:
        """All of them as one text, each under a line naming its attempt."""
        parts = [f"=== {header(e)} ===\n{e['text']}" + ("" if e["text"].endswith("\n")
                                                         else "\n") for e in self]
        if self.dropped:
            parts.append(f"=== {self.dropped} older log(s) of this job were left out (the "
                         "broker keeps a bounded amount per job) ===\n")
        return "".join(parts)


def header(entry: dict) -> str:
    """``map-3 attempt 2 on host:4242 (failed)``; with the step for multi-step jobs."""
    step = f"step {entry['step']} " if entry.get("step", 1) > 1 else ""
    return (f"{step}{entry['task']} attempt {entry['attempt']} on {entry['worker']} "
            f"({entry['state']})")


def read_logs(reply_body: dict) -> TaskLogs:
    """The LOGS reply's entries, their fields checked and their text decoded."""
    out = TaskLogs()
    for raw in reply_body.get("logs") or ():
        if not isinstance(raw, dict):
            continue
        text = raw.get("log")
        out.append({
            "task": str(raw.get("task", "?")),
            "attempt": raw.get("attempt") if type(raw.get("attempt")) is int else 0,
            "worker": str(raw.get("worker", "?")),
            "state": str(raw.get("state", "?")),
            "step": raw.get("step") if type(raw.get("step")) is int else 1,
            "text": text.decode("utf-8", "replace") if isinstance(text, bytes) else "",
        })
    dropped = reply_body.get("dropped")
    out.dropped = dropped if type(dropped) is int else 0
    attempts = reply_body.get("attempts")
    out.attempts = attempts if type(attempts) is int and attempts >= 0 else None
    return out


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: control characters other than newline and
    tab (and bidirectional overrides) are shown escaped, as ``\\x1b``, instead of acted on."""
    text = text.replace("\r\n", "\n")
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)


def fetch_logs(client: Any, job_id: str, task: str | None = None) -> TaskLogs:
    """Ask the broker for a job's logs (``JobHandle.logs`` and the CLI use this)."""
    body: dict = {"job_id": job_id}
    if task is not None:
        body["task"] = str(task)
    return read_logs(request_patiently(client, P.LOGS, body).body)


def request_patiently(client: Any, command: str, body: dict) -> Any:
    """``client._request(command, body)`` for a request whose big reply the broker holds
    bounded (LOGS, EVENTS): while it answers busy (unread replies of some client that
    does not read hold its memory), ask again with growing pauses, for up to the
    client's timeout (as FETCH does)."""
    deadline = time.monotonic() + client.timeout
    pause = 0.05
    while True:
        try:
            return client._request(command, body)
        except BrokerBusy:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(1.0, pause * 2)
