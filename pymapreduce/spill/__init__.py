"""Bounded memory for tasks: a worker process's budget (``--memory``), map-side
sort-and-spill runs, reduce-side streaming merge (docs/memory.md)."""

__all__ = ["Budget", "ValuesStream", "parse_size"]


def __getattr__(name: str):
    # (PEP 562) a client checks a LocalCluster's ``memory`` with budget.parse_size and
    # never spills: the merge machinery (reduceside, runs) is the workers' to import
    if name in ("Budget", "parse_size"):
        from . import budget

        return getattr(budget, name)
    if name == "ValuesStream":
        from .reduceside import ValuesStream

        return ValuesStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
