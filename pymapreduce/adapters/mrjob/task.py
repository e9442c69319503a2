"""One mrjob task inside a pymapreduce task: the ``MRJob`` instance, its protocols as
mrjob's sort sees them, its counters, its working directory and environment.

mrjob sorts and groups the lines a mapper writes by their bytes up to the first tab (the
encoded key), or by the whole line with ``SORT_VALUES``, and a reducer reads them back
through the protocol. The adapter keeps that contract: map output travels as ``(key
bytes, rest of the line)``, is grouped by the key bytes, and is decoded only for the
user's ``reducer``; so keys that differ in their encoding (``1`` and ``1.0``) are two
groups, tuples arrive as lists, and reduce keys sort as mrjob sorts them.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from mrjob.protocol import _KeyCachingProtocol

from ...job import MAX_COUNTER_NAME, MAX_COUNTERS, Job
from ...patterns import owned
from ...workers.isolation import ROOT_PREFIX

CACHE_LIMIT = 1 << 16  # encoded keys and small values remembered per task (word counts)
TUPLE_TRIAL = 1 << 14  # tuple lookups before a task judges whether remembering them pays
OVERFLOW_COUNTER = "mrjob,(counters past the per-task limit)"
IMMUTABLE = (int, str, float, bool, type(None))


_JSON_DUMPS, _JSON_LOADS = json.dumps, json.loads  # (as imported: patched ones are left alone)
_JSON_ENCODER, _JSON_DECODER = json._default_encoder, json._default_decoder
_JSON_DEFAULT = json.JSONEncoder.default
# json.dumps(x) for a str x, as json.dumps makes it (ensure_ascii: its C writer)
_STR = json.encoder.encode_basestring_ascii


def _stdlib_json(method: Callable, name: str) -> bool:
    """Whether ``method`` is mrjob's ``StandardJSONProtocol.<name>`` over the standard
    library's json as this module found it (not rapidjson, ujson, or a patched json)."""
    from mrjob import protocol

    return (getattr(method, "__func__", None) is getattr(protocol.StandardJSONProtocol, name)
            and protocol.json is json and json.dumps is _JSON_DUMPS
            and json.loads is _JSON_LOADS)


def json_dumps(dumps: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """``dumps``, a protocol's ``_dumps``, made faster for str, int, tuples and lists
    when it is mrjob's ``StandardJSONProtocol._dumps`` over the standard library's
    ``json.dumps`` (what ``JSONProtocol`` is without rapidjson or ujson installed), by
    the C functions ``json.dumps`` itself uses, without its Python around them (the same
    bytes and errors); otherwise ``dumps`` itself."""
    if not _stdlib_json(dumps, "_dumps"):
        return dumps
    mixed = _array_writer()

    found = [None]  # json as this module found it, looked at when first used

    def fast(x: Any) -> bytes:
        t = type(x)
        if t is int:
            return int.__repr__(x).encode()
        ok = found[0]
        if ok is None:  # (a task's _init hook may have changed json: then json writes)
            ok = found[0] = _json_as_found()
        if ok:
            if t is str:
                return _STR(x).encode()
            if (t is tuple or t is list) and mixed is not None:
                return mixed(x)
        return dumps(x)
    fast.plain = True  # (the fast path is on: tests/test_mrjob.py checks it is the one tested)
    return fast


def _json_as_found() -> bool:
    """Whether json.dumps and json.loads, their default encoder and decoder, and the
    encoder's ``default`` are still what this module found. A job's code may replace
    them, in a task's ``_init`` hook say: the adapter's writers and readers look when
    first used, and if they changed, json's own functions do the work."""
    return (json.dumps is _JSON_DUMPS and json._default_encoder is _JSON_ENCODER
            and json.JSONEncoder.default is _JSON_DEFAULT and json.loads is _JSON_LOADS
            and json._default_decoder is _JSON_DECODER)


def _array_writer() -> Callable[[Any], bytes] | None:
    """A tuple or list as ``json.dumps`` writes it, by the C encoder ``json.dumps`` itself
    makes for it, made once here (json makes one per call) with its own table of the
    containers being written (json's circular-reference check), emptied before each use
    (an error leaves it holding some). None where json has no C encoder."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    markers: dict = {}
    # (json.dumps's defaults: no indent, its separators, unsorted, no skipped keys, NaN)
    encoder = make(markers, json._default_encoder.default, _STR, None, ": ", ", ", False,
                   False, True)
    clear, join = markers.clear, "".join

    def write(x: Any) -> bytes:
        clear()
        return join(encoder(x, 0)).encode()
    return write


def json_loads(loads: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``loads``, a protocol's ``_loads``, made faster when it is mrjob's
    ``StandardJSONProtocol._loads`` over the standard library's json: digits by ``int``,
    other values by json's own C scanner (:func:`scanned`); what that does not read
    whole goes to ``loads`` itself (so what it refuses, it still refuses)."""
    if not _stdlib_json(loads, "_loads"):
        return loads

    found = [None]  # (as json_dumps)

    def fast(b: bytes) -> Any:
        if b.isdigit() and (len(b) == 1 or b[:1] != b"0") and len(b) < 640:
            return int(b)  # (under 640 digits: int reads them whatever the limit)
        ok = found[0]
        if ok is None:
            ok = found[0] = _json_as_found()
        return scanned(b) if ok else loads(b)

    def scanned(b: bytes) -> Any:
        """What ``json.loads`` gives for text without whitespace around it, from its own
        C scanner without the decoder's Python around it (a list of a word and a count,
        nested lists: a value of a step's reducer); anything else, and every error, by
        ``loads`` itself."""
        s = b.decode("utf-8")
        if s and s[0] not in _SPACE and s[-1] not in _SPACE:
            try:
                value, end = _SCAN(s, 0)
            except (StopIteration, ValueError, RecursionError):
                return loads(b)
            if end == len(s):
                return value
        return loads(b)
    return fast


_SCAN = json.decoder.JSONDecoder().scan_once  # (json.loads's own default decoder's kind)
_SPACE = " \t\n\r"


def _memo(dumps: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """``dumps`` remembering the encodings of values that recur: str, int, and tuples and
    lists of str (words, counts of 1, word pairs). Remembered by type as well: ``1`` and
    ``True`` are one dict key but encode differently; a tuple of str can only equal a
    tuple of str; a list is remembered apart from a tuple (repr tells them apart)."""
    dumps = json_dumps(dumps)
    strs: dict = {}
    ints: dict = {}
    tuples: dict = {}
    lists: dict = {}

    def remember(cache: dict, key: Any, b: bytes) -> bytes:
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = b
        return b

    # tuples remembered while that pays: word pairs recur in a word count of pairs, and
    # never in a job's output keyed by pairs; past TUPLE_TRIAL lookups that found under a
    # quarter of them, tuples are written afresh for the rest of the task
    found = [0, 0]  # lookups of tuples and lists, hits

    def encode(x: Any) -> bytes:
        t = type(x)
        if t is str:
            b = strs.get(x)
            return remember(strs, x, dumps(x)) if b is None else b
        if t is int:
            b = ints.get(x)
            return remember(ints, x, dumps(x)) if b is None else b
        if t is tuple or t is list:
            looked = found[0]
            if looked >= TUPLE_TRIAL and found[1] * 4 < looked:
                return dumps(x)
            found[0] = looked + 1
            key = x if t is tuple else tuple(x)
            cache = tuples if t is tuple else lists
            try:  # only tuples of str are kept, and only a tuple of str can equal one
                b = cache.get(key)
            except TypeError:  # an unhashable item
                return dumps(x)
            if b is None:
                b = dumps(x)
                for item in x:
                    if type(item) is not str:
                        break
                else:
                    remember(cache, key, b)
            else:
                found[1] += 1
            return b
        return dumps(x)
    encode.plain = dumps  # (the writer without the memory, for values that do not recur)
    return encode


def line_writer(write: Callable[[Any, Any], bytes]) -> Callable[[Any, Any], bytes]:
    """``write`` (a protocol's: ``(key, value) -> line``), for a JSON-like protocol
    (mrjob's ``_KeyCachingProtocol.write``, ``dumps(key) TAB dumps(value)``) with the
    encodings of recurring keys remembered and the usual values written without json's
    encoder (:func:`json_dumps`): the same bytes."""
    proto = getattr(write, "__self__", None)
    if proto is None or type(proto).write is not _KeyCachingProtocol.write:
        return write
    key_dumps = _memo(proto._dumps)
    value_dumps = key_dumps.plain

    def write_line(k: Any, v: Any) -> bytes:
        return key_dumps(k) + b"\t" + value_dumps(v)
    return write_line


class CounterSink:
    """The MRJob's ``stderr`` in a task: ``reporter:counter:GROUP,NAME,N`` lines (what
    ``increment_counter`` writes) become pymapreduce counters named ``GROUP,NAME``;
    ``reporter:status`` lines are dropped; anything else reaches this process's stderr."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def write(self, data: Any) -> int:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data.startswith(b"reporter:"):
            for line in data.splitlines():
                if line.startswith(b"reporter:counter:"):
                    self._count(line[17:].decode("utf-8", "replace"))
            return len(data)
        out = getattr(sys.stderr, "buffer", None)
        if out is not None:
            out.write(data)
        else:
            sys.stderr.write(data.decode("utf-8", "replace"))
        return len(data)

    def _count(self, text: str) -> None:
        # mrjob replaced commas in group and name by semicolons: the last comma is the amount's
        name, _, amount = text.rpartition(",")
        name = name[:MAX_COUNTER_NAME]
        counters = self.job.__dict__.get("_pmr_counters") or {}
        if name not in counters and len(counters) >= MAX_COUNTERS - 1:
            name = OVERFLOW_COUNTER  # a task may hold only so many names: fold the rest
        self.job.count(name, int(amount))

    def flush(self) -> None:
        sys.stderr.flush()


def counters_by_group(flat: dict) -> dict:
    """pymapreduce's ``GROUP,NAME`` counters as mrjob shows them: ``{group: {name: n}}``."""
    out: dict = {}
    for name, n in sorted(flat.items()):
        group, _, counter = name.partition(",")
        out.setdefault(group, {})[counter] = n
    return out


_WORKDIRS: dict = {}  # a job's token -> the directory its side files were written to
_OWNERS: dict = {}  # a side-file directory -> the descriptor holding its lock (owned.py)
KEEP_WORKDIRS = 4  # side-file directories a worker process keeps
_OPEN: list = []  # task environments not yet undone in this process


def working_dir(token: str, files: dict) -> str:
    """A directory holding the job's side files (mrjob ``FILES``, ``--files``, file
    options), written once per worker process and job; tasks run in it, so they open
    the files by name as they would on Hadoop."""
    path = _WORKDIRS.get(token)
    if path is None or not os.path.isdir(path):
        while len(_WORKDIRS) >= KEEP_WORKDIRS:  # older jobs' (made again if still needed)
            _remove_workdir(_WORKDIRS.pop(next(iter(_WORKDIRS))))
        # named as the worker process's own job directories, which its supervisor removes
        # when the process ends, also when it was killed (workers/isolation.py); a process
        # that exits by itself removes them at exit; and locked as they are, so that the
        # next worker daemon's start removes them if the supervisor was killed too
        path = tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-mrjob-")
        _OWNERS[path] = owned.claim(path)
        for name, data in files.items():
            with open(os.path.join(path, name), "wb") as f:
                f.write(data)
        _WORKDIRS[token] = path
    return path


@atexit.register
def remove_working_dirs() -> None:
    """Remove this process's side-file directories (a forked child's copy of the table
    names its parent's: only those named with this process's pid are its own)."""
    mine = f"{ROOT_PREFIX}{os.getpid()}-"
    while _WORKDIRS:
        path = _WORKDIRS.popitem()[1]
        if os.path.basename(path).startswith(mine):
            _remove_workdir(path)


def _remove_workdir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    fd = _OWNERS.pop(path, None)
    if fd is not None:
        os.close(fd)


class TaskEnv:
    """What an mrjob task expects of its process, set for one task and undone after it:
    the working directory holding the side files and the jobconf environment variables
    (``jobconf_from_env``). Undone in the task's ``_final`` hook."""

    def __init__(self, token: str, files: dict, env: dict) -> None:
        for left in list(_OPEN):  # a task that failed before its _final hook: undo it now
            left.close()
        _OPEN.append(self)
        self.saved_env = {k: os.environ.get(k) for k in env}
        self.saved_cwd = None
        os.environ.update(env)
        if files:
            self.saved_cwd = os.getcwd()
            os.chdir(working_dir(token, files))

    def set(self, name: str, value: str) -> None:
        if name not in self.saved_env:
            self.saved_env[name] = os.environ.get(name)
        os.environ[name] = value

    def close(self) -> None:
        if self in _OPEN:
            _OPEN.remove(self)
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.saved_cwd is not None:
            os.chdir(self.saved_cwd)
            self.saved_cwd = None
