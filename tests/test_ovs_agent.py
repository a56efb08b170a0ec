"""The whole agent with `ovs { }` against a real, private Open vSwitch (tests/ovs.sh).

hsagent runs inside the test's namespace, next to OVS, with one collector there; what OVSDB
holds is read with ovs-vsctl, and both hsagent's and OVS's datagrams are decoded from that
collector.
"""

from __future__ import annotations

import grp
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HSAGENT, ZONE, Named, PrivateOvs, Receiver, in_netns, srv, txt
from hsagent.sflow.datagram import CountersSample

AGENT = "198.18.0.5"
DROP_IN = Path(__file__).parent.parent / "init" / "ovsdb-server-hsagent.conf"


class OvsAgent:
    """hsagent in the OVS namespace, its files in the OVS directory (readable by any user)."""

    def __init__(self, ovs, collector: Receiver):
        self.ovs, self.collector = ovs, collector
        self.conf = ovs.dir / "hsagent.conf"
        self.log = ovs.dir / "agent.log"
        self.runtime_dir = ovs.dir / "agent"  # the agent's own: it may become another user's
        self.proc = None

    def write(self, body: str = "", user: str = "root", sources: str | None = None) -> str:
        """The config file: `sources` replaces the default DNSSD = off and the one collector."""
        sources = sources or f"  DNSSD = off\n  collector {{ ip = 127.0.0.1 udpport = {self.collector.port} }}"
        self.conf.write_text(f"sflow {{\n{sources}\n  polling = 2\n  user = {user}\n"
                             f"  ovs {{ db = {self.ovs.db} }}\n{body}\n}}\n")
        self.conf.chmod(0o644)
        return str(self.conf)

    def start(self, body: str = "", user: str = "root", sources: str | None = None) -> None:
        self.write(body, user, sources)
        self.runtime_dir.mkdir(exist_ok=True)
        with open(self.log, "w") as log:
            self.proc = self.ovs.ns.popen(*HSAGENT, "-f", "-c", str(self.conf), "--auto-file",
                                          str(self.runtime_dir / "hsagent.auto"), "--runtime-dir",
                                          str(self.runtime_dir), stderr=log)

    def command(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*HSAGENT, *args], capture_output=True, text=True, timeout=30)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def log_text(self) -> str:
        return self.log.read_text()


def within(condition, timeout: float, step: float = 0.02) -> float:
    """Seconds until condition() held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


@pytest.fixture
def ovs_agent(private_ovs):
    ns = private_ovs.ns
    ns.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")  # the host's uplink
    ns.run("ip", "addr", "add", f"{AGENT}/24", "dev", "up0")
    ns.run("ip", "link", "set", "up0", "up")
    private_ovs.add_bridge("br0")
    with in_netns(ns.name):
        collector = Receiver()
    agent = OvsAgent(private_ovs, collector)
    yield agent
    agent.stop()
    collector.close()


def br0(ovs):
    return ovs.sflow_rows()["br0"]


def br0_values(ovs) -> dict:
    return PrivateOvs.sflow_values(br0(ovs))


def test_agent_keeps_ovs_in_step_and_clears_it_on_sigterm(ovs_agent, private_ovs):
    ovs_agent.start()
    within(lambda: br0(private_ovs), 15)
    row = br0_values(private_ovs)
    assert row == {"agent": AGENT, "targets": [f"127.0.0.1:{ovs_agent.collector.port}"], "polling": 2,
                   "header": 128, "sampling": 10_000, "external_ids": {"created_by": "hsagent"}}

    # OVS's datagrams and hsagent's share the agent address but never the sub-agent id
    collector = ovs_agent.collector
    collector.wait_for(lambda r: {d.sub_agent_id for d in r.datagrams} >= {0, 100_000}, timeout=15)
    streams = {(str(d.agent), d.sub_agent_id) for d in collector.datagrams}
    assert streams == {(AGENT, 0), (AGENT, 100_000)}
    ovs_ports = {s.ds_index for d in collector.datagrams if d.sub_agent_id == 0 for s in d.samples
                 if isinstance(s, CountersSample)}
    assert ovs_ports == {r["ifindex"] for r in private_ovs.table("Interface", "name", "ifindex")}

    # SIGHUP: a new file reaches OVSDB within a second
    ovs_agent.write("  polling = 7\n  headerBytes = 64\n  sampling.10G = 5000")
    ovs_agent.proc.send_signal(signal.SIGHUP)
    took = within(lambda: br0_values(private_ovs)["polling"] == 7, 5)
    assert took < 1.0, took
    assert br0_values(private_ovs)["header"] == 64 and br0_values(private_ovs)["sampling"] == 5000

    # a bridge made now, and a hand edit, are each answered within a second
    private_ovs.add_bridge("br1")
    assert within(lambda: private_ovs.sflow_rows()["br1"], 5) < 1.0
    private_ovs.vsctl("set", "sflow", br0(private_ovs)["_uuid"][1], "polling=99")
    assert within(lambda: br0_values(private_ovs)["polling"] == 7, 5) < 1.0

    # a new agent address (seen at the next re-read or housekeeping): OVS names it too
    ns = private_ovs.ns
    ns.run("ip", "addr", "add", "198.18.1.6/24", "dev", "up0")  # not a secondary: it stays
    ns.run("ip", "addr", "del", f"{AGENT}/24", "dev", "up0")
    ovs_agent.proc.send_signal(signal.SIGHUP)
    within(lambda: br0_values(private_ovs)["agent"] == "198.18.1.6", 5)
    assert {PrivateOvs.sflow_values(r)["agent"] for r in private_ovs.sflow_rows().values()} == {"198.18.1.6"}

    status = within_status(ovs_agent, lambda text: "br1" in text)
    assert re.search(r"ovs:.*'rows': 2", status) and "'br0': 'hsagent'" in status

    assert ovs_agent.stop() == 0
    assert private_ovs.table("sFlow") == []  # SIGTERM took hsagent's rows away
    assert private_ovs.touched_only_sflow()  # and nothing else in OVSDB was ever written
    assert "OVS br0: remove sFlow" in ovs_agent.log_text()


def within_status(agent, condition, timeout=10) -> str:
    """`hsagent status` output once condition(output) holds."""
    deadline = time.monotonic() + timeout
    while True:
        text = agent.command("status", "--runtime-dir", str(agent.runtime_dir)).stdout
        if condition(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_a_dns_sd_change_reaches_ovsdb_within_a_second(ovs_agent, private_ovs):
    (private_ovs.dir / "dns").mkdir()
    named = Named(private_ovs.dir / "dns", netns=private_ovs.ns)
    try:
        named.start()
        named.serve(srv(ovs_agent.collector.port) + txt("txtvers=1", "polling=4"))
        ovs_agent.start(sources=f"  dns-sd {{ domain = .{ZONE} server = 127.0.0.1 port = {named.port}"
                                 " minPolling = 1 }")  # the test's zone polls every 4-6 s
        within(lambda: br0(private_ovs) and br0_values(private_ovs)["polling"] == 4, 15)
        assert br0_values(private_ovs)["targets"] == [f"127.0.0.1:{ovs_agent.collector.port}"]

        named.serve(srv(ovs_agent.collector.port) + txt("txtvers=1", "polling=6"))
        auto = ovs_agent.runtime_dir / "hsagent.auto"
        within(lambda: "polling=6" in auto.read_text(), 40, step=0.005)  # the agent looked again (TTL 10 s)
        took = within(lambda: br0_values(private_ovs)["polling"] == 6, 5)
        assert took < 1.0, took

        named.serve(txt("txtvers=1"))  # no SRV record: no collector, so hsagent's rows go
        within(lambda: not private_ovs.table("sFlow"), 40)
    finally:
        named.stop()


def test_someone_elses_row_is_left_alone_and_reported(ovs_agent, private_ovs):
    private_ovs.vsctl("--", "--id=@s", "create", "sflow", 'targets="192.0.2.1:6343"', "sampling=3",
                      "--", "set", "bridge", "br0", "sflow=@s")
    ovs_agent.start()
    status = within_status(ovs_agent, lambda text: "foreign" in text and "br0" in text)
    assert "'br0': 'foreign'" in status
    within(lambda: "did not make" in ovs_agent.log_text(), 5)
    assert br0_values(private_ovs)["sampling"] == 3 and ovs_agent.stop() == 0
    assert br0_values(private_ovs)["sampling"] == 3  # not even removed at exit


def test_ovsdb_server_restarted_under_the_agent(ovs_agent, private_ovs):
    ovs_agent.start()
    within(lambda: br0(private_ovs), 15)
    private_ovs.stop_db()
    time.sleep(4)  # the agent notices, keeps running, retries with backoff
    assert ovs_agent.proc.poll() is None
    private_ovs.start_db()
    private_ovs.vsctl("clear", "bridge", "br0", "sflow")  # hsagent's row lost while it was away
    within(lambda: br0(private_ovs), 15)
    log = ovs_agent.log_text()
    assert log.count("retrying") == 1 and "connected again" in log


def test_check_says_what_ovs_will_do(ovs_agent, private_ovs):
    conf = ovs_agent.write("  sampling = 0\n  sampling.bps_ratio = 0")
    result = ovs_agent.command("check", "-c", conf)
    assert result.returncode == 0, result.stderr
    assert "sampling=4294967295" in result.stdout  # polling without sampling, explained
    assert "sub-agent 100000" in result.stdout and "may connect" in result.stdout

    conf = ovs_agent.write("  subAgentId = 1")
    result = ovs_agent.command("check", "-c", conf)
    assert result.returncode == 2 and re.search(r"hsagent\.conf:\d+:\d+: .*subAgentId", result.stderr)


def test_an_unprivileged_agent_manages_ovs_through_the_drop_in(ovs_agent, private_ovs):
    """The agent as `nobody`: the drop-in's command (for group nogroup and this socket) lets
    it in, again after ovsdb-server made a new socket."""
    socket_path = private_ovs.db.removeprefix("unix:")
    group = grp.getgrgid(65534).gr_name
    grant = [line.split("=", 1)[1].removeprefix("-") for line in DROP_IN.read_text().splitlines()
             if line.startswith("ExecStartPost=")][0]
    grant = grant.replace("/run/openvswitch/db.sock", socket_path).replace("chgrp hsagent", f"chgrp {group}")

    check = ovs_agent.command("check", "-c", ovs_agent.write(user="nobody"))
    assert f"user nobody may not connect to {socket_path}" in check.stdout  # root's socket: says so
    subprocess.run(shlex.split(grant), check=True)
    check = ovs_agent.command("check", "-c", ovs_agent.write(user="nobody"))
    assert f"nobody may connect to {socket_path}" in check.stdout
    ovs_agent.start(user="nobody")
    within(lambda: br0(private_ovs), 15)

    private_ovs.stop_db()
    private_ovs.start_db()  # a new socket, root's again
    private_ovs.vsctl("clear", "bridge", "br0", "sflow")
    within(lambda: "Permission denied" in ovs_agent.log_text(), 40)  # its retry was refused
    assert not br0(private_ovs)
    subprocess.run(shlex.split(grant), check=True)  # what ExecStartPost does after each start
    within(lambda: br0(private_ovs), 40)  # the agent's backoff reaches 30 s at most
