"""`hsagent-acld`: the command line, and the service's start and stop.

Runs in the foreground, logging to stderr (journald under systemd) unless `--syslog` or
`--log-file`. Start: the saved ACLs are installed, then the API listens and systemd hears
READY=1. SIGHUP re-reads the token file (a bad file is logged and the old tokens kept).
SIGTERM/SIGINT: stop listening, finish the install in flight and what is queued, save the
state, exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys

from .. import __version__
from ..daemon import notify
from ..service import options
from ..tokens import TokenFileError, Tokens
from . import config
from .committer import Committer
from .state import StateStore

log = logging.getLogger("hsagent.acld")

STOP_TIMEOUT = 30.0  # seconds to finish installs after SIGTERM (systemd waits 45)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hsagent-acld",
                                description="Switch ACLs over an authenticated REST API.")
    options.add_common_arguments(p, __version__, config.DEFAULT_CONFIG_FILE)
    options.add_options(p, config.OPTIONS)
    return p


def load_settings(args: argparse.Namespace) -> config.Settings:
    given = options.gather(args, config.OPTIONS, config.DEFAULT_CONFIG_FILE)
    return config.apply(config.Settings(), given)


def make_backend(settings: config.Settings):
    if settings.backend_name == "cumulus":
        from .backends.cumulus import CumulusBackend
        return CumulusBackend(settings.policy_dir, settings.file_prefix, settings.acltool)
    from .backends.netfilter import NetfilterBackend
    return NetfilterBackend(settings.swp_pattern)


class TokenHolder:
    """The tokens in force; SIGHUP swaps them for the file's, if the file is good."""

    def __init__(self, path: str, tokens: Tokens | None):
        self.path, self.tokens = path, tokens

    def reload(self) -> None:
        if self.tokens is None:
            return
        try:
            self.tokens = Tokens.load(self.path)
        except TokenFileError as err:
            log.error("token file not re-read, keeping the old tokens: %s", err)
            return
        log.info("re-read %d token(s) from %s", len(self.tokens), self.path)


async def serve(settings: config.Settings, holder: TokenHolder, context: ssl.SSLContext | None) -> int:
    from ..service import web  # aiohttp: the service's own dependency, once the settings are good
    from .app import Api

    backend = make_backend(settings)
    store = StateStore(settings.state_dir)
    committer = Committer(backend, store, settings.max_rules, settings.commit_interval)
    saved = store.load()
    started = committer.start(saved)
    if started:
        await asyncio.wait([change.done for change in started])
        failed = [c for c in started if c.state == "failed"]
        log.info("re-installed %d saved ACL(s)%s", len(started) - len(failed),
                 f", {len(failed)} refused by the backend" if failed else "")
    app = Api(committer, lambda: holder.tokens, settings.max_body).application()
    try:
        runner = await web.listen(app, settings.listen, context)
    except OSError as err:
        log.error("cannot listen on %s: %s", settings.listen, err.strerror or err)
        await committer.stop(STOP_TIMEOUT)
        return 1
    log.info("listening on %s://%s, %s backend, %d ACL(s) live", "https" if context else "http",
             settings.listen, backend.name, len(committer.live))
    notify("READY=1")
    await web.until_stopped(reload=holder.reload).wait()
    notify("STOPPING=1")
    log.info("stopping: finishing installs")
    await web.stop_listening(runner)
    await committer.stop(STOP_TIMEOUT)
    await runner.cleanup()
    log.info("stopped with %d ACL(s) live", len(committer.live))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    options.setup_logging(args)
    try:
        settings = load_settings(args)
    except config.ConfigError as err:
        print(f"hsagent-acld: {err}", file=sys.stderr)
        return 2
    if settings.insecure_no_auth:
        tokens = None
        log.warning("AUTHENTICATION IS OFF (insecure-no-auth): anyone who can reach %s can "
                    "change this switch's ACLs", settings.listen)
    else:
        try:
            tokens = Tokens.load(settings.token_file)
        except TokenFileError as err:
            print(f"hsagent-acld: {err}", file=sys.stderr)
            return 2
    try:
        from ..service.web import tls_context
        context = tls_context(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as err:
        print(f"hsagent-acld: TLS certificate or key: {err}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, TokenHolder(settings.token_file, tokens), context))
