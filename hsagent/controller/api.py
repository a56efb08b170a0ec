"""The operators' view: a read-only JSON API over HTTP(S).

    GET /flows?agent=A&ifindex=N&n=10   the largest flows of each switch port (n per port)
    GET /thresholds                     the threshold, and what it comes to on each known port
    GET /events?n=100                   the latest threshold events, newest last
    GET /controls                       the ACLs in place or on their way, and each switch's link
    GET /metrics                        datagrams and samples per second, decode errors, events,
                                        ACL calls and failures, flows tracked

Authentication is hsagent-acld's, with its token file format and checks (`hsagent.tokens`):
every request needs `Authorization: Bearer TOKEN` with a token from the file (read-only tokens
will do), 401 otherwise; only an explicit `api-no-auth` serves everyone, and says so in the log.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ..service.web import bearer_auth, listen, tls_context
from ..tokens import Tokens
from ..analyser.packets import field_text
from ..analyser.thresholds import BITS_PER_BYTE
from .elephant import KEYS

log = logging.getLogger(__name__)

MAX_N = 1000


def _count(request: web.Request, default: int) -> int:
    try:
        n = int(request.query.get("n", default))
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "n must be a whole number"}',
                                 content_type="application/json") from None
    return max(1, min(n, MAX_N))


def flow_json(key: tuple, rate: float) -> dict:
    flow = {"agent": key[0], "ifindex": key[1]}
    flow.update((name, field_text(name, value)) for name, value in zip(KEYS, key[2:]))
    flow["bps"] = rate * BITS_PER_BYTE
    return flow


class Api:
    def __init__(self, controller):
        self.controller = controller

    async def flows(self, request: web.Request) -> web.Response:
        n = _count(request, 10)
        agent = request.query.get("agent")
        ifindex = request.query.get("ifindex")
        ifindex = int(ifindex) if ifindex and ifindex.isdigit() else None
        now = self.controller.clock()
        ports: dict[tuple, list] = {}
        for key, rate in self.controller.table.rates(now):
            if (agent is None or key[0] == agent) and (ifindex is None or key[1] == ifindex):
                ports.setdefault(key[:2], []).append((rate, key))
        result = []
        for (port_agent, port), flows in sorted(ports.items()):
            flows.sort(reverse=True)
            result.append({"agent": port_agent, "ifindex": port,
                           "speed": self.controller.analyser.port_speed(port_agent, port) or None,
                           "flows": [flow_json(key, rate) for rate, key in flows[:n]]})
        return web.json_response({"ports": result})

    async def thresholds(self, request: web.Request) -> web.Response:
        monitor = self.controller.monitor
        th = monitor.threshold
        ports = [{"agent": agent, "ifindex": ifindex, "speed": speed,
                  "limit_bps": (monitor.limit(agent, ifindex) or 0) * BITS_PER_BYTE}
                 for (agent, ifindex), speed in sorted(self.controller.analyser.speeds.items())]
        return web.json_response({"thresholds": [{
            "name": th.name, "flow": th.flow, "keys": list(KEYS), "filter": "ingress",
            "smoothing": self.controller.table.spec.t,
            "bps": th.value * BITS_PER_BYTE if th.value else None,
            "fraction_of_speed": th.fraction or None, "rearm_after": th.timeout,
            "hysteresis": self.controller.app.hysteresis, "ports": ports}]})

    async def events(self, request: web.Request) -> web.Response:
        n = _count(request, 100)
        events = list(self.controller.events)[-n:]
        return web.json_response({"events": [
            {"id": e.id, "time": e.time, "threshold": e.threshold, "bps": e.rate * BITS_PER_BYTE,
             "limit_bps": e.limit * BITS_PER_BYTE, "flow": flow_json(e.key, e.rate)}
            for e in events]})

    async def controls(self, request: web.Request) -> web.Response:
        return web.json_response({
            "controls": [c.as_dict() for c in self.controller.app.controls.values()],
            "switches": [{"agent": agent, "url": link.service.base_url, "connected": link.connected,
                          "backlog": link.backlog, "controls": self.controller.app.count(agent)}
                         for agent, link in sorted(self.controller.links.items())]})

    async def metrics(self, request: web.Request) -> web.Response:
        c = self.controller
        body = {"uptime": time.time() - c.started, **c.rates(), **c.analyser.metrics.as_dict(),
                "flows": len(c.table), "flows_evicted": c.table.evicted,
                "agents": len(c.analyser.agents), "controls": len(c.app.controls),
                "controls_refused": c.app.refused,
                "acl_calls": c.acl_metrics.calls, "acl_failures": c.acl_metrics.failures}
        return web.json_response(body)


async def serve_api(controller, options) -> web.AppRunner:
    """Start the API on options.api_listen; returns the runner to clean up."""
    tokens = None
    if options.api_no_auth:
        log.warning("THE API IS OPEN TO ANYONE WHO CAN REACH %s (api-no-auth)", options.api_listen)
    else:
        token_file = options.api_token_file or options.acl_token_file
        if token_file is None:
            raise ValueError("the API needs api-token-file (or acl-token-file), or api-no-auth")
        tokens = Tokens.load(token_file)
    api = Api(controller)
    app = web.Application(middlewares=[bearer_auth(lambda: tokens, "hsagent-controller")])
    app.add_routes([web.get("/flows", api.flows), web.get("/thresholds", api.thresholds),
                    web.get("/events", api.events), web.get("/controls", api.controls),
                    web.get("/metrics", api.metrics)])
    return await listen(app, options.api_listen, tls_context(options.api_cert, options.api_key))
