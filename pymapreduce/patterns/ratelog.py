"""A log that names each offender but cannot be flooded by one."""

from __future__ import annotations

import logging
import time
from typing import Any

PER_MINUTE = 20  # lines per offender and minute
MAX_OFFENDERS = 10_000  # remembered at once; the oldest is forgotten first


class RateLimitedLog:
    """Warnings about bad input, at most PER_MINUTE lines per offender and minute; the rest
    are counted and the count is logged when the minute is over."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self._seen: dict[str, tuple[float, int]] = {}

    def warn(self, offender: str, what: str, *args: Any, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        start, count = self._seen.get(offender, (now, 0))
        if now - start > 60.0:
            if count > PER_MINUTE:
                self.log.warning("%s: %d more not logged in the last minute", offender,
                                 count - PER_MINUTE)
            start, count = now, 0
        count += 1
        self._seen[offender] = (start, count)
        if count <= PER_MINUTE:
            self.log.log(level, "%s: " + what, offender, *args)
        elif count == PER_MINUTE + 1:
            self.log.warning("%s: more of the same; logging it again in a minute", offender)
        if len(self._seen) > MAX_OFFENDERS:
            self._seen.pop(next(iter(self._seen)))
