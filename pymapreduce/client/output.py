"""Writing a job's output as ``part-NNNNN`` JSON-lines files and a ``_SUCCESS`` marker."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

PART = re.compile(r"part-\d{5,}")


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
