"""Interface counters (0:ifIndex) against the kernel, inside network namespaces.

The poller must run inside the namespace it watches (netlink and /sys follow the process),
so each namespace test starts this file as a worker under `ip netns exec`: it builds a
Poller and answers one command per line, sending its samples back as an encoded sFlow
datagram that the test decodes. The test itself changes the namespace with `ip` and compares
what the decoded samples say with what the kernel says.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from ipaddress import ip_address
from pathlib import Path

import pytest

from hsagent import netlink
from hsagent.pollers.interfaces import (Poller, IFTYPE_ETHERNET, Port, counters_sample, direction,
                                           ethernet_counters, if_counters, if_status, needs_sysfs,
                                           speed_bps)
from hsagent.netlink import Link, LinkStats
from hsagent.settings import Settings
from hsagent.sflow.datagram import Datagram, decode_datagram, encode_datagram
from hsagent.sflow.records import EthernetCounters, IfCounters, PortName
from hsagent.sflow.xdr import U32_MAX

REPO = Path(__file__).resolve().parent.parent
UDP_HEADERS = 14 + 20 + 8  # Ethernet + IPv4 + UDP bytes around each payload on a veth


# --- pure functions ------------------------------------------------------------------------

def nlmsg(mtype: int, body: bytes, seq: int = 1) -> bytes:
    data = netlink.NLMSGHDR.pack(netlink.NLMSGHDR.size + len(body), mtype, 0, seq, 0) + body
    return data + b"\0" * (-len(data) % 4)


def nlattr(atype: int, payload: bytes) -> bytes:
    data = netlink.NLATTR.pack(netlink.NLATTR.size + len(payload), atype) + payload
    return data + b"\0" * (-len(data) % 4)


def test_parse_stats_reads_rtnl_link_stats64():
    # 25 u64s as a 6.x kernel sends them; the first 21 matter to us.
    values = list(range(101, 126))
    body = (netlink.IF_STATS_MSG.pack(0, 7, 1)
            + nlattr(netlink.IFLA_STATS_LINK_64, struct.pack("=25Q", *values)))
    [(mtype, _, seq, parsed_body)] = list(netlink.messages(nlmsg(netlink.RTM_NEWSTATS, body, 9)))
    assert (mtype, seq) == (netlink.RTM_NEWSTATS, 9)
    assert netlink.parse_stats(parsed_body) == (7, LinkStats(*values[:21]))
    # A reply without the 64-bit block (or with a short one) gives nothing, not zeros.
    assert netlink.parse_stats(netlink.IF_STATS_MSG.pack(0, 7, 1)) is None
    short = netlink.IF_STATS_MSG.pack(0, 7, 1) + nlattr(1, struct.pack("=4Q", 1, 2, 3, 4))
    assert netlink.parse_stats(short) is None


def test_parse_link_and_bridge_port_news():
    attrs = (nlattr(netlink.IFLA_IFNAME, b"swp1\0") + nlattr(netlink.IFLA_ADDRESS, bytes(range(6)))
             + nlattr(netlink.IFLA_OPERSTATE, b"\x06") + nlattr(99, b"ignored!"))
    flags = netlink.IFF_UP | netlink.IFF_RUNNING
    body = netlink.IFINFOMSG.pack(socket.AF_UNSPEC, 1, 12, flags, 0) + attrs
    assert netlink.parse_link(body) == Link(12, "swp1", flags, netlink.IF_OPER_UP, bytes(range(6)), 1)
    bridge = netlink.IFINFOMSG.pack(socket.AF_BRIDGE, 1, 12, flags, 0) + attrs
    assert netlink.parse_link(bridge) is None


def test_messages_stop_at_a_truncated_message():
    whole = nlmsg(netlink.RTM_NEWLINK, b"x" * 16)
    assert len(list(netlink.messages(whole + whole[:20]))) == 1


def test_if_counters_from_stats():
    link = Link(5, "eth0", netlink.IFF_UP | netlink.IFF_RUNNING | netlink.IFF_PROMISC, 6, b"")
    stats = LinkStats(rx_packets=2**32 + 10, tx_packets=2**32 + 20, rx_bytes=2**40, tx_bytes=2**41,
                      rx_errors=1, tx_errors=2, rx_dropped=3, tx_dropped=4, multicast=6)
    c = if_counters(Port(link, 25_000_000_000, 1), stats)
    assert c == IfCounters(
        if_index=5, if_type=IFTYPE_ETHERNET, if_speed=25_000_000_000, if_direction=1,
        if_status=3, in_octets=2**40, in_ucast_pkts=4, in_multicast_pkts=6,
        in_broadcast_pkts=U32_MAX, in_discards=3, in_errors=1, in_unknown_protos=U32_MAX,
        out_octets=2**41, out_ucast_pkts=20, out_multicast_pkts=U32_MAX,
        out_broadcast_pkts=U32_MAX, out_discards=4, out_errors=2, promiscuous_mode=1)


def test_ethernet_counters_from_the_detailed_errors():
    values = dict(zip(LinkStats._fields, range(1, 22)))
    e = ethernet_counters(LinkStats(**values))
    assert (e.dot3StatsAlignmentErrors, e.dot3StatsFCSErrors) == (values["rx_frame_errors"], values["rx_crc_errors"])
    assert (e.dot3StatsSQETestErrors, e.dot3StatsLateCollisions) == (values["tx_heartbeat_errors"],
                                                                       values["tx_window_errors"])
    assert (e.dot3StatsExcessiveCollisions, e.dot3StatsCarrierSenseErrors) == (
        values["tx_aborted_errors"], values["tx_carrier_errors"])
    unknown = [name for name, value in e._asdict().items() if value == U32_MAX]
    assert len(unknown) == 7
    link = Link(5, "eth0", netlink.IFF_UP, 6, b"")
    kinds = lambda link: [type(r).__name__ for r in counters_sample(Port(link, 0, 0), LinkStats(**values)).records]
    assert kinds(link) == ["IfCounters", "EthernetCounters", "PortName"]
    assert kinds(link._replace(arphrd=776)) == ["IfCounters", "PortName"]  # an ip6tnl tunnel


def test_sysfs_text_and_flags():
    assert speed_bps("10000\n") == 10_000_000_000
    assert speed_bps("-1\n") == speed_bps(None) == speed_bps("") == 0
    assert [direction(t) for t in ("full\n", "half\n", "unknown\n", None)] == [1, 2, 0, 0]
    assert if_status(0) == 0
    assert if_status(netlink.IFF_UP) == 1
    assert if_status(netlink.IFF_UP | netlink.IFF_RUNNING) == 3
    up = Link(3, "a", netlink.IFF_UP | netlink.IFF_RUNNING, 6, b"")
    assert needs_sysfs(None, up)
    assert not needs_sysfs(up, up._replace(flags=up.flags | netlink.IFF_PROMISC))
    assert needs_sysfs(up, up._replace(flags=netlink.IFF_UP, operstate=2))
    assert needs_sysfs(up, up._replace(name="b"))


# --- the worker that runs inside a namespace -----------------------------------------------

def worker(event_buffer: int | None) -> None:
    """A Poller inside the current namespace, one JSON reply per command on stdin."""
    if event_buffer:
        netlink.EVENT_BUFFER_BYTES = event_buffer
    poller = Poller(Settings())
    for line in sys.stdin:
        if line.strip() == "poll":
            start = time.process_time()
            samples = poller.poll(poller.sources())
            cpu = time.process_time() - start
            datagram = encode_datagram(Datagram(ip_address("127.0.0.1"), 0, 1, 0, samples))
            reply = {"datagram": datagram.hex(), "cpu": cpu}
        else:  # "wait": for link events, then apply them
            readable, _, _ = select.select([poller], [], [], 2.0)
            poller.handle_events()
            reply = {"readable": bool(readable), "sources": sorted(poller.sources())}
        print(json.dumps(reply), flush=True)
    poller.close()


class Worker:
    def __init__(self, ns, event_buffer: int = 0):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = ns.popen(sys.executable, __file__, "--worker", str(event_buffer),
                             stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)

    def _ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the worker died"
        return json.loads(line)

    def poll(self) -> dict[int, tuple[IfCounters, PortName]]:
        """ifIndex -> (if_counters, port_name), decoded from the datagram the worker encoded."""
        reply = self._ask("poll")
        self.cpu = reply["cpu"]
        result = {}
        for sample in decode_datagram(bytes.fromhex(reply["datagram"])).samples:
            counters, ethernet, name = sample.records  # if_counters first, port_name last
            assert isinstance(counters, IfCounters) and isinstance(name, PortName)
            assert isinstance(ethernet, EthernetCounters)  # veths are ARPHRD_ETHER
            assert sample.ds_class == 0 and sample.ds_index == counters.if_index
            result[counters.if_index] = counters, name
        return result

    def wait(self) -> tuple[bool, set[int]]:
        reply = self._ask("wait")
        return reply["readable"], {index for ds_class, index in reply["sources"]}

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(5)


@pytest.fixture
def start_worker():
    workers = []

    def start(ns, event_buffer: int = 0):
        workers.append(Worker(ns, event_buffer))
        return workers[-1]

    yield start
    for w in workers:
        w.proc.kill()
        w.proc.wait()


def make_ns(netns):
    ns = netns("hsi")
    # No IPv6 chatter (router solicitations, MLD), so counters stay still between reads.
    ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1")
    return ns


def links(ns) -> dict[str, dict]:
    """name -> `ip -j link` entry."""
    return {e["ifname"]: e for e in json.loads(ns.run("ip", "-j", "link", "show").stdout)}


def sysfs(ns, name: str, attribute: str) -> str | None:
    done = ns.run("cat", f"/sys/class/net/{name}/{attribute}", check=False)
    return done.stdout if done.returncode == 0 else None


def kernel_counters(ns, name: str) -> dict[str, int]:
    names = ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "multicast"]
    paths = [f"/sys/class/net/{name}/statistics/{n}" for n in names]
    return dict(zip(names, map(int, ns.run("cat", *paths).stdout.split())))


def send_udp(ns, destination: str, count: int, size: int) -> None:
    code = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for _ in range(int(sys.argv[2])): s.sendto(bytes(int(sys.argv[3])), (sys.argv[1], 9))")
    ns.run(sys.executable, "-c", code, destination, str(count), str(size))


def poll_until(worker, predicate, timeout=5.0):
    """Poll until predicate(samples) holds (link-state changes reach netlink via linkwatch,
    up to a second later); returns the last samples."""
    deadline = time.monotonic() + timeout
    while True:
        samples = worker.poll()
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


# --- namespace tests -----------------------------------------------------------------------

def test_counters_follow_traffic_and_match_the_kernel(netns, start_worker):
    a, b = make_ns(netns), make_ns(netns)
    subprocess.run(["ip", "-n", a.name, "link", "add", "hsi0", "type", "veth",
                    "peer", "name", "hsi1", "netns", b.name], check=True)
    a.run("ip", "addr", "add", "198.18.0.1/24", "dev", "hsi0")
    b.run("ip", "addr", "add", "198.18.0.2/24", "dev", "hsi1")
    a.run("ip", "link", "set", "hsi0", "up")
    b.run("ip", "link", "set", "hsi1", "up")
    index = links(a)["hsi0"]["ifindex"]
    worker = start_worker(a)

    before = worker.poll()[index][0]
    # Different amounts each way, so a swapped direction cannot pass.
    sent, received = (300, 1000), (200, 600)  # (datagrams, payload bytes)
    send_udp(a, "198.18.0.2", *sent)  # out of hsi0
    send_udp(b, "198.18.0.1", *received)  # into hsi0
    kernel_before = kernel_counters(a, "hsi0")
    after, name = worker.poll()[index]
    kernel_after = kernel_counters(a, "hsi0")

    assert name.name == "hsi0"
    assert after.out_octets - before.out_octets >= sent[0] * (sent[1] + UDP_HEADERS)
    assert after.in_octets - before.in_octets >= received[0] * (received[1] + UDP_HEADERS)
    assert after.out_ucast_pkts - before.out_ucast_pkts >= sent[0]
    assert after.in_ucast_pkts - before.in_ucast_pkts >= received[0]
    # Same numbers as /sys, read just before and after the poll (nothing else moves them).
    for field, kernel in [("in_octets", "rx_bytes"), ("out_octets", "tx_bytes"),
                          ("out_ucast_pkts", "tx_packets"), ("in_multicast_pkts", "multicast")]:
        assert kernel_before[kernel] <= getattr(after, field) <= kernel_after[kernel], field
    unicast = [k["rx_packets"] - k["multicast"] for k in (kernel_before, kernel_after)]
    assert unicast[0] <= after.in_ucast_pkts <= unicast[1]
    assert (after.in_broadcast_pkts, after.out_broadcast_pkts, after.out_multicast_pkts,
            after.in_unknown_protos) == (U32_MAX,) * 4


def test_status_speed_and_duplex_follow_the_link(netns, start_worker):
    ns = make_ns(netns)
    ns.run("ip", "link", "add", "hsi0", "type", "veth", "peer", "name", "hsi1")
    ns.run("ip", "link", "set", "hsi0", "up")
    ns.run("ip", "link", "set", "hsi1", "up")
    index = {name: e["ifindex"] for name, e in links(ns).items()}
    worker = start_worker(ns)

    def port(samples):
        return samples[index["hsi0"]][0]

    def matches_sysfs(counters):
        return (counters.if_speed == speed_bps(sysfs(ns, "hsi0", "speed"))
                and counters.if_direction == direction(sysfs(ns, "hsi0", "duplex")))

    samples = poll_until(worker, lambda s: port(s).if_status == 3)
    assert port(samples).if_status == 3
    assert port(samples).if_speed == 10_000_000_000  # what veth reports in /sys when up
    assert matches_sysfs(port(samples)) and port(samples).if_direction == 1

    ns.run("ip", "link", "set", "hsi1", "down")  # hsi0 stays admin up, loses its carrier
    samples = poll_until(worker, lambda s: port(s).if_status == 1)
    assert port(samples).if_status == 1
    assert matches_sysfs(port(samples))

    ns.run("ip", "link", "set", "hsi0", "down")
    samples = poll_until(worker, lambda s: port(s).if_status == 0)
    assert port(samples).if_status == 0
    assert sysfs(ns, "hsi0", "speed") is None  # a down veth has no speed: unknown
    assert (port(samples).if_speed, port(samples).if_direction) == (0, 0)

    ns.run("ip", "link", "set", "hsi1", "promisc", "on")
    samples = worker.poll()
    assert samples[index["hsi1"]][0].promiscuous_mode == 1
    assert port(samples).promiscuous_mode == 0


def test_interfaces_come_go_and_get_renamed(netns, start_worker):
    ns = make_ns(netns)
    ns.run("ip", "link", "add", "hsi0", "type", "veth", "peer", "name", "hsi1")
    worker = start_worker(ns)
    first = worker.poll()
    assert sorted(name.name for _, name in first.values()) == ["hsi0", "hsi1"]
    assert 1 not in first  # loopback is never a data source

    ns.run("ip", "link", "add", "hsi2", "type", "veth", "peer", "name", "hsi3")
    index = {name: e["ifindex"] for name, e in links(ns).items()}
    readable, sources = worker.wait()
    assert readable  # fileno() woke the loop
    assert sources == {index[n] for n in ("hsi0", "hsi1", "hsi2", "hsi3")}
    assert worker.poll()[index["hsi2"]][1].name == "hsi2"

    ns.run("ip", "link", "set", "hsi2", "name", "hsi-renamed")
    assert worker.poll()[index["hsi2"]][1].name == "hsi-renamed"  # caught up by poll itself

    ns.run("ip", "link", "del", "hsi0")  # takes its peer hsi1 with it
    readable, sources = worker.wait()
    assert sources == {index["hsi2"], index["hsi3"]}
    assert set(worker.poll()) == {index["hsi2"], index["hsi3"]}


def add_veth_pairs(ns, first: int, count: int) -> None:
    commands = "".join(f"link add hsv{i}a type veth peer name hsv{i}b\n"
                       for i in range(first, first + count))
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=commands, text=True, check=True)


def test_hundreds_of_interfaces_in_one_poll(netns, start_worker):
    ns = make_ns(netns)
    add_veth_pairs(ns, 0, 250)
    worker = start_worker(ns)
    samples = worker.poll()
    expected = {e["ifindex"]: name for name, e in links(ns).items() if name != "lo"}
    assert len(expected) == 500
    assert {i: name.name for i, (_, name) in samples.items()} == expected
    assert worker.cpu < 0.040  # the whole poll, with 2x headroom over the 1,000-port budget

    # A burst of 500 more while the poller runs: events (or a re-dump after an overrun)
    # bring them all in.
    add_veth_pairs(ns, 250, 250)
    worker.wait()
    expected = {e["ifindex"]: name for name, e in links(ns).items() if name != "lo"}
    assert len(expected) == 1000
    assert {i: name.name for i, (_, name) in worker.poll().items()} == expected


def test_lost_link_events_are_recovered_by_a_dump(netns, start_worker):
    ns = make_ns(netns)
    worker = start_worker(ns, event_buffer=4096)  # far too small for the burst below
    assert worker.poll() == {}  # the poller is up before the burst
    add_veth_pairs(ns, 0, 100)
    readable, sources = worker.wait()
    expected = {e["ifindex"] for name, e in links(ns).items() if name != "lo"}
    assert readable and len(expected) == 200
    assert sources == expected


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(int(sys.argv[2]))


TARGETED = """
import json
from hsagent.pollers.interfaces import Poller
from hsagent.settings import Settings
c = Poller(Settings())
everything = {s.ds_index: s.records[0]._asdict() for s in c.poll(c.sources())}
some = sorted(everything)[:3]
few = {s.ds_index: s.records[0]._asdict() for s in c.poll({(0, i) for i in some} | {(0, 999999)})}
print(json.dumps({"some": some, "few": {str(k): v for k, v in few.items()},
                  "everything": {str(k): v for k, v in everything.items()}}))
"""


def test_a_few_due_interfaces_are_asked_for_one_by_one_with_the_same_counters(netns):
    ns = netns("hsi")
    batch = "".join(f"link add t{i} type veth peer name u{i}\n" for i in range(15))
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=batch, text=True, check=True)
    result = json.loads(ns.run(sys.executable, "-c", TARGETED).stdout)
    assert sorted(map(int, result["few"])) == result["some"]  # 999999 does not exist: skipped
    for index, counters in result["few"].items():
        assert counters == result["everything"][index]


CHANGES = """
import json, select, subprocess
from hsagent.pollers.interfaces import Poller
from hsagent.settings import Settings
c = Poller(Settings())

def after(*commands):
    for command in commands:
        subprocess.run(["ip", "link", *command.split()], check=True)
    while select.select([c], [], [], 0.5)[0]:  # every event the commands caused
        c.handle_events()
    return c.changes, len(set(c.sources()))

steps = [(c.changes, len(set(c.sources())))]
steps.append(after("set t0 up", "set t0 mtu 1400", "set t0 name t0x", "set u0 promisc on"))
steps.append(after("add t1 type veth peer name u1"))
subprocess.run(["ip", "link", "del", "t1"], check=True)
c.poll(set(c.sources()))  # a poll catches up the link events itself
steps.append((c.changes, len(set(c.sources()))))
print(json.dumps(steps))
"""


def test_the_change_count_moves_when_interfaces_come_or_go_and_only_then(netns):
    ns = netns("hsi")
    ns.run("ip", "link", "add", "t0", "type", "veth", "peer", "name", "u0")
    (start, two), (changed, still_two), (added, four), (removed, two_again) = \
        json.loads(ns.run(sys.executable, "-c", CHANGES).stdout)
    assert (two, still_two, four, two_again) == (2, 2, 4, 2)
    assert changed == start  # up, mtu, rename, promisc: the same data sources
    assert added > changed and removed > added
