"""hsagent-controller's command line: options, logging, then run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys

from ..service.options import ConfigError, setup_logging
from ..tokens import TokenFileError
from .config import load

log = logging.getLogger("hsagent.controller")


def main(argv: list[str] | None = None) -> int:
    try:
        options, args = load(argv)
    except ConfigError as err:
        print(f"hsagent-controller: {err}", file=sys.stderr)
        return 2
    setup_logging(args)
    from .service import Controller  # aiohttp is imported only once the options are good
    try:
        controller = Controller(options)
        asyncio.run(controller.run())
    except (OSError, ValueError, TokenFileError) as err:
        log.error("cannot start: %s", err)
        return 1
    return 0
