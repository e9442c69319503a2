"""pymapreduce: a distributed MapReduce engine for Python on ZeroMQ.

Write a :class:`Job` with ``map`` and ``reduce``; ``job.run(inputs)`` runs it on an
embedded local cluster, ``Client(address).submit(job, inputs)`` on a real one.
"""

from .errors import (
    AddressInUse,
    AuthenticationFailed,
    BadOutput,
    BadRecord,
    BrokerBusy,
    BrokerUnavailable,
    ConfigError,
    InputDamaged,
    InputError,
    JobFailed,
    JobNotFound,
    JobNotPicklable,
    JobTimeout,
    LineTooLong,
    PickledValueRefused,
    ProtocolError,
    PyMapReduceError,
    UndecodableValue,
    UnencodableValue,
    ValueNeedsPickle,
)
from .job import Job, stable_hash

__version__ = "0.1.0"

__all__ = [
    "AddressInUse",
    "AuthenticationFailed",
    "BadOutput",
    "BadRecord",
    "InputDamaged",
    "BrokerBusy",
    "BrokerUnavailable",
    "Client",
    "ConfigError",
    "InputError",
    "Job",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobNotPicklable",
    "JobTimeout",
    "LocalCluster",
    "PickledValueRefused",
    "ProtocolError",
    "PyMapReduceError",
    "UndecodableValue",
    "LineTooLong",
    "UnencodableValue",
    "ValueNeedsPickle",
    "job_file",
    "read_csv",
    "read_files",
    "read_jsonl",
    "read_text",
    "run_sequential",
    "stable_hash",
]


# Imported when first asked for (PEP 562), so that `import pymapreduce` and a job's
# definition cost only the Job class: Client and LocalCluster pull in ZeroMQ; the readers
# (inputs, lines, store URLs), the sequential kernels and the code shipping are run by
# the workers and by a client when it submits, not by a module that defines a job.
_LAZY = {
    "Client": "client", "JobHandle": "client", "LocalCluster": "local",
    "read_csv": "inputs", "read_files": "inputs", "read_jsonl": "inputs",
    "read_text": "inputs", "run_sequential": "kernels", "job_file": "shipping",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pymapreduce' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # (asked once)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
