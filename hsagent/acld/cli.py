"""`hsagent-acld`: the command line, and the service's start and stop.

Runs in the foreground, logging to stderr (journald under systemd) unless `--syslog`. Start:
the saved ACLs are installed, then the API listens and systemd hears READY=1. SIGHUP re-reads
the token file (a bad file is logged and the old tokens kept). SIGTERM/SIGINT: stop listening,
finish the install in flight and what is queued, save the state, exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

from .. import __version__, logs
from ..daemon import notify
from . import config
from ..tokens import TokenFileError, Tokens
from .committer import Committer
from .state import StateStore

log = logging.getLogger("hsagent.acld")

STOP_TIMEOUT = 30.0  # seconds to finish installs after SIGTERM (systemd waits 45)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hsagent-acld",
                                description="Switch ACLs over an authenticated REST API.")
    p.add_argument("--version", action="version", version=f"hsagent-acld {__version__}")
    p.add_argument("-c", "--config", metavar="FILE",
                   help=f"configuration file (default {config.DEFAULT_CONFIG_FILE}, if it exists)")
    p.add_argument("-d", "--debug", action="count", default=0, help="more logging (-dd: libraries too)")
    p.add_argument("--syslog", action="store_true", help="log to syslog instead of stderr")
    for option, (_, text) in config.OPTIONS.items():
        if option == "insecure-no-auth":
            p.add_argument("--insecure-no-auth", action="store_const", const="yes", help=text)
        else:
            p.add_argument(f"--{option}", metavar="VALUE", help=text)
    return p


def load_settings(args: argparse.Namespace) -> config.Settings:
    values, where = config.read_file(args.config or config.DEFAULT_CONFIG_FILE,
                                     required=bool(args.config))
    for option in config.OPTIONS:
        value = getattr(args, config.field_name(option))
        if value is not None:
            values[option], where[option] = value, f"--{option}"
    return config.apply(config.Settings(), values, where)


def make_backend(settings: config.Settings):
    if settings.backend_name == "cumulus":
        from .backends.cumulus import CumulusBackend
        return CumulusBackend(settings.policy_dir, settings.file_prefix, settings.acltool)
    from .backends.netfilter import NetfilterBackend
    return NetfilterBackend(settings.swp_pattern)


def tls_context(settings: config.Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


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
    from aiohttp import web  # the service's own dependency, imported here only

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
    runner = web.AppRunner(Api(committer, lambda: holder.tokens, settings.max_body).application())
    await runner.setup()
    host, port = settings.listen
    site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
    try:
        await site.start()
    except OSError as err:
        log.error("cannot listen on %s:%d: %s", host, port, err.strerror or err)
        await committer.stop(STOP_TIMEOUT)
        await runner.cleanup()
        return 1
    log.info("listening on %s://%s:%d, %s backend, %d ACL(s) live", "https" if context else "http",
             host, port, backend.name, len(committer.live))
    notify("READY=1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, holder.reload)
    await stop.wait()
    notify("STOPPING=1")
    log.info("stopping: finishing installs")
    await site.stop()
    await committer.stop(STOP_TIMEOUT)
    await runner.cleanup()
    log.info("stopped with %d ACL(s) live", len(committer.live))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(args.debug, args.syslog)
    try:
        settings = load_settings(args)
    except config.ConfigError as err:
        print(f"hsagent-acld: {err}", file=sys.stderr)
        return 2
    if settings.insecure_no_auth:
        tokens = None
        log.warning("AUTHENTICATION IS OFF (insecure-no-auth): anyone who can reach %s:%d can "
                    "change this switch's ACLs", *settings.listen)
    else:
        try:
            tokens = Tokens.load(settings.token_file)
        except TokenFileError as err:
            print(f"hsagent-acld: {err}", file=sys.stderr)
            return 2
    try:
        context = tls_context(settings)
    except (OSError, ssl.SSLError) as err:
        print(f"hsagent-acld: TLS certificate or key: {err}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, TokenHolder(settings.token_file, tokens), context))
