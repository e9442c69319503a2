"""The worker daemon: task execution and the process supervisor."""

from __future__ import annotations

__all__ = ["Supervisor", "Worker"]


def __getattr__(name: str):
    # imported when first asked for: a client imports workers.capture (a constant or two)
    # without paying for the worker and its spill machinery
    if name == "Supervisor":
        from .supervisor import Supervisor

        return Supervisor
    if name == "Worker":
        from .worker import Worker

        return Worker
    raise AttributeError(f"module 'pymapreduce.workers' has no attribute {name!r}")
