"""Running one task: inputs in, user code through the kernels, encoded partitions out."""

from __future__ import annotations

import os
from typing import Any

from .. import speedups
from ..errors import ValueNeedsPickle, result_needs_pickle, short_repr
from ..inputs import DEFAULT_ENCODING, MAX_LINE_BYTES, LineReader, check_read_options, read_split
from ..job import Columns, Job
from ..kernels import (
    KeyFailed,
    RecordFailed,
    finish_map_packed,
    map_grouped,
    map_pairs,
    merge_segments,
    reduce_groups,
)
from ..lines import Unparsed, input_size, read_whole
from ..patterns import allocator
from ..patterns.message import frame_bytes
from ..patterns.records import pack, paused_gc, unpack
from ..rangesort import map_runs, merge_runs, merge_runs_lines, pack_runs, plain_sort
from ..spill.budget import Budget, TaskFiles
from ..spill.mapside import map_only_spilling, map_runs_spilling, map_spilling
from ..spill.reduceside import (
    EXPANSION,
    fits_decoded,
    merge_sorted_files,
    merge_sorted_segments,
    reduce_spilling,
)
from ..spill.runs import ColumnsWriter, segment_pairs

SPILL_COUNTER = "pymapreduce.spilled_runs"  # runs a task spilled (when it spilled any)

# raised by user code to end "the program" (sys.exit() in map, a KeyboardInterrupt raised
# by hand): in a worker that would end the worker process (and sys.exit(77), the code of
# a refused key, its whole daemon), so a task that raises one fails, as with any error
USER_EXITS = (SystemExit, KeyboardInterrupt)
# The reader of the map task running now (None between tasks and for other inputs): its
# records and bytes read so far are the task's progress, which the worker's heartbeat
# thread sends to the broker while the task runs (workers/worker.py: _progress)
READING: list[LineReader | None] = [None]


class TaskError(Exception):
    """User code failed in a task; carries where in the input it happened."""

    def __init__(self, cause: BaseException, position: dict) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.position = position


class Numbered:
    """Records with their ordinals in the split: leaves out those in ``skip`` and knows
    which record is being mapped (the one to blame if ``map`` raises). A line its format
    could not read (:class:`~pymapreduce.lines.Unparsed`) raises its error here when it is
    not left out, and is ``unparsed``: the record to blame, skipped as a bad one is."""

    def __init__(self, records: Any, skip: Any) -> None:
        self.records = records
        self.skip = frozenset(skip)
        self.current = -1
        self.unparsed: tuple | None = None  # (its key, its error)

    def __iter__(self):
        skip = self.skip
        for i, record in enumerate(self.records):
            if i in skip:
                continue
            self.current = i
            if type(record[1]) is Unparsed:
                self.unparsed = (record[0], record[1].error)
                raise record[1].error
            yield record


def run_task(job: Job, kind: str, desc: list, blobs: list, reducers: int, map_only: bool,
             skip: Any = (), ordinals: bool = False, safe_output: bool = False,
             budget: Budget | None = None, columns: bool = False, lines: bool = False):
    """Run a map or reduce task; returns ``(output blobs, stats)``.

    A map task of a job with reducers yields one blob per partition (``b""`` when empty);
    a map-only map task and a reduce task yield one blob of ``[keys, values]`` columns.
    ``skip``: ordinals of records to leave out; ``ordinals``: a failure names the failing
    record's ordinal in its split (a job that may skip bad records). ``safe_output``: the
    output is the job's result and the job did not opt in to pickled results, so a value
    that would need pickling fails the task (:class:`ValueNeedsPickle`, naming its key and
    type) rather than reach a client that will refuse it. ``budget``: the process's memory
    budget; past it a task spills sorted runs to its own directory, removed when the task
    ends however it ends (``spill/``, docs/memory.md). ``columns``: a plain sort's reduce
    task that fits in memory returns its output as ``(keys, values)`` columns, not packed
    (its part file is written from them: ``store/output.py``'s ``write_attempt``), or,
    where its segments are runs of str, as the part file's lines merged from their bytes
    (:class:`~pymapreduce.rangesort.EncodedLines`), with the pairs packed unless
    ``lines`` (the client keeps no results, only the part file).
    """
    if budget is None:  # (the usual worker: no budget, no task directory)
        with paused_gc():
            return _run_task(job, kind, desc, blobs, reducers, map_only, skip, ordinals,
                             safe_output, None, None, columns, lines)
    with paused_gc(), budget.task_dir() as files:
        # (segments read from a sink as the task goes are not held: sinks/)
        streamed = getattr(getattr(blobs, "blobs", blobs), "streamed", False)
        budget.start_task(sum(len(b) for b in blobs) if kind != "map" and not streamed
                          else 0)
        out, stats = _run_task(job, kind, desc, blobs, reducers, map_only, skip, ordinals,
                               safe_output, budget, files, columns)
        if budget.spills:
            counters = stats.setdefault("counters", {})
            counters[SPILL_COUNTER] = counters.get(SPILL_COUNTER, 0) + budget.spills
        return out, stats


def _run_task(job: Job, kind: str, desc: list, blobs: list, reducers: int, map_only: bool,
              skip: Any, ordinals: bool, safe_output: bool, budget: Budget | None = None,
              files: TaskFiles | None = None, columns: bool = False, lines: bool = False):
    job._take_counters()  # counters belong to the task that produced them
    if kind == "map":
        if budget is not None and desc[0] == "cols" and not fits_decoded(
                [frame_bytes(blobs[desc[1]])], budget):
            # the step before's output, larger than the room left: read pair by pair
            records = StreamedPairs(frame_bytes(blobs[desc[1]]))
            nbytes, where = len(records.blob), {}
        else:
            records, nbytes, where = _open_split(desc, blobs)
            if (ordinals or skip) and isinstance(records, LineReader):
                records.skipped = len(skip)  # (as its statistics count them)
                records.lenient = True  # an unreadable line is a bad record, to skip
        source = Numbered(records, skip) if ordinals or skip else records
        try:
            if map_only and budget is not None and files is not None:
                out = [_packed(map_only_spilling(job, source, budget, files, safe_output),
                               safe_output)]
            elif map_only:
                out = [pack_output(map_pairs(job, source), safe_output)]
            elif budget is not None and files is not None:  # sort and spill past the budget
                if plain_sort(job):
                    out = map_runs_spilling(job, source, reducers, budget, files)
                else:
                    out = map_spilling(job, source, reducers, budget, files)
            elif plain_sort(job):  # a total_order job without reduce: sorted runs
                out = pack_runs(map_runs(job, source, reducers))
            else:
                out = finish_map_packed(job, map_grouped(job, source), reducers)
        except RecordFailed as exc:
            if isinstance(records, LineReader):
                where["path"] = records.path
            if isinstance(source, Numbered) and source.unparsed is not None and \
                    exc.__cause__ is source.unparsed[1]:  # a line its format cannot read
                raise TaskError(exc.__cause__, {**where, "ordinal": source.current,
                                                **_where(records, source.unparsed[0])}) from exc
            if isinstance(records, LineReader):
                if records.error is not None and records.error is exc.__cause__:
                    # the input failed (unreadable, a line over the limit), not the record
                    # map saw last: no ordinal, so it is never skipped as a bad record
                    raise TaskError(records.error, where) from exc
            if not exc.of_record:  # (map_final, a spill to a full disk): no record named,
                raise TaskError(exc.__cause__, where) from exc  # so none is ever skipped
            if isinstance(source, Numbered):
                where["ordinal"] = source.current
            raise TaskError(exc.__cause__, {**where, **_where(records, exc.key)}) from exc
        except (Exception, *USER_EXITS) as exc:
            raise TaskError(exc, where) from exc
        finally:
            READING[0] = None
        stats = {"records": records.count if isinstance(records, LineReader) else len(records),
                 "bytes": nbytes}
        if skip:
            stats["records"] -= len(skip)
    else:
        first, n = desc[1], desc[2]
        try:
            # map outputs come from other workers, which run user code (and so may pickle)
            # each segment's frame let go once decoded: a reduce task holds its groups,
            # not its groups and every encoded segment they came from (docs/memory.md)
            read = [0, 0]  # records and bytes of the segments read (the task's input)
            combined = job._has("combine")
            segments = _counted((unpack(b, allow_pickle=True)
                                 for b in _taken(blobs, first, n, read)), combined, read)
            if budget is not None and files is not None:
                out = [_reduce_in_budget(job, blobs, first, n, budget, files, safe_output,
                                         read)]
            elif plain_sort(job):
                encoded = None
                if columns and speedups.merge_runs_json is not None:
                    # (its part file, and its pairs packed if the client keeps results:
                    # merged from the segments' bytes)
                    taken = list(_taken(blobs, first, n, read))
                    encoded = merge_runs_lines(taken, columns=not lines)
                    segments = _counted((unpack(b, allow_pickle=True)
                                         for b in _drained(taken)), combined, read)
                if encoded is not None:
                    read[0] += encoded.records
                    out = [encoded]
                else:
                    types: set = set()
                    merged = merge_runs(job, segments, types)
                    # (columns of types that never need a pickle: the safe check has
                    # nothing to find)
                    out = [merged if columns and types <= NATIVE_TYPES
                           else pack_output(merged, safe_output)]
            else:
                # (a merge by bucket holds a round of decoded segments; the bytes of all
                # of them at once cost the 256 MiB word count's reduce tasks 41 MB each)
                groups = merge_segments(segments, combined=combined)
                out = [pack_output(reduce_groups(job, groups), safe_output)]
        except KeyFailed as exc:  # reduce failed at a key: named in the position
            raise TaskError(exc.__cause__, {"partition": desc, "key": _short(exc.key)}) \
                from exc
        except (Exception, *USER_EXITS) as exc:
            raise TaskError(exc, {"partition": desc}) from exc
        # (records: the map output records merged, after any combining, as Hadoop's
        # "reduce input records"; not counted where a spilling kernel decodes them itself)
        stats = {"records": read[0], "bytes": read[1]}
    counters = job._take_counters()
    if counters:
        stats["counters"] = counters
    return out, stats


# Types msgpack carries as they are: a column of these never needs a pickle
NATIVE_TYPES = frozenset({str, int, float, bool, bytes, type(None)})


def _reduce_in_budget(job: Job, blobs: list, first: int, n: int, budget: Budget,
                      files: TaskFiles, safe: bool, read: list) -> bytes:
    """A reduce task's output blob under a memory budget (``spill/reduceside.py``);
    ``read``: the records and bytes read, added to (records where decoded here)."""
    if plain_sort(job):
        if getattr(getattr(blobs, "blobs", blobs), "streamed", False):
            # read at a sink one reply at a time: spooled to the task's directory, and
            # merged from there unless they fit after all
            paths = _spooled(blobs, first, n, files, read)
            if sum(map(os.path.getsize, paths)) * EXPANSION < budget.limit - budget.used():
                return pack_output(merge_runs(job, _counted(
                    (unpack(_read(p), allow_pickle=True) for p in paths), True, read)), safe)
            return merge_sorted_files(job, paths, ColumnsWriter(files, safe=safe))
        segments = [frame_bytes(b) for b in blobs[first:first + n]]
        read[1] += sum(map(len, segments))
        if fits_decoded(segments, budget):  # today's sort of the concatenated runs
            return pack_output(merge_runs(job, _counted(
                (unpack(s, allow_pickle=True) for s in segments), True, read)), safe)
        return merge_sorted_segments(job, segments, ColumnsWriter(files, safe=safe))
    out = reduce_spilling(job, _taken(blobs, first, n, read), budget, files, safe)
    return _packed(out, safe)


def _drained(items: list) -> Any:
    """The items of a list, in order, each let go by the list as it is given."""
    items.reverse()
    while items:
        yield items.pop()


def _counted(segments: Any, combined: bool, read: list) -> Any:
    """``segments`` (decoded), each one's records added to ``read[0]`` as it passes: a
    value each where a segment holds one per key (flat, combined, sorted runs), else its
    keys' lists of values. What cannot be counted is left to the merge to refuse."""
    for segment in segments:
        try:
            keys, values = segment[0], segment[1]
            read[0] += len(keys) if combined or len(segment) > 2 else sum(map(len, values))
        except (TypeError, IndexError, KeyError):
            pass
        yield segment


def _spooled(blobs: Any, first: int, n: int, files: TaskFiles, read: list) -> list[str]:
    """Each of the task's segments written to a file of its own, and let go."""
    paths = []
    for blob in _taken(blobs, first, n, read):
        path = files.new_path("segment")
        with open(path, "wb") as f:
            f.write(blob)
        paths.append(path)
    return paths


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _packed(out: Any, safe: bool) -> bytes:
    """A spilling kernel's output: bytes as it wrote them, or columns to pack as today."""
    return out if isinstance(out, bytes) else pack_output(out, safe)


def _taken(blobs: list, first: int, n: int, read: list) -> Any:
    """The task's segments, each let go once read: the task's own slots of its TASKS
    message's blobs, so a decoded segment's bytes are freed, not held to the end; their
    sizes are added to ``read[1]``."""
    for i in range(first, first + n):
        blob = frame_bytes(blobs[i])
        blobs[i] = b""
        read[1] += len(blob)
        yield blob
        large = len(blob) >= allocator.TRIM_MIN
        del blob
        if large:  # its pages, in ZeroMQ's I/O thread's arena, back to the kernel
            allocator.trim()


def pack_output(columns: Columns, safe: bool) -> bytes:
    """Encode ``(keys, values)``; ``safe``: without pickles, else ValueNeedsPickle naming
    the first pair that needs one."""
    if not safe:
        return pack(list(columns))
    try:
        return pack(list(columns), allow_pickle=False)
    except ValueNeedsPickle as exc:
        error = exc
    for key, value in zip(*columns):  # the error path only: find whom to blame
        try:
            pack([key, value], allow_pickle=False)
        except ValueNeedsPickle as pair_error:
            raise result_needs_pickle(key, pair_error) from None
    raise error


class StreamedPairs:
    """A multi-step job's input (``[keys, values]``) decoded one pair at a time; its
    ``len`` is the pairs read so far (the task's record count once it is mapped)."""

    def __init__(self, blob: Any) -> None:
        self.blob = blob
        self.count = 0

    def __iter__(self):
        if not len(self.blob):
            return
        for pair in segment_pairs(self.blob):
            self.count += 1
            yield pair

    def __len__(self) -> int:
        return self.count


def _open_split(desc: list, blobs: list) -> tuple[Any, int, dict]:
    if desc[0] == "mem":
        blob = frame_bytes(blobs[desc[1]])
        return unpack(blob, allow_pickle=True), len(blob), {}
    if desc[0] == "cols":  # the output of a multi-step job's step before: [keys, values]
        blob = frame_bytes(blobs[desc[1]])
        if not len(blob):
            return [], 0, {}
        keys, values = unpack(blob, allow_pickle=True)
        return list(zip(keys, values)), len(blob), {}
    ranges = desc[1]
    # how to read them: ["files", ranges, {"encoding": ..., "max_line_bytes": ...}], the
    # settings of read_text() that are not the defaults (checked: they came over the wire)
    options = desc[2] if len(desc) > 2 and isinstance(desc[2], dict) else {}
    encoding, limit = check_read_options(options.get("encoding", DEFAULT_ENCODING),
                                         options.get("max_line_bytes", MAX_LINE_BYTES))
    storage = options.get("storage")  # fsspec options of URL inputs
    storage = storage if isinstance(storage, dict) else None
    nbytes = sum((end - start) if end >= 0 else input_size(path, storage)
                 for path, start, end in ranges)
    fmt = options.get("format", "text")
    if fmt == "files":  # read_files(): one record (path, bytes) per file
        return [(path, read_whole(path, storage)) for path, _, _ in ranges], nbytes, {
            "files": len(ranges)}
    with_path = options.get("with_path") == 1  # keys (path, offset): records know their file
    columns = options.get("columns")
    columns = [str(c) for c in columns] if isinstance(columns, list) else None
    header = options.get("header", "given")  # a CSV input's first line of each file
    header = header if header in ("given", "file", "none") else "given"
    reader = read_split(ranges, encoding, limit, with_path, str(fmt), columns, header, storage)
    reader.size = nbytes
    READING[0] = reader  # (let go when the task ends: _run_task)
    return reader, nbytes, {"files": len(ranges)}


def _where(records: Any, key: Any) -> dict:
    """Where in its split the failing record is: its key, and for in-memory records its
    index (files: the key is the byte offset already)."""
    where = {"key": _short(key)}
    if isinstance(records, list):
        where["record"] = next((i for i, r in enumerate(records) if r[0] == key), None)
    return where


def _short(value: Any) -> str:
    """``value``'s repr, cut to 200 characters (its "..." within them: a FAILED report's
    position keeps no more, patterns/wire.py). A value whose ``repr`` raises is named by
    its type: the error to report is the one its task failed with, not that one."""
    return short_repr(value, 200)
