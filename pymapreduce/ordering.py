"""What the engine asks of the keys and pairs user code yields, and the orders it keeps.

- Pairs: ``map``, the ``_final`` hooks and an emitting ``reduce`` yield ``(key, value)``
  tuples. The kernels check each with one type test; :func:`as_pair` is the slow path (a
  2-item list is a pair, anything else is :class:`~pymapreduce.BadOutput`).
- Keys: a list key (JSON-decoded data) is grouped as the tuple of its items
  (:func:`group_key`); a dict or set key is BadOutput.
- Total order: a ``total_order`` job's map tasks partition by key ranges whose boundaries
  the client sampled (``sampling.py``) and stored on the job before pickling it.
- Value order: with ``value_key``, ``combine`` and ``reduce`` see each key's values sorted.

These are pure functions (no sockets): the kernels in ``job.py`` call them.
"""

from __future__ import annotations

from typing import Any

from .errors import BadOutput, holding_value, short_repr


def is_total_order(job: Any) -> bool:
    """Whether the job's output comes in one global key order (``Job.total_order``)."""
    try:
        return getattr(job, "total_order", False) is True
    except Exception:  # a job's own __getattr__ that raises: not ordered
        return False


def range_bounds(job: Any) -> list | None:
    """The key boundaries a ``total_order`` job's map tasks partition by (set by the
    client before it pickles the job: pymapreduce/sampling.py), or None."""
    return job.__dict__.get("_pmr_bounds")


def task_steps(job: Any) -> list:
    """A multi-step job's steps as a worker runs them: the last step carries the
    boundaries the client sampled for the whole job, if it is ordered."""
    steps = list(job.steps())
    bounds = range_bounds(job)
    if bounds is not None and steps:
        steps[-1].__dict__["_pmr_bounds"] = bounds
    return steps


def as_pair(job: Any, method: str, pair: Any) -> tuple[Any, Any]:
    """The slow path of the pair check: a 2-item list or tuple subclass is a pair;
    anything else (a number, a str: ``yield "ab"`` is not ``('a', 'b')``) is BadOutput."""
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        return pair[0], pair[1]
    what = f"{type(job).__name__}.{method} yielded {{}}, not a (key, value) pair"
    if isinstance(pair, (tuple, list)):  # (a triple is no pair: its length says why)
        n = len(pair)
        kind = f"a {type(pair).__name__} of {n} item{'' if n == 1 else 's'}"
    else:
        kind = f"a value of type {type(pair).__name__}"
    raise holding_value(BadOutput(what.format(short_repr(pair))), what.format(kind), pair,
                        f"{method}'s output")


def group_key(job: Any, method: str, key: Any) -> Any:
    """The slow path of grouping a key that cannot be hashed: a list becomes the tuple of
    its items (nested lists too, also inside a tuple); anything else is BadOutput."""
    if type(key) is list or type(key) is tuple:
        frozen = _freeze(key)
        try:
            hash(frozen)
            return frozen
        except TypeError:
            pass
    what = (f"{type(job).__name__}.{method} yielded {{}}, a {type(key).__name__}, which "
            "cannot be grouped (keys must be hashable: str, numbers, tuples, lists of those...)")
    raise holding_value(BadOutput(what.format(f"the key {short_repr(key)}")),
                        what.format("a key"), key, f"{method}'s key")


def uncomparable(job: Any, key: Any, exc: Exception) -> BadOutput:
    """The error for a ``total_order`` job's key that does not compare with the sampled
    boundaries (``exc``: the comparison's TypeError, which names types only)."""
    what = (f"{type(job).__name__} has total_order but its map yielded {{}} "
            f"({type(key).__name__}), which does not compare with the sampled keys ({exc})")
    return holding_value(BadOutput(what.format(f"the key {short_repr(key)}")),
                         what.format("a key"), key, "map's key")


def grouped_key(job: Any, method: str, key: Any) -> Any:
    """``key`` as grouping keeps it: as it is if hashable, else :func:`group_key`'s
    tuple (a list, or a tuple holding lists); BadOutput for a dict or set."""
    try:
        hash(key)
        return key
    except TypeError:
        return group_key(job, method, key)


def _freeze(value: Any) -> Any:
    t = type(value)
    return tuple(_freeze(v) for v in value) if t is list or t is tuple else value


def combiner_of(job: Any) -> Any:
    """The job's ``combine``, given its values sorted by ``value_key`` when the job has
    one (as Hadoop's combiner sees them after the sort); None without a combiner."""
    if not job._has("combine"):
        return None
    combine = job.combine
    if not job._has("value_key"):
        return combine
    value_key = job.value_key
    return lambda k, values: combine(k, sorted(values, key=value_key))
