"""Writing a job's output as ``part-NNNNN`` JSON-lines files and a ``_SUCCESS`` marker."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable

from ..errors import ConfigError

PART = re.compile(r"part-\d{5,}")


class OutputExists(ConfigError, FileExistsError):
    """The output directory already holds files and overwriting was not asked for."""


def check_output_dir(directory: str | os.PathLike, *, overwrite: bool) -> str:
    """Make sure a job's output can be written to ``directory`` before the job runs.

    A path that is a file, under a file, or that cannot be created or written raises
    :class:`~pymapreduce.ConfigError` naming it; an existing directory that is not empty
    raises :class:`OutputExists` unless ``overwrite`` (as Hadoop and Spark refuse to write
    into an existing output). The directory is created if missing, and a probe file is
    written into it and removed, so a permission problem shows now, not after the job.
    Returns the path as a str.
    """
    path = os.fspath(directory)
    if not path:
        raise ConfigError("the output directory is an empty path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"output {path!r} is a file, not a directory")
    if os.path.isdir(path) and not overwrite:
        entries = sorted(os.listdir(path))
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise OutputExists(
                f"output directory {path!r} already exists and is not empty ({shown}): "
                "choose a new directory, or overwrite its part files (--overwrite, or "
                "overwrite=True in Python)")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pymapreduce-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write the output directory {path!r}: "
                          f"{exc.strerror or exc}") from None
    return path


def write_output(directory: str | os.PathLike, parts: Iterable[tuple[list, list]]) -> list[str]:
    """Write one file per partition, each under a temporary name renamed when complete,
    so a reader never sees a half-written file; ``_SUCCESS`` comes last.

    Output of an earlier run in the same directory is replaced: its ``_SUCCESS`` goes
    first (so nobody takes the mix for a finished output) and its extra parts at the end.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, "_SUCCESS")
    if os.path.exists(marker):
        os.unlink(marker)
    old = {name for name in os.listdir(directory) if PART.fullmatch(name)}
    written = []
    for i, (keys, values) in enumerate(parts):
        final = os.path.join(directory, f"part-{i:05d}")
        tmp = os.path.join(directory, f".part-{i:05d}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for k, v in zip(keys, values):
                f.write(json.dumps([k, v], ensure_ascii=False, default=repr))
                f.write("\n")
        os.replace(tmp, final)
        written.append(final)
        old.discard(os.path.basename(final))
    for name in old:
        os.unlink(os.path.join(directory, name))
    with open(marker, "w"):
        pass
    return written
