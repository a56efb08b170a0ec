"""Our decoder prints what sflowtool printed for real hsflowd datagrams, and decodes the
header and agent kinds the capture lacks (IPv4 header protocol, IPv6 agent, compact samples)."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import sys
from pathlib import Path

from hsagent.sflow import records as r
from hsagent.sflow.datagram import (
    CountersSample, Datagram, FlowSample, Interface, UnknownRecord, UnknownSample,
    decode_datagram, encode_datagram,
)
from hsagent.sflow.text import datagram_lines

DATA = Path(__file__).parent / "data"
PCAP = DATA / "hsflowd-docker.pcap"
SFLOWTOOL_TEXT = DATA / "hsflowd-docker.sflowtool.txt"
# Lines that depend on how and when the file was read, not on the datagram.
READING_KEYS = ("unixSecondsUTC", "localtime", "pcapTimestamp", "datagramSourceIP")


def _comparable(lines):
    return [line for line in lines if not line.startswith(READING_KEYS)]


def test_capture_decodes_exactly_as_sflowtool():
    run = subprocess.run([sys.executable, "-m", "hsagent", "decode", "--pcap", str(PCAP)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    ours = run.stdout.splitlines()
    theirs = SFLOWTOOL_TEXT.read_text().splitlines()
    # The reading-clock lines are there too, in the same places; only their values differ.
    assert [line.split(" ")[0] for line in ours] == [line.split(" ")[0] for line in theirs]
    ours, theirs = _comparable(ours), _comparable(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            context = "\n".join(theirs[max(0, i - 8):i + 1])
            raise AssertionError(f"line {i}: ours {a!r}, sflowtool {b!r}; sflowtool context:\n"
                                 f"{context}")
    assert len(ours) == len(theirs)
    assert sum(line.startswith("startDatagram") for line in ours) == 100


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_tcp(ident=0x1234, ttl=63, tos=0x10, flags=0x18) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", 40000, 443, 1, 2, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + len(tcp) + 100, ident, 0x4000, ttl, 6, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    return ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:] + tcp


def _flow_lines(datagram: Datagram) -> list[str]:
    data = encode_datagram(datagram)
    lines = datagram_lines(decode_datagram(data), len(data), "-", received=0.0)
    start = lines.index("flowBlock_tag 0:1")
    return lines[start:lines.index("endSample   ----------------------", start)]


def test_ipv4_header_protocol_in_a_compact_flow_sample():
    header = ipv4_tcp()
    # As hsflowd does for a cooked capture: 4 FCS + 14 Ethernet bytes counted as stripped.
    record = r.SampledHeader(r.HEADER_PROTOCOL_IPV4, 140 + 18, 18, header)
    sample = FlowSample(0, 3, 400, 8000, 2, Interface(0, 0x3FFFFFFF), Interface(2, 7), [record],
                        sequence=9)
    datagram = Datagram(ipaddress.ip_address("198.18.0.9"), 5, 77, 1234, [sample])
    data = encode_datagram(datagram)
    lines = datagram_lines(decode_datagram(data), len(data), "-", received=0.0)
    block = lines[lines.index("startSample ----------------------"):]
    assert block[:12] == [
        "startSample ----------------------",
        "sampleType_tag 0:1",
        "sampleType FLOWSAMPLE",
        "sampleSequenceNo 9",
        "sourceId 0:3",
        "meanSkipCount 400",
        "samplePool 8000",
        "dropEvents 2",
        "inputPort 1073741823",
        "outputPort multiple 7",
        "flowBlock_tag 0:1",
        "flowSampleType HEADER",
    ]
    assert block[12:] == [
        "headerProtocol 11",
        "sampledPacketSize 158",
        "strippedBytes 18",
        "headerLen 40",
        "headerBytes " + "-".join(f"{b:02X}" for b in header),
        "IPSize 140",
        "ip.tot_len 140",
        "srcIP 198.18.0.1",
        "dstIP 198.18.0.2",
        "IPProtocol 6",
        "IPTOS 16",
        "IPTTL 63",
        "IPID 13330",  # 0x1234 read without byte swapping, as sflowtool does
        "TCPSrcPort 40000",
        "TCPDstPort 443",
        "TCPFlags 24",
        "endSample   ----------------------",
        "endDatagram   =================================",
    ]
    assert lines[1:3] == ["datagramSourceIP -", f"datagramSize {len(data)}"]
    assert lines[6:13] == ["datagramVersion 5", "agentSubId 5", "agent 198.18.0.9",
                           "packetSequenceNo 77", "sysUpTime 1234", "samplesInPacket 1",
                           "startSample ----------------------"]


def test_fragment_stops_before_the_ports():
    header = bytearray(ipv4_tcp())
    header[6:8] = struct.pack(">H", 0x2000 | 185)  # more fragments, offset 185 * 8
    record = r.SampledHeader(r.HEADER_PROTOCOL_IPV4, 200, 0, bytes(header))
    lines = _flow_lines(Datagram(ipaddress.ip_address("198.18.0.9"), 0, 1, 0,
                                 [FlowSample(0, 3, 1, 1, 0, Interface(), Interface(), [record])]))
    assert lines[-2:] == ["IPID 13330", "IPFragmentOffset 185"]


IPV6_SRC = ipaddress.IPv6Address("2001:db8::1")
IPV6_DST = ipaddress.IPv6Address("fe80::211:22ff:fe33:4455")


def ipv6_udp(next_header=17, extension=b"") -> bytes:
    udp = struct.pack(">HHHH", 5353, 53, 8 + 30, 0)
    ip = struct.pack(">IHBB16s16s", (6 << 28) | (0xB8 << 20) | 0xABCDE, len(extension) + 38,
                     next_header, 255, IPV6_SRC.packed, IPV6_DST.packed)
    return ip + extension + udp


def test_ipv6_agent_and_vlan_tagged_ipv6_header():
    ethernet = bytes.fromhex("0211223344550266778899aa") + struct.pack(">HHH", 0x8100,
                                                                       (5 << 13) | 42, 0x86DD)
    header = ethernet + ipv6_udp()
    record = r.SampledHeader(r.HEADER_PROTOCOL_ETHERNET, len(header) + 30 + 4, 4, header)
    switch = r.ExtendedSwitch(42, 5, 43, 0)
    sample = FlowSample(0, 4, 1, 1, 0, Interface(0, 4), Interface(0, 0), [record, switch])
    datagram = Datagram(ipaddress.ip_address("2001:db8::9"), 0, 1, 0, [sample])
    data = encode_datagram(datagram)
    lines = datagram_lines(decode_datagram(data), len(data), "-", received=0.0)
    assert "agent 2001:0db8:0000:0000:0000:0000:0000:0009" in lines
    block = _flow_lines(datagram)
    decoded = block[block.index("headerBytes " + "-".join(f"{b:02X}" for b in header)) + 1:]
    assert decoded == [
        "dstMAC 021122334455",
        "srcMAC 0266778899aa",
        "decodedVLAN 42",
        "decodedPriority 5",
        "ethernet_type 34525",
        "IPSize 78",  # frame 100 - stripped 4 - 18 bytes of Ethernet and tag
        "IPTOS 184",
        "IP6_label 0xabcde",
        "IPV6_payloadLen 38",
        "IPTTL 255",
        "srcIP6 2001:0db8:0000:0000:0000:0000:0000:0001",
        "dstIP6 fe80:0000:0000:0000:0211:22ff:fe33:4455",
        "IPProtocol 17",
        "UDPSrcPort 5353",
        "UDPDstPort 53",
        "UDPBytes 38",
        "flowBlock_tag 0:1001",
        "extendedType SWITCH",
        "in_vlan 42",
        "in_priority 5",
        "out_vlan 43",
        "out_priority 0",
    ]


def test_qinq_tags_are_numbered_from_the_second():
    ethernet = bytes(12) + struct.pack(">HHHHH", 0x88A8, 100, 0x8100, (3 << 13) | 200, 0x0800)
    header = ethernet + ipv4_tcp()
    record = r.SampledHeader(r.HEADER_PROTOCOL_ETHERNET, 200, 4, header)
    block = _flow_lines(Datagram(ipaddress.ip_address("198.18.0.9"), 0, 1, 0,
                                 [FlowSample(0, 3, 1, 1, 0, Interface(), Interface(), [record])]))
    assert block[9:16] == ["decodedVLAN 100", "decodedPriority 0", "decodedVLAN.1 200",
                           "decodedPriority.1 3", "ethernet_type 2048", "IPSize 174",
                           "ip.tot_len 140"]


def test_ipv6_header_protocol_with_an_extension_header():
    hop_by_hop = bytes([17, 0]) + bytes(6)  # next header UDP, 8 bytes long
    header = ipv6_udp(next_header=0, extension=hop_by_hop)
    record = r.SampledHeader(r.HEADER_PROTOCOL_IPV6, 200, 0, header)
    block = _flow_lines(Datagram(ipaddress.ip_address("198.18.0.9"), 0, 1, 0,
                                 [FlowSample(0, 3, 1, 1, 0, Interface(), Interface(), [record])]))
    assert block[7:9] == ["IPSize 200", "IPTOS 184"]
    # sflowtool advances 2 bytes short of each extension header, so the UDP ports it prints
    # are shifted: the last 2 bytes of the extension, then the real source port.
    assert block[-5:] == ["IP6HeaderExtension 0", "IPProtocol 17", "UDPSrcPort 0",
                          "UDPDstPort 5353", "UDPBytes 53"]


def test_compact_counter_sample_and_unknown_records():
    sample = CountersSample(0, 7, [r.IfCounters(7, 6, 10**9, 1, 3, *range(14)),
                                   UnknownRecord((4413 << 12) | 3, bytes(12)),
                                   r.PortName("eth0")], sequence=3)
    data = encode_datagram(Datagram(ipaddress.ip_address("198.18.0.9"), 0, 1, 0, [sample]))
    lines = datagram_lines(decode_datagram(data), len(data), received=0.0)
    start = lines.index("startSample ----------------------")
    assert lines[start + 1:start + 9] == [
        "sampleType_tag 0:2", "sampleType COUNTERSSAMPLE", "sampleSequenceNo 3", "sourceId 0:7",
        "counterBlock_tag 0:1", "ifIndex 7", "networkType 6", "ifSpeed 1000000000"]
    assert lines[-7:] == [
        "ifPromiscuousMode 13",
        "counterBlock_tag 4413:3",
        "skipping unknown counters_sample_element: 4413:3 len=12",
        "counterBlock_tag 0:1005",
        "ifName eth0",
        "endSample   ----------------------",
        "endDatagram   =================================",
    ]


def test_unknown_sample_is_skipped_like_sflowtool():
    sample = UnknownSample((4300 << 12) | 1002, bytes(8))
    data = encode_datagram(Datagram(ipaddress.ip_address("198.18.0.9"), 0, 1, 0, [sample]))
    lines = datagram_lines(decode_datagram(data), len(data), received=0.0)
    assert lines[-5:] == [
        "startSample ----------------------",
        "sampleType_tag 4300:1002",
        "skipping unknown sample: 4300:1002 len=8",
        "endSample   ----------------------",
        "endDatagram   =================================",
    ]
