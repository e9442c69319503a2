"""A log that names each offender but cannot be flooded by one."""

from __future__ import annotations

import logging
import time
from typing import Any

PER_MINUTE = 20  # lines per offender and minute
ALL_PER_MINUTE = 600  # lines of all offenders together per minute (many addresses)
MAX_OFFENDERS = 10_000  # remembered at once; the oldest is forgotten first


class RateLimitedLog:
    """Warnings about bad input, at most PER_MINUTE lines per offender and minute; the rest
    are counted and the count is logged when the minute is over."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self._seen: dict[str, tuple[float, int]] = {}
        self._window, self._lines, self._dropped = time.monotonic(), 0, 0

    def warn(self, offender: str, what: str, *args: Any, level: int = logging.WARNING,
             bucket: str | None = None) -> None:
        """Log ``what`` about ``offender``, unless its ``bucket`` (by default the offender:
        e.g. a network address, so that new connections are not new offenders) had its
        PER_MINUTE lines this minute."""
        now = time.monotonic()
        key = offender if bucket is None else bucket
        start, count = self._seen.get(key, (now, 0))
        if now - start > 60.0:
            if count > PER_MINUTE:
                self.log.log(level, "%s: %d more not logged in the last minute",
                             offender, count - PER_MINUTE)
            start, count = now, 0
        count += 1
        self._seen[key] = (start, count)
        if now - self._window >= 60.0:
            if self._dropped:
                self.log.warning("%d lines about bad input not logged in the last minute "
                                 "(more than %d)", self._dropped, ALL_PER_MINUTE)
            self._window, self._lines, self._dropped = now, 0, 0
        if count <= PER_MINUTE and self._lines >= ALL_PER_MINUTE:
            self._dropped += 1
        elif count <= PER_MINUTE:
            self._lines += 1
            self.log.log(level, "%s: " + what, offender, *args)
        elif count == PER_MINUTE + 1:  # (at the lines' level: news is not a warning)
            self.log.log(level, "%s: more of the same; logging it again in a minute",
                         offender)
        if len(self._seen) > MAX_OFFENDERS:
            self._seen.pop(next(iter(self._seen)))
