"""Logging set-up and rate limiting of repeated messages.

An agent that runs for months must not fill a disk with the same complaint every second:
`Throttle` lets the first occurrence of a message through, then at most one line per
interval saying how many times it repeated.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

LEVELS = [logging.INFO, logging.DEBUG]  # -d gives DEBUG; more -d adds library debugging


def setup(debug: int = 0, syslog: bool = False) -> None:
    """stderr (journald when run by systemd, a terminal in the foreground) or syslog."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if syslog and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log",
                                                 facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("hsagent[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        # journald stamps each line itself; a terminal user wants the time
        fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else \
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
    if debug < 2:  # library chatter only on -dd (a filter: libraries set their own levels)
        handler.addFilter(_quiet_libraries)
    root.addHandler(handler)
    root.setLevel(LEVELS[min(debug, 1)])


def _quiet_libraries(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.startswith("hsagent")


class Throttle:
    """Log a message once, then at most once per `interval` seconds with a repeat count."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, clock=time.monotonic):
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._seen: dict[str, list] = {}  # key -> [last logged time, suppressed count]

    def __call__(self, level: int, key: str, message: str, *args) -> None:
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None:
            self._seen[key] = [now, 0]
            self._log.log(level, message, *args)
        elif now - entry[0] >= self._interval:
            suffix = f" (repeated {entry[1]} times)" if entry[1] else ""
            self._log.log(level, message + suffix, *args)
            entry[0], entry[1] = now, 0
        else:
            entry[1] += 1

    def clear(self, key: str) -> None:
        """The condition is over: its next occurrence is logged at once."""
        self._seen.pop(key, None)
