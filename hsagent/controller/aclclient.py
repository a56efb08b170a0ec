"""Client of the switches' ACL services (hsagent-acld, or anything speaking acl_server's API).

    PUT    /acl/<name>?wait=1   body: JSON array of rule lines; answers once installed
    DELETE /acl/<name>
    GET    /acl/                JSON array of names
    GET    /acl/<name>          JSON array of rule lines

Every request carries `Authorization: Bearer TOKEN`. One aiohttp session serves every switch
and keeps a connection open to each (keep-alive). Each switch has a `SwitchLink`: callers say
what they want (`want(name, rules)` or `want(name, None)`), and the link's own task makes the
calls in order, retrying failures with a growing pause. A switch that is slow or unreachable
delays only its own calls; no caller ever waits on the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
from typing import Callable
from urllib.parse import quote

import aiohttp

from ..logs import Throttle

log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between attempts, doubling
# Answers worth trying again: the service is busy or broken for now; other 4xx are final.
RETRY_STATUSES = frozenset((408, 429, 500, 502, 503, 504))


class AclError(Exception):
    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


class AclMetrics:
    def __init__(self):
        self.calls = 0
        self.failures = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


def service_url(template: str, agent: str) -> str:
    """The template with {agent} filled in (an IPv6 address in brackets, as URLs need)."""
    host = f"[{agent}]" if ipaddress.ip_address(agent).version == 6 else agent
    return template.replace("{agent}", host)


def open_session(token: str | None, ca_file: str | None, timeout: float) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context if context else True, keepalive_timeout=60,
                                       limit_per_host=2),
        timeout=aiohttp.ClientTimeout(total=timeout), headers=headers)


class AclService:
    """The API of one switch's ACL service."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, metrics: AclMetrics):
        self.base_url = base_url
        self._session = session
        self._metrics = metrics

    async def put(self, name: str, rules: list[str]) -> None:
        await self._call("PUT", f"/acl/{quote(name, safe='')}?wait=1", rules)

    async def delete(self, name: str) -> None:
        await self._call("DELETE", f"/acl/{quote(name, safe='')}", missing_ok=True)

    async def names(self) -> list[str]:
        return _strings(await self._call("GET", "/acl/"), "GET /acl/")

    async def rules(self, name: str) -> list[str]:
        return _strings(await self._call("GET", f"/acl/{quote(name, safe='')}"), f"GET /acl/{name}")

    async def _call(self, method: str, path: str, body=None, missing_ok: bool = False):
        self._metrics.calls += 1
        try:
            async with self._session.request(method, self.base_url + path, json=body) as response:
                text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            self._metrics.failures += 1
            raise AclError(f"{method} {self.base_url}{path}: {err or type(err).__name__}", True) from None
        if response.status == 404 and missing_ok:
            return None
        if response.status >= 300:
            self._metrics.failures += 1
            raise AclError(f"{method} {self.base_url}{path}: {response.status} {text.strip()[:300]}",
                           response.status in RETRY_STATUSES)
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            return None


def _strings(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AclError(f"{what}: expected a JSON array of strings", False)
    return value


class SwitchLink:
    """One switch: the ACLs the controller wants there, made so by a task of its own.

    At start the link lists the switch's ACLs and offers each one whose name has `prefix`
    to `adopt(agent, name, rules)`; those it declines are deleted. `report(agent, name,
    installed, error)` hears the outcome of every change (installed: it was a PUT, not a
    DELETE): error None once done, else the refusal, which is not retried.
    """

    def __init__(self, agent: str, service: AclService, prefix: str,
                 adopt: Callable[[str, str, list[str]], bool],
                 report: Callable[[str, str, bool, str | None], None]):
        self.agent = agent
        self.service = service
        self.connected = False  # the last call got through
        self._prefix = prefix
        self._adopt, self._report = adopt, report
        self._pending: dict[str, list[str] | None] = {}
        self._wake = asyncio.Event()
        self._throttle = Throttle(log, interval=60)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"acl {self.agent}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def want(self, name: str, rules: list[str] | None) -> None:
        """Install `rules` as ACL `name` (None: remove it). The latest wish wins."""
        self._pending.pop(name, None)  # to the back of the queue, after earlier wishes
        self._pending[name] = rules
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        await self._with_retries(self._adopt_leftovers)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                name = next(iter(self._pending))
                await self._with_retries(lambda: self._apply(name))

    async def _apply(self, name: str) -> None:
        """Make the latest wish for `name` so (read at each attempt: it may change meanwhile)."""
        rules = self._pending[name]
        try:
            if rules is None:
                await self.service.delete(name)
            else:
                await self.service.put(name, rules)
        except AclError as err:
            if err.retry:
                raise
            self._settle(name, rules, str(err))
            return
        self._settle(name, rules, None)

    def _settle(self, name: str, rules, error: str | None) -> None:
        if self._pending.get(name, 0) == rules:  # not wished otherwise meanwhile
            del self._pending[name]
        self._report(self.agent, name, rules is not None, error)

    async def _adopt_leftovers(self) -> None:
        for name in await self.service.names():
            if name.startswith(self._prefix) and name not in self._pending:
                rules = await self.service.rules(name)
                if not self._adopt(self.agent, name, rules):
                    self.want(name, None)

    async def _with_retries(self, attempt) -> None:
        """Run `attempt` until it gets through or fails for good (a refusal is not retried)."""
        pause = RETRY_FIRST
        while True:
            try:
                await attempt()
            except AclError as err:
                self.connected = False
                if not err.retry:
                    log.warning("%s: %s", self.agent, err)
                    return
                self._throttle(logging.WARNING, "retry", "%s: %s (trying again)", self.agent, err)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)
                continue
            self.connected = True
            self._throttle.clear("retry")
            return
