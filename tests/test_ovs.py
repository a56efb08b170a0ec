"""The OVS module against a real, private Open vSwitch (tests/ovs.sh) in a test namespace.

The module (`OvsSync`) is driven here by a small loop in the test, the way the agent's loop
drives it; tests/test_ovs_agent.py runs the whole agent. What OVSDB holds is read back with
ovs-vsctl and ovsdb-tool, and what OVS sends is decoded by hsagent.sflow from a collector
socket inside the namespace.
"""

from __future__ import annotations

import math
import re
import selectors
import socket
import time
from types import MappingProxyType

import pytest

from conftest import PrivateOvs, Receiver, in_netns, record_of
from hsagent.ovs.reconcile import MARK
from hsagent.ovs.sync import OvsSync
from hsagent.settings import Collector, Settings
from hsagent.sflow.datagram import CountersSample, FlowSample
from hsagent.sflow.headers import decode_header
from hsagent.sflow.records import IfCounters, PortName, SampledHeader

AGENT = "198.18.0.2"
TEN_G = 10_000_000_000  # what OVS reports for veth and internal ports


class Driven:
    """An OvsSync and the loop that drives it (select on its fileno, tick once a second)."""

    def __init__(self, db: str):
        self.sync = OvsSync(db)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.sync.fileno(), selectors.EVENT_READ)

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._step()

    def until(self, condition, timeout: float = 10.0) -> float:
        """Drive until condition() holds; returns the seconds it took (fails on timeout)."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not within {timeout} s")
            self._step()
        return time.monotonic() - started

    def _step(self) -> None:
        self._selector.select(0.02)
        self.sync.handle_events()
        self.sync.tick(time.monotonic())

    def close(self) -> None:
        self.sync.close()
        self._selector.close()


@pytest.fixture
def driven(private_ovs):
    made = []

    def make():
        made.append(Driven(private_ovs.db))
        return made[-1]

    yield make
    for d in made:
        d.close()


def settings(*collectors, **changes) -> Settings:
    """Test settings; collectors are Collectors or Receivers."""
    collectors = tuple(c if isinstance(c, Collector) else Collector(c.host, c.port) for c in collectors)
    base = dict(collectors=collectors, polling=2,
                header_bytes=96, sampling_by_speed=MappingProxyType({"10G": 8}))
    return Settings(**{**base, **changes})


# --- rows ----------------------------------------------------------------------------------

def test_rows_and_bridge_references_equal_the_settings(private_ovs, driven, netns):
    ns = private_ovs.ns
    ns.run("ip", "link", "add", "a0", "type", "veth", "peer", "name", "a1")
    ns.run("ip", "link", "set", "a0", "up")
    private_ovs.add_bridge("br0", "a0")
    private_ovs.add_bridge("br1")  # no port but its own internal one
    hand_made = private_ovs.vsctl("--", "--id=@s", "create", "sflow", 'targets="192.0.2.1:6343"',
                                  "--", "add-br", "br2", "--", "set", "bridge", "br2", "datapath_type=netdev",
                                  "sflow=@s").strip()
    d = driven()
    d.sync.configure(settings(Collector("198.51.100.7", 6343), Collector("2001:db8::7", 6400)), AGENT)
    d.until(lambda: all(private_ovs.sflow_rows()[b] for b in ("br0", "br1")))
    rows = private_ovs.sflow_rows()
    expected = {"agent": AGENT, "targets": ["198.51.100.7:6343", "[2001:db8::7]:6400"], "polling": 2,
                "header": 96, "sampling": 8, "external_ids": dict([MARK])}
    assert PrivateOvs.sflow_values(rows["br0"]) == PrivateOvs.sflow_values(rows["br1"]) == expected
    assert rows["br0"]["_uuid"] != rows["br1"]["_uuid"]  # one row per bridge
    assert rows["br2"]["_uuid"][1] == hand_made and rows["br2"]["external_ids"] == ["map", []]
    d.until(lambda: d.sync.status()["rows"] == 2)  # its replica has seen the change too
    status = d.sync.status()
    assert status["bridges"] == {"br0": "hsagent", "br1": "hsagent", "br2": "foreign"}
    assert status["foreign"] == ["br2"] and status["last_transaction"]["result"] == "ok"
    d.until(lambda: d.sync.status()["last_transaction"]["applied"] is not None)  # cur_cfg caught up

    d.close()  # as the agent does on SIGTERM: hsagent's rows go, the foreign one stays
    rows = private_ovs.sflow_rows()
    assert rows["br0"] is None and rows["br1"] is None and rows["br2"]["_uuid"][1] == hand_made
    assert [r["_uuid"][1] for r in private_ovs.table("sFlow")] == [hand_made]
    # nothing but sFlow rows, Bridge.sflow and next_cfg was ever written by hsagent
    assert private_ovs.touched_only_sflow()


# --- what OVS sends ------------------------------------------------------------------------

def _two_ended_bridge(private_ovs, netns):
    """br0 with port a0 in the OVS namespace; a1, its peer, in a second namespace as
    198.18.0.1/24, and the bridge's internal port as 198.18.0.2/24: pings from the second
    namespace cross the bridge both ways."""
    ns, far = private_ovs.ns, netns("hsf")
    ns.run("ip", "link", "add", "a0", "type", "veth", "peer", "name", "a1", "netns", far.name)
    ns.run("ip", "link", "set", "a0", "up")
    far.run("ip", "addr", "add", "198.18.0.1/24", "dev", "a1")
    far.run("ip", "link", "set", "a1", "up")
    private_ovs.add_bridge("br0", "a0")
    ns.run("ip", "addr", "add", f"{AGENT}/24", "dev", "br0")
    ns.run("ip", "link", "set", "br0", "up")
    return far


def test_ovs_datagrams_carry_the_agent_address_counters_and_flow_samples(private_ovs, driven, netns):
    far = _two_ended_bridge(private_ovs, netns)
    with in_netns(private_ovs.ns.name):
        collector = Receiver()
    try:
        d = driven()
        d.sync.configure(settings(collector), AGENT)
        d.until(lambda: private_ovs.sflow_rows()["br0"])
        far.run("ping", "-c", "3", "-W", "1", "198.18.0.2")  # ARP settled before counting
        pings = 400
        summary = far.run("ping", "-q", "-c", str(pings), "-i", "0.005", "198.18.0.2").stdout  # 200/s
        replies = int(re.search(r"(\d+) received", summary).group(1))
        interfaces = {r["name"]: r["ifindex"] for r in private_ovs.table("Interface", "name", "ifindex")}

        def a0_received(r):
            polled = [record_of(s, IfCounters) for s in r.samples(0, interfaces["a0"])
                      if isinstance(s, CountersSample)]
            return polled[-1].in_ucast_pkts if polled else 0

        collector.wait_for(lambda r: a0_received(r) >= pings, timeout=10)  # polled after the pings
    finally:
        collector.close()

    datagrams = collector.datagrams
    assert datagrams and {str(dg.agent) for dg in datagrams} == {AGENT}
    counters = [s for dg in datagrams for s in dg.samples if isinstance(s, CountersSample)]
    names = {record_of(s, PortName).name: s.ds_index for s in counters if record_of(s, PortName)}
    assert names == interfaces  # a counter sample per port, named and indexed as OVS says
    assert a0_received(collector) >= pings  # the pings came in on a0

    flows = [s for dg in datagrams for s in dg.samples if isinstance(s, FlowSample)]
    assert flows and {s.sampling_rate for s in flows} == {8}  # sampling.10G = 8
    # Each request enters the bridge on a0 and each reply on br0 (plus a few ARP/ND packets);
    # 1 in 8 of them is sampled: a binomial count, here within 5 sigma.
    entered = pings + replies
    expected, sigma = entered / 8, math.sqrt(entered * (1 / 8) * (7 / 8))
    assert abs(len(flows) - expected) <= 5 * sigma + 2, (len(flows), expected)
    echoes = [dict(decode_header(h.header_protocol, h.header, h.frame_length, h.stripped))
              for h in (record_of(s, SampledHeader) for s in flows) if h is not None]
    assert sum(1 for e in echoes if e.get("srcIP") == "198.18.0.1" and e.get("dstIP") == AGENT) > 20


def test_an_ipv6_collector_gets_ovs_datagrams(private_ovs, driven, netns):
    _two_ended_bridge(private_ovs, netns)
    with in_netns(private_ovs.ns.name):
        collector = Receiver(socket.AF_INET6, "::1")
    try:
        d = driven()
        d.sync.configure(settings(collector), AGENT)
        d.until(lambda: private_ovs.sflow_rows()["br0"])
        assert private_ovs.sflow_rows()["br0"]["targets"] == f"[::1]:{collector.port}"
        assert collector.wait_for(lambda r: r.samples(), timeout=10)
    finally:
        collector.close()
    assert {str(dg.agent) for dg in collector.datagrams} == {AGENT}


# --- following changes ---------------------------------------------------------------------

def test_new_bridges_hand_edits_and_settings_changes_are_followed_within_a_second(private_ovs, driven):
    private_ovs.add_bridge("br0")
    d = driven()
    d.sync.configure(settings(Collector("198.51.100.7", 6343)), AGENT)
    d.until(lambda: private_ovs.sflow_rows()["br0"])

    private_ovs.add_bridge("br1")
    assert d.until(lambda: private_ovs.sflow_rows()["br1"]) < 1.0

    row = private_ovs.sflow_rows()["br0"]["_uuid"][1]
    private_ovs.vsctl("set", "sflow", row, "sampling=7", 'targets="192.0.2.9:1"', "polling=600")
    assert d.until(lambda: PrivateOvs.sflow_values(private_ovs.sflow_rows()["br0"])["sampling"] == 8) < 1.0
    assert PrivateOvs.sflow_values(private_ovs.sflow_rows()["br0"])["targets"] == ["198.51.100.7:6343"]
    assert PrivateOvs.sflow_values(private_ovs.sflow_rows()["br0"])["polling"] == 2

    private_ovs.vsctl("clear", "bridge", "br0", "sflow")  # unhooked by hand: hsagent adds one again
    assert d.until(lambda: private_ovs.sflow_rows()["br0"]) < 1.0

    d.sync.configure(settings(Collector("198.51.100.8", 6343), polling=5), AGENT)
    def followed():
        values = [PrivateOvs.sflow_values(r) for r in private_ovs.sflow_rows().values()]
        return all(v["targets"] == ["198.51.100.8:6343"] and v["polling"] == 5 for v in values)

    assert d.until(followed) < 1.0

    d.sync.configure(settings(), AGENT)  # no collector: hsagent's rows go
    assert d.until(lambda: not private_ovs.table("sFlow")) < 1.0


def test_polling_without_sampling_keeps_ovs_counters(private_ovs, driven):
    private_ovs.add_bridge("br0")
    with in_netns(private_ovs.ns.name):
        collector = Receiver()
    try:
        d = driven()
        d.sync.configure(settings(collector, polling=1, sampling=0, sampling_bps_ratio=0,
                                  sampling_by_speed=MappingProxyType({})), AGENT)
        d.until(lambda: private_ovs.sflow_rows()["br0"])
        assert private_ovs.sflow_rows()["br0"]["sampling"] == 2**32 - 1
        assert collector.wait_for(lambda r: [s for s in r.samples() if isinstance(s, CountersSample)], 10)
    finally:
        collector.close()


def test_ovsdb_server_restart_is_survived(private_ovs, driven, caplog):
    private_ovs.add_bridge("br0")
    d = driven()
    d.sync.configure(settings(Collector("198.51.100.7", 6343)), AGENT)
    d.until(lambda: private_ovs.sflow_rows()["br0"])
    private_ovs.stop_db()
    d.until(lambda: not d.sync.status()["connected"], timeout=5)
    d.run(3)  # down for a while: tries again with backoff, logs once
    assert sum("cannot connect" in r.message or "closed" in r.message for r in caplog.records) == 1
    private_ovs.start_db()
    private_ovs.vsctl("clear", "bridge", "br0", "sflow")  # changed while hsagent was away
    d.until(lambda: d.sync.status()["connected"], timeout=10)
    assert d.until(lambda: private_ovs.sflow_rows()["br0"]) < 1.0
