"""Broker settings: a frozen dataclass of validated defaults."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..patterns import config as timing
from ..patterns.sockets import DEFAULT_MAX_MESSAGE, check_endpoint

FSYNC_CHOICES = ("never", "commit")  # see broker/journal.py: FSYNC_POLICIES
COMPRESSION_CHOICES = ("auto", "on", "off")  # see broker/codecs.py


@dataclass(frozen=True)
class BrokerConfig:
    """Everything a broker needs to know to start.

    ``bind`` is the control address (clients and workers connect there); ``data_bind``
    the data-plane sink, by default the same host on a port the OS chooses (workers learn
    it from the broker, so they only need the control address).
    """

    bind: str = "tcp://127.0.0.1:5555"
    data_bind: str | None = None
    heartbeat_interval: float = timing.HEARTBEAT_INTERVAL
    liveness: float = timing.LIVENESS
    max_attempts: int = 4  # as Hadoop: a task is tried this often before the job fails
    memory_budget: int = 1 << 30  # bytes of task output held in memory; beyond it, disk
    spill_dir: str | None = None  # where outputs over the budget go (default: a temp dir)
    result_ttl: float = 3600.0  # seconds a finished job's outputs wait for their client
    max_message: int = DEFAULT_MAX_MESSAGE
    status_interval: float = 0.1  # at most this often a progress event per job
    backup_after: float = 0.25  # a straggler runs at least this long before its backup
    keys_dir: str | None = None  # CURVE keys and allowlists (see patterns/security.py)
    insecure: bool = False  # listening beyond loopback without keys: warn on every job
    max_jobs: int = 1000  # unfinished jobs held at once; more are refused at SUBMIT
    max_jobs_per_client: int = 100  # ... of one client key (without keys: one connection)
    max_bytes_per_client: int = 2 << 30  # bytes of code and inputs of its unfinished jobs
    list_all_jobs: bool = False  # listings show every client's jobs (not only one's own)
    state_dir: str | None = None  # journal and committed outputs: survive a restart
    # what a power loss may take from the state directory: "never" fsyncs (the last
    # seconds of commits and accepted jobs), "commit" fsyncs each commit (nothing acknowledged)
    fsync: str = "never"
    # the read-only HTTP server (observe/server.py): "HOST:PORT" (port 0: the OS picks);
    # with a token, every request must carry it; beyond loopback only with keys or public
    http: str | None = None
    http_token: str | None = None
    http_public: bool = False
    # the event log (observe/events.py): events, the dashboard and /metrics read it
    events: bool = True
    # data-plane frames compressed (broker/codecs.py): "auto" when it listens beyond loopback
    compression: str = "auto"

    def __post_init__(self) -> None:
        check_endpoint(self.bind)
        if self.data_bind is not None:
            check_endpoint(self.data_bind)
        if self.heartbeat_interval <= 0 or self.liveness <= self.heartbeat_interval:
            raise ConfigError("need 0 < heartbeat_interval < liveness")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if not self.result_ttl > 0:
            raise ConfigError(f"result_ttl must be a positive number of seconds, "
                              f"got {self.result_ttl}")
        if self.fsync not in FSYNC_CHOICES:
            raise ConfigError(f"fsync must be one of {', '.join(FSYNC_CHOICES)}, "
                              f"not {self.fsync!r}")
        if self.http and not self.events:
            raise ConfigError("the HTTP server serves the event log: --http cannot be given "
                              "with --no-events")
        if self.compression not in COMPRESSION_CHOICES:
            raise ConfigError(f"compression must be one of {', '.join(COMPRESSION_CHOICES)}, "
                              f"not {self.compression!r}")
        if self.memory_budget < 0:
            raise ConfigError("memory_budget must not be negative")

    def sink_endpoint(self) -> str:
        if self.data_bind:
            return self.data_bind
        if self.bind.startswith("tcp://"):
            host = self.bind[len("tcp://") :].rsplit(":", 1)[0]
            return f"tcp://{host}:0"
        return self.bind + ".data"
