"""Turning a Job and its inputs into a SUBMIT message: pickled code and input splits."""

from __future__ import annotations

import operator
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import ConfigError, JobNotPicklable, UnencodableValue
from ..inputs import TextInput, chunk, normalize_records, plan_file_splits
from ..job import Job, emits, is_map_only, job_steps
from ..patterns import compress
from ..patterns.records import pack
from ..sampling import ordered_step, with_boundaries
from ..shipping import gather_files, pack_code, pickle_by_value
from .sources import with_sources

SPLITS_PER_SLOT = 4  # more map tasks than workers, so load balances


@dataclass(frozen=True)
class Submission:
    job_id: str
    body: dict
    blobs: tuple


def pickle_job(job: Job) -> bytes:
    """The job as cloudpickle bytes, the user's own modules shipped by value (workers need
    not have them: ``shipping.py``); JobNotPicklable names the attribute that failed."""
    import cloudpickle

    try:
        return pickle_by_value(job, by_value=getattr(job, "ship_modules", True) is not False)
    except Exception as exc:
        culprit = ""
        for attr, value in vars(job).items():
            try:
                cloudpickle.dumps(value)
            except Exception:
                culprit = f" (attribute {attr!r}, a {type(value).__name__})"
                break
        raise JobNotPicklable(
            f"cannot pickle job {type(job).__name__}{culprit}: {exc}. Job attributes travel "
            "to the workers; open files, sockets, locks and connections cannot: create them "
            "inside map/reduce instead."
        ) from exc


def _packed_splits(inputs: Any, n: int) -> list | None:
    """The usual in-memory input (a list of ``(key, value)`` tuples, or a dict, of plain
    keys and values) cut and packed in one pass in C, as the Python loop below would (10,000
    records: 0.4 ms against 8.3); None for anything else, which that loop then reads,
    checks and refuses as it always did."""
    records = list(inputs.items()) if type(inputs) is dict else inputs
    if type(records) is not list or not records:
        return None
    from ..speedups import pack_splits  # (here: a client that sends files never loads it)

    if pack_splits is None:
        return None
    return pack_splits(records, max(1, min(n, len(records))))


def _count(value: Any, name: str, least: int) -> int | None:
    """``value`` as an int (None stays None): a whole number (an int, or numpy's) of at
    least ``least``; anything else a ConfigError naming it (a float, a str, a bool)."""
    if value is None:
        return None
    try:
        number = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        number = None
    if number is None or number < least:
        raise ConfigError(f"{name} must be a whole number of at least {least}, got {value!r}")
    return number


def build_submission(job: Job, inputs: Any, *, slots: int, map_tasks: int | None,
                     reducers: int | None, name: str | None, priority: float | None = None,
                     requires: Any = None, files: Any = None) -> Submission:
    """Pickle the job once and cut its inputs into splits. ``files``: the side files to
    ship, ``[(name, bytes)]`` as :func:`~pymapreduce.shipping.gather_files` reads them
    (default: the job's own ``Job.files``)."""
    if isinstance(job, type) and issubclass(job, Job):
        raise TypeError(f"submit() needs a pymapreduce.Job instance, got the class "
                        f"{job.__name__}: pass {job.__name__}()")
    if not isinstance(job, Job):
        raise TypeError(f"submit() needs a pymapreduce.Job, got {type(job).__name__}")
    map_tasks = _count(map_tasks, "map_tasks", 1)
    reducers = _count(reducers, "reducers", 0)
    steps = job_steps(job)
    for part in steps or [job]:
        if type(part).map is Job.map:
            raise ConfigError(f"{type(part).__name__} defines no map(self, key, value): "
                              "a job needs one (reduce and combine are optional)")
    if files is None:
        files = gather_files(job)  # (before pickling: a missing file fails first)
    plan = None
    if steps is not None:  # each step's reducers: its own, else the submit's, else slots
        plan = []
        for step in steps:
            r = step.reducers if step.reducers is not None else (
                reducers if reducers is not None else slots)
            plan.append({"reducers": max(1, r), "map_only": is_map_only(step, r)})
        reducers = plan[0]["reducers"] if not plan[0]["map_only"] else 0
        map_only = plan[0]["map_only"]
    if reducers is None:
        reducers = job.reducers if job.reducers is not None else slots
    if steps is None:
        map_only = is_map_only(job, reducers)
    if ordered_step(job, steps) is not None:  # total_order: key ranges sampled here
        if not isinstance(inputs, TextInput):  # (an iterator is read once: keep it)
            inputs = normalize_records(inputs)
        last = plan[-1] if plan else {"reducers": reducers, "map_only": map_only}
        job = with_boundaries(job, steps, inputs, slots=slots, **last)
    code = pack_code(pickle_job(with_sources(job, steps)), files)  # (sources: tracebacks)
    blobs: list = [code]
    if isinstance(inputs, TextInput):
        splits, _ = plan_file_splits(inputs, slots)
        # the reading settings that are not the defaults ride with each split (a default
        # input's splits stay ["files", ranges], as every broker and worker expects)
        options = inputs.read_options()
        descs = [["files", s.describe(), *([options] if options else [])] for s in splits]
    else:
        n = map_tasks or job.map_tasks or SPLITS_PER_SLOT * slots
        if isinstance(n, bool) or not isinstance(n, int):  # (a job's own map_tasks)
            n = _count(n, f"{type(job).__name__}.map_tasks", 1)
        first = len(blobs)
        packed = _packed_splits(inputs, n)
        if packed is not None:
            blobs.extend(packed)
        else:
            for piece in chunk(normalize_records(inputs), n):
                try:
                    blob = pack([[k, v] for k, v in piece])
                except (UnencodableValue, UnicodeEncodeError) as exc:  # (a lone surrogate)
                    raise UnencodableValue(f"an input record cannot be sent: {exc}") from exc
                blobs.append(blob)
        descs = [["mems", first, len(blobs) - first]]  # (one descriptor for the run)
    skip = job.skip_bad_records
    if skip is True:
        skip = -1  # no limit
    elif skip is False or skip is None:
        skip = 0
    elif type(skip) is not int or skip < 0:
        raise ConfigError(f"skip_bad_records must be True, False or a number of records, "
                          f"got {skip!r}")
    priority = job.priority if priority is None else priority
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not priority > 0:
        raise ConfigError(f"priority must be a number above 0, got {priority!r}")
    requires = job.requires if requires is None else requires
    if isinstance(requires, str):
        requires = {requires}
    requires = sorted({str(t) for t in (requires or ())})
    name = name or type(job).__name__
    job_id = f"{name}-{uuid.uuid4().hex[:12]}"
    splits_at = len(blobs)
    blobs.append(msgpack.packb(descs, use_bin_type=True))
    body = {
        "job_id": job_id,
        "name": name,
        "reducers": 0 if map_only else max(1, reducers),
        "map_only": map_only,
        # the result is a list of the pairs an emitting reduce (a generator) yields
        "emits": emits(steps[-1] if steps else job),
        "splits": splits_at,  # the blob that lists them (read one split at a time)
        "skip": skip,
        "priority": priority,
        "requires": requires,
        "steps": plan,
        "codecs": compress.available(),  # what this client decompresses: results may come so
    }
    return Submission(job_id, body, tuple(blobs))
