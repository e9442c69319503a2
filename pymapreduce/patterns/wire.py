"""The parts of messages that name a task attempt, each defined once for every role.

A TASKS message hands out :class:`TaskItem` s; a worker answers with :class:`Report` s in
DONE, a :class:`Failure` in FAILED, an :class:`AttemptKey` heading its OUTPUT on the data
plane; the broker takes attempts back with ABANDON (:func:`abandon_body`). On the wire they
stay compact msgpack lists and maps (a task costs a few dozen bytes); in code they are
named tuples built and read only here, so a field cannot be dropped or misread on the way.
Reading (``from_wire``/``from_body``) checks types: the other side may be hostile.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

KINDS = ("map", "reduce")
MAX_ERROR = 2000  # characters of an error message kept
MAX_TRACEBACK = 20000  # characters of a traceback kept (its end)
MAX_POSITION = 16  # entries of a failure's position
MAX_LOG = 128 * 1024  # bytes of an attempt's log (what it printed) in its DONE or FAILED


ATTEMPT_NUMBER_BITS = 12  # an attempt identifier's low bits: its number (broker/tasks.py)


def attempt_number(attempt: int) -> int:
    """The attempt's number (1, 2, ...: how logs and the dashboard name it) from its
    identifier, whose other bits are random (``broker/tasks.py: Task.start``)."""
    return attempt & ((1 << ATTEMPT_NUMBER_BITS) - 1)


class AttemptKey(NamedTuple):
    """One attempt of one task: what a report is about, and what it is checked against."""

    job: str
    kind: str
    index: int
    attempt: int

    @classmethod
    def parse(cls, fields: Any) -> AttemptKey | None:
        """From ``[job, kind, index, attempt]``; None when they are not of those types."""
        if not isinstance(fields, (list, tuple)) or len(fields) != 4:
            return None
        job, kind, index, attempt = fields
        if (type(job) is not str or kind not in KINDS or type(index) is not int
                or type(attempt) is not int):
            return None
        return cls(job, kind, index, attempt)

    def body(self) -> dict:
        """As the named fields of a message body (FAILED, OUTPUT)."""
        return {"job": self.job, "kind": self.kind, "index": self.index,
                "attempt": self.attempt}

    @classmethod
    def from_body(cls, body: dict) -> AttemptKey | None:
        return cls.parse([body.get("job"), body.get("kind"), body.get("index"),
                          body.get("attempt")])


class TaskItem(NamedTuple):
    """One task of a TASKS message (the job's id, code and settings are the message's)."""

    kind: str
    index: int
    attempt: int
    split: list  # ["mem", blob] / ["cols", blob] / ["files", ranges, options?] / ["segs", first, n]
    skip: list = []  # ordinals of records to leave out (bad records of earlier attempts)

    def wire(self) -> list:
        item = [self.kind, self.index, self.attempt, self.split]
        if self.skip:
            item.append(self.skip)
        return item

    @classmethod
    def from_wire(cls, item: Any) -> TaskItem:
        """ValueError when ``item`` is not a task."""
        if not isinstance(item, list) or len(item) not in (4, 5):
            raise ValueError("a task is [kind, index, attempt, split, skip?]")
        kind, index, attempt, split = item[:4]
        skip = item[4] if len(item) == 5 else []
        if (kind not in KINDS or type(index) is not int or type(attempt) is not int
                or not isinstance(split, list) or not isinstance(skip, list)):
            raise ValueError("a task's fields are not of their types")
        return cls(kind, index, attempt, split, skip)

    def key(self, job: str) -> AttemptKey:
        return AttemptKey(job, self.kind, self.index, self.attempt)


class Report(NamedTuple):
    """One finished attempt in a DONE: its statistics, and how many of the message's
    blobs are its outputs (-1: they went on the data plane)."""

    key: AttemptKey
    stats: dict
    nblobs: int

    def wire(self) -> list:
        return [*self.key, self.stats, self.nblobs]

    @staticmethod
    def key_of(item: Any) -> AttemptKey | None:
        """The attempt a DONE result names (None if it names none), before the rest of it
        is trusted: the broker checks first that the sender holds that attempt."""
        return AttemptKey.parse(item[:4]) if isinstance(item, list) else None

    @classmethod
    def from_wire(cls, item: list, blobs_left: int) -> Report:
        """ValueError says what is wrong (the statistics are checked by the broker)."""
        return cls.checked(cls.key_of(item), item, blobs_left)

    @classmethod
    def checked(cls, key: AttemptKey | None, item: Any, blobs_left: int) -> Report:
        """``from_wire`` for an item whose key ``key_of`` already read."""
        if key is None or len(item) != 6:
            raise ValueError(f"a result has {len(item)} fields, not 6")
        stats, nblobs = item[4], item[5]
        if type(nblobs) is not int or not -1 <= nblobs <= blobs_left:
            raise ValueError(f"it names {nblobs!r:.40} output blobs; the message has "
                             f"{blobs_left}")
        return cls(key, stats, nblobs)


MAX_LOST = 4096  # map tasks a reducer may name as missing at its sink


def _ints(value: Any) -> list[int]:
    """A list of ints, cut to MAX_LOST (anything else: empty)."""
    if not isinstance(value, list):
        return []
    return [v for v in value[:MAX_LOST] if type(v) is int]


class Failure(NamedTuple):
    """A FAILED: the attempt, the error, the traceback text and where in the input."""

    key: AttemptKey
    error: str
    traceback: str = ""
    position: dict = {}
    final: bool = False  # no retry can mend it (the input's or the job's settings' fault)
    log: bytes = b""  # what the attempt printed and logged (workers/capture.py)
    secs: float | None = None  # how long it ran before it failed, by its worker's clock

    def body(self) -> dict:
        body = {**self.key.body(), "error": self.error[:MAX_ERROR],
                "traceback": self.traceback[-MAX_TRACEBACK:], "position": self.position}
        if self.final:
            body["final"] = True
        if self.log:
            body["log"] = self.log[-MAX_LOG:]
        if self.secs is not None:  # (a broker before it ignores it)
            body["secs"] = self.secs
        return body

    @classmethod
    def from_body(cls, body: dict) -> Failure | None:
        """None when it names no attempt; the texts are cut and the position's values made
        small plain values (they are kept in the job's error and journal)."""
        key = AttemptKey.from_body(body)
        if key is None:
            return None
        position = body.get("position")
        if not isinstance(position, dict) or len(position) > MAX_POSITION:
            position = {}
        position = {str(k)[:40]: v if type(v) in (int, float, bool) or v is None
                    else _ints(v) if k == "lost" else str(v)[:200]
                    for k, v in position.items()}
        return cls(key, str(body.get("error", ""))[:MAX_ERROR],
                   str(body.get("traceback", ""))[-MAX_TRACEBACK:], position,
                   body.get("final") is True, log_bytes(body.get("log")),
                   duration(body.get("secs")))


def duration(value: Any) -> float | None:
    """A run time a worker reported: a finite number, else None (not known). Its range is
    not checked here: what reads it clamps it to what the broker saw."""
    if type(value) not in (int, float) or not math.isfinite(value):
        return None
    return float(value)


def log_bytes(value: Any) -> bytes:
    """An attempt's log as a report carries it: bytes, at most MAX_LOG (its end), else
    nothing. The text is never interpreted, only stored and shown."""
    return bytes(value[-MAX_LOG:]) if isinstance(value, bytes) else b""


def abandon_body(job: str, keys: list[AttemptKey]) -> dict:
    """ABANDON: drop these attempts of ``job`` (queued ones, and the running one)."""
    return {"job": job, "tasks": [[k.kind, k.index, k.attempt] for k in keys]}


def abandoned(body: dict) -> set[AttemptKey]:
    """The attempts an ABANDON names (malformed entries are left out)."""
    job = body.get("job")
    tasks = body.get("tasks")
    keys = set()
    for t in tasks if isinstance(tasks, list) else ():
        key = AttemptKey.parse([job, *t]) if isinstance(t, list) and len(t) == 3 else None
        if key is not None:
            keys.add(key)
    return keys
