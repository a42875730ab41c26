"""Log lines a user can cause, at most a burst per interval: the kernel's printk_ratelimit.

Any user of a shared mount can have thousands of requests refused every second; one line
each buried every other line (59,250 lines in 3 s) and filled the disk of a daemon logging
to a file. As the kernel's ___ratelimit(), the first lines of each interval are logged in
full and the rest only counted, that count logged once the next interval starts.
"""

import logging
import math
import time
from collections.abc import Callable

RATELIMIT_INTERVAL = 5.0  # seconds, the kernel's DEFAULT_RATELIMIT_INTERVAL
RATELIMIT_BURST = 10  # lines per interval, DEFAULT_RATELIMIT_BURST


class RateLimitedLog:
    """One kind of line (`what`: "refusals") on one logger, rate-limited.

    Lines below INFO are never limited: they are logged only when debugging asks for all.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float = RATELIMIT_INTERVAL,
        burst: int = RATELIMIT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self._begin = -math.inf
        self._logged = 0
        self._suppressed = 0
        self._suppressed_level = logging.NOTSET

    def admit(self, level: int) -> bool:
        """Whether a line at `level` is to be logged now (ask before formatting it)."""
        if not self.logger.isEnabledFor(level):
            return False
        if level < logging.INFO:
            return True
        now = self.clock()
        if now - self._begin >= self.interval:
            self.report_suppressed()
            self._begin, self._logged = now, 0
        if self._logged < self.burst:
            self._logged += 1
            return True
        self._suppressed += 1
        self._suppressed_level = max(self._suppressed_level, level)
        return False

    def report_suppressed(self) -> None:
        """Log how many lines were left out since the last report (also at the end of the session)."""
        if self._suppressed:
            self.logger.log(
                self._suppressed_level,
                "%d more %s suppressed (the first %d of every %g s are logged)",
                self._suppressed,
                self.what,
                self.burst,
                self.interval,
            )
            self._suppressed, self._suppressed_level = 0, logging.NOTSET
