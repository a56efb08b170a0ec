"""tshark, an independent decoder, reads our datagrams as we do.

tshark 4.0 knows interface counters and the flow records used here, and dissects the sampled
header bytes itself, so its fields check both our encoder and our header decoder. It garbles
everything after a record it does not know (port_name, host records, 0:1043), so those stay out.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess

import pytest

from hsagent.sflow import records as r
from hsagent.sflow.datagram import (
    CountersSample, Datagram, FlowSample, Interface, decode_datagram, encode_datagram,
)
from hsagent.sflow.pcap import write_udp
from hsagent.sflow.text import datagram_json

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

AGENT = ipaddress.ip_address("198.18.0.5")


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet_ipv4_tcp() -> bytes:
    tcp = struct.pack(">HHIIBBHHH", 51000, 8080, 1000, 2000, 5 << 4, 0x12, 64240, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0x28, 20 + len(tcp), 0x2345, 0x4000, 61, 6, 0,
                     bytes([198, 18, 1, 1]), bytes([198, 18, 1, 2]))
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    return bytes.fromhex("0242ac110002" "0242a47548ce") + struct.pack(">H", 0x0800) + ip + tcp


def ethernet_ipv6_udp() -> bytes:
    payload = b"hsagent!"
    udp = struct.pack(">HHHH", 33434, 6343, 8 + len(payload), 0) + payload
    ip = struct.pack(">IHBB16s16s", 6 << 28, len(udp), 17, 64,
                     ipaddress.IPv6Address("2001:db8::10").packed,
                     ipaddress.IPv6Address("2001:db8::20").packed)
    return bytes.fromhex("021122334455" "026677889900") + struct.pack(">H", 0x86DD) + ip + udp


def datagrams() -> list[Datagram]:
    counters = CountersSample(0, 3, [
        r.IfCounters(3, 6, 25 * 10**9, 1, 3, 123456789012, 1000, 20, 5, 1, 2, 0,
                     987654321098, 900, 10, 4, 0, 0, 0),
        r.EthernetCounters(*range(1, 14)),
    ], sequence=11)
    v4 = ethernet_ipv4_tcp()
    flow4 = FlowSample(0, 3, 400, 123400, 7, Interface(0, 3), Interface(0, 0x3FFFFFFF), [
        r.SampledHeader(r.HEADER_PROTOCOL_ETHERNET, len(v4) + 4, 4, v4),
        r.ExtendedSwitch(10, 2, 20, 5),
    ], sequence=21)
    v6 = ethernet_ipv6_udp()
    flow6 = FlowSample(0, 4, 1000, 5000, 0, Interface(0, 0x3FFFFFFF), Interface(0, 4), [
        r.SampledHeader(r.HEADER_PROTOCOL_ETHERNET, len(v6) + 4, 4, v6),
        r.ExtendedSwitch(30, 0, 31, 1),
    ], sequence=22)
    return [Datagram(AGENT, 7, seq, 5000 + seq, [sample])
            for seq, sample in ((41, counters), (42, flow4), (43, flow6))]


FIELDS = [
    "sflow_245.sequence_number", "sflow_245.agent", "sflow_245.sub_agent_id",
    "sflow.flow_sample.sequence_number", "sflow.flow_sample.sampling_rate",
    "sflow.flow_sample.sample_pool", "sflow.counters_sample.sequence_number",
    "sflow_245.ifindex", "sflow_245.ifspeed", "sflow_245.ifinoct", "sflow_245.ifoutoct",
    "sflow_245.dot3StatsSymbolErrors", "sflow_245.vlan.in", "sflow_245.vlan.out",
    "sflow_245.pri.in", "sflow_245.header.frame_length", "sflow_245.header.payload_stripped",
    "ip.src", "ip.dst", "ip.ttl", "ip.id", "ip.len", "tcp.srcport", "tcp.dstport", "tcp.flags",
    "ipv6.src", "ipv6.dst", "ipv6.hlim", "udp.srcport", "udp.dstport", "udp.length",
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    sent = [encode_datagram(d) for d in datagrams()]
    path = tmp_path_factory.mktemp("hsw-tshark") / "ours.pcap"
    with open(path, "wb") as f:
        write_udp(f, sent)
    ours = [datagram_json(decode_datagram(data), len(data), received=0.0) for data in sent]
    return path, ours


def _tshark_rows(path) -> list[dict]:
    command = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E",
               "occurrence=a", "-E", "aggregator=|"]
    for field in FIELDS:
        command += ["-e", field]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    rows = [line.split("\t") for line in run.stdout.splitlines()]
    return [{f: v.split("|") if v else [] for f, v in zip(FIELDS, row)} for row in rows]


def test_tshark_dissects_cleanly(capture):
    path, _ = capture
    run = subprocess.run(["tshark", "-r", str(path), "-V"], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.count("sFlow") >= 3
    for bad in ("Malformed", "Expert Info (Error", "Unknown sample format", "Unknown (",
                "[Dissector bug"):
        assert bad not in run.stdout


def test_tshark_agrees_on_headers_and_counters(capture):
    path, ours = capture
    rows = _tshark_rows(path)
    assert len(rows) == 3
    for row, d in zip(rows, ours):
        assert row["sflow_245.sequence_number"] == [str(d["packetSequenceNo"])]
        assert row["sflow_245.agent"] == [d["agent"]]
        assert row["sflow_245.sub_agent_id"] == [str(d["agentSubId"])]
    counters = ours[0]["samples"][0]
    generic, ethernet = counters["elements"]
    row = rows[0]
    assert row["sflow.counters_sample.sequence_number"] == [str(counters["sampleSequenceNo"])]
    assert row["sflow_245.ifindex"] == [str(generic["ifIndex"])]
    assert row["sflow_245.ifspeed"] == [str(generic["ifSpeed"])]
    assert row["sflow_245.ifinoct"] == [str(generic["ifInOctets"])]
    assert row["sflow_245.ifoutoct"] == [str(generic["ifOutOctets"])]
    assert row["sflow_245.dot3StatsSymbolErrors"] == [str(ethernet["dot3StatsSymbolErrors"])]
    for row, d in zip(rows[1:], ours[1:]):
        sample = d["samples"][0]
        header, switch = sample["elements"]
        assert row["sflow.flow_sample.sequence_number"] == [str(sample["sampleSequenceNo"])]
        assert row["sflow.flow_sample.sampling_rate"] == [str(sample["meanSkipCount"])]
        assert row["sflow.flow_sample.sample_pool"] == [str(sample["samplePool"])]
        assert row["sflow_245.header.frame_length"] == [str(header["sampledPacketSize"])]
        assert row["sflow_245.header.payload_stripped"] == [str(header["strippedBytes"])]
        assert row["sflow_245.vlan.in"] == [str(switch["in_vlan"])]
        assert row["sflow_245.vlan.out"] == [str(switch["out_vlan"])]
        assert row["sflow_245.pri.in"] == [str(switch["in_priority"])]


def test_tshark_agrees_on_the_sampled_ipv4_tcp_header(capture):
    path, ours = capture
    row = _tshark_rows(path)[1]
    header = ours[1]["samples"][0]["elements"][0]
    # Occurrence 0 is the outer 127.0.0.1 packet carrying the datagram; 1 is the sampled one.
    assert row["ip.src"][1] == header["srcIP"]
    assert row["ip.dst"][1] == header["dstIP"]
    assert int(row["ip.ttl"][1]) == header["IPTTL"]
    assert int(row["ip.len"][1]) == header["ip.tot_len"]
    ip_id = int(row["ip.id"][1], 16)
    assert header["IPID"] == ((ip_id & 0xFF) << 8) | (ip_id >> 8)  # sflowtool's byte order
    assert row["tcp.srcport"] == [str(header["TCPSrcPort"])]
    assert row["tcp.dstport"] == [str(header["TCPDstPort"])]
    assert int(row["tcp.flags"][0], 16) == header["TCPFlags"]


def test_tshark_agrees_on_the_sampled_ipv6_udp_header(capture):
    path, ours = capture
    row = _tshark_rows(path)[2]
    header = ours[2]["samples"][0]["elements"][0]
    assert [ipaddress.ip_address(a) for a in row["ipv6.src"]] == [
        ipaddress.ip_address(header["srcIP6"])]
    assert [ipaddress.ip_address(a) for a in row["ipv6.dst"]] == [
        ipaddress.ip_address(header["dstIP6"])]
    assert row["ipv6.hlim"] == [str(header["IPTTL"])]
    # Occurrence 0 is the outer UDP carrying the datagram.
    assert row["udp.srcport"][1] == str(header["UDPSrcPort"])
    assert row["udp.dstport"][1] == str(header["UDPDstPort"])
    assert row["udp.length"][1] == str(header["UDPBytes"])
