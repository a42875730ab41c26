import logging

import pytest

from gmemfs.base.ratelimit import RateLimitedLog


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def logger():
    logger = logging.getLogger("test_ratelimit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.handlers[:] = [lines]
    yield logger, lines.lines
    logger.handlers.clear()


def flood(limited, count, level=logging.INFO):
    logged = 0
    for number in range(count):
        if limited.admit(level):
            limited.logger.log(level, "refusal %d", number)
            logged += 1
    return logged


def test_the_first_lines_of_an_interval_then_a_count_when_the_next_begins(logger):
    logger, lines = logger
    now = [100.0]
    limited = RateLimitedLog(logger, "refusals", interval=5, burst=3, clock=lambda: now[0])
    assert flood(limited, 1000) == 3
    assert lines == [("INFO", "refusal 0"), ("INFO", "refusal 1"), ("INFO", "refusal 2")]
    now[0] += 4.9
    assert flood(limited, 10) == 0, "the same interval"
    now[0] += 0.1
    assert flood(limited, 1) == 1
    assert lines[3:] == [
        ("INFO", "1007 more refusals suppressed (the first 3 of every 5 s are logged)"),
        ("INFO", "refusal 0"),
    ]


def test_the_count_is_reported_at_the_end_of_the_session_and_only_once(logger):
    logger, lines = logger
    limited = RateLimitedLog(logger, "failures", burst=1, clock=lambda: 0.0)
    flood(limited, 5, logging.WARNING)
    limited.report_suppressed()
    limited.report_suppressed()
    assert lines == [
        ("WARNING", "refusal 0"),
        ("WARNING", "4 more failures suppressed (the first 1 of every 5 s are logged)"),
    ]


def test_debug_lines_are_never_limited_and_disabled_levels_never_counted(logger):
    logger, lines = logger
    limited = RateLimitedLog(logger, "refusals", burst=1, clock=lambda: 0.0)
    assert not limited.admit(logging.DEBUG), "the logger does not log debug lines"
    logger.setLevel(logging.DEBUG)
    assert flood(limited, 50, logging.DEBUG) == 50
    assert flood(limited, 2) == 1
    limited.report_suppressed()
    assert lines[-1] == ("INFO", "1 more refusals suppressed (the first 1 of every 5 s are logged)")
