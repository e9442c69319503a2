"""One error tree for everything pymapreduce raises on purpose."""

from __future__ import annotations


class PyMapReduceError(Exception):
    """Root of every error pymapreduce raises on purpose."""


class ConfigError(PyMapReduceError, ValueError):
    """A setting or an argument is invalid (names the setting and the reason)."""


class StateError(PyMapReduceError):
    """The broker's state directory cannot be trusted or written: a damaged journal or
    output file, or a full disk. The message names the file and what to do."""


class OutputDamaged(StateError):
    """A committed output file does not match the checksum journaled with it (or is gone);
    ``path`` names the file."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class InputError(PyMapReduceError, ValueError):
    """The job's inputs cannot be read: a path that matches nothing, records that are not pairs."""


class JobNotPicklable(PyMapReduceError, TypeError):
    """The Job (or an attribute of it) cannot be pickled, so it cannot travel to the workers."""


class LineTooLong(InputError):
    """A text input's line is longer than its ``max_line_bytes``: no retry can read it."""


class InputDamaged(InputError):
    """A compressed input whose bytes are damaged: truncated (the stream ends before its
    end marker) or corrupt (a bad checksum, data its decompressor cannot read). The file
    says the same on every attempt, so no retry can read it; a file that cannot be read
    for now (an I/O error of a network mount, a file gone) is a plain InputError, retried."""


class BadRecord(InputError):
    """A line of a ``read_jsonl`` or ``read_csv`` input that its format cannot read (not
    JSON, not a CSV row, more fields than the header, a header unlike the first file's):
    the file says the same on every attempt, so no retry can read it."""


class UnencodableValue(PyMapReduceError, TypeError):
    """A key or value can be carried neither by msgpack nor by cloudpickle."""


class ValueNeedsPickle(UnencodableValue):
    """A result value can only travel pickled and the job did not opt in to pickled results
    (``Job.pickle_results``): raised on the worker, so the task fails naming the type,
    instead of the client refusing the value later."""


class UndecodableValue(PyMapReduceError, ValueError):
    """Encoded keys or values could not be decoded: malformed bytes, or an extension type
    this version does not know."""


class PickledValueRefused(UndecodableValue):
    """A value arrived pickled where pickles are never loaded: results reach a client that
    did not opt in (``Job.pickle_results``, ``Client.job(..., pickle_results=True)``).
    Nothing was unpickled; the message names the pickled type as its opcodes state it."""


class ProtocolError(PyMapReduceError):
    """A message could not be decoded: carries the byte length and the cause."""

    def __init__(self, message: str, *, size: int = 0, cause: str = "") -> None:
        super().__init__(message)
        self.size = size
        self.cause = cause


class BrokerUnavailable(PyMapReduceError, ConnectionError):
    """The broker did not answer within the timeout (gone, wrong address, or blocked)."""


class BrokerBusy(PyMapReduceError):
    """The broker cannot serve this request now (its memory for replies not yet read by
    their clients is taken); the client library retries it for a while by itself."""


class AddressInUse(PyMapReduceError, OSError):
    """A daemon could not bind its address because another process holds it."""


class JobFailed(PyMapReduceError):
    """A job could not finish: user code kept failing, or it was cancelled.

    ``remote_traceback`` holds the traceback text from the worker that ran the failing
    task; ``task`` names the task (``map-3``, ``reduce-0``) and ``position`` the input split.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str = "",
        task: str = "",
        position: object = None,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.task = task
        self.position = position
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        where = describe_position(self.position)
        if where:
            text += f"\nInput: {where}"
        if self.remote_traceback:
            text += "\n\nRemote traceback (from the worker):\n" + self.remote_traceback.rstrip()
        return text


def holding_value(exc: BaseException, public: str, value: object,
                  label: str = "") -> BaseException:
    """``exc``, an error the engine made whose message shows one of the job's data values
    (an output it cannot use, a key): ``public`` is the same message without it, and
    ``value`` the value, cut. A worker reports the failure with ``public`` as its text
    and the value in the failure's position (``value``), so the job's owner reads it in
    ``JobFailed`` and ``status`` while events, the dashboard, the history and the
    daemons' logs, which others may read, never show it (docs/observability.md). Raised
    in the user's own process (a local run, the client's sample) the message keeps it.
    ``label`` says what the value is where the position shows it (``map's key``,
    ``the result's key``: a key is not read as a record's value), no data in it."""
    exc._pmr_public = public  # type: ignore[attr-defined]
    exc._pmr_value = short_repr(value, 200)  # type: ignore[attr-defined]
    exc._pmr_label = label  # type: ignore[attr-defined]
    return exc


def result_needs_pickle(key: object, cause: BaseException) -> BaseException:
    """The error for the result of ``key`` that can only travel pickled (``cause``: the
    ValueNeedsPickle that names its type), the key shown as :func:`holding_value` does."""
    return holding_value(ValueNeedsPickle(f"the result for key {short_repr(key, 200)}: {cause}"),
                         f"the result for a key: {cause}", key, "the result's key")


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; a value whose ``repr`` raises is
    named by its type."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} whose repr() fails>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def line_offset(key: object, path: object) -> int | None:
    """The byte offset of a text input's failing line, from the record key a worker
    reported (its repr): the offset itself, or ``(path, offset)`` (``read_text`` with
    ``with_path``, and mrjob jobs); None for any other key."""
    if not isinstance(key, str):
        return None
    if key.isdigit():
        return int(key)
    prefix = f"({path!r}, "
    if isinstance(path, str) and key.startswith(prefix) and key.endswith(")") \
            and key[len(prefix):-1].isdigit():
        return int(key[len(prefix):-1])
    return None


def describe_position(position: object) -> str:
    """Where in its input a task failed, in words: ``file /data/a.txt, the line at byte
    1234 (map split 3)`` (``/data/a.txt.gz, the line at byte 1234 of its decompressed
    text``: a compressed file's offsets are in the text it decompresses to) or ``record 17 of map split 2, key 'x'``; "" when unknown.

    ``position`` is what the worker reported (``JobFailed.position``): ``path`` (the file
    being read), ``key`` (the failing record's key, as its repr: a text input's byte
    offset), ``record`` (an in-memory record's index in its split), ``ordinal`` (its
    ordinal, when the job skips bad records) and ``split`` (the map task), or
    ``partition`` (a reduce task) and ``key`` (the key its ``reduce`` failed at); and
    ``value``, the data value an engine error blames (:func:`holding_value`), shown
    after ``value_label``, what it is (``map's key``; "the value" when not given)."""
    if not isinstance(position, dict) or not position:
        return ""
    path, key = position.get("path"), position.get("key")
    record = position.get("record")
    if record is None:
        record = position.get("ordinal")
    split = position.get("split")
    task = f"map split {split}" if split is not None else ""
    if not task and type(position.get("partition")) is int:  # (a reduce task's own failure)
        task = f"reduce partition {position['partition']}"
    parts = []
    if path:
        parts.append(f"file {path}")
        offset = line_offset(key, path)
        if offset is not None:
            from .lines import line_at  # (a compressed file's offset is in its text)

            parts.append(line_at(path, offset))
        elif key is not None:
            parts.append(f"record key {key}")
        if record is not None:
            task = f"record {record} of {task or 'its split'}"
    else:
        if record is not None:
            parts.append(f"record {record} of {task or 'its split'}")
            task = ""
        if key is not None:
            parts.append(f"key {key}")
    value = position.get("value")
    if isinstance(value, str):
        label = position.get("value_label")
        if not isinstance(label, str) or not label or len(label) > 40:
            label = "the value"
        parts.append(f"{label} {value}")
    if not parts:
        return task
    return ", ".join(parts) + (f" ({task})" if task else "")


class JobNotFound(PyMapReduceError, KeyError):
    """The broker knows no job with this id (never submitted, expired, or the broker restarted)."""

    def __str__(self) -> str:  # KeyError quotes its argument; say it plainly instead
        return str(self.args[0]) if self.args else "job not found"


class JobTimeout(PyMapReduceError, TimeoutError):
    """``result()``/``wait()`` gave up after its timeout; the job itself goes on."""


class AuthenticationFailed(PyMapReduceError, PermissionError):
    """The broker refused this side's key, or the keys do not match (names the likely cause)."""


class BadOutput(PyMapReduceError, TypeError):
    """A job's code gave output the engine cannot use: ``map`` (or a ``_final`` hook, or
    an emitting ``reduce``) yielded something that is not a ``(key, value)`` pair, a key
    that cannot be grouped (a dict, a set), or, in a ``total_order`` job, keys that do not
    compare with each other; or ``partition`` returned no int in ``range(0, reducers)``.
    The message names the job's method and the value (a worker reports it with the
    value's type only, and the value in the failure's position: :func:`holding_value`).
    The same code fails the same way on every attempt, so the task is not retried as a
    lost worker would be."""


class OutputLinkRefused(PyMapReduceError, OSError):
    """A name inside a local output directory that pymapreduce would go through is a
    symbolic link (or not a directory where one must be): ``OUT/_temporary`` or
    ``OUT/_temporary/<job>`` made a link by whoever can write ``OUT``. Nothing is written,
    renamed or deleted through it; the message names the path. Not retried: the link
    stays until someone removes it."""
