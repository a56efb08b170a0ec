"""hsagent-controller's command line: options, logging, then run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys

from .. import logs
from .config import ConfigError, load

log = logging.getLogger("hsagent.controller")


def main(argv: list[str] | None = None) -> int:
    try:
        options, args = load(argv)
    except (ConfigError, OSError) as err:
        print(f"hsagent-controller: {err}", file=sys.stderr)
        return 2
    logs.setup(debug=1 if args.debug else 0)
    if args.log_file:
        handler = logging.FileHandler(args.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().handlers[:] = [handler]
    from ..tokens import TokenFileError
    from .service import Controller  # aiohttp is imported only once the options are good
    try:
        controller = Controller(options)
        asyncio.run(controller.run())
    except (OSError, ValueError, TokenFileError) as err:
        log.error("cannot start: %s", err)
        return 1
    return 0
