"""End to end: client -- switch -- server in network namespaces; in `switch` a real hsagent
sampling the client-side port 1-in-50, a real hsagent-acld (netfilter backend) and the
controller. One paced 40 Mbit/s UDP elephant and 20 mice at 0.5 Mbit/s; the server reads each
packet's DSCP with IP_RECVTOS. Every process and namespace is gone afterwards.

Timeline (seconds from the sender's start): mice 0-15, the elephant 1-9. A shorter IPv6 run
(elephant 1-5, 5 mice 0-6) takes the `[ip6tables]` path and reads the traffic class.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hsagent.controller.elephant import FiveTuple, acl_name

pytestmark = pytest.mark.slow

CLIENT, SWITCH_C, SWITCH_S, SERVER = "198.18.0.2", "198.18.0.1", "198.18.1.1", "198.18.1.2"
# IPv6: 2001:2::/48, the benchmarking prefix (RFC 5180), IPv4's 198.18.0.0/15
CLIENT6, SWITCH_C6, SWITCH_S6, SERVER6 = "2001:2::2", "2001:2::1", "2001:2:0:1::1", "2001:2:0:1::2"
ACLD_PORT, SFLOW_PORT, API_PORT, SERVER_PORT = 8080, 6343, 8008, 5001
ELEPHANT_PORT, MICE_PORTS = 40000, range(41000, 41020)
PACKET = 1000  # bytes of IP packet: 40 Mbit/s = 5,000 a second; 0.5 Mbit/s = 62.5
TOKEN = "e2e-token-0123456789"
DSCP = 10

SENDER = r"""
import json, socket, sys, time
server, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
E_SECONDS, MICE, M_SECONDS = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
FAMILY = socket.AF_INET6 if ":" in server else socket.AF_INET
PAYLOAD = bytes(1000 - (48 if FAMILY == socket.AF_INET6 else 28))  # 1000-byte IP packets
E_PPS, E_START, M_PPS = 5000, 1.0, 62.5  # 40 Mbit/s and 0.5 Mbit/s
e_total, m_total = int(E_PPS * E_SECONDS), int(M_PPS * M_SECONDS)

def sock(sport):
    s = socket.socket(FAMILY, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind(("::" if FAMILY == socket.AF_INET6 else "0.0.0.0", sport))
    s.connect((server, port))
    return s

elephant = sock(40000)
mice = [sock(41000 + i) for i in range(MICE)]
e_sent, m_sent, errors = 0, [0] * MICE, 0
first = last = None
t0 = time.monotonic()
hard_stop = t0 + E_START + max(E_SECONDS, M_SECONDS) + 10  # bounded in time as well as count
while time.monotonic() < hard_stop and (e_sent < e_total or min(m_sent) < m_total):
    now = time.monotonic() - t0
    due = min(e_total, int((now - E_START) * E_PPS)) if now >= E_START else 0
    for _ in range(min(due - e_sent, 200)):
        try:
            elephant.send(PAYLOAD)
        except OSError:
            errors += 1
            continue
        e_sent += 1
        last = time.monotonic()
        first = first or last
    due_m = min(m_total, int(now * M_PPS) + 1)
    for i, s in enumerate(mice):
        while m_sent[i] < due_m:
            s.send(PAYLOAD)
            m_sent[i] += 1
    time.sleep(0.002)
json.dump({"t0": t0, "first": first, "last": last, "elephant": e_sent, "mice": m_sent,
           "errors": errors, "end": time.monotonic()}, open(out, "w"))
"""

RECEIVER = r"""
import json, signal, socket, sys, time
port, out, family = int(sys.argv[1]), sys.argv[2], sys.argv[3]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
if family == "6":  # the traffic class arrives as an int
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
    wanted, bind = (socket.IPPROTO_IPV6, socket.IPV6_TCLASS), "::"
else:  # the TOS byte
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    wanted, bind = (socket.IPPROTO_IP, socket.IP_TOS), "0.0.0.0"
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((bind, port))
s.settimeout(0.2)
print("ready", flush=True)
got = []  # (source port, arrival, TOS or traffic class)
deadline = time.monotonic() + 90
while not stop and time.monotonic() < deadline:
    try:
        data, ancillary, _, source = s.recvmsg(2048, socket.CMSG_SPACE(4))
    except (socket.timeout, InterruptedError):
        continue
    tos = None
    for level, kind, value in ancillary:
        if (level, kind) == wanted:
            tos = value[0] if len(value) == 1 else int.from_bytes(value[:4], sys.byteorder)
    got.append((source[1], time.monotonic(), tos))
json.dump(got, open(out, "w"))
"""

# Inside `switch`: waits for hsagent-acld and the controller (which has heard from hsagent), then
# records the ACL names hsagent-acld lists and the packet counter of the elephant's DSCP rule.
WATCHER = r"""
import json, re, signal, subprocess, sys, time, urllib.request
acld, api, token, sport, out, save = sys.argv[1:7]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

def get(url):
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.load(response)

deadline = time.monotonic() + 60
while True:
    try:
        get(acld + "/acl/")
        if get(api + "/metrics")["datagrams"] > 0:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("hsagent-acld or the controller never came up")
    time.sleep(0.1)
print("ready", flush=True)
rule = re.compile(r"^\[(\d+):\d+\] -A \S+ .*--sport " + sport + r"\b.*-j DSCP")
names, counters, rates = [], [], []
deadline = time.monotonic() + 90
while not stop and time.monotonic() < deadline:
    now = time.monotonic()
    names.append((now, get(acld + "/acl/")))
    flows = [f for p in get(api + "/flows?n=1")["ports"] for f in p["flows"] if f["src_port"] == int(sport)]
    rates.append((now, flows[0]["bps"] if flows else None))
    saved = subprocess.run([save, "-c", "-t", "mangle"], capture_output=True, text=True).stdout
    packets = [int(m.group(1)) for m in map(rule.match, saved.splitlines()) if m]
    counters.append((now, packets[0] if packets else None))
    time.sleep(0.05)
json.dump({"names": names, "counters": counters, "rates": rates, "metrics": get(api + "/metrics"),
           "events": get(api + "/events")["events"], "thresholds": get(api + "/thresholds")},
          open(out, "w"))
"""


def veth(a, a_end, b, b_end, addresses):
    subprocess.run(["ip", "link", "add", a_end, "netns", a.name, "type", "veth", "peer", "name", b_end,
                    "netns", b.name], check=True)
    for ns, end, (v4, v6) in ((a, a_end, addresses[0]), (b, b_end, addresses[1])):
        ns.run("ip", "addr", "add", f"{v4}/24", "dev", end)
        ns.run("ip", "addr", "add", f"{v6}/64", "dev", end, "nodad")
        ns.run("ip", "link", "set", end, "up")


@pytest.fixture
def topology(netns):
    client, switch, server = netns("hse2e-c"), netns("hse2e-sw"), netns("hse2e-s")
    for ns in (client, switch, server):  # no router advertisements, no duplicate address detection
        ns.run("sysctl", "-qw", "net.ipv6.conf.default.accept_ra=0", "net.ipv6.conf.all.accept_ra=0",
               "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
    veth(client, "c0", switch, "swp1", ((CLIENT, CLIENT6), (SWITCH_C, SWITCH_C6)))
    veth(switch, "swp2", server, "s0", ((SWITCH_S, SWITCH_S6), (SERVER, SERVER6)))
    switch.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    client.run("ip", "route", "add", "default", "via", SWITCH_C)
    client.run("ip", "-6", "route", "add", "default", "via", SWITCH_C6)
    server.run("ip", "route", "add", "default", "via", SWITCH_S)
    server.run("ip", "-6", "route", "add", "default", "via", SWITCH_S6)
    # End to end both ways before any measured packet: neighbours resolved, links ready
    for address in (SERVER, SERVER6):
        deadline = time.monotonic() + 10
        while client.run("ping", "-c", "1", "-W", "1", address, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{address} unreachable from the client"
    return client, switch, server


class Processes:
    """Everything the test starts, stopped with SIGTERM (then SIGKILL) however the test ends."""

    def __init__(self, directory):
        self.directory = directory
        self.running: dict[str, subprocess.Popen] = {}
        self.codes: dict[str, int] = {}

    def start(self, name, ns, *cmd, **kw):
        log = open(os.path.join(self.directory, f"{name}.log"), "w")
        self.running[name] = ns.popen(*cmd, stderr=log, **kw)
        return self.running[name]

    def stop(self, name, timeout=15):
        process = self.running.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            self.codes[name] = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            self.codes[name] = process.wait()
        return self.codes[name]

    def stop_all(self):
        for name in list(self.running):
            self.stop(name)

    def log(self, name):
        return open(os.path.join(self.directory, f"{name}.log")).read()


def first(history, predicate, after=0.0):
    return next((t for t, value in history if t >= after and predicate(value)), None)


def run_scenario(topology, tmp_path, server_address, elephant_seconds, mice, mice_seconds):
    """Start everything in the namespaces, send, stop everything; returns what each side saw."""
    client, switch, server = topology
    directory = str(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    conf = tmp_path / "hsagent.conf"
    conf.write_text("sflow {\n DNSSD = off\n user = root\n polling = 2\n sampling = 50\n"
                    " sampling.bps_ratio = 0\n" f" agentIP = {SWITCH_C}\n"
                    f" collector {{ ip = 127.0.0.1 udpport = {SFLOW_PORT} }}\n pcap {{ dev = swp1 }}\n}}\n")
    save = "ip6tables-save" if ":" in server_address else "iptables-save"
    procs = Processes(directory)
    try:
        procs.start("acld", switch, sys.executable, "-m", "hsagent.acld", "--listen",
                    f"{SWITCH_C}:{ACLD_PORT}", "--token-file", str(tokens), "--backend", "netfilter",
                    "--state-dir", os.path.join(directory, "acld-state"), "--swp-pattern", "swp+")
        procs.start("controller", switch, sys.executable, "-m", "hsagent.controller",
                    "--sflow-listen", f"127.0.0.1:{SFLOW_PORT}", "--threshold", "10M",
                    "--smoothing", "1", "--interval", "1", "--acl-url", f"http://{{agent}}:{ACLD_PORT}",
                    "--acl-token-file", str(tokens), "--api-listen", f"127.0.0.1:{API_PORT}")
        procs.start("hsagent", switch, sys.executable, "-m", "hsagent", "-f", "-c", str(conf),
                    "--auto-file", os.path.join(directory, "auto"), "--runtime-dir", directory)
        watcher = procs.start("watcher", switch, sys.executable, "-c", WATCHER,
                              f"http://{SWITCH_C}:{ACLD_PORT}", f"http://127.0.0.1:{API_PORT}", TOKEN,
                              str(ELEPHANT_PORT), os.path.join(directory, "watch.json"), save,
                              stdout=subprocess.PIPE, text=True)
        assert watcher.stdout.readline().strip() == "ready", procs.log("watcher")
        receiver = procs.start("receiver", server, sys.executable, "-c", RECEIVER, str(SERVER_PORT),
                               os.path.join(directory, "received.json"),
                               "6" if ":" in server_address else "4", stdout=subprocess.PIPE, text=True)
        assert receiver.stdout.readline().strip() == "ready"

        sender = procs.start("sender", client, sys.executable, "-c", SENDER, server_address,
                             str(SERVER_PORT), os.path.join(directory, "sent.json"),
                             str(elephant_seconds), str(mice), str(mice_seconds))
        assert sender.wait(60) == 0, procs.log("sender")
        procs.running.pop("sender")
        with open(os.path.join(directory, "sent.json")) as f:
            sent = json.load(f)
        # the ACL should go within 8 s of the elephant's last packet: watch 9 s from then
        time.sleep(max(0.0, sent["last"] + 9.0 - time.monotonic()))
        for name in ("watcher", "receiver"):
            assert procs.stop(name) == 0, procs.log(name)
        for daemon in ("hsagent", "controller", "acld"):
            assert procs.stop(daemon) == 0, procs.log(daemon)
    finally:
        procs.stop_all()
        leftovers = {ns.name: subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True,
                                             text=True).stdout.split() for ns in topology}
    assert not any(leftovers.values()), f"processes left in the namespaces: {leftovers}"
    with open(os.path.join(directory, "watch.json")) as f:
        watch = json.load(f)
    with open(os.path.join(directory, "received.json")) as f:
        received = json.load(f)
    return sent, watch, received


def check_port(switch, watch):
    """The event names the client-side port by its ifIndex, and the controller learnt that
    port's speed from hsagent's counter samples: both as the switch's kernel has them."""
    ifindex = int(switch.run("cat", "/sys/class/net/swp1/ifindex").stdout)
    speed = int(switch.run("cat", "/sys/class/net/swp1/speed").stdout) * 1_000_000
    assert [e["flow"]["ifindex"] for e in watch["events"]] == [ifindex]
    ports = {(p["agent"], p["ifindex"]): p["speed"] for p in watch["thresholds"]["thresholds"][0]["ports"]}
    assert ports.get((SWITCH_C, ifindex)) == speed


def check_marking(sent, watch, received, client_address, server_address, elephant_seconds, mice):
    elephant = FiveTuple(ipaddress.ip_address(client_address), ipaddress.ip_address(server_address),
                         17, ELEPHANT_PORT, SERVER_PORT)
    name = acl_name(elephant)
    packets, mouse_packets = int(5000 * elephant_seconds), sent["mice"][0]
    # the traffic was what we asked for
    assert sent["elephant"] == packets and sent["mice"] == [mouse_packets] * mice and sent["errors"] == 0
    paced = sent["last"] - sent["first"]
    assert paced < elephant_seconds + 0.5, f"40 Mbit/s could not be paced: {packets} packets took {paced:.1f} s"

    # the elephant's smoothed rate, once settled (3 time constants), is what was sent: 5,000
    # packets a second of 1,018 bytes on the wire (IP 1,000 + Ethernet 14 + FCS 4)
    settled = sorted(bps for t, bps in watch["rates"] if sent["first"] + 3 <= t <= sent["last"] and bps)
    assert len(settled) > 10
    median = settled[len(settled) // 2]
    assert median == pytest.approx(5000 * 1018 * 8, rel=0.15), f"{median / 1e6:.1f} Mbit/s"

    # the ACL is listed, and its rule live in the kernel, within 2 s of the first packet
    listed = first(watch["names"], lambda names: name in names)
    live = first(watch["counters"], lambda count: count is not None)
    assert listed is not None and live is not None, "no ACL for the elephant"
    assert live - sent["first"] <= 2.0, f"rule live {live - sent['first']:.2f} s after the first packet"
    assert listed - sent["first"] <= 2.0
    # only the elephant ever got an ACL, and only it raised an event
    assert {n for _, names in watch["names"] for n in names} == {name}
    assert [e["flow"]["src_port"] for e in watch["events"]] == [ELEPHANT_PORT]

    # after that, >= 99% of its packets arrive marked; no mouse packet is ever marked
    elephant_packets = [(t, tos) for port, t, tos in received if port == ELEPHANT_PORT]
    after = [tos for t, tos in elephant_packets if t >= live]
    marked_after = sum(1 for tos in after if tos >> 2 == DSCP)
    assert len(elephant_packets) >= 0.99 * packets
    assert marked_after >= 0.99 * len(after), f"{marked_after} of {len(after)} marked"
    mouse_marks = [tos for port, _, tos in received if port in MICE_PORTS]
    assert len(mouse_marks) >= 0.99 * mice * mouse_packets
    assert all(tos == 0 for tos in mouse_marks), "a mouse packet was marked"

    # the rule's packet counter agrees with the marked packets the server got
    marked = sum(1 for _, tos in elephant_packets if tos >> 2 == DSCP)
    counter = max(count for _, count in watch["counters"] if count is not None)
    assert abs(counter - marked) <= max(2, marked // 1000), (counter, marked)

    # the ACL and its rule are gone within 8 s of the elephant's last packet
    unlisted = first(watch["names"], lambda names: name not in names, after=listed)
    dead = first(watch["counters"], lambda count: count is None, after=live)
    assert unlisted is not None and dead is not None, "the control stayed"
    assert unlisted - sent["last"] <= 8.0 and dead - sent["last"] <= 8.0
    print(f"\nACL live {live - sent['first']:.2f} s after the first packet; gone "
          f"{dead - sent['last']:.2f} s after the last; {marked_after}/{len(after)} marked after; "
          f"rule counter {counter}, marked at the server {marked}; elephant paced over {paced:.2f} s; "
          f"its smoothed rate {median / 1e6:.1f} Mbit/s")


def test_elephant_is_marked_within_2s_and_unmarked_when_it_stops(topology, tmp_path):
    sent, watch, received = run_scenario(topology, tmp_path, SERVER, 8.0, 20, 15.0)
    check_marking(sent, watch, received, CLIENT, SERVER, 8.0, 20)
    check_port(topology[1], watch)


def test_an_ipv6_elephant_is_marked_too(topology, tmp_path):
    sent, watch, received = run_scenario(topology, tmp_path, SERVER6, 4.0, 5, 6.0)
    check_marking(sent, watch, received, CLIENT6, SERVER6, 4.0, 5)
