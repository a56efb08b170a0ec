"""NFLOG sampling: the parsers on hand-built netlink messages, then a real iptables
`statistic` rule in a namespace receiving 100,000 packets."""

import os
import signal
import socket
import struct
import subprocess

import pytest
from conftest import (
    HSAGENT,
    decoded_samples,
    delete_namespaces,
    make_veth_pair,
    read_while,
    run_in_netns,
    start_sender,
    to_datagrams,
    udp_fields,
    wait_until,
    within_4_sd,
)

from hsagent.netlink import attributes, messages
from hsagent.privileges import capability_mask
from hsagent.sampling import flows, nflog
from hsagent.sflow.datagram import IF_INTERNAL

NS_A, NS_B = "hss-nf-a", "hss-nf-b"
DEV_A, DEV_B = "hss-nf0", "hss-nf1"
SRC, DST = "198.18.2.1", "198.18.2.2"
GROUP = 23

IPV4_UDP = bytes.fromhex("4500002e00004000401100000a0000010a000002")  # 46-byte packet, 10.0.0.1 -> .2
UDP = struct.pack(">HHHH", 1234, 5678, 26, 0) + b"q" * 18
ETHERNET = bytes.fromhex("0200000000020200000000010800")


def attr(kind, value):
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def packet_message(seq, indev=0, outdev=0, hwheader=b"", payload=IPV4_UDP + UDP):
    attrs = attr(nflog.NFULA_PACKET_HDR, struct.pack(">HBB", 0x0800, 1, 0))
    if indev:
        attrs += attr(nflog.NFULA_IFINDEX_INDEV, struct.pack(">I", indev))
    if outdev:
        attrs += attr(nflog.NFULA_IFINDEX_OUTDEV, struct.pack(">I", outdev))
    if hwheader:
        attrs += attr(nflog.NFULA_HWTYPE, struct.pack(">H", 1))
        attrs += attr(nflog.NFULA_HWHEADER, hwheader)
        attrs += attr(17, struct.pack(">H", len(hwheader)))  # NFULA_HWLEN
    attrs += attr(nflog.NFULA_PAYLOAD, payload) + attr(nflog.NFULA_SEQ, struct.pack(">I", seq))
    body = struct.pack(">BBH", socket.AF_INET, 0, GROUP) + attrs
    return struct.pack("=IHHII", 16 + len(body), nflog.NFULNL_MSG_PACKET, 0, 0, 0) + body


def test_parse_input_packet_with_ethernet_header():
    (kind, _, _, payload), = messages(packet_message(7, indev=3, hwheader=ETHERNET))
    packet = nflog.parse_packet(payload)
    assert kind == nflog.NFULNL_MSG_PACKET
    assert packet == nflog.NflogPacket(3, 0, IPV4_UDP + UDP, ETHERNET, 7)
    sample = nflog.packet_sample(packet, 100, 100, 0, 128)
    (header,) = sample.records
    assert (sample.ds_index, sample.input.value, sample.output.value) == (3, 3, IF_INTERNAL)
    assert (header.header_protocol, header.frame_length, header.stripped) == (1, 14 + 46 + 4, 4)
    assert header.header == ETHERNET + IPV4_UDP + UDP


def test_output_packet_without_link_header_is_reported_as_ipv4():
    (_, _, _, payload), = messages(packet_message(1, outdev=9))
    sample = nflog.packet_sample(nflog.parse_packet(payload), 400, 400, 0, 32)
    (header,) = sample.records
    assert (sample.ds_index, sample.input.value, sample.output.value) == (9, IF_INTERNAL, 9)
    assert (header.header_protocol, header.frame_length, header.stripped) == (11, 46 + 18, 18)
    assert header.header == (IPV4_UDP + UDP)[:32]


def test_ipv6_payload_length_comes_from_its_header():
    ipv6 = bytes.fromhex("6000000000081140") + bytes(16) + bytes(15) + b"\x01" + UDP[:8]
    header = flows.ip_header(ipv6, 128)
    assert (header.header_protocol, header.frame_length) == (12, 40 + 8 + 18)


def test_batch_counts_pool_per_interface_and_drops_from_sequence_gaps():
    buf = b"".join([packet_message(0, indev=2), packet_message(1, indev=2),
                    packet_message(4, indev=5), packet_message(5, indev=2)])
    samples = nflog.decode_samples(buf, flows.SampleCounts(), 100, 128)
    assert [(s.ds_index, s.sample_pool, s.drops) for s in samples] == [
        (2, 100, 0), (2, 200, 0), (5, 100, 2), (2, 300, 2)]


def test_sequence_wraps():
    counts = flows.SampleCounts()
    counts.count(1, 10, 0xFFFFFFFF)
    assert counts.count(1, 10, 0) == (20, 0)


def test_truncated_messages_give_no_samples():
    message = packet_message(1, indev=2)
    assert nflog.decode_samples(message[:-3], flows.SampleCounts(), 100, 128) == []
    body = (struct.pack(">BBH", socket.AF_INET, 0, GROUP)
            + struct.pack("=HH", 200, nflog.NFULA_PAYLOAD) + IPV4_UDP[:16])  # claims 196 bytes
    overrun = struct.pack("=IHHII", 16 + len(body), nflog.NFULNL_MSG_PACKET, 0, 0, 0) + body
    assert nflog.decode_samples(overrun, flows.SampleCounts(), 100, 128) == []


def test_bind_request_layout():
    *_, bind = nflog.bind_messages(GROUP, 128)
    (kind, flags, _, payload), = messages(bind)
    assert kind == nflog.NFULNL_MSG_CONFIG and flags == nflog.NLM_F_REQUEST | nflog.NLM_F_ACK
    assert struct.unpack_from(">BBH", payload) == (socket.AF_UNSPEC, 0, GROUP)
    attrs = attributes(payload, 4)
    assert bytes(attrs[nflog.NFULA_CFG_CMD]) == bytes([nflog.NFULNL_CFG_CMD_BIND])
    assert bytes(attrs[nflog.NFULA_CFG_MODE]) == struct.pack(">IBB", 128, nflog.NFULNL_COPY_PACKET, 0)
    assert bytes(attrs[nflog.NFULA_CFG_FLAGS]) == struct.pack(">H", nflog.NFULNL_CFG_F_SEQ)


# --- in namespaces: the kernel's NFLOG and iptables ------------------------------------------

@pytest.fixture(scope="module")
def veth():
    try:
        make_veth_pair(NS_A, NS_B, DEV_A, DEV_B, SRC, DST)
        yield
    finally:
        delete_namespaces(NS_A, NS_B)


def rule_present(tool, probability):
    args = nflog.rule_args("INPUT", probability, GROUP)
    return subprocess.run([tool, "-C", *args], capture_output=True, check=False).returncode == 0


def sample_received(count):
    """In hss-nf-b: our own 1% rule, `count` UDP packets from hss-nf-a."""
    sampler = nflog.NflogSampler(GROUP, 100)
    sampler.install_rule(0.01)
    sampler.install_rule(0.01)  # idempotent: still one rule per chain
    installed = {tool: rule_present(tool, 0.01) for tool in ("iptables", "ip6tables")}
    rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True,
                           check=True).stdout
    samples = read_while(sampler, start_sender(count, DST, SRC, ns=NS_A))
    drops = sampler.drops
    sampler.close()
    removed = not any(rule_present(tool, 0.01) for tool in ("iptables", "ip6tables"))
    return (to_datagrams(samples), drops, installed, rules.count("NFLOG"), removed,
            socket.if_nametoindex(DEV_B))


@pytest.mark.root
def test_one_percent_of_100000_received_packets(veth):
    datagrams, drops, installed, rule_count, removed, ifindex = run_in_netns(
        NS_B, sample_received, 100_000)
    samples = decoded_samples(datagrams)
    assert installed == {"iptables": True, "ip6tables": True} and rule_count == 1
    assert removed
    assert within_4_sd(len(samples), 100_000, 100), len(samples)
    assert drops == 0
    assert {(s.ds_index, s.sampling_rate, s.input.value, s.output.value, s.drops)
            for s in samples} == {(ifindex, 100, ifindex, IF_INTERNAL, 0)}
    assert [s.sample_pool for s in samples] == [100 * i for i in range(1, len(samples) + 1)]
    for sample in samples:
        (header,) = sample.records
        assert (header.header_protocol, header.stripped, header.frame_length) == (1, 4, 246)
        assert udp_fields(header.header)[:4] == (0x0800, SRC, DST, 17)


# --- the rules of an agent that dropped root; iptables that fails or hangs ----------------------

def rules_in(ns, tool):
    return ns.run(tool, "-S", check=False).stdout


def test_agent_that_switched_user_changes_and_removes_its_rules(netns, readable_dir):
    """Started as root with `user = nobody`: iptables runs with the agent's CAP_NET_ADMIN
    (ambient), so SIGHUP changes the probability and SIGTERM removes the rules."""
    ns = netns("hsn")
    conf = readable_dir / "hsagent.conf"

    def write(probability):
        conf.write_text(f"sflow {{\n DNSSD = off\n user = nobody\n polling = 30\n"
                        f" collector {{ ip = 127.0.0.1 udpport = 6343 }}\n"
                        f" nflog {{ group = {GROUP} probability = {probability} }}\n}}\n")
        conf.chmod(0o644)

    def installed(probability):
        return all(ns.run(tool, "-C", *nflog.rule_args(chain, probability, GROUP), check=False).returncode == 0
                   for tool in ("iptables", "ip6tables") for chain in nflog.RULE_CHAINS)

    def no_rules():
        return not any("NFLOG" in rules_in(ns, tool) for tool in ("iptables", "ip6tables"))

    write(0.01)
    log_path = readable_dir / "agent.log"
    with open(log_path, "w") as log:
        proc = ns.popen(*HSAGENT, "-f", "-c", str(conf), "--auto-file", str(readable_dir / "auto"),
                        "--runtime-dir", str(readable_dir), stderr=log)
    try:
        assert wait_until(lambda: installed(0.01), 20), log_path.read_text()
        assert wait_until(lambda: os.path.exists(readable_dir / "status"), 20)
        status = dict(line.split(":", 1) for line in open(f"/proc/{proc.pid}/status") if ":" in line)
        assert status["Uid"].split()[0] == "65534"
        assert int(status["CapAmb"], 16) == capability_mask()
        write(0.02)
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: installed(0.02) and not installed(0.01), 20), log_path.read_text()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    log = log_path.read_text()
    assert code == 0, log
    assert no_rules(), (rules_in(ns, "iptables"), log)
    assert "ERROR" not in log and "must be root" not in log, log


FAKE_IPTABLES = """#!/bin/sh
# what iptables says when it may not change the rules; or, with HANG, a lock never released
[ -e "$(dirname "$0")/HANG" ] && exec sleep 60
case "$*" in *-C*) exit 1 ;; esac
echo "iptables v1.8.9 (legacy): can't initialize iptables table \\`filter': Permission denied (you must be root)" >&2
exit 4
"""


@pytest.fixture
def failing_iptables(tmp_path, monkeypatch):
    tool = tmp_path / "iptables"
    tool.write_text(FAKE_IPTABLES)
    tool.chmod(0o755)
    monkeypatch.setattr(nflog, "IPTABLES", (str(tool),))
    monkeypatch.setattr(nflog, "RULES_TIMEOUT", 1.0)
    return tmp_path


@pytest.mark.root
def test_a_rule_change_that_iptables_refuses_leaves_the_sampler_as_it_was(failing_iptables):
    sampler = nflog.NflogSampler(GROUP, 100)
    try:
        sampler.owns_rule, sampler.probability = True, 0.01  # as if install_rule had worked
        with pytest.raises(OSError, match="you must be root"):
            sampler.set_rate(50)
        assert (sampler.rate, sampler.probability, sampler.owns_rule) == (100, 0.01, True)
        (failing_iptables / "HANG").touch()  # iptables-legacy -w waiting for a lock
        import time

        started = time.monotonic()
        with pytest.raises(OSError, match="no answer within"):
            sampler.set_rate(50)
        assert time.monotonic() - started < 3
        assert (sampler.rate, sampler.probability) == (100, 0.01)
    finally:
        sampler.owns_rule, sampler.probability = False, None  # nothing of ours to remove
        sampler.close()
