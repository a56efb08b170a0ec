"""The elephant-marking app: a large flow gets an ACL that marks its packets, on the switch
that reported it, until it goes quiet.

The flow is the TCP/UDP 5-tuple of packets entering a switch port, valued in bytes. When one
crosses the threshold, the app puts this ACL (Cumulus Linux's ACL syntax, as acl_server takes it)
on that switch:

    -t mangle -A FORWARD --in-interface swp+ -s SRC -d DST -p udp --sport SP --dport DP
        -j SETQOS --set-dscp 10 --set-cos 5

(after an `[iptables]` section line, `[ip6tables]` for an IPv6 flow). Every `interval` seconds the
controls whose flow has fallen below `hysteresis` x the threshold are removed. The ACL's name
is a digest of the 5-tuple, so installing one twice is harmless and a restarted controller
recognises what it put there before: a control it finds on a switch is adopted (and removed
once its flow is quiet) if its rule is one this app writes, else deleted.

Rule text is made only from values that went through `ipaddress` and `int`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from typing import Callable, NamedTuple

from ..analyser.flows import FlowSpec, FlowTable
from ..analyser.thresholds import BITS_PER_BYTE, Event, Monitor
from ..logs import Throttle

log = logging.getLogger(__name__)

PREFIX = "elephant-"
FLOW = "elephant"
KEYS = ("src_ip", "dst_ip", "ip_protocol", "src_port", "dst_port")
PROTOCOLS = {6: "tcp", 17: "udp"}
PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOLS.items()}


class FiveTuple(NamedTuple):
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    protocol: int
    sport: int
    dport: int

    @classmethod
    def of_key(cls, key: tuple) -> "FiveTuple":
        """From a flow key (agent, ifIndex, src, dst, protocol, sport, dport)."""
        _, _, src, dst, protocol, sport, dport = key
        return cls(ipaddress.ip_address(src), ipaddress.ip_address(dst), int(protocol), int(sport), int(dport))

    def packed(self) -> tuple:
        """The key fields as the flow table holds them."""
        return (self.src.packed, self.dst.packed, self.protocol, self.sport, self.dport)

    def as_dict(self) -> dict:
        return {"src_ip": str(self.src), "dst_ip": str(self.dst), "protocol": self.protocol,
                "src_port": self.sport, "dst_port": self.dport}


def flow_spec(t: float, max_flows: int) -> FlowSpec:
    return FlowSpec(FLOW, KEYS, value="bytes", filter="ingress", t=t, max_flows=max_flows)


def acl_name(flow: FiveTuple) -> str:
    """The same flow always gets the same name, so PUTs are idempotent."""
    text = f"{flow.protocol} {flow.src} {flow.sport} {flow.dst} {flow.dport}"
    return PREFIX + hashlib.blake2s(text.encode(), digest_size=8).hexdigest()


def acl_rules(flow: FiveTuple, dscp: int, cos: int) -> list[str]:
    rule = (f"-t mangle -A FORWARD --in-interface swp+ -s {flow.src} -d {flow.dst} "
            f"-p {PROTOCOLS[flow.protocol]} --sport {flow.sport} --dport {flow.dport} "
            f"-j SETQOS --set-dscp {int(dscp)} --set-cos {int(cos)}")
    return ["[ip6tables]" if flow.src.version == 6 else "[iptables]", rule]


RULE_OPTIONS = {"-s": "src", "--source": "src", "-d": "dst", "--destination": "dst",
                "-p": "protocol", "--protocol": "protocol", "--sport": "sport",
                "--source-port": "sport", "--dport": "dport", "--destination-port": "dport"}


def flow_of_rules(rules: list[str]) -> FiveTuple | None:
    """The 5-tuple of a rule this app wrote (as the ACL service shows it back), or None."""
    lines = [r for r in rules if not r.strip().startswith("[")]
    if len(lines) != 1:
        return None
    words, values = lines[0].split(), {}
    for option, value in zip(words, words[1:]):
        if option in RULE_OPTIONS:
            values[RULE_OPTIONS[option]] = value.split("/")[0]
    try:
        protocol = values["protocol"]
        number = PROTOCOL_NUMBERS.get(protocol.lower()) or int(protocol)
        flow = FiveTuple(ipaddress.ip_address(values["src"]), ipaddress.ip_address(values["dst"]),
                         number, int(values["sport"]), int(values["dport"]))
    except (KeyError, ValueError):
        return None
    return flow if flow.protocol in PROTOCOLS else None


class Control:
    """An ACL the app has put (or is putting) on a switch."""

    def __init__(self, agent: str, name: str, flow: FiveTuple, key: tuple | None,
                 rules: list[str], now: float, event: Event | None):
        self.agent, self.name, self.flow, self.key, self.rules = agent, name, flow, key, rules
        self.since = now  # monotonic
        self.created = time.time()
        self.event = event.id if event else None  # None: adopted from an earlier run
        self.state = "installing"  # installed, failed, removing
        self.error: str | None = None

    def as_dict(self) -> dict:
        return {"agent": self.agent, "name": self.name, "flow": self.flow.as_dict(),
                "ifindex": self.key[1] if self.key else None, "rules": self.rules,
                "state": self.state, "error": self.error, "created": self.created,
                "event": self.event}


class ElephantApp:
    """Events in, controls out, through `link(agent)` (a SwitchLink per switch)."""

    def __init__(self, table: FlowTable, monitor: Monitor, link: Callable, *, dscp: int, cos: int,
                 interval: float, hysteresis: float, max_controls: int):
        self.table, self.monitor, self._link = table, monitor, link
        self.dscp, self.cos = dscp, cos
        self.interval, self.hysteresis, self.max_controls = interval, hysteresis, max_controls
        self.controls: dict[tuple[str, str], Control] = {}  # (agent, name) ->
        self.refused = 0  # events with no control: the switch was at its cap
        self._throttle = Throttle(log, interval=60)

    def count(self, agent: str) -> int:
        return sum(1 for a, _ in self.controls if a == agent)

    def on_event(self, event: Event, now: float) -> None:
        agent = event.key[0]
        flow = FiveTuple.of_key(event.key)
        if flow.protocol not in PROTOCOLS:
            return
        name = acl_name(flow)
        control = self.controls.get((agent, name))
        if control is not None:
            control.key = control.key or event.key  # adopted: now we know its port
            if control.state == "removing":  # back before it was gone: keep it after all
                control.state, control.since = "installing", now
                self._link(agent).want(name, control.rules)
            return
        if self.count(agent) >= self.max_controls:
            self.refused += 1
            self._throttle(logging.WARNING, f"cap:{agent}", "%s: %d controls in place already; "
                           "not marking %s", agent, self.max_controls, flow.as_dict())
            return
        rules = acl_rules(flow, self.dscp, self.cos)
        self.controls[(agent, name)] = Control(agent, name, flow, event.key, rules, now, event)
        log.info("%s: marking %s (%.1f Mbit/s, threshold %.1f)", agent, _text(flow),
                 mbps(event.rate), mbps(event.limit))
        self._link(agent).want(name, rules)

    def adopt(self, agent: str, name: str, rules: list[str]) -> bool:
        """A control found on a switch at start: keep it if it is one of ours."""
        flow = flow_of_rules(rules)
        if flow is None or acl_name(flow) != name:
            log.info("%s: removing ACL %s left by an earlier run: not a rule of this app", agent, name)
            return False
        if (agent, name) not in self.controls:
            control = Control(agent, name, flow, None, rules, time.monotonic(), None)
            control.state = "installed"
            self.controls[(agent, name)] = control
            log.info("%s: adopted ACL %s for %s", agent, name, _text(flow))
        return True

    def on_result(self, agent: str, name: str, installed: bool, error: str | None) -> None:
        control = self.controls.get((agent, name))
        if control is None:
            return
        if installed and control.state == "installing":
            control.state, control.error = ("failed", error) if error else ("installed", None)
            if error:
                log.warning("%s: could not install %s: %s", agent, name, error)
        elif not installed and control.state == "removing":
            if error:
                log.warning("%s: could not remove %s: %s", agent, name, error)
            del self.controls[(agent, name)]

    def check(self, now: float) -> None:
        """Remove the controls whose flow has gone quiet (and re-arm its threshold)."""
        adopted = [c for c in self.controls.values() if c.key is None]
        rates = self._rates_by_flow({c.agent for c in adopted}, now) if adopted else {}
        for control in list(self.controls.values()):
            if control.state == "removing" or now - control.since < self.interval:
                continue
            if control.state == "failed":  # forget it, so that a new event may try again
                del self.controls[(control.agent, control.name)]
                self.monitor.fired.pop(control.key, None)
                continue
            key, rate = self._flow_rate(control, rates, now)
            limit = self.monitor.limit(control.agent, key[1]) if key else None
            if limit is not None and rate >= self.hysteresis * limit:
                continue
            control.state = "removing"
            if key is not None:
                self.monitor.fired.pop(key, None)  # should it come back, mark it again
            log.info("%s: %s is quiet (%.2f Mbit/s): removing %s", control.agent,
                     _text(control.flow), mbps(rate), control.name)
            self._link(control.agent).want(control.name, None)

    def _flow_rate(self, control: Control, rates: dict, now: float) -> tuple[tuple | None, float]:
        if control.key is not None:
            return control.key, self.table.rate(control.key, now)
        key, rate = rates.get((control.agent, control.flow.packed()), (None, 0.0))
        control.key = key  # adopted, and its flow found: look it up directly from now on
        return key, rate

    def _rates_by_flow(self, agents: set, now: float) -> dict:
        """(agent, fields) -> (key, rate) of its busiest port, for controls adopted at start."""
        best: dict = {}
        for key, rate in self.table.rates(now):
            if key[0] in agents:
                index = (key[0], key[2:])
                if rate > best.get(index, (None, -1.0))[1]:
                    best[index] = (key, rate)
        return best


def mbps(bytes_per_second: float) -> float:
    return bytes_per_second * BITS_PER_BYTE / 1e6


def _text(flow: FiveTuple) -> str:
    return f"{PROTOCOLS[flow.protocol]} {flow.src}:{flow.sport} -> {flow.dst}:{flow.dport}"
