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
from typing import Any, NoReturn

from mrjob.protocol import TextValueProtocol

from ...errors import BadRecord, holding_value, short_repr
from ...job import Job
from . import commands
from .grouping import (
    combine_by_key,
    encode_groups,
    group_decoder,
    key_groups,
    pair_encoder,
    pair_keeper,
    sort_lines,
    split_line,
)
from .plan import Plan
from .task import CounterSink, TaskEnv, line_writer

FLUSH_LINES = 4096  # a map-only step's output lines gathered into one record
_tag = itemgetter(0)


def unreadable(read: Any, line: bytes, exc: Exception) -> NoReturn:
    """Raise the error for an input line that the mapper's protocol cannot read
    (``exc``). One of mrjob's own protocols may quote the line in its error
    (``ReprProtocol``'s ``NameError``, a ``SyntaxError``'s traceback), so the error names
    the protocol and the error's type, and the line goes in the failure's position, its
    owner's only (errors.holding_value). A protocol of the job's own raises as the job's
    code does: ``exc`` as it is."""
    proto = type(getattr(read, "__self__", None))
    if not proto.__module__.startswith("mrjob."):
        raise exc
    what = f"{proto.__name__} cannot read {{}}: {type(exc).__name__}"
    raise holding_value(BadRecord(what.format(f"the line {short_repr(line, 200)}") +
                                  f": {exc}"), what.format("the line"), line,
                          "its text") from None


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
        self._source = step["source"]
        self._reduced = step["reducer"]
        self._out: list = []  # pairs (or a map-only step's lines) not yet emitted
        self._groups: dict | None = {} if step["combiner"] else None
        self._tagbox = [b""] if plan.tagged(n) else None  # the current record's position
        self._last_path = None
        # a command's input, gathered (mapper_cmd, mapper_pre_filter: commands.py)
        self._raw: list | None = [] if step["command"] or step["pre_filter"] else None
        if step["command"]:
            self._mapper = None
        elif step["mapper"]:
            read, write = self._task.pick_protocols(n, "mapper")
            self._read = read
            # text read as Latin-1 is the line's bytes; an ASCII line is also its UTF-8
            # text, which is what mrjob's default RawValueProtocol makes of it
            self._text_as_is = (self._source == "text" and
                                type(getattr(read, "__self__", None)) is TextValueProtocol)
            self._mapper = self._step["mapper_raw"] or self._step["mapper"]
            self._write = line_writer(write)
            self._emit_pair = (pair_keeper(write, self._groups, self._out, self._tagbox)
                               if self._reduced else self._keep_line)
            init = self._step["mapper_init"]
            self._pairs(init() if init else None)
            if self._source == "text" and self._raw is None:
                self.map = self._text_map()  # (read by the engine after map_init)
        else:  # no mapper: mrjob passes the lines on unchanged
            self._mapper = None

    def _keep_line(self, k: Any, v: Any) -> None:
        self._out.append(self._write(k, v))

    def _text_map(self) -> Any:
        """``map`` for lines of text, the common case, as one function: what the general
        :meth:`map` does for a line, with its attributes and calls bound once per task
        (a line of ``mr_wc`` cost the map task about half again its mapper's time)."""
        mapper, read, keep = self._mapper, self._read, self._emit_pair
        as_is = self._text_as_is
        out, emit = self._out, self._emit
        flat = self._reduced and self._groups is None  # emitted per record, as a batch
        grouped = self._groups is not None
        set_input_file = self._set_input_file
        last = None

        def map_text(key: Any, value: str) -> Any:
            nonlocal last
            path = key[0]
            if path is not last:
                last = self._last_path = path
                set_input_file(path)
            if as_is and value.isascii():
                if value.endswith("\r"):
                    value = value.rstrip("\r\n")
                pairs = mapper(None, value)
            else:
                line = value.encode("latin-1")
                if line[-1:] == b"\r":
                    line = line.rstrip(b"\r\n")
                try:
                    k, v = read(line)
                except Exception as exc:
                    unreadable(read, line, exc)
                pairs = mapper(k, v)
            if pairs:
                for k, v in pairs:
                    keep(k, v)
            if not out or grouped:
                return None  # (nothing to go over: the engine's loop skips None)
            if flat:
                batch = out.copy()  # (the keeper holds on to this list: empty it, keep it)
                out.clear()
                return batch
            return emit()
        return map_text

    def map(self, key: Any, value: Any) -> list:
        source = self._source
        if self._raw is not None:
            self._gather(key, value)
            return ()
        if source == "text":  # ((path, offset), line read as Latin-1: the line's bytes)
            self.map = self._text_map()  # (map_init binds it; bound here if it did not)
            return self.map(key, value)
        if source == "raw":  # mapper_raw: (path, uri) of one whole file
            self._set_input_file(key)
            self._pairs(self._mapper(key, value))
        else:  # the lines of a step before
            tagbox = self._tagbox
            if tagbox is not None:
                tagbox[0] = _position_tag(key)
            if self._mapper is None:
                self._pass_lines(value)
            else:
                read, mapper, pairs = self._read, self._mapper, self._pairs
                for line in _lines(value):
                    try:
                        k, v = read(line)
                    except Exception as exc:
                        unreadable(read, line, exc)
                    pairs(mapper(k, v))
        return self._emit()

    def _gather(self, key: Any, value: Any) -> None:
        """A record's lines, for the command (their newlines, not their ``\\r``, kept)."""
        if self._source == "text":
            if self._last_path is None:
                self._last_path = key[0]
                self._set_input_file(key[0])
            self._raw.append(value.encode("latin-1") + b"\n")
        else:
            if self._tagbox is not None:
                self._tagbox[0] = _position_tag(key)
            self._raw.append(value)

    def _run_command(self) -> None:
        step = self.plan.steps[self.n]
        data = b"".join(self._raw)
        self._raw = None
        if step["command"]:
            lines = commands.run_lines(commands.command_args(step["command"]), data, True)
            if self._reduced:
                self._pass_lines(lines)
            else:
                self._out.extend(lines)
            return
        lines = commands.run_lines(commands.pre_filter_args(step["pre_filter"]), data, False)
        read, mapper, pairs = self._read, self._mapper, self._pairs
        for line in lines:
            k, v = read(line.rstrip(b"\r\n"))
            pairs(mapper(k, v))

    def _pass_lines(self, chunk: Any) -> None:
        """A step without mapper: each line as mrjob's sort cuts it."""
        groups, out, tagbox = self._groups, self._out, self._tagbox
        for line in _lines(chunk) if type(chunk) is bytes else chunk:
            kb, rest = split_line(line)
            if tagbox is not None:
                rest = [tagbox[0], rest]
            if groups is not None:
                groups.setdefault(kb, []).append(rest)
            else:
                out.append((kb, rest))

    def _pairs(self, out: Any) -> None:
        if out:
            emit = self._emit_pair
            for k, v in out:
                emit(k, v)

    def _set_input_file(self, path: str) -> None:
        uri = "file://" + self.plan.display.get(path, path)
        for name in ("mapreduce_map_input_file", "map_input_file"):
            self._env.set(name, uri)

    def _emit(self) -> Any:
        out = self._out
        if not out or self._groups is not None:
            return ()
        if self._reduced:
            batch = out.copy()  # (the keeper holds on to this list: empty it, keep it)
            out.clear()
            return batch
        if len(out) < FLUSH_LINES:
            return ()
        chunk = b"\n".join(out) + b"\n"
        out.clear()
        return [(None, chunk)]

    def map_final(self) -> list:
        try:
            if self._raw is not None:
                self._run_command()
            if self._mapper is not None:
                final = self._step["mapper_final"]
                self._pairs(final() if final else None)
            if self._groups is not None:
                self._combine()
            out = self._out.copy()
            self._out.clear()
            if self._reduced or not out:
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
        tagged = self._tagbox is not None
        groups, self._groups = self._groups, None

        def keep(pairs: Any, tag: bytes) -> None:
            for k, v in pairs or ():
                kb, rest = encode(k, v)
                out.append((kb, [tag, rest] if tagged else rest))

        init = step["combiner_init"]
        keep(init() if init else None, b"")
        if key_groups(groups):  # by key, int values (grouping.py): each key encoded once
            if combine_by_key(groups, self._emit_pair.key_bytes, combiner, plan.sort_values,
                              read, write, out):
                groups = {}
            else:  # (the combiner reads or writes another protocol: it reads bytes)
                encode_groups(groups, self._emit_pair.key_bytes)
        for kb in sorted(groups):
            values = groups[kb]
            tag = b""
            if tagged:
                values.sort(key=_tag)
                tag = values[0][0]
                values = [r for _, r in values]
            if plan.sort_values:
                sort_lines(values)
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
        read, write = self._rtask.pick_protocols(n, "reducer")
        self._rwrite = line_writer(write)
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
            sort_lines(values)
        return self._chunk(self._reducer(*self._decode(key, values)))

    def reduce_final(self) -> list:
        try:
            tail = self._chunk(self._rfinal() if self._rfinal else None)
            chunk = self._rhead + tail
            return [(None, chunk)] if chunk else []
        finally:
            self._renv.close()
