"""Shared helpers for the benchmark scripts: paths, timing, machine facts, tables.

Importing this module makes the checkout importable without installing it: it puts the
repository root and this folder on ``sys.path`` and on ``PYTHONPATH``, so worker processes
started by any engine (pymapreduce, Dask, Spark) can import ``pymapreduce`` and ``jobs``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
MIB = 1 << 20
DEFAULT_CORPUS_ROOT = "/tmp/pmr-corpus"

for _path in (BENCH_DIR, REPO_ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)
_old = os.environ.get("PYTHONPATH", "")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, BENCH_DIR, _old) if p)


def corpus_dir(size_mb: int, root: str = DEFAULT_CORPUS_ROOT) -> str:
    """Folder for a corpus of ``size_mb`` MiB, one per size so each stays cached."""
    return os.path.join(root, f"{size_mb}mb")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn()`` and return ``(result, wall seconds)``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` holds the elapsed wall seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def interval(base: list[float], other: list[float], n: int = 4000) -> tuple[float, float, float]:
    """``other``/``base`` - 1 on the sums of per-round figures, and a 95% interval from
    resampling the rounds (each round's pair together: drift of a shared machine between
    rounds hits both sides of a pair alike)."""
    rounds = len(base)
    import random

    rng = random.Random(1)
    est = sum(other) / sum(base) - 1
    boots = []
    for _ in range(n):
        idx = [rng.randrange(rounds) for _ in range(rounds)]
        boots.append(sum(other[i] for i in idx) / sum(base[i] for i in idx) - 1)
    boots.sort()
    return est, boots[int(0.025 * n)], boots[int(0.975 * n) - 1]


def median_min(samples: Sequence[float]) -> tuple[float, float]:
    """Median and minimum of repeated timings."""
    return statistics.median(samples), min(samples)


def total_memory_mib() -> int:
    """Physical memory in MiB, from /proc/meminfo (0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What a results table must cite: command, cores, memory, Python, OS."""
    return {
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), *sys.argv]),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_mib": total_memory_mib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def print_machine(title: str) -> dict[str, Any]:
    """Print a header naming the benchmark and the machine; return the facts."""
    info = machine_info()
    print(f"== {title} ==")
    print(f"command : {info['command']}")
    print(f"machine : {info['cores']} cores ({info['cpu']}), {info['memory_mib']} MiB RAM")
    print(f"python  : {info['python']} on {info['platform']}")
    print(f"date    : {info['date']}")
    sys.stdout.flush()
    return info


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a Markdown table (pastes straight into RESULTS.md)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:.0f}"
        return f"{value:.1f}" if value >= 10 else f"{value:.3g}"
    return str(value)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` when a path was given."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2, default=str)
        print(f"wrote {path}")


def log(msg: str) -> None:
    """Progress line on stderr, so stdout stays a clean report."""
    print(msg, file=sys.stderr, flush=True)


def run_tree_child(script: str, tree: str, files: Sequence[str]) -> Any:
    """``python SCRIPT --child TREE --child-out F FILES...`` with pymapreduce imported from
    ``tree``: what the child pickled into ``F``."""
    import pickle
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pickle") as out:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
        subprocess.run([sys.executable, os.path.abspath(script), "--child", tree,
                        "--child-out", out.name, *files], env=env, check=True)
        with open(out.name, "rb") as f:
            return pickle.load(f)


def import_tree(tree: str, also: Sequence[str] = ()) -> None:
    """In a ``--trees`` child: pymapreduce (and the modules ``also``, which subclass its
    classes) from ``tree``, ahead of the checkout this file put first on the path."""
    sys.path.insert(0, os.path.abspath(tree))
    for name in [m for m in sys.modules
                 if m == "pymapreduce" or m in also or m.startswith("pymapreduce.")]:
        del sys.modules[name]
    import pymapreduce

    assert os.path.dirname(os.path.dirname(pymapreduce.__file__)) == os.path.abspath(tree)


_I_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def cachegrind_instructions(argv: Sequence[str]) -> int:
    """The instructions a Python child (``argv`` after the interpreter) executes, counted
    by valgrind's cachegrind with the hash seed fixed: the same count every run."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                          "--cachegrind-out-file=/dev/null", sys.executable, *argv],
                         env=env, capture_output=True, text=True, check=True).stderr
    found = _I_REFS.search(out)
    if found is None:
        raise RuntimeError(f"no cachegrind summary for {' '.join(argv)}:\n{out[-2000:]}")
    return int(found.group(1).replace(",", ""))
