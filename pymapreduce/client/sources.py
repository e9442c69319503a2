"""The source text of a job's own code, shipped with it so remote tracebacks show it.

A job defined in the user's script (``__main__``), in a notebook cell, or in a module
pickled by value runs on workers that do not have its file: a traceback there names the
file and line but cannot show the line. The client therefore ships the text of those
files with the job (as it sees them: ``linecache``, which also holds notebook cells), and
the worker registers it in its ``linecache`` before each task
(``workers/capture.register_sources``), so the traceback in ``JobFailed`` shows the
user's lines under the user's file names.

What is shipped: the files that define the job's classes (its MRO, its steps' classes)
and that are the user's own, i.e. not pymapreduce's, the standard library's or an
installed package's, plus every module registered with
``cloudpickle.register_pickle_by_value``; each at most MAX_FILE characters, MAX_TOTAL in
all, the job's own files first.
"""

from __future__ import annotations

import copy
import linecache
import os
import sys
import sysconfig
from typing import Any

from ..shipping import SOURCES_ATTR

MAX_FILE = 512 << 10  # characters of one file's text shipped
MAX_TOTAL = 1 << 20  # ... of all of them (the job's code travels to every worker)
MAX_FILES = 64

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _installed_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, _PACKAGE_DIR}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(path)
    return tuple(os.path.abspath(r) + os.sep for r in roots if r)


def _users(filename: str, roots: tuple[str, ...]) -> bool:
    """Whether a code file is the user's own (not installed, not ours)."""
    if filename.startswith("<") and filename.endswith(">"):
        return filename not in ("<string>", "<stdin>", "<frozen>")  # e.g. a notebook cell
    return not os.path.abspath(filename).startswith(roots)


def _code_files(cls: type) -> set[str]:
    """The files the functions of ``cls`` (and its properties) were compiled from."""
    files = set()
    for value in vars(cls).values():
        for fn in (getattr(value, "__func__", value), getattr(value, "fget", None)):
            code = getattr(fn, "__code__", None)
            if code is not None:
                files.add(code.co_filename)
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if isinstance(path, str):
        files.add(path)
    return files


def _by_value_files() -> set[str]:
    """The files of the modules registered to be pickled by value."""
    try:
        from cloudpickle import cloudpickle as cp

        names = set(getattr(cp, "_PICKLE_BY_VALUE_MODULES", ()))
    except ImportError:
        return set()
    files = set()
    for name, module in list(sys.modules.items()):
        if name in names or any(name.startswith(n + ".") for n in names):
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                files.add(path)
    return files


def job_sources(job: Any, steps: Any = None) -> dict[str, str]:
    """``{filename: text}`` of the user's files defining ``job`` (see the module)."""
    roots = _installed_roots()
    classes = [c for part in [job, *(steps or ())] for c in type(part).__mro__
               if c.__module__ not in ("builtins", "pymapreduce.job")]
    # the job's own files first: when the caps bind, they are the ones kept
    files: dict[str, None] = {}
    for cls in classes:
        files.update(dict.fromkeys(sorted(f for f in _code_files(cls) if _users(f, roots))))
    files.update(dict.fromkeys(sorted(_by_value_files())))
    sources: dict[str, str] = {}
    total = 0
    for filename in list(files)[:MAX_FILES]:
        try:
            lines = linecache.getlines(filename)
        except Exception:  # (a loader that fails: the line just is not shown)
            continue
        text = "".join(lines)
        if not text or len(text) > MAX_FILE or total + len(text) > MAX_TOTAL:
            continue
        sources[filename] = text
        total += len(text)
    return sources


def with_sources(job: Any, steps: Any = None) -> Any:
    """A shallow copy of ``job`` carrying its sources (the caller's job is left as it
    is), or ``job`` itself when there are none or it cannot carry them."""
    try:
        sources = job_sources(job, steps)
        if not sources:
            return job
        shipped = copy.copy(job)
        setattr(shipped, SOURCES_ATTR, sources)
        return shipped
    except Exception:  # (a job with __slots__, a copy that fails): shipped without them
        return job
