"""An mrjob ``MRStep`` as a pymapreduce job step.

Records between steps are ``(position, chunk)``: ``chunk`` is lines of the protocol's
bytes, each ending in a newline (one reduce key's output, or a run of a map-only step's
output), and ``position`` is the reduce key they came from (``None`` for what a
``reducer_init``/``reducer_final`` wrote). mrjob's inline runner writes a step's output
in the order of its reduce keys' bytes and the next step reads it in that order; here
reduce keys are spread over partitions, so a step that follows a reduce tags each value
with its record's position and sorts a key's values by it before the reducer sees them:
values arrive in mrjob's order (``mr_text_classifier`` sums floats in that order).
The client sorts the last step's output by position (``adapters/mrjob/__init__.py``).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from ...job import Job
from .plan import Plan
from .task import CounterSink, TaskEnv, group_decoder, line_order, pair_encoder, split_line

FLUSH_LINES = 4096  # a map-only step's output lines gathered into one record
_tag = itemgetter(0)


def _lines(chunk: bytes) -> list:
    lines = chunk.split(b"\n")
    lines.pop()  # every line ends in a newline: the last piece is empty
    return lines


def _position_tag(position: Any) -> bytes:
    """Where a record of a reduce's output sorts: by its reduce key, the init/final output
    (position None) after all keys."""
    return b"\x01" if position is None else b"\x00" + position


class MRJobMap(Job):
    """A map-only mrjob step (or a step without reducer): output lines in input order."""

    def __init__(self, plan: Plan, n: int) -> None:
        self.plan = plan
        self.n = n

    # -- map side ----------------------------------------------------------------------
    def map_init(self) -> None:
        plan, n = self.plan, self.n
        step = plan.steps[n]
        self._env = TaskEnv(plan.token, plan.files, plan.env)
        self._task, self._step = plan.task(n, "mapper", CounterSink(self))
        self._out: list = []  # pairs not yet emitted (init output, buffered lines...)
        self._groups: dict | None = {} if step["combiner"] else None
        self._tagged = plan.tagged(n)
        self._tag = b""
        self._last_path = None
        reduced = step["reducer"]
        if step["mapper"]:
            read, write = self._task.pick_protocols(n, "mapper")
            self._read = read
            self._mapper = self._step["mapper_raw"] or self._step["mapper"]
            self._emit_pair = (self._keep_pair if reduced else self._keep_line)
            self._encode = pair_encoder(write) if reduced else None
            self._write = write
            init = self._step["mapper_init"]
            for k, v in (init() or ()) if init else ():
                self._emit_pair(k, v)
        else:  # no mapper: mrjob passes the lines on unchanged
            self._mapper = None

    def _keep_line(self, k: Any, v: Any) -> None:
        self._out.append(self._write(k, v))

    def _keep_pair(self, k: Any, v: Any) -> None:
        kb, rest = self._encode(k, v)
        value = [self._tag, rest] if self._tagged else rest
        if self._groups is not None:
            values = self._groups.get(kb)
            if values is None:
                self._groups[kb] = [value]
            else:
                values.append(value)
        else:
            self._out.append((kb, value))

    def map(self, key: Any, value: Any) -> list:
        source = self.plan.steps[self.n]["source"]
        if source == "text":  # ((path, offset), line read as Latin-1: the line's bytes)
            path = key[0]
            if path is not self._last_path:
                self._last_path = path
                self._set_input_file(path)
            line = value.encode("latin-1")
            if line[-1:] == b"\r":
                line = line.rstrip(b"\r\n")
            self._record(self._read(line))
        elif source == "raw":  # mapper_raw: (path, uri) of one whole file
            self._set_input_file(key)
            self._pairs(self._mapper(key, value))
        else:  # the lines of a step before
            if self._tagged:
                self._tag = _position_tag(key)
            if self._mapper is None:
                out = self._out
                for line in _lines(value):
                    kb, rest = split_line(line)
                    if self._tagged:
                        rest = [self._tag, rest]
                    if self._groups is not None:
                        self._groups.setdefault(kb, []).append(rest)
                    else:
                        out.append((kb, rest))
            else:
                read = self._read
                for line in _lines(value):
                    self._record(read(line))
        return self._emit()

    def _record(self, kv: tuple) -> None:
        self._pairs(self._mapper(kv[0], kv[1]))

    def _pairs(self, out: Any) -> None:
        if out:
            emit = self._emit_pair
            for k, v in out:
                emit(k, v)

    def _set_input_file(self, path: str) -> None:
        uri = "file://" + self.plan.display.get(path, path)
        for name in ("mapreduce_map_input_file", "map_input_file"):
            self._env.set(name, uri)

    def _emit(self) -> list:
        out = self._out
        if not out or self._groups is not None:
            return ()
        if self.plan.steps[self.n]["reducer"]:
            self._out = []
            return out
        if len(out) < FLUSH_LINES:
            return ()
        self._out = []
        return [(None, b"\n".join(out) + b"\n")]

    def map_final(self) -> list:
        try:
            if self._mapper is not None:
                final = self._step["mapper_final"]
                self._pairs(final() if final else None)
            if self._groups is not None:
                self._combine()
            out, self._out = self._out, []
            if self.plan.steps[self.n]["reducer"] or not out:
                return out
            return [(None, b"\n".join(out) + b"\n")]
        finally:
            self._env.close()

    def _combine(self) -> None:
        """The combiner over this task's output, keys in mrjob's order (their bytes)."""
        plan, n = self.plan, self.n
        task, step = plan.task(n, "combiner", CounterSink(self))
        read, write = task.pick_protocols(n, "combiner")
        decode, encode = group_decoder(read), pair_encoder(write)
        out = self._out
        combiner = step["combiner"]
        tagged = self._tagged
        groups, self._groups = self._groups, None

        def keep(pairs: Any, tag: bytes) -> None:
            for k, v in pairs or ():
                kb, rest = encode(k, v)
                out.append((kb, [tag, rest] if tagged else rest))

        init = step["combiner_init"]
        keep(init() if init else None, b"")
        for kb in sorted(groups):
            values = groups[kb]
            tag = b""
            if tagged:
                values.sort(key=_tag)
                tag = values[0][0]
                values = [r for _, r in values]
            if plan.sort_values:
                values.sort(key=line_order)
            keep(combiner(*decode(kb, values)), tag)
        final = step["combiner_final"]
        keep(final() if final else None, b"\x01")


class MRJobStep(MRJobMap):
    """An mrjob step with a reducer: the reduce side gives, per reduce key (its bytes),
    the chunk of lines the reducer wrote for it."""

    def reduce_init(self) -> None:
        plan, n = self.plan, self.n
        self._renv = TaskEnv(plan.token, plan.files, plan.env)
        self._rtask, step = plan.task(n, "reducer", CounterSink(self))
        read, self._rwrite = self._rtask.pick_protocols(n, "reducer")
        self._decode = group_decoder(read)
        self._reducer = step["reducer"]
        self._rfinal = step["reducer_final"]
        init = step["reducer_init"]
        self._rhead = self._chunk(init() if init else None)
        self._rtagged = plan.tagged(n)

    def _chunk(self, pairs: Any) -> bytes:
        if not pairs:
            return b""
        write = self._rwrite
        lines = [write(k, v) for k, v in pairs]
        return b"\n".join(lines) + b"\n" if lines else b""

    def reduce(self, key: bytes, values: list) -> bytes:
        if self._rtagged:
            values.sort(key=_tag)  # mrjob's order: by the position of each value's record
            values = [r for _, r in values]
        if self.plan.sort_values:
            values.sort(key=line_order)
        return self._chunk(self._reducer(*self._decode(key, values)))

    def reduce_final(self) -> list:
        try:
            tail = self._chunk(self._rfinal() if self._rfinal else None)
            chunk = self._rhead + tail
            return [(None, chunk)] if chunk else []
        finally:
            self._renv.close()
