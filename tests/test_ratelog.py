"""The rate-limited log: a peer's flood is cut, and its notes keep the level of what was cut."""

import logging

from pymapreduce.patterns.ratelog import PER_MINUTE, RateLimitedLog


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logger(name: str) -> tuple[logging.Logger, Lines]:
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    lines = Lines()
    logger.addHandler(lines)
    return logger, lines


def test_news_past_the_limit_is_cut_without_becoming_a_warning():
    # a client that submits many jobs a minute is not doing anything wrong: the note that
    # its lines are cut is news too, never a warning an operator is paged about
    logger, lines = _logger("pmr-test-ratelog-news")
    log = RateLimitedLog(logger)
    for i in range(3 * PER_MINUTE):
        log.warn("client-a", "job %d submitted", i, level=logging.INFO)
    assert len(lines.records) == PER_MINUTE + 1
    assert {r.levelno for r in lines.records} == {logging.INFO}
    assert lines.records[-1].getMessage() == \
        "client-a: more of the same; logging it again in a minute"


def test_complaints_past_the_limit_are_cut_and_the_cut_is_a_warning():
    logger, lines = _logger("pmr-test-ratelog-bad")
    log = RateLimitedLog(logger)
    for i in range(3 * PER_MINUTE):
        log.warn("rogue", "malformed message %d", i)
    assert len(lines.records) == PER_MINUTE + 1
    assert {r.levelno for r in lines.records} == {logging.WARNING}
    assert "more of the same" in lines.records[-1].getMessage()
    log.warn("another", "malformed message")  # another offender is still heard
    assert lines.records[-1].getMessage() == "another: malformed message"
