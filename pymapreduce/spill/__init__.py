"""Bounded memory for tasks: a worker process's budget (``--memory``), map-side
sort-and-spill runs, reduce-side streaming merge (docs/memory.md)."""

from .budget import Budget, parse_size
from .reduceside import ValuesStream

__all__ = ["Budget", "ValuesStream", "parse_size"]
