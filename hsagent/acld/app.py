"""The HTTP API: acl_server's routes, authenticated, with JSON errors. Routes only: rules are
parsed by rules.py, installs are the committer's.

acl_server's API (PUT/GET/DELETE /acl/NAME, GET and DELETE /acl/, GET /acl/lasterror, a
`Warning: 199 - "check lasterror"` header while the last install failed) plus: `?wait=1` to
answer once the rules are live (or with the install error), `/requests/ID` for the outcome of
an answer 202, ETag/If-Match/If-None-Match, PATCH /acl/ to change several ACLs atomically, and
/health.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Callable

from aiohttp import web

from ..service.web import bearer_auth
from ..tokens import Tokens
from .committer import CapacityError, Change, Closed, Committer
from .rules import Acl, RuleError, check_name, parse_acl

log = logging.getLogger(__name__)

WAIT_TIMEOUT = 60.0  # seconds a ?wait=1 request waits before answering 202 after all
RESERVED = "lasterror"  # a route of its own, never an ACL (as in acl_server)
JSON_TYPES = ("application/json", "application/merge-patch+json")
CHECK_LASTERROR = '199 - "check lasterror"'


def etag(acl: Acl) -> str:
    digest = hashlib.sha256("\n".join(acl.lines()).encode()).hexdigest()
    return f'"{digest[:20]}"'


def error(status: int, message: str, headers: dict | None = None, **details) -> web.Response:
    return web.json_response({"error": message, **details}, status=status, headers=headers)


class Refused(Exception):
    """A request answered with an error (raised from helpers, turned into JSON once)."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **details):
        super().__init__(message)
        self.response = error(status, message, headers, **details)


def wants_wait(request: web.Request) -> bool:
    return request.query.get("wait", "0").lower() not in ("", "0", "false", "no")


class Api:
    def __init__(self, committer: Committer, tokens: Callable[[], Tokens | None], max_body: int):
        self.committer = committer
        self.tokens = tokens  # the current tokens (re-read on SIGHUP); None: no authentication
        self.max_body = max_body

    def application(self) -> web.Application:
        app = web.Application(middlewares=[bearer_auth(self.tokens, "hsagent-acld"), self.guard],
                              client_max_size=self.max_body)
        app.router.add_get("/acl/", self.list_acls)
        app.router.add_delete("/acl/", self.delete_all)
        app.router.add_patch("/acl/", self.patch_acls)
        app.router.add_get("/acl/lasterror", self.last_error)
        app.router.add_route("*", "/acl/lasterror", self.reserved)
        app.router.add_get("/acl/{name}", self.get_acl)
        app.router.add_put("/acl/{name}", self.put_acl)
        app.router.add_delete("/acl/{name}", self.delete_acl)
        app.router.add_get("/requests/{id}", self.request_status)
        app.router.add_get("/health", self.health)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Errors as JSON, and acl_server's Warning while the last install failed (behind
        the bearer check, which answers first, even for unknown paths)."""
        try:
            response = await handler(request)
        except Refused as refused:
            response = refused.response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
            response = error(exc.status, exc.text or exc.reason, headers)
        except Exception:  # noqa: BLE001 - a bug must still answer in JSON, and be logged
            log.exception("%s %s failed", request.method, request.path)
            response = error(500, "internal error (logged)")
        if self.committer.last_error:
            response.headers["Warning"] = CHECK_LASTERROR
        return response

    # acl_server's routes

    async def list_acls(self, request: web.Request) -> web.Response:
        return web.json_response(sorted(self.committer.desired))

    async def get_acl(self, request: web.Request) -> web.Response:
        name = self._name(request)
        acl = self.committer.desired.get(name)
        if acl is None:
            raise Refused(404, f"no ACL {name!r}")
        tag = etag(acl)
        if tag in tags(request.headers.get("If-None-Match")):
            return web.Response(status=304, headers={"ETag": tag})
        return web.json_response(acl.lines(), headers={"ETag": tag})

    async def put_acl(self, request: web.Request) -> web.Response:
        name = self._name(request)
        lines = await self._json(request)
        try:
            acl = parse_acl(name, lines)
        except RuleError as err:
            raise rule_refusal(name, err) from None
        current = self.committer.desired.get(name)
        preconditions(request, current)
        change = self._submit(request, {name: acl})
        return await self._answer(request, change, 201 if current is None else 200,
                                  acl.lines(), {"ETag": etag(acl)})

    async def delete_acl(self, request: web.Request) -> web.Response:
        name = self._name(request)
        current = self.committer.desired.get(name)
        preconditions(request, current)
        if current is None:
            return web.Response(status=204)  # acl_server: deleting what is not there is fine
        return await self._answer(request, self._submit(request, {name: None}), 204)

    async def delete_all(self, request: web.Request) -> web.Response:
        if not self.committer.desired:
            return web.Response(status=204)
        change = self._submit(request, {name: None for name in self.committer.desired})
        return await self._answer(request, change, 204)

    async def last_error(self, request: web.Request) -> web.Response:
        if not self.committer.last_error:
            return web.Response(status=204)
        return web.json_response(self.committer.last_error)

    async def reserved(self, request: web.Request) -> web.Response:
        raise reserved_name()

    # beyond acl_server

    async def patch_acls(self, request: web.Request) -> web.Response:
        """Several ACLs in one atomic change: {"name": [lines], "other": null (delete)}."""
        body = await self._json(request)
        if not isinstance(body, dict) or not body:
            raise Refused(400, "PATCH /acl/ takes a JSON object: ACL name -> array of rule "
                               "lines, or null to delete")
        acls: dict[str, Acl | None] = {}
        for name, lines in body.items():
            if name == RESERVED:
                raise reserved_name()
            try:
                acls[name] = None if lines is None else parse_acl(name, lines)
            except RuleError as err:
                raise rule_refusal(name, err) from None
        change = self._submit(request, acls)
        result = {name: acl.lines() if acl else None for name, acl in acls.items()}
        return await self._answer(request, change, 200, result)

    async def request_status(self, request: web.Request) -> web.Response:
        try:
            change = self.committer.change(int(request.match_info["id"]))
        except ValueError:
            change = None
        if change is None:
            raise Refused(404, "no such request (or too old to remember)")
        if wants_wait(request) and not change.done.done():
            await wait(change)
        return web.json_response(status_of(change))

    async def health(self, request: web.Request) -> web.Response:
        c = self.committer
        return web.json_response({
            "status": "ok", "backend": c.backend.name, "acls": len(c.desired),
            "live_acls": len(c.live), "rules": c.rules, "max_rules": c.max_rules,
            "pending": c.pending, "installs": c.installs, "last_install": c.last_install,
            "last_error": bool(c.last_error)})

    # helpers

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        try:
            return check_name(name)
        except RuleError as err:
            raise Refused(400, str(err)) from None

    async def _json(self, request: web.Request):
        if request.content_type not in JSON_TYPES:
            raise Refused(415, f"the body must be application/json, not {request.content_type!r}")
        body = await request.read()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise Refused(400, f"the body is not JSON: {err}") from None

    def _submit(self, request: web.Request, acls: dict[str, Acl | None]) -> Change:
        try:
            change = self.committer.submit(acls)
        except CapacityError as err:
            raise Refused(507, f"too many rules: {err}", rules=err.rules,
                          max_rules=err.limit) from None
        except Closed:
            raise Refused(503, "shutting down", {"Retry-After": "5"}) from None
        names = sorted(acls)
        log.info("%s %s from %s: change %d of %s", request.method, request.path, request.remote,
                 change.id, ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else ""))
        return change

    async def _answer(self, request: web.Request, change: Change, status: int, body=None,
                      headers: dict | None = None) -> web.Response:
        """202 and where to learn the outcome; with ?wait=1, the outcome itself."""
        if not wants_wait(request) or not await wait(change):
            return web.json_response(status_of(change), status=202,
                                     headers={"Location": f"/requests/{change.id}", **(headers or {})})
        outcome = change.done.result()
        if not outcome.installed:
            return error(422, "the backend refused the install; the previous rules stay live",
                         request=change.id, install=outcome.error)
        if status == 204:
            return web.Response(status=204)
        return web.json_response(body, status=status, headers=headers)


async def wait(change: Change) -> bool:
    """Wait (bounded) for a change's install; whether it finished."""
    try:
        await asyncio.wait_for(asyncio.shield(change.done), WAIT_TIMEOUT)
    except asyncio.TimeoutError:
        return False
    return True


def status_of(change: Change) -> dict:
    status = {"request": change.id, "state": change.state, "acls": sorted(change.acls)}
    if change.state == "failed":
        status["error"] = change.done.result().error
    return status


def rule_refusal(name: str, err: RuleError) -> Refused:
    details = {"acl": name}
    if err.line is not None:
        details.update(line=err.line, rule=err.text)
    return Refused(400, str(err), problem=err.problem, **details)


def reserved_name() -> Refused:
    return Refused(403, f"{RESERVED!r} is not an ACL name", acl=RESERVED)


def tags(header: str | None) -> set[str]:
    return {tag.strip() for tag in header.split(",")} if header else set()


def preconditions(request: web.Request, current: Acl | None) -> None:
    """If-Match / If-None-Match (RFC 9110 13.1) against the ACL as it stands."""
    if_match = tags(request.headers.get("If-Match"))
    if if_match and (current is None or "*" not in if_match and etag(current) not in if_match):
        raise Refused(412, "If-Match: the ACL is not (or no longer) that version",
                      etag=etag(current) if current else None)
    if_none_match = tags(request.headers.get("If-None-Match"))
    if current is not None and ("*" in if_none_match or etag(current) in if_none_match):
        raise Refused(412, "If-None-Match: the ACL exists (in that version)", etag=etag(current))
