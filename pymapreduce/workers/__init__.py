"""The worker daemon: task execution and the process supervisor."""

from .supervisor import Supervisor
from .worker import Worker

__all__ = ["Supervisor", "Worker"]
