"""What the HTTP services do alike around their routes: bearer tokens (RFC 6750) checked before
anything else, TLS from a certificate and key, listening, and running until SIGTERM or SIGINT.
This module imports aiohttp: only the services import it, never the agent.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from typing import Callable

from aiohttp import web

from ..tokens import Tokens
from .options import Endpoint

READS = ("GET", "HEAD")


def bearer_refusal(tokens: Tokens, authorization: str | None, method: str,
            realm: str) -> tuple[int, str, dict] | None:
    """(status, message, headers) when a request may not go on; None when it may.
    A read-only token may GET and HEAD only (RFC 6750 3.1: 401 with invalid_token for a
    token we do not know, 403 with insufficient_scope for one that may not do this)."""
    verdict = tokens.check(authorization)
    if verdict == "missing":
        return 401, "a valid bearer token is needed", {"WWW-Authenticate": f'Bearer realm="{realm}"'}
    if verdict == "invalid":
        return 401, "the bearer token is not valid", {
            "WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token"'}
    if verdict == "read" and method not in READS:
        return 403, "this token may only read", {
            "WWW-Authenticate": f'Bearer realm="{realm}", error="insufficient_scope"'}
    return None


def bearer_auth(tokens: Callable[[], Tokens | None], realm: str):
    """A middleware that answers every request (unknown paths too) without a good token with
    a JSON error. `tokens()` gives the tokens in force (they may be re-read); None: no
    authentication."""
    @web.middleware
    async def check(request: web.Request, handler) -> web.StreamResponse:
        current = tokens()
        if current is not None:
            refused = bearer_refusal(current, request.headers.get("Authorization"), request.method, realm)
            if refused is not None:
                status, message, headers = refused
                return web.json_response({"error": message}, status=status, headers=headers)
        return await handler(request)
    return check


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server's TLS (1.2 or later) from a PEM certificate (chain) and key; None: plain HTTP."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def listen(app: web.Application, where: Endpoint,
                 context: ssl.SSLContext | None) -> web.AppRunner:
    """Serve `app` on `where`; OSError if the address cannot be had (nothing is left open)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, where.host or None, where.port, ssl_context=context,
                       reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


async def stop_listening(runner: web.AppRunner) -> None:
    """Take no new connections; those open may finish (runner.cleanup() ends them)."""
    for site in list(runner.sites):
        await site.stop()


def until_stopped(reload: Callable[[], None] | None = None) -> asyncio.Event:
    """An event SIGTERM and SIGINT set; SIGHUP calls `reload`, if given."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    return stop
