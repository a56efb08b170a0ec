"""hsagent-acld's cumulus backend: policy files written atomically and installed with
cl-acltool -i, here the stand-in tests/acld/cl-acltool, which installs the files the way
cl-acltool does (every *.rules file at once, through iptables-restore), inside a network
namespace whose switch port is really called swp1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from acld.service import Service, iptables_save, packets, send_udp, wire

pytestmark = pytest.mark.slow

ACLTOOL = Path(__file__).parent / "acld" / "cl-acltool"
SWITCH, HOST = "198.18.2.1", "198.18.2.2"
CONTROL_PLANE = "[iptables]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"


@pytest.fixture
def switch(netns, tmp_path):
    """(switch namespace, host namespace, policy directory with another package's file)."""
    sw, host = netns("acl-cl"), netns("acl-clh")
    wire(sw, "swp1", SWITCH, host, HOST)
    policy = tmp_path / "policy.d"
    policy.mkdir()
    (policy / "00control-plane.rules").write_text(CONTROL_PLANE)
    return sw, host, policy


def start(sw, tmp_path, policy) -> Service:
    return Service(sw, tmp_path, "--backend", "cumulus", "--policy-dir", str(policy),
                   "--acltool", str(ACLTOOL), backend="cumulus",
                   env={"CL_ACLTOOL_POLICY_DIR": str(policy)}).start()


def rule_with(ns, text) -> str:
    [line] = [line for line in iptables_save(ns, counters=True) if text in line]
    return line


def test_files_are_written_and_install(switch, tmp_path):
    sw, host, policy = switch
    acld = start(sw, tmp_path, policy)
    try:
        client = acld.client()
        reply = client.put("count", ["[iptables]",
                                     "-A INPUT --in-interface swp+ -p udp --dport 5101 -j ACCEPT",
                                     "[ip6tables]", "-A INPUT -p udp --dport 5101 -j DROP"])
        assert reply.status == 201, reply
        written = (policy / "50hsacld-count.rules").read_text()
        assert written.splitlines()[1:] == ["[iptables]",
                                           "-A INPUT -i swp+ -p udp -m udp --dport 5101 -j ACCEPT",
                                           "[ip6tables]", "-A INPUT -p udp -m udp --dport 5101 -j DROP"]
        assert written.startswith("#")
        assert sorted(p.name for p in policy.iterdir()) == ["00control-plane.rules", "50hsacld-count.rules"]
        assert (policy / "00control-plane.rules").read_text() == CONTROL_PLANE
        # the stand-in installed both files; the rule counts real packets on swp1
        assert rule_with(sw, "--dport 22")
        send_udp(host, HOST, SWITCH, 5101, 6)
        assert packets(rule_with(sw, "--dport 5101")) == 6
        assert any("--dport 5101 -j DROP" in line for line in iptables_save(sw, 6))

        assert client.put("qos", ["[iptables]", "-t mangle -A POSTROUTING -o swp+ -p udp "
                                                "--dport 5102 -j SETQOS --set-dscp 12"]).status == 201
        assert "DSCP --set-dscp 0x0c" in rule_with(sw, "--dport 5102")

        assert client.delete("/acl/count?wait=1").status == 204
        assert not (policy / "50hsacld-count.rules").exists()
        assert not any("--dport 5101" in line for line in iptables_save(sw))
        assert client.delete("/acl/?wait=1").status == 204
        assert [p.name for p in policy.iterdir()] == ["00control-plane.rules"]
        assert rule_with(sw, "--dport 22")
    finally:
        acld.stop()


def test_refused_install_puts_the_files_back(switch, tmp_path):
    sw, _, policy = switch
    acld = start(sw, tmp_path, policy)
    try:
        client = acld.client()
        good = ["[iptables]", "-A INPUT -p udp --dport 5201 -j DROP"]
        assert client.put("good", good).status == 201
        before = {p.name: p.read_bytes() for p in policy.iterdir()}
        # SETQOS --set-cos in PREROUTING: CLASSIFY, which the kernel refuses there
        reply = client.put("bad", ["[iptables]", "-t mangle -A PREROUTING -p udp -j SETQOS --set-cos 2"])
        assert reply.status == 422
        assert "previous rules restored" in " ".join(reply.json["install"]["lines"])
        assert {p.name: p.read_bytes() for p in policy.iterdir()} == before
        assert rule_with(sw, "--dport 5201")
        # and it blocks nothing after it
        assert client.put("later", ["[iptables]", "-A INPUT -p udp --dport 5202 -j DROP"]).status == 201
        assert rule_with(sw, "--dport 5202") and rule_with(sw, "--dport 5201")
        # hostile input never reaches a file
        reply = client.put("evil", ["[iptables]", "-A INPUT -j DROP\n[ebtables]\n-A FORWARD -j DROP"])
        assert reply.status == 400 and not (policy / "50hsacld-evil.rules").exists()
        assert not [p for p in policy.iterdir() if p.name.startswith(".")], "temporary files left"
    finally:
        acld.stop()


def test_restart_keeps_the_files(switch, tmp_path):
    sw, _, policy = switch
    acld = start(sw, tmp_path, policy)
    client = acld.client()
    assert client.put("kept", ["[iptables]", "-A INPUT -p udp --dport 5301 -j DROP"]).status == 201
    client.close()
    acld.stop()
    written = (policy / "50hsacld-kept.rules").read_bytes()
    mtime = (policy / "50hsacld-kept.rules").stat().st_mtime_ns
    time.sleep(0.05)
    acld = start(sw, tmp_path, policy)
    try:
        assert acld.client().get("/acl/").json == ["kept"]
        assert (policy / "50hsacld-kept.rules").read_bytes() == written
        assert (policy / "50hsacld-kept.rules").stat().st_mtime_ns == mtime  # nothing rewritten
        assert rule_with(sw, "--dport 5301")
    finally:
        acld.stop()
