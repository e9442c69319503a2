"""The original pyMapReduce API on top of pymapreduce: Master, Slave and Job(host, port).

Programs written for pyMapReduce keep working with one changed import::

    from pymapreduce.compat import Master, Slave, Job

A ``Slave`` listens on its port (on loopback) and the ``Master`` connects to each slave
registered with it: ZeroMQ lets either side bind. Slaves run tasks in the thread that
called ``run()``, as the original did; for real parallelism use ``pymapreduce worker``.
"""

from __future__ import annotations

from typing import Any

import zmq

from . import job as _job
from .broker import Broker, BrokerConfig
from .workers import Worker

_HOST = "127.0.0.1"


def _context() -> zmq.Context:
    return zmq.Context.instance()  # one context per process, shared by its roles' threads


class Slave:
    """A worker listening on ``port`` until a Master connects to it."""

    def __init__(self, port: int) -> None:
        self.port = int(port)
        self._worker: Worker | None = None

    def run(self) -> None:
        """Serve tasks in this thread, forever."""
        self._worker = Worker(bind=f"tcp://{_HOST}:{self.port}", credit=4,
                              name=f"slave:{self.port}", context=_context())
        self._worker.run()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()


class Master:
    """The broker, on ``port``; ``register_slave`` names the slaves it connects to."""

    def __init__(self, port: int) -> None:
        self.port = int(port)
        self.slaves: dict[str, tuple[str, int]] = {}
        self._broker = Broker(BrokerConfig(bind=f"tcp://{_HOST}:{self.port}"),
                              context=_context())

    def register_slave(self, name: str, host: str, port: int) -> None:
        self.slaves[name] = (host, int(port))

    def run(self) -> None:
        """Bind, reach every registered slave, and serve jobs in this thread, forever."""
        self._broker.bind()
        for host, port in self.slaves.values():
            self._broker.connect_worker(f"tcp://{host}:{port}")
        self._broker.serve_forever()

    def stop(self) -> None:
        self._broker.stop()


class Job(_job.Job):
    """A job submitted to the Master at ``host:port``; inputs in ``self.File``, a list of
    one-item ``{key: value}`` dicts. ``run()`` returns the result dict."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = int(port)
        self.File: list[dict] = []

    def run(self, inputs: Any = None, **options: Any) -> Any:  # type: ignore[override]
        address = f"tcp://{self.host}:{self.port}"
        return _job.Job.run(self, self.File if inputs is None else inputs,
                            address=address, **options)
