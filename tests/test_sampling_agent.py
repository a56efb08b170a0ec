"""The agent samples packets on a veth pair and sends flow samples; it also drops root.

Topology: namespace A (a0, 198.18.2.1) <-> namespace B (b0, 198.18.2.2). The agent runs in A
with `pcap { dev = a0 }`; a sender in B sends UDP to A. Veth links say 10 Gb/s, so the rate
comes from `sampling.10G`.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import HSAGENT, ZONE, Named, record_of, srv, txt
from hsagent.privileges import capability_mask
from hsagent.sflow import records as R
from hsagent.sflow.datagram import FlowSample, decode_datagram
from hsagent.sflow.headers import decode_header

DST_PORT = 5555
SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[1])):
    s.sendto(b"x" * 100, ("198.18.2.1", %d))
""" % DST_PORT
# Stops after 4 s without a datagram: the agents under test poll often enough.
RECEIVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1], flush=True); s.settimeout(4)
while True:
    try: data = s.recv(65535)
    except socket.timeout: break
    print(data.hex(), flush=True)
"""


@pytest.fixture
def pair(netns):
    a, b = netns("hsp"), netns("hsp")
    for ns in (a, b):  # no IPv6 chatter in the counts
        ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    link(a, b, 0)
    return a, b


def link(a, b, n, index=None):
    """veth a<n> (198.18.<2+n>.1) in namespace a to b<n> (198.18.<2+n>.2) in b, both up;
    `index`: the ifIndex a<n> gets."""
    chosen = ["index", str(index)] if index else []
    subprocess.run(["ip", "link", "add", f"a{n}", *chosen, "netns", a.name, "type", "veth", "peer",
                    "name", f"b{n}", "netns", b.name], check=True)
    for ns, end, host in ((a, "a", 1), (b, "b", 2)):
        ns.run("ip", "addr", "add", f"198.18.{2 + n}.{host}/24", "dev", f"{end}{n}")
        ns.run("ip", "link", "set", f"{end}{n}", "up")


def write_conf(directory, port, rate, user="root"):
    path = os.path.join(directory, "hsagent.conf")
    with open(path, "w") as f:
        f.write(f"sflow {{\n DNSSD = off\n user = {user}\n polling = 2\n sampling.10G = {rate}\n"
                f" collector {{ ip = 127.0.0.1 udpport = {port} }}\n pcap {{ dev = a0 }}\n}}\n")
    os.chmod(path, 0o644)
    return path


class AgentInNamespace:
    """A receiver and the agent inside namespace A; datagrams are read when both have stopped.
    `conf(port)` writes the configuration file (default: write_conf at `rate`)."""

    def __init__(self, ns, directory, rate=None, user="root", conf=None):
        self.ns, self.directory = ns, directory
        self.receiver = ns.popen(sys.executable, "-c", RECEIVER, stdout=subprocess.PIPE, text=True)
        self.port = int(self.receiver.stdout.readline())
        self.conf = conf(self.port) if conf else write_conf(directory, self.port, rate, user)
        self.log = open(os.path.join(directory, "agent.log"), "w")
        self.proc = ns.popen(*HSAGENT, "-f", "-c", self.conf, "--auto-file", os.path.join(directory, "auto"),
                             "--runtime-dir", directory, stderr=self.log)
        time.sleep(2)  # started, sampling

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = self.proc.wait(10)
        self.stop_seconds = time.monotonic() - started
        out, _ = self.receiver.communicate(timeout=30)
        self.datagrams = [decode_datagram(bytes.fromhex(line)) for line in out.split()]
        return code

    def flow_samples(self):
        return [s for d in self.datagrams for s in d.samples if isinstance(s, FlowSample)]


def packets(ns, dev="a0"):
    read = lambda name: int(ns.run("cat", f"/sys/class/net/{dev}/statistics/{name}").stdout)
    return read("rx_packets") + read("tx_packets")


def send(ns, count):
    ns.run(sys.executable, "-c", SENDER, str(count), timeout=120)


def within_4_sd(count, n, rate):
    p = 1 / rate
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_agent_samples_1_in_100_with_headers_that_decode_to_what_was_sent(pair, tmp_path):
    a, b = pair
    agent = AgentInNamespace(a, str(tmp_path), rate=100)
    before = packets(a)
    send(b, 30_000)
    time.sleep(1.5)  # samples leave within a second
    seen = packets(a) - before
    assert agent.stop() == 0
    samples = agent.flow_samples()
    assert within_4_sd(len(samples), seen, 100), (len(samples), seen)
    assert {s.sampling_rate for s in samples} == {100}
    assert [s.sequence for s in samples] == list(range(1, len(samples) + 1))
    ifindex = int(a.run("cat", "/sys/class/net/a0/ifindex").stdout)
    assert {s.ds_index for s in samples} == {ifindex}
    assert abs(samples[-1].sample_pool - seen) <= seen * 0.05 + 200  # the interface's own count
    for sample in samples[:50]:
        header = record_of(sample, R.SampledHeader)
        fields = dict(decode_header(header.header_protocol, header.header, header.frame_length,
                                    header.stripped))
        if fields.get("UDPDstPort") == str(DST_PORT):  # received: b0 -> a0
            assert (fields["srcIP"], fields["dstIP"]) == ("198.18.2.2", "198.18.2.1")
            assert sample.input.value == ifindex and header.frame_length == 14 + 20 + 8 + 100 + 4


def read_status(pid):
    return dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)


def test_root_started_agent_runs_as_nobody_with_two_capabilities_and_keeps_sampling(pair, readable_dir):
    a, b = pair
    directory = str(readable_dir)
    agent = AgentInNamespace(a, directory, rate=100, user="nobody")
    try:
        # `ip netns exec` execs hsagent: the pid is the agent itself
        status = read_status(agent.proc.pid)
        nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout.strip()
        assert set(status["Uid"].split()) == {nobody}
        assert int(status["CapEff"], 16) == capability_mask()
        assert int(status["CapPrm"], 16) == capability_mask()
        send(b, 5_000)
        time.sleep(1.5)
        write_conf(directory, agent.port, 10, user="nobody")  # SIGHUP: a new rate, live
        agent.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        before = packets(a)
        send(b, 5_000)
        time.sleep(1.5)
        seen = packets(a) - before
        assert agent.proc.poll() is None
    finally:
        code = agent.stop()
    assert code == 0 and agent.stop_seconds < 1.0
    samples = agent.flow_samples()
    rates = [s.sampling_rate for s in samples]
    assert rates[0] == 100 and rates[-1] == 10 and rates == sorted(rates, reverse=True)
    assert [s.sequence for s in samples] == list(range(1, len(samples) + 1)), "a gap in the samples"
    assert within_4_sd(rates.count(10), seen, 10)


def test_a_dns_sd_rate_change_swaps_the_filter_without_a_gap(pair, tmp_path):
    a, b = pair
    named = Named(tmp_path, netns=a)
    named.start()
    try:
        def dns_conf(port):
            named.serve(srv(port, ttl=10) + txt("polling=2", "sampling.10G=100", ttl=10))
            path = tmp_path / "hsagent.conf"
            # the file lets DNS-SD sample 1-in-10 and poll every 2 s (the floors are 100 and 10 s)
            path.write_text(f"sflow {{\n user = root\n pcap {{ dev = a0 }}\n dns-sd {{ domain = .{ZONE} "
                            f"server = 127.0.0.1 port = {named.port} minSampling = 10 minPolling = 1 }}\n}}\n")
            return str(path)

        agent = AgentInNamespace(a, str(tmp_path), conf=dns_conf)
        send(b, 5_000)
        named.serve(srv(agent.port, ttl=10) + txt("polling=2", "sampling.10G=10", ttl=10))
        time.sleep(12)  # the TTL: the agent looks again within it
        send(b, 5_000)
        time.sleep(1.5)
    finally:
        named.stop()
    assert agent.stop() == 0
    samples = agent.flow_samples()
    rates = [s.sampling_rate for s in samples]
    assert rates[0] == 100 and rates[-1] == 10 and rates == sorted(rates, reverse=True)
    assert [s.sequence for s in samples] == list(range(1, len(samples) + 1)), "a gap in the samples"
    assert "sampling 1 in 10 (was 100)" in open(tmp_path / "agent.log").read()


def test_a_pcap_device_created_after_start_is_sampled_within_seconds(pair, tmp_path):
    a, b = pair

    def conf(port):
        path = tmp_path / "hsagent.conf"
        path.write_text(f"sflow {{\n DNSSD = off\n user = root\n polling = 1\n sampling.10G = 10\n"
                        f" collector {{ ip = 127.0.0.1 udpport = {port} }}\n pcap {{ dev = a1 }}\n}}\n")
        return str(path)

    def traffic():
        time.sleep(2)  # the link events reach the agent; far less than its 30-second re-check
        b.run(sys.executable, "-c", SENDER.replace("198.18.2.1", "198.18.3.1"), "2000", timeout=60)
        time.sleep(1.5)

    agent = AgentInNamespace(a, str(tmp_path), conf=conf)
    link(a, b, 1)
    traffic()
    ifindex = int(a.run("cat", "/sys/class/net/a1/ifindex").stdout)
    a.run("ip", "link", "del", "a1")
    link(a, b, 1, index=ifindex)  # the same device again, even its ifIndex: a new sampler
    traffic()
    assert agent.stop() == 0
    samples = agent.flow_samples()
    assert samples and {s.ds_index for s in samples} == {ifindex}
    # the new sampler's pool starts from zero, and so do its sequence numbers
    restart = [s.sequence for s in samples].index(1, 1)
    for life in (samples[:restart], samples[restart:]):
        assert [s.sequence for s in life] == list(range(1, len(life) + 1))
        assert life[0].sample_pool < 1000
