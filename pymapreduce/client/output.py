"""Writing a job's output as ``part-NNNNN`` JSON-lines files and a ``_SUCCESS`` marker."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable


def write_output(directory: str | os.PathLike, parts: Iterable[list]) -> list[str]:
    """Write one file per partition, each under a temporary name renamed when complete,
    so a reader never sees a half-written file; ``_SUCCESS`` comes last."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    written = []
    for i, pairs in enumerate(parts):
        final = os.path.join(directory, f"part-{i:05d}")
        tmp = os.path.join(directory, f".part-{i:05d}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for k, v in pairs:
                f.write(json.dumps([k, v], ensure_ascii=False, default=repr))
                f.write("\n")
        os.replace(tmp, final)
        written.append(final)
    marker = os.path.join(directory, "_SUCCESS")
    with open(marker, "w"):
        pass
    return written
