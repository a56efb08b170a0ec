"""The running agent follows DNS-SD records served by a real BIND, decoded from what it sends."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import HSAGENT, ZONE, Receiver, agent_log, record_of, srv, start_agent, stop, txt, wait_until
from hsagent.sflow import records as R


def dns_agent(named, tmp_path, body=""):
    """An agent following the zone; its file lets DNS-SD poll every second (the default floor
    is 10 s) so that the tests see changes quickly."""
    conf = tmp_path / "hsagent.conf"
    conf.write_text(f"sflow {{\n  user = root\n  dns-sd {{ domain = .{ZONE} server = 127.0.0.1 "
                    f"port = {named.port} minPolling = 1 }}\n{body}\n}}\n")
    return start_agent(str(conf), tmp_path)


def host_uptimes(receiver):
    return [record_of(s, R.HostCpu).uptime for s in receiver.samples(2, 1)]


def test_agent_sends_where_the_zone_says_and_follows_edits(named, receiver, tmp_path):
    second = Receiver()
    named.serve(srv(receiver.port) + txt("txtvers=1", "sampling.10G=2000", "polling=2"))
    agent = dns_agent(named, tmp_path)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=5), "nothing within 5 s of start"
        auto = (tmp_path / "hsagent.auto").read_text().splitlines()
        assert "polling=2" in auto and "sampling.10G=2000" in auto
        assert f"collector=127.0.0.1 {receiver.port}" in auto
        named.serve(srv(second.port, "collector2") + txt("polling=2"))
        assert second.wait_for(lambda r: r.raw, timeout=20), "traffic did not move within the TTL"
        moved = len(receiver.raw)
        time.sleep(3)
        assert len(receiver.raw) == moved, "the removed collector still receives"
        assert f"collector=127.0.0.1 {second.port}" in (tmp_path / "hsagent.auto").read_text()
    finally:
        second.close()
        stop(agent)


def test_txt_polling_sets_the_counter_interval(named, receiver, tmp_path):
    named.serve(srv(receiver.port) + txt("polling=2"))
    agent = dns_agent(named, tmp_path, body="  polling = 30")
    try:
        assert receiver.wait_for(lambda r: len(host_uptimes(r)) >= 3, timeout=15)
    finally:
        stop(agent)
    gaps = [b - a for a, b in zip(host_uptimes(receiver), host_uptimes(receiver)[1:])]
    assert all(1 <= gap <= 3 for gap in gaps), gaps


def test_two_srv_records_reach_both_collectors_and_aaaa_goes_over_ipv6(named, receiver, receiver6, tmp_path):
    named.serve(srv(receiver.port) + srv(receiver6.port, "collector6") + txt("polling=2"))
    agent = dns_agent(named, tmp_path)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=10)
        assert receiver6.wait_for(lambda r: r.raw, timeout=5), "nothing arrived over IPv6"
    finally:
        stop(agent)


def test_failures_keep_the_last_good_collector(named, receiver, tmp_path):
    named.serve(srv(receiver.port) + txt("polling=1"))
    agent = dns_agent(named, tmp_path)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=10)
        # malformed TXT strings are skipped; the good ones and the collector still apply
        named.serve(srv(receiver.port) + txt("polling=1", "polling=banana", "sampling=-4", "x" * 200, "nonsense"))
        time.sleep(12)  # a lookup (TTL 10 s); the answer configures nothing new, so nothing shows it
        named.serve("")  # NXDOMAIN for _sflow._udp
        wait_until(lambda: "NXDOMAIN" in agent_log(tmp_path) or "does not exist" in agent_log(tmp_path), 40)
        named.stop()  # no answers at all
        count = len(receiver.raw)
        assert receiver.wait_for(lambda r: len(r.raw) > count + 3, timeout=10), "stopped sending"
        assert agent.poll() is None
    finally:
        stop(agent)
    log = agent_log(tmp_path)
    assert "NXDOMAIN" in log or "does not exist" in log


def test_zero_srv_answers_stop_sending(named, receiver, tmp_path):
    named.serve(srv(receiver.port) + txt("polling=1"))
    agent = dns_agent(named, tmp_path)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=10)
        named.serve(txt("polling=1"))  # TXT but no SRV: "no collectors"
        auto = tmp_path / "hsagent.auto"
        wait_until(lambda: "collector=" not in auto.read_text(), 40)  # the agent has looked again
        count = len(receiver.raw)
        time.sleep(3)
        assert len(receiver.raw) == count
        assert "collector=" not in (tmp_path / "hsagent.auto").read_text()
    finally:
        stop(agent)


def test_check_and_discover_show_dns_values_and_their_origin(named, receiver, tmp_path):
    named.serve(srv(receiver.port) + txt("txtvers=1", "polling=20", "sampling.10G=2000"))
    conf = tmp_path / "hsagent.conf"
    conf.write_text(f"sflow {{\n  sampling = 300\n  dns-sd {{ domain = .{ZONE} server = 127.0.0.1 "
                    f"port = {named.port} }}\n}}\n")
    check = subprocess.run([*HSAGENT, "check", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    rows = {line.split()[0]: line for line in check.stdout.splitlines() if line.strip()}
    assert rows["collectors"].split()[1:] == [f"127.0.0.1:{receiver.port}", "[dns]"]
    assert rows["polling"].split()[1:] == ["20", "[dns]"]
    assert rows["sampling"].split()[1:] == ["300", "[file]"]
    assert rows["header_bytes"].split()[1:] == ["128", "[default]"]
    discover = subprocess.run([*HSAGENT, "discover", "-c", str(conf)], capture_output=True, text=True,
                              timeout=30).stdout
    assert f"query: _sflow._udp.{ZONE}." in discover
    assert f"_sflow._udp.{ZONE}. 10 IN SRV 0 0 {receiver.port} collector1.{ZONE}." in discover
    assert "smallest TTL: 10" in discover


def test_one_unresolvable_target_costs_only_itself(named, receiver, tmp_path):
    """The second target's address query is refused (the server does not serve example.org):
    the agent still sends to the first, with the TXT's polling, and says what it skipped."""
    named.serve(srv(receiver.port) + srv(6343, "collector.example.org.") + txt("txtvers=1", "polling=2"))
    agent = dns_agent(named, tmp_path)
    try:
        assert receiver.wait_for(lambda r: len(host_uptimes(r)) >= 2, timeout=15), "nothing sent"
        assert wait_for(lambda: "skipped 1:" in status_of(tmp_path), 10)
        status = status_of(tmp_path)
    finally:
        stop(agent)
    gaps = [b - a for a, b in zip(host_uptimes(receiver), host_uptimes(receiver)[1:])]
    assert all(1 <= gap <= 3 for gap in gaps), gaps
    assert "skipped 1: SRV 0 0 6343 collector.example.org. skipped:" in status
    assert "SRV 0 0 6343 collector.example.org. skipped: collector.example.org. A:" in agent_log(tmp_path)
    conf = tmp_path / "hsagent.conf"
    check = subprocess.run([*HSAGENT, "check", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0
    assert "DNS-SD warning: SRV 0 0 6343 collector.example.org. skipped:" in check.stdout
    assert "REFUSED" in check.stdout


def test_hostile_records_are_refused_and_the_agent_sends_only_where_it_should(named, receiver, tmp_path):
    """Collectors at 0.0.0.0, broadcast, multicast, :: and fe80::1; sampling=1, headerBytes=256
    and txtvers=2 from DNS: none of it is obeyed."""
    targets = {"zero": "A 0.0.0.0", "bcast": "A 255.255.255.255", "mcast": "A 239.1.2.3",
               "any6": "AAAA ::", "ll6": "AAAA fe80::1"}
    named.serve("".join(f"{name} IN {record}\n" + srv(6343, name) for name, record in targets.items())
                + srv(receiver.port) + txt("txtvers=1", "sampling=1", "headerBytes=256", "polling=2"))
    agent = dns_agent(named, tmp_path)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=10), "nothing sent"
        auto = (tmp_path / "hsagent.auto").read_text().splitlines()
        assert [line for line in auto if line.startswith("collector=")] == [
            f"collector=127.0.0.1 {receiver.port}"]
        assert "sampling=400" in auto and "header=128" in auto and "polling=2" in auto
        named.serve(srv(receiver.port) + txt("txtvers=2", "polling=3"))
        # the TXT settings go, the file's polling is back (the thread logs before the loop applies)
        assert wait_for(lambda: "polling=30" in (tmp_path / "hsagent.auto").read_text().splitlines(), 25)
        assert "TXT 'txtvers=2': not version 1" in agent_log(tmp_path)
    finally:
        stop(agent)
    log = agent_log(tmp_path)
    for name, record in targets.items():
        assert f"SRV 0 0 6343 {name}.{ZONE}. skipped: no unicast address a datagram can reach: " \
               f"refused {record.split()[1]} (" in log
    assert "TXT 'sampling=1' skipped: 1 is below the config file's floor for DNS-SD" in log
    assert "TXT 'headerBytes=256' skipped: 256 is above the config file's ceiling" in log


def wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def status_of(runtime_dir: Path) -> str:
    return subprocess.run([*HSAGENT, "status", "--runtime-dir", str(runtime_dir)],
                          capture_output=True, text=True, timeout=30).stdout
