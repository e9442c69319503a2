"""The client's half of direct output: checking the output before a job is submitted,
and committing it when the job has succeeded (see ``output.py`` for the protocol)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from ..client.output import PART, OutputExists, check_output_dir
from ..errors import ConfigError, PyMapReduceError, UndecodableValue
from . import localfs
from .output import SUCCESS, TEMPORARY, Location, job_temporary, part_name, temp_name
from .urls import (
    check_storage_options,
    check_url,
    credentials_error,
    is_url,
    local_path,
    no_credentials,
    redact,
    url_typo,
)

MAX_ATTEMPT = 1 << 64


class OutputNotWritten(PyMapReduceError):
    """The client could not write a part file of a finished job (a full disk, no
    permission): nothing half-written is left, and the results stay at the broker."""


class OutputMissing(PyMapReduceError):
    """A committed partition's part file is not where its worker wrote it (an output
    directory the client and workers do not share, or files removed meanwhile)."""


def prepare_output(directory: str | os.PathLike, *, overwrite: bool,
                   storage: dict | None = None, results: bool = True) -> dict:
    """Check that a job's output can go to ``directory`` (a path the workers share, or a
    URL) before the job runs, as ``check_output_dir`` does for a local one: a file there,
    a directory that is not empty (unless ``overwrite``), a missing bucket or a write
    that fails raise ConfigError naming it. Returns the ``output`` of the SUBMIT: the
    absolute path or URL, the storage options (no credentials), ``results``."""
    url = os.fspath(directory)
    storage = check_storage_options(storage)
    if not is_url(url):
        if url_typo(url):
            raise ConfigError(f"output {url!r} is not a URL{url_typo(url)}")
        path = os.path.abspath(check_output_dir(local_path(url), overwrite=overwrite))
        st = localfs.lstat(path, TEMPORARY)  # (a link planted there: said now, not later)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise localfs.refused(path, [TEMPORARY])
        return {"url": path, "storage": {}, "results": bool(results)}
    check_url(url)
    loc = Location(url, storage)
    try:
        if loc.fs.isfile(loc.root):
            raise ConfigError(f"output {redact(url)!r} is an object, not a directory")
        entries = loc.names()
        if entries and not overwrite:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise OutputExists(
                f"output {redact(url)!r} already exists and is not empty ({shown}): choose a "
                "new one, or overwrite its part files (--overwrite, or overwrite=True)")
        probe = f".pymapreduce-probe-{uuid.uuid4().hex}"  # credentials and bucket, now
        loc.fs.pipe_file(loc.path(probe), b"")
        loc.remove(probe)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        what = ("no such bucket or location" if isinstance(exc, FileNotFoundError) else
                "access denied" if isinstance(exc, PermissionError) else type(exc).__name__)
        raise ConfigError(f"cannot write the output {redact(url)!r}: {what} ({exc})") from None
    except Exception as exc:
        if no_credentials(exc):
            raise credentials_error(url, exc) from None
        raise
    return {"url": url.rstrip("/"), "storage": storage, "results": bool(results)}


def read_record(data: Any) -> dict | None:
    """The commit record of a partition's output (the third of ``[keys, values,
    record]``); None for an empty output (a partition no map task wrote to).
    UndecodableValue when it is not one: it came from a worker."""
    if not len(data):
        return None
    try:
        # (skipping a column needs it whole in the buffer: the output is in memory anyway)
        unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False,
                                    max_buffer_size=len(data) + (1 << 16), read_size=1 << 16)
        if unpacker.read_array_header() != 3:
            raise ValueError("not [keys, values, record]")
        unpacker.skip()
        unpacker.skip()
        record = unpacker.unpack()
    except Exception as exc:
        raise UndecodableValue(f"a partition's output holds no commit record ({exc})") from None
    if not isinstance(record, dict) or not all(
            type(record.get(k)) is int and 0 <= record[k] < MAX_ATTEMPT for k in
            ("attempt", "records", "bytes")):
        raise UndecodableValue("a partition's commit record is malformed")
    return record


def commit_job(output: dict, job_id: str, status: dict,
               blobs: Iterable[tuple[int, Any]], again: bool = True,
               decode: Callable[[int, Any], tuple[list, list]] | None = None) -> None:
    """Commit a succeeded job's output from its partitions' bytes at the broker
    (``blobs``: ``(part, bytes)``, read for their commit records). ``again=False``:
    leave an output that has its ``_SUCCESS`` already (a handle on a job another client
    submitted and committed). ``decode``: a partition's ``(keys, values)`` from its
    bytes, to write a part file the client cannot find from the data the broker kept
    (a local output that is not shared with the workers; see commit_output)."""
    if not again and Location(output["url"], output.get("storage")).exists(SUCCESS):
        return
    records = ((part, read_record(data), data) for part, data in blobs)
    commit_output(output, job_id, int(status["parts"]), records,
                  decode if output.get("results") is not False else None)


def abort_output(output: dict, job_id: str) -> None:
    """A job that failed or was cancelled: delete what its attempts wrote (best effort:
    the job's own error is what its caller must hear)."""
    try:
        loc = Location(output["url"], output.get("storage"))
        loc.remove_tree(job_temporary(job_id))  # (a link there, or on the way: left)
        loc.remove_empty(TEMPORARY)
    except Exception:  # (any: a store out of reach raises its client library's errors)
        pass


def refuse_results(job_id: str, output: Any) -> None:
    """Results the broker does not keep (``results=False``) cannot be read from it."""
    if isinstance(output, dict) and output.get("results") is False:
        raise PyMapReduceError(
            f"job {job_id} wrote its output to {output.get('url')} only (results=False): "
            "read the part files there, e.g. with read_jsonl()")


def commit_output(output: dict, job_id: str, parts: int,
                  records: Iterable[tuple[int, dict | None, Any]],
                  decode: Callable[[int, Any], tuple[list, list]] | None = None) -> list[str]:
    """Promote each committed attempt's part file to ``part-NNNNN``, remove part files of
    an earlier run beyond ``parts``, delete the job's ``_temporary``, then write
    ``_SUCCESS``. The names come from the job id, the partition and the attempt number,
    never from a path a worker sent. Safe to run again (a partition already promoted is
    left as it is). ``records``: ``(part, commit record, the partition's bytes)``.
    A part file that is not where its worker wrote it is written here from the data
    the broker kept, when there is ``decode`` (a local output on a file system the
    workers do not share: as the client wrote every part file before), else
    OutputMissing. Returns the part files' names."""
    loc = Location(output["url"], output.get("storage"))
    loc.refresh()
    begin_commit(loc)
    written = []
    for part, record, data in records:
        final = part_name(part)
        if record is None:  # no map task wrote to this partition
            loc.touch(final)
        else:
            tmp = temp_name(job_id, record["attempt"], part)
            if loc.exists(tmp):
                loc.rename(tmp, final)
            elif loc.local and decode is not None:  # (not shared: the data came home)
                try:
                    loc.write_lines(final + ".tmp", *decode(part, data))
                except OSError as exc:  # (a full disk): no half-written file stays
                    with contextlib.suppress(OSError):
                        loc.remove(final + ".tmp")
                    raise OutputNotWritten(
                        f"job {job_id}: could not write the part file "
                        f"{loc.shown(final)}: {exc.strerror or exc}; the job's results are "
                        "still at the broker: make room and wait() again to commit "
                        "them") from None
                loc.rename(final + ".tmp", final)
            elif not (loc.exists(final) and loc.size(final) == record["bytes"]):
                raise OutputMissing(
                    f"job {job_id}: the part file of partition {part} is not at "
                    f"{loc.shown(tmp)}, where its worker wrote it: is the output on a file "
                    "system the client and the workers share (or an object store)?")
        written.append(final)
    loc.remove_tree(job_temporary(job_id))
    loc.remove_empty(TEMPORARY)  # (only if no other job's attempts are there)
    end_commit(loc, parts)
    return written


def begin_commit(loc: Location) -> None:
    """The first step of writing an output: an earlier run's ``_SUCCESS`` removed, so
    that nobody takes a mix of two runs for a finished output."""
    loc.remove(SUCCESS)


def end_commit(loc: Location, parts: int) -> None:
    """The last steps, once every part file of this run is in place: part files of an
    earlier run beyond this run's ``parts`` removed, then ``_SUCCESS`` written, last (what
    readers wait for). The mrjob adapter's ``--output`` ends the same way."""
    for name in loc.names():  # an earlier run's extra parts
        if PART.fullmatch(name) and int(name[5:]) >= parts:
            loc.remove(name)
    loc.touch(SUCCESS)

