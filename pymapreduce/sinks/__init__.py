"""Sink daemons: the shuffle's data plane made plural (docs/sinks.md)."""

from .daemon import SinkDaemon
from .store import SegmentStore

__all__ = ["SegmentStore", "SinkDaemon"]
