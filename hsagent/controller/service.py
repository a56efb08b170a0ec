"""hsagent-controller's process: the sFlow socket, the analyser, the elephant app, a link to
each switch's ACL service and the operators' API, on one asyncio loop.

Once a second: thresholds re-arm, idle flows go, new agents get their link (which adopts what
an earlier run left there) and the rates the API shows are updated. Every `interval` seconds the
app checks its controls.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from ..service.web import until_stopped
from ..tokens import TokenFileError, read_token_file
from ..analyser.engine import Analyser
from ..analyser.listener import Listener, open_udp
from ..analyser.thresholds import BITS_PER_BYTE, Threshold
from .aclclient import AclMetrics, AclService, SwitchLink, open_session, service_url
from .api import serve_api
from .config import Options
from .elephant import FLOW, PREFIX, ElephantApp, flow_spec

log = logging.getLogger(__name__)

HOUSEKEEPING = 1.0  # seconds
RATE_WINDOW = 10  # seconds over which the API's per-second rates are averaged
EVENTS_KEPT = 1000


def acl_token(path: str | None) -> str | None:
    """The token to send: the first one of hsagent-acld's token file that may write."""
    if path is None:
        return None
    tokens = read_token_file(path)  # with hsagent-acld's checks: a regular file, root's, mode 600
    writable = [token for token, may_write in tokens.items() if may_write]
    if not writable:
        raise TokenFileError(f"{path}: every token in it is read-only")
    return writable[0]


def threshold_of(options: Options) -> Threshold:
    """The elephant threshold on the bytes flow; re-armed after one check interval."""
    th = options.threshold
    return Threshold("elephant", FLOW, value=th.bits_per_second / BITS_PER_BYTE,
                     fraction=th.fraction, timeout=options.interval)


def agent_filter(networks: tuple):
    """Only these agents may make the controller talk to an address: the ACL service's URL
    is built from the agent address inside the datagram."""
    if not networks:
        return None
    return lambda address: any(address in network for network in networks)


class Controller:
    def __init__(self, options: Options, clock=time.monotonic):
        self.options = options
        self.clock = clock
        self.started = time.time()
        self.analyser = Analyser([flow_spec(options.smoothing, options.max_flows)],
                                 [threshold_of(options)], accept_agent=agent_filter(options.agents))
        self.table = self.analyser.tables[FLOW]
        self.monitor = self.analyser.monitors[0]
        self.app = ElephantApp(self.table, self.monitor, self.link, dscp=options.dscp,
                               cos=options.cos, interval=options.interval,
                               hysteresis=options.hysteresis, max_controls=options.max_controls)
        self.events: collections.deque = collections.deque(maxlen=EVENTS_KEPT)
        self.acl_metrics = AclMetrics()
        self.links: dict[str, SwitchLink] = {}
        self._history: collections.deque = collections.deque(maxlen=RATE_WINDOW + 1)
        self._session = None
        self._token = acl_token(options.acl_token_file)

    # --- the data path -------------------------------------------------------------------

    def on_datagram(self, data: bytes) -> None:
        now = self.clock()
        for event in self.analyser.receive(data, now):
            self.events.append(event)
            self.app.on_event(event, now)

    # --- switches ------------------------------------------------------------------------

    def link(self, agent: str) -> SwitchLink:
        link = self.links.get(agent)
        if link is None:
            if self._session is None:
                self._session = open_session(self._token, self.options.acl_ca_file,
                                             self.options.acl_timeout)
            service = AclService(self._session, service_url(self.options.acl_url, agent),
                                 self.acl_metrics)
            link = self.links[agent] = SwitchLink(agent, service, PREFIX, self.app.adopt,
                                                  self.app.on_result)
            link.start()
        return link

    # --- timers --------------------------------------------------------------------------

    def housekeeping(self, now: float) -> None:
        self.analyser.housekeeping(now)
        for agent in self.analyser.agents:
            self.link(agent)  # a new switch: adopt what an earlier run left there
        m = self.analyser.metrics
        self._history.append((now, m.datagrams, m.flow_samples + m.counter_samples))

    def rates(self) -> dict:
        """Datagrams and samples per second over the last RATE_WINDOW seconds."""
        if len(self._history) < 2:
            return {"datagrams_per_second": 0.0, "samples_per_second": 0.0}
        (t0, d0, s0), (t1, d1, s1) = self._history[0], self._history[-1]
        span = max(t1 - t0, 1e-9)
        return {"datagrams_per_second": (d1 - d0) / span, "samples_per_second": (s1 - s0) / span}

    async def _every(self, period: float, action) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                action(self.clock())
            except Exception:  # a bug in one round must not stop the controller
                log.exception("internal error")

    # --- running -------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        o = self.options
        listener = Listener(open_udp(o.sflow_listen.host, o.sflow_listen.port, o.reuse_port),
                            self.on_datagram)
        api = await serve_api(self, o)
        listener.start(loop)
        stop = until_stopped()
        timers = [loop.create_task(self._every(HOUSEKEEPING, self.housekeeping)),
                  loop.create_task(self._every(o.interval, self.app.check))]
        log.info("listening for sFlow on %s (udp port %d), API on %s; elephants above %s",
                 o.sflow_listen, listener.port, o.api_listen, o.threshold)
        try:
            await stop.wait()
        finally:
            log.info("stopping; the controls in place stay (the next run adopts them)")
            listener.close()
            for task in timers:
                task.cancel()
            await asyncio.gather(*timers, return_exceptions=True)
            for link in self.links.values():
                await link.close()
            await api.cleanup()
            if self._session is not None:
                await self._session.close()
