"""pymapreduce: a distributed MapReduce engine for Python on ZeroMQ.

Write a :class:`Job` with ``map`` and ``reduce``; ``job.run(inputs)`` runs it on an
embedded local cluster, ``Client(address).submit(job, inputs)`` on a real one.
"""

from .errors import (
    AddressInUse,
    AuthenticationFailed,
    BadOutput,
    BrokerBusy,
    BrokerUnavailable,
    ConfigError,
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
from .inputs import read_csv, read_files, read_jsonl, read_text
from .job import Job, stable_hash
from .kernels import run_sequential
from .shipping import job_file

__version__ = "0.1.0"

__all__ = [
    "AddressInUse",
    "AuthenticationFailed",
    "BadOutput",
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


def __getattr__(name: str):
    # Client and LocalCluster pull in ZeroMQ; importing them lazily keeps `import
    # pymapreduce` cheap for code that only defines jobs.
    if name in ("Client", "JobHandle"):
        from . import client

        return getattr(client, name)
    if name == "LocalCluster":
        from .local import LocalCluster

        return LocalCluster
    raise AttributeError(f"module 'pymapreduce' has no attribute {name!r}")
