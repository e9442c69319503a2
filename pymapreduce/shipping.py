"""What travels with a job besides its inputs: its code, by value, and its side files.

**Code.** A job class defined in the user's own modules must run on workers that do not
have those modules. While a job is pickled, every imported module that is not installed
(not in the standard library, not under a site-packages or dist-packages directory, not
pymapreduce itself) is registered with ``cloudpickle.register_pickle_by_value``, so its
classes and functions travel as code, not as an ``import`` the worker could not do; the
registrations made here are undone right after, so the user's process is left as it was.
A job whose code cannot be pickled that way (a module-level object cloudpickle refuses) is
pickled by reference, as before. ``Job.ship_modules = False`` asks for by reference only.

**Files.** ``submit(..., files=[...])`` (and ``Job.files``) ship side files that tasks open
by their base name: the bytes ride in the job's code blob, after a magic prefix, as a
msgpack map ``{"code": pickle, "files": [[name, bytes], ...]}`` (a job without files keeps
the bare pickle, so nothing changes for it). Names are checked on both sides: plain base
names, no duplicates. See docs/travel.md.
"""

from __future__ import annotations

import copyreg
import dataclasses
import logging
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import msgpack

from .errors import ConfigError, InputError

log = logging.getLogger("pymapreduce.shipping")

MAGIC = b"pmr-job\x00"  # a pickle starts with b"\x80": the two never mix
MAX_FILES = 1000  # side files of one job
MAX_NAME = 255  # bytes of a file name (the usual file-system limit)
SOURCES_ATTR = "_pymapreduce_sources"  # a shipped job's {filename: source text}

_lock = threading.Lock()  # the by-value registry is process-wide: one job pickled at a time
_verdicts: dict[tuple[str, str], bool] = {}  # (module name, file) -> shipped by value


# dataclasses compares its field-kind and MISSING sentinels by identity; pickled by value
# (a dataclass in a user module) they would come back as copies, and fields(), asdict()
# and replace() would see no fields on the workers. They travel as references instead.
def _dataclass_sentinel(obj: Any) -> tuple:
    name = "MISSING" if isinstance(obj, dataclasses._MISSING_TYPE) else obj.name
    return getattr, (dataclasses, name)


copyreg.pickle(dataclasses._FIELD_BASE, _dataclass_sentinel)
copyreg.pickle(dataclasses._MISSING_TYPE, _dataclass_sentinel)


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # (some virtualenvs' site module lacks it)
        pass
    roots.add(site.getusersitepackages())
    roots.add(os.path.dirname(os.path.abspath(__file__)))  # pymapreduce itself
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


_ROOTS = _installed_roots()


_real_dirs: dict[str, str] = {}  # absolute directory -> its real path


def _realpath(path: str) -> str:
    """``os.path.realpath(path)``, its directory resolved once per directory: the first
    job a process submits looks at every imported module (450 with mrjob's: 17 ms with a
    realpath each, a dozen lstat calls per module)."""
    directory, base = os.path.split(path)
    if not os.path.isabs(directory) or base in ("", ".", ".."):
        return os.path.realpath(path)  # (relative to a working directory that may change)
    real_dir = _real_dirs.get(directory)
    if real_dir is None:
        real_dir = _real_dirs[directory] = os.path.realpath(directory)
    candidate = os.path.join(real_dir, base)
    return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def is_user_module(module: ModuleType) -> bool:
    """Whether ``module`` is the user's own code (shipped by value), not something every
    worker has installed."""
    name = getattr(module, "__name__", None)
    path = getattr(module, "__file__", None)
    if not isinstance(name, str) or not isinstance(path, str) or name == "__main__":
        return False  # builtins, frozen and namespace modules; __main__ travels by value
    verdict = _verdicts.get((name, path))
    if verdict is None:
        real = _realpath(path)
        parts = real.split(os.sep)
        verdict = not (name == "pymapreduce" or name.startswith("pymapreduce.")
                       or real.startswith(_ROOTS)
                       or "site-packages" in parts or "dist-packages" in parts)
        _verdicts[(name, path)] = verdict
    return verdict


def user_modules() -> list[ModuleType]:
    """The imported modules that are the user's own code."""
    return [m for m in list(sys.modules.values())
            if isinstance(m, ModuleType) and is_user_module(m)]


def pickle_by_value(obj: Any, by_value: bool = True) -> bytes:
    """``cloudpickle.dumps(obj)`` with the user's modules shipped by value (see the module
    docstring); falls back to by reference when by value fails, and raises what that
    raises."""
    import cloudpickle

    failed: Exception | None = None
    if by_value:
        with _lock:
            registered = set(cloudpickle.list_registry_pickle_by_value())
            added = [m for m in user_modules() if m.__name__ not in registered]
            for module in added:
                cloudpickle.register_pickle_by_value(module)
            try:
                return dumps_keeping_filenames(obj)
            except Exception as exc:  # e.g. a lock in a module the job's code refers to
                failed = exc
            finally:
                for module in added:
                    cloudpickle.unregister_pickle_by_value(module)
    # raises when the object itself cannot travel (a lock in the job's attributes): then
    # the caller's error names it, and no warning says it went by reference
    blob = dumps_keeping_filenames(obj)
    if failed is not None:
        log.warning("the job's own modules cannot travel by value (%s: %s); it is "
                    "pickled by reference, so the workers must be able to import "
                    "them (docs/travel.md)", type(failed).__name__, failed)
    return blob


# cloudpickle 3 writes every function it pickles by value with the file name
# "<dynamic-code>" (for byte-identical pickles), so a worker's traceback would say
# File "<dynamic-code>", line 6 and linecache could not show the shipped source
# (docs/logs.md). The job's code keeps its real file names: a code object is reduced as
# cloudpickle reduces it, with the name put back. (cloudpickle 2 already keeps it.)
_DYNAMIC = "<dynamic-code>"
_pickler_class = None


def _code_reduce_keeping_filename(code: Any) -> tuple:
    import cloudpickle

    rebuild, args = cloudpickle.Pickler.dispatch_table[type(code)](code)[:2]
    if code.co_filename != _DYNAMIC and _DYNAMIC in args:
        i = args.index(_DYNAMIC)  # co_filename comes before co_name in every layout
        args = args[:i] + (code.co_filename,) + args[i + 1:]
    return rebuild, args


def dumps_keeping_filenames(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, except that functions pickled by value keep their
    source file's name (see above), so remote tracebacks name the user's file."""
    import io
    from collections import ChainMap
    from types import CodeType

    import cloudpickle

    global _pickler_class
    if _pickler_class is None:
        _pickler_class = type("_FilenamePickler", (cloudpickle.Pickler,), {
            "dispatch_table": ChainMap({CodeType: _code_reduce_keeping_filename},
                                       cloudpickle.Pickler.dispatch_table)})
    buffer = io.BytesIO()
    _pickler_class(buffer, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
    return buffer.getvalue()


# -- side files ---------------------------------------------------------------------------
def check_file_name(name: Any) -> str:
    """``name`` if it is a plain base name a task can open in its working directory; else
    ConfigError (a path, '.', '..', empty, control characters, too long)."""
    if not isinstance(name, str):
        raise ConfigError(f"a job file's name must be a string, not {type(name).__name__}")
    if (name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name
            or not name.isprintable() or len(name.encode("utf-8", "replace")) > MAX_NAME):
        raise ConfigError(f"job file name {name[:300]!r} is not a plain file name (no "
                          f"directories, not '.' or '..', at most {MAX_NAME} bytes)")
    return name


def _file_specs(files: Any) -> list[tuple[str, str]]:
    """``[(name, path)]`` from a list of paths or a ``{name: path}`` mapping."""
    if files is None:
        return []
    if isinstance(files, Mapping):
        return [(check_file_name(n), os.fspath(p)) for n, p in files.items()]
    if isinstance(files, (str, bytes, os.PathLike)):
        files = [files]
    if not isinstance(files, (list, tuple, set, frozenset)):
        raise ConfigError(f"files must be a list of paths or a {{name: path}} dict, not "
                          f"{type(files).__name__}")
    specs = []
    for path in files:
        path = os.fsdecode(os.fspath(path))
        specs.append((check_file_name(os.path.basename(path)), path))
    return specs


def _class_files(job: Any) -> Any:
    files = getattr(type(job), "files", None)
    # (a method or property of that name is a job's own, from before Job.files existed)
    return None if callable(files) or hasattr(files, "__get__") else files


def gather_files(job: Any, files: Any = None) -> list[tuple[str, bytes]]:
    """The side files a submission ships: the job class's ``files`` (and its steps'), then
    ``files``; read now, so a missing one fails before anything is sent (InputError).

    Only the class attribute counts: an instance attribute named ``files`` may be a job's
    own data (it was, before this existed); per-run files go to ``submit(files=)``."""
    from .job import Job, job_steps

    specs = _file_specs(_class_files(job))
    for step in (job_steps(job) if isinstance(job, Job) else None) or ():
        specs += _file_specs(_class_files(step))
    specs += _file_specs(files)
    if len(specs) > MAX_FILES:
        raise ConfigError(f"a job ships at most {MAX_FILES} files, not {len(specs)}")
    chosen: dict[str, str] = {}
    out = []
    for name, path in specs:
        real = os.path.realpath(path)
        if name in chosen:
            if chosen[name] == real:
                continue  # the same file named twice (the job's and the submit's)
            raise ConfigError(f"two job files are named {name!r} ({chosen[name]} and {real}): "
                              "tasks open them by name, so names must differ (give "
                              "files={'name': path} to rename one)")
        if not os.path.isfile(path):
            why = "is not a file" if os.path.exists(path) else "does not exist"
            # ("side file": a new user took "job file" for the FILE.py of FILE.py:Job)
            raise InputError(f"side file (files=, --file) {path!r} {why}")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InputError(f"cannot read side file {path!r}: {exc}") from exc
        chosen[name] = real
        out.append((name, data))
    return out


def pack_code(code: bytes, files: list[tuple[str, bytes]]) -> bytes:
    """The code blob of a SUBMIT: the bare pickle, or with files the magic container."""
    if not files:
        return code
    return MAGIC + msgpack.packb({"code": code, "files": [[n, d] for n, d in files]},
                                 use_bin_type=True)


def unpack_code(blob: Any) -> tuple[Any, list[tuple[str, bytes]]]:
    """``(pickle bytes, [(name, bytes)])`` from a code blob, checked (ValueError): it came
    from the broker, so its names are validated again before any file is written."""
    view = memoryview(blob).cast("B")
    if bytes(view[:len(MAGIC)]) != MAGIC:
        return view, []
    try:
        body = msgpack.unpackb(view[len(MAGIC):], raw=False, max_array_len=2 * MAX_FILES)
    except Exception as exc:
        raise ValueError(f"the job's code blob is malformed ({type(exc).__name__})") from None
    if not isinstance(body, dict) or not isinstance(body.get("code"), bytes) \
            or not isinstance(body.get("files"), list) or len(body["files"]) > MAX_FILES:
        raise ValueError("the job's code blob is not {code, files}")
    files, seen = [], set()
    for entry in body["files"]:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], bytes)):
            raise ValueError("a job file is not [name, bytes]")
        try:
            name = check_file_name(entry[0])
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if name in seen:
            raise ValueError(f"job file {name!r} is named twice")
        seen.add(name)
        files.append((name, entry[1]))
    return body["code"], files


# -- in a task ----------------------------------------------------------------------------
_task_dir: str | None = None  # the running task's job directory (set by the worker)
NO_FILES = ""  # _task_dir in a task of a job that shipped no files


def set_task_dir(path: str | None) -> None:
    """Where the running task's job files are (the worker sets it around each task):
    ``NO_FILES`` for a task of a job that shipped none, None outside a task."""
    global _task_dir
    _task_dir = path


def job_file(name: str) -> str:
    """The path of a file shipped with the job (``files=``), for a task to open.

    Tasks run in their job's directory, so ``open(name)`` works too; this says so
    explicitly, and still works after the task changed directory. Outside a task (e.g.
    :func:`~pymapreduce.run_sequential`), ``name`` itself: run where the file is.
    """
    check_file_name(name)
    if _task_dir is None:
        return name
    if _task_dir == NO_FILES:  # (not the worker's own directory: the name resolved there
        # on an embedded cluster, which runs in the user's, and failed on a real one)
        raise FileNotFoundError(f"no job file {name!r} was shipped with this job: it ships "
                                "none (files= of submit or run, Job.files, or pymapreduce "
                                "run --file)")
    path = os.path.join(_task_dir, name)
    if not os.path.isfile(path):
        shipped = sorted(n for n in os.listdir(_task_dir)) if os.path.isdir(_task_dir) else []
        raise FileNotFoundError(f"no job file {name!r} was shipped with this job (files= of "
                                f"submit or Job.files; in its directory: {shipped[:20]})")
    return path
