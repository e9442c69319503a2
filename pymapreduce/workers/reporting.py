"""Finished task reports cut into DONE messages the broker accepts (no sockets here).

The broker decodes at most ``BROKER_LIMITS.header`` bytes of header and reads at most
``BROKER_MAX_FRAMES`` frames and ``max_message`` bytes of one message (it drops anything
larger unread: patterns/message.py, patterns/sockets.py). A report's counters can make it
large (1000 names of up to 200 characters), and each report carries its small outputs
inline, so a batch of reports goes in as many DONE messages as it takes.
"""

from __future__ import annotations

import logging

import msgpack

from ..patterns import protocol as P
from ..patterns.message import BROKER_LIMITS, BROKER_MAX_FRAMES, Message
from ..patterns.wire import Failure, Report

log = logging.getLogger("pymapreduce.worker")

REPORT_SLACK = 1024  # bytes of a DONE header besides its results (and of an OUTPUT's)
GROUP_HEADER = BROKER_LIMITS.header // 2  # a DONE of several reports stays under this


def done_messages(reports: list, blobs: list, max_message: int) -> list[Message]:
    """DONE messages for ``reports`` (each a ``wire.Report`` in its wire form, in order) and their inline output ``blobs`` (``nblobs`` each, -1 for none).

    Reports are kept in order and grouped while the header stays under GROUP_HEADER and
    the message within BROKER_MAX_FRAMES frames and ``max_message`` bytes. A report that
    does not fit even alone becomes a FAILED naming its size: its task is retried and in
    the end its job fails with that reason, instead of a message the broker would drop
    (leaving the task held for ever)."""
    nblobs = sum(max(r[5], 0) for r in reports)
    if (1 + nblobs <= BROKER_MAX_FRAMES
            and (_usual(reports)
                 or len(msgpack.packb(reports, use_bin_type=True)) <= GROUP_HEADER)
            and sum(len(b) for b in blobs) + GROUP_HEADER + REPORT_SLACK <= max_message):
        return [Message(P.DONE, {"results": reports}, tuple(blobs))]  # the usual case
    messages: list[Message] = []
    group: list = []
    group_blobs: list = []
    head = weight_sum = 0
    pos = 0
    for report in reports:
        n = max(report[5], 0)
        own = blobs[pos:pos + n]
        pos += n
        size = len(msgpack.packb(report, use_bin_type=True))
        weight = sum(len(b) for b in own)
        if (size > BROKER_LIMITS.header - REPORT_SLACK or 1 + n > BROKER_MAX_FRAMES
                or size + weight + REPORT_SLACK > max_message):
            messages.append(too_large(report, size, weight, max_message))
            continue
        if group and (head + size > GROUP_HEADER
                      or 1 + len(group_blobs) + n > BROKER_MAX_FRAMES
                      or head + size + weight_sum + weight + REPORT_SLACK > max_message):
            messages.append(Message(P.DONE, {"results": group}, tuple(group_blobs)))
            group, group_blobs, head, weight_sum = [], [], 0, 0
        group.append(report)
        group_blobs.extend(own)
        head += size
        weight_sum += weight
    if group:
        messages.append(Message(P.DONE, {"results": group}, tuple(group_blobs)))
    return messages


USUAL_REPORT = 1000  # bytes a report of the usual statistics takes at most, encoded: a
# job id of at most 200 characters (the broker's bound; up to 800 bytes of UTF-8), a kind,
# three ints and the three counts {records, bytes, secs}


def _usual(reports: list) -> bool:
    """Whether the reports' header surely fits GROUP_HEADER without encoding it to see
    (it is encoded once more to be sent): each holds the statistics every report has and
    nothing else (no counters, log or sink names), and there are not too many."""
    return len(reports) * USUAL_REPORT <= GROUP_HEADER and all(
        len(r[4]) <= 3 and len(r[0]) <= 200 for r in reports)


def too_large(report: list, size: int, weight: int, max_message: int) -> Message:
    """The FAILED that replaces a report the broker could not take in any message."""
    key, stats = Report.key_of(report), report[4]
    counters = len(stats.get("counters") or ()) if isinstance(stats, dict) else 0
    log.warning("%s %s-%d: its report (%d bytes, %d bytes of inline outputs) is more than "
                "the broker accepts; reported as failed", key.job, key.kind, key.index, size,
                weight)
    error = (f"the task's report takes {size} bytes ({counters} counters) and {weight} "
             f"bytes of outputs: more than the broker accepts in one message (a header of "
             f"{BROKER_LIMITS.header} bytes, {max_message} bytes in all)")
    return Message(P.FAILED, Failure(key, error, "", {"split": key.index}).body())
