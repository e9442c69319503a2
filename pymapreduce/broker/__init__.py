"""The broker daemon: job table, scheduler and data sink."""

from .config import BrokerConfig
from .daemon import Broker

__all__ = ["Broker", "BrokerConfig"]
