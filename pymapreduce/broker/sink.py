"""The sink's store: task outputs in memory up to a budget, on disk beyond it."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any


class Store:
    """Keyed byte blobs. Blobs are kept as received (zero-copy buffers) until the memory
    budget is reached; later blobs go to files in ``spill_dir``.

    A blob put with a ``path`` (a broker with a state directory) is always written to that
    file, and also kept in memory while the budget allows: the file is what survives a
    restart, the memory copy what serves the reduce tasks fast."""

    def __init__(self, budget: int, spill_dir: str | None = None) -> None:
        self.budget = budget
        self._spill_root = spill_dir
        self._dir: str | None = None
        self._mem: dict[Any, Any] = {}
        self._files: dict[Any, str] = {}
        self.memory_bytes = 0
        self.spilled_bytes = 0
        self._seq = 0

    def put(self, key: Any, blob: Any, path: str | None = None) -> None:
        """Keep ``blob`` (bytes, memoryview or zmq.Frame) under ``key``, replacing any old
        one; with ``path``, also write it to that file (durable)."""
        self.discard(key)
        buf = blob.buffer if hasattr(blob, "buffer") else blob
        size = len(buf)
        if path is not None:
            with open(path, "wb") as f:
                f.write(buf)
            self._files[key] = path
            self.spilled_bytes += size
        if self.memory_bytes + size <= self.budget:
            self._mem[key] = blob
            self.memory_bytes += size
            return
        if path is not None:
            return
        path = os.path.join(self._spill_path(), f"{self._seq:08d}.bin")
        self._seq += 1
        with open(path, "wb") as f:
            f.write(buf)
        self._files[key] = path
        self.spilled_bytes += size

    def adopt(self, key: Any, path: str) -> None:
        """Serve ``key`` from an existing file (a restarted broker's committed outputs)."""
        self.discard(key)
        self._files[key] = path
        self.spilled_bytes += os.path.getsize(path)

    def get(self, key: Any) -> Any:
        """The blob under ``key`` (KeyError if none)."""
        if key in self._mem:
            return self._mem[key]
        with open(self._files[key], "rb") as f:
            return f.read()

    def __contains__(self, key: Any) -> bool:
        return key in self._mem or key in self._files

    def discard(self, key: Any) -> None:
        blob = self._mem.pop(key, None)
        if blob is not None:
            self.memory_bytes -= len(blob.buffer if hasattr(blob, "buffer") else blob)
        path = self._files.pop(key, None)
        if path is not None:
            try:
                self.spilled_bytes -= os.path.getsize(path)
                os.unlink(path)
            except FileNotFoundError:
                pass

    def discard_where(self, predicate) -> None:
        """Drop every blob whose key satisfies ``predicate`` (e.g. all of one job)."""
        for key in [k for k in (*self._mem, *self._files) if predicate(k)]:
            self.discard(key)

    def close(self) -> None:
        self._mem.clear()
        self._files.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _spill_path(self) -> str:
        if self._dir is None:
            if self._spill_root:
                os.makedirs(self._spill_root, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="pymapreduce-spill-", dir=self._spill_root)
        return self._dir
