"""A SUBMIT, checked and turned into what the broker keeps (no sockets here).

Everything in a SUBMIT comes from a client: the broker keeps nothing it has not checked,
and nothing much larger than the bytes it was sent. Input splits travel as one msgpack
blob that is read one split at a time (a file split's byte ranges are kept as the packed
bytes they came in, and unpacked only for the moment they are sent to a worker), so a
message of millions of byte ranges costs the broker about its own size, not 20 times it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import msgpack

from .codecs import announced

MAX_TASKS = 100_000  # map or reduce tasks of one job
MAX_STEPS = 200  # steps of a multi-step job
MAX_RANGES = 100_000  # byte ranges (files) in one split
MAX_PATH = 4096  # characters of one input path
MAX_OPTIONS = 16  # entries in a split's options map
MAX_COLUMNS = 1000  # column names of a CSV input
TASK_COST = 1024  # bytes a task (or a reducer) is counted for against its client's limit


@dataclass
class Spec:
    """A checked submission: what a JobState is made of."""

    job_id: str
    code: Any
    splits: list  # per map task: ["mem", blob] or ["files", packed ranges]
    options: dict
    held: int  # bytes of code and inputs the job holds in the broker


class _Chunks:
    """A file-like view of a received frame, read in chunks: the whole message is never
    copied again to be unpacked."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n < 0 else min(len(self.buf), self.pos + n)
        chunk = bytes(self.buf[self.pos:end])
        self.pos = end
        return chunk


def read_splits(blob: Any, blobs: tuple) -> list:
    """The map splits of a SUBMIT from its splits blob (a msgpack array of ``["mem", i]``,
    blob ``i`` holding the records, ``["mems", i, n]``, blobs ``i`` to ``i + n - 1`` each
    one split's records, or ``["files", [[path, start, end], ...]]``)."""
    buf = memoryview(blob.buffer if hasattr(blob, "buffer") else blob).cast("B")
    unpacker = msgpack.Unpacker(_Chunks(buf), raw=False, read_size=1 << 20,
                                max_buffer_size=8 * MAX_RANGES * (MAX_PATH + 32),
                                max_array_len=MAX_RANGES, max_map_len=MAX_OPTIONS,
                                max_bin_len=0, max_ext_len=0, max_str_len=MAX_PATH)
    try:
        count = unpacker.read_array_header()
        if not 0 < count <= MAX_TASKS:
            raise ValueError(f"a job has 1 to {MAX_TASKS} input splits, not {count}")
        splits: list = []
        for _ in range(count):
            desc = unpacker.unpack()
            if type(desc) is list and len(desc) == 3 and desc[0] == "mems":
                # a run of in-memory splits, one blob each (how a client sends its
                # records: a descriptor per split cost 1 us each way for tiny tasks)
                first, n = desc[1], desc[2]
                if type(first) is not int or type(n) is not int or not (
                        1 <= first and 1 <= n and first + n <= len(blobs)):
                    raise ValueError(f"a run of in-memory splits names blobs {first!r:.20} "
                                     f"and {n!r:.20} on, which are not there")
                if len(splits) + n > MAX_TASKS:
                    raise ValueError(f"a job has 1 to {MAX_TASKS} input splits, not more")
                splits.extend([["mem", blob] for blob in blobs[first:first + n]])
            else:
                splits.append(_split(desc, blobs))
        if unpacker.tell() != len(buf):
            raise ValueError("trailing bytes after the splits")
    except (msgpack.OutOfData, msgpack.ExtraData, StopIteration):
        raise ValueError("the splits blob is cut short") from None
    except (msgpack.UnpackException, TypeError) as exc:
        raise ValueError(f"the splits blob is malformed ({type(exc).__name__})") from None
    return splits


def _split(desc: Any, blobs: tuple) -> list:
    if not isinstance(desc, list) or len(desc) not in (2, 3):
        raise ValueError("a split is [kind, what] or [kind, what, options]")
    kind, what = desc[:2]
    extra = desc[2:]  # read_text()'s settings (encoding, longest line), for the workers
    if extra:  # (bounded here; the worker checks what they mean)
        options = extra[0]
        if not isinstance(options, dict) or len(options) > MAX_OPTIONS:
            raise ValueError(f"a split's read options are a map of at most {MAX_OPTIONS} "
                             "entries")
        extra = [{str(k)[:40]: storage_option(v) if k == "storage" else _option(v)
                  for k, v in options.items()}]
    if kind == "mem":
        if type(what) is not int or not 1 <= what < len(blobs):
            raise ValueError(f"an in-memory split names blob {what!r:.20}, which is not there")
        return ["mem", blobs[what]]
    if kind == "files" and isinstance(what, list) and what:
        for r in what:
            if not (isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
                    and type(r[1]) is int and type(r[2]) is int
                    and (0 <= r[1] <= r[2] or r[1:] == [0, -1])):  # -1: the whole file
                raise ValueError("a file split's ranges are [path, start, end]")
        return ["files", msgpack.packb(what, use_bin_type=True), *extra]
    raise ValueError(f"unknown split kind {kind!r:.20}")


def _option(value: Any) -> Any:
    """A read option's value, bounded: an int, a short string, or a list of them (a CSV
    file's column names)."""
    if type(value) is int:
        return value
    if isinstance(value, list):
        return [str(v)[:200] for v in value[:MAX_COLUMNS]]
    return str(value)[:100]


def storage_option(value: Any) -> dict:
    """A split's fsspec options (URL inputs), bounded as the client bounds them: a map of
    plain values; credentials are refused by the client, and a worker finds its own."""
    from ..store.urls import check_storage_options

    try:
        return check_storage_options(value)
    except ValueError as exc:
        raise ValueError(f"a split's storage options: {exc}") from None


def output_spec(value: Any) -> dict | None:
    """A SUBMIT's ``output`` (reducers write part files there, docs/store.md): ``{"url":
    str, "storage": map, "results": bool}``, checked and bounded; None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("url"), str) or not (
            0 < len(value["url"]) <= MAX_PATH) or not value["url"].isprintable():
        raise ValueError(f"output must be {{url: a path or URL of 1 to {MAX_PATH} "
                         "printable characters, storage, results}")
    return {"url": value["url"], "storage": storage_option(value.get("storage") or {}),
            "results": value.get("results") is not False}


def file_ranges(split: list) -> list:
    """A file split's ranges as a worker wants them (journals of older brokers kept the
    list itself)."""
    what = split[1]
    return msgpack.unpackb(what, raw=False) if isinstance(what, (bytes, bytearray)) else what


_KIND, _WHAT = itemgetter(0), itemgetter(1)
_HELD = frozenset(("mem", "files"))


def held_bytes(code: Any, splits: list) -> int:
    """What a job's code and inputs cost the broker's memory, about."""
    total = len(code)
    try:  # (the usual: each split's bytes, summed in C)
        if set(map(_KIND, splits)) <= _HELD:
            return total + sum(map(len, map(_WHAT, splits)))
    except TypeError:  # (one without a length: counted one by one below)
        pass
    for split in splits:
        if split[0] in ("mem", "files") and hasattr(split[1], "__len__"):
            total += len(split[1])
    return total


def parse(body: dict, blobs: tuple, default_reducers: int) -> Spec:
    """Check a SUBMIT's body and blobs (code first, then the splits blob and the in-memory
    splits); ValueError says what is wrong."""
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 200 or not job_id.isprintable():
        raise ValueError("job_id must be a string of 1 to 200 printable characters")
    if not blobs:
        raise ValueError("the submission carries no job code")
    at = body.get("splits")
    if type(at) is not int or not 1 <= at < len(blobs):
        raise ValueError("the submission names no input splits")
    splits = read_splits(blobs[at], blobs)
    reducers = body.get("reducers")
    if reducers is None:
        reducers = default_reducers
    if type(reducers) is not int or not 0 <= reducers <= MAX_TASKS:
        raise ValueError(f"reducers must be an int from 0 to {MAX_TASKS}")
    map_only = bool(body.get("map_only")) or reducers == 0
    skip = body.get("skip", 0)
    if type(skip) is not int or skip < -1:
        raise ValueError("skip must be -1 (no limit), 0 (off) or a number of records")
    priority = body.get("priority", 1)
    if type(priority) not in (int, float) or not 0 < priority <= 1e6:
        raise ValueError("priority must be a number above 0 (default 1)")
    requires = body.get("requires") or []
    if not isinstance(requires, list) or len(requires) > 64 or not all(
            isinstance(t, str) and 0 < len(t) <= 100 for t in requires):
        raise ValueError("requires must be a list of at most 64 tag names")
    steps = body.get("steps")
    if steps is not None:
        if not isinstance(steps, list) or not 0 < len(steps) <= MAX_STEPS or not all(
                isinstance(s, dict) and type(s.get("reducers")) is int
                and 0 < s["reducers"] <= MAX_TASKS
                and isinstance(s.get("map_only"), bool) for s in steps):
            raise ValueError(f"steps must be a list of 1 to {MAX_STEPS} "
                             "{reducers, map_only}")
        steps = [{"reducers": s["reducers"], "map_only": s["map_only"]} for s in steps]
        reducers, map_only = steps[0]["reducers"], steps[0]["map_only"]
    name = "".join(c if c.isprintable() else "?" for c in str(body.get("name", ""))[:200])
    options = {"name": name, "reducers": max(1, int(reducers)),
               "map_only": map_only, "skip": skip, "priority": priority,
               "requires": sorted(set(requires)), "steps": steps,
               "emits": body.get("emits") is True,
               "output": output_spec(body.get("output")),
               "codecs": sorted(announced(body.get("codecs"))),  # what its client decodes
               "submitted_at": time.time()}
    code = blobs[0]
    # its tasks cost the broker too (~650 bytes each, measured): a small SUBMIT of many
    # splits and reducers must count for what it will hold
    tasks = len(splits) + max([options["reducers"]] + [s["reducers"] for s in steps or ()])
    return Spec(job_id, code, splits, options, held_bytes(code, splits) + TASK_COST * tasks)
