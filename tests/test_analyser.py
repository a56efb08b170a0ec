"""The flow analyser against synthetic sample streams of known rates and a real capture."""

from __future__ import annotations

import ipaddress
import math
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from hsagent.analyser.engine import Analyser
from hsagent.analyser.flows import FlowSpec, FlowTable
from hsagent.analyser.packets import Packet, field_text, packet_of, parse_header
from hsagent.analyser.thresholds import Monitor, Threshold
from hsagent.sflow.datagram import CountersSample, Datagram, FlowSample, Interface, encode_datagram
from hsagent.sflow.headers import decode_header
from hsagent.sflow.pcap import read_udp
from hsagent.sflow.records import (HEADER_PROTOCOL_ETHERNET, HEADER_PROTOCOL_IPV4,
                                   HEADER_PROTOCOL_IPV6, IfCounters, SampledHeader, SampledIpv4)

from packet_builders import MAC_A, MAC_B, ethernet, ipv4, ipv6, tcp, udp

DATA = Path(__file__).parent / "data"
FIVE_TUPLE = ("src_ip", "dst_ip", "ip_protocol", "src_port", "dst_port")


def ip_text(packet: Packet, name: str) -> str:
    return field_text(name, getattr(packet, name))


# --- packets.py ------------------------------------------------------------------------------

def test_ethernet_vlan_ipv4_udp():
    frame = ethernet(ipv4("198.18.0.2", "198.18.1.2", 17, udp(4000, 5001, b"x" * 100), tos=40),
                     0x0800, vlans=(7, 9))
    p = parse_header(HEADER_PROTOCOL_ETHERNET, frame, len(frame) + 4)
    assert (p.src_mac, p.dst_mac, p.vlan, p.ethertype) == (MAC_A, MAC_B, 7, 0x0800)
    assert (ip_text(p, "src_ip"), ip_text(p, "dst_ip")) == ("198.18.0.2", "198.18.1.2")
    assert (p.ip_protocol, p.tos, p.src_port, p.dst_port, p.frame_length) == (17, 40, 4000, 5001, len(frame) + 4)



def test_every_tag_type_the_sflowtool_style_decoder_walks():
    """Pre-standard QinQ tags (0x9100, 0x9200, 0x9300) as well as 802.1Q and 802.1ad."""
    inner = ethernet(ipv4("198.18.0.2", "198.18.1.2", 17, udp(4000, 5001, b"x" * 10)), 0x0800)
    for tag_type in (0x8100, 0x88A8, 0x9100, 0x9200, 0x9300):
        frame = inner[:12] + struct.pack(">HH", tag_type, 42) + inner[12:]
        p = parse_header(HEADER_PROTOCOL_ETHERNET, frame, len(frame) + 4)
        printed = dict(kv for kv in decode_header(HEADER_PROTOCOL_ETHERNET, frame, len(frame) + 4, 4))
        assert (p.vlan, p.src_port) == (printed["decodedVLAN"], printed["UDPSrcPort"]) == (42, 4000)

def test_ipv6_extension_headers_to_tcp():
    hop_by_hop = bytes([6, 0]) + bytes(6)  # next header TCP, 8 bytes
    packet = ipv6("2001:db8::1", "2001:db8::2", 0, hop_by_hop + tcp(443, 50000, flags=0x12), tclass=0x28)
    p = parse_header(HEADER_PROTOCOL_IPV6, packet, len(packet) + 18)
    assert (ip_text(p, "src_ip"), ip_text(p, "dst_ip")) == ("2001:db8::1", "2001:db8::2")
    assert (p.ip_protocol, p.tos, p.src_port, p.dst_port, p.tcp_flags) == (6, 0x28, 443, 50000, 0x12)
    assert p.src_mac is None


def test_icmp_has_no_ports_and_later_fragments_no_transport():
    p = parse_header(HEADER_PROTOCOL_IPV4, ipv4("198.18.0.1", "198.18.0.2", 1, bytes([8, 0, 0, 0])), 100)
    assert (p.icmp_type, p.icmp_code, p.src_port) == (8, 0, None)
    fragment = ipv4("198.18.0.1", "198.18.0.2", 17, b"\0" * 8, fragment_offset=185)
    p = parse_header(HEADER_PROTOCOL_IPV4, fragment, 100)
    assert (p.ip_protocol, p.src_port, p.dst_port) == (17, None, None)


def test_truncated_headers_are_skipped_not_guessed():
    frame = ethernet(ipv4("198.18.0.2", "198.18.1.2", 6, tcp(1, 2)), 0x0800, vlans=(5,))
    full = parse_header(HEADER_PROTOCOL_ETHERNET, frame, 200)
    assert full.tcp_flags == 0x18
    needed = 18 + 20 + 14  # Ethernet with one tag, IPv4, TCP up to its flags
    for cut in range(len(frame)):
        prefix = parse_header(HEADER_PROTOCOL_ETHERNET, frame[:cut], 200)
        if cut < needed:
            assert prefix is None, f"a header cut at {cut} bytes was parsed: {prefix}"
        else:
            assert prefix == full


def test_unknown_protocols_keep_the_layer_2_fields():
    arp = ethernet(bytes(28), 0x0806)
    p = parse_header(HEADER_PROTOCOL_ETHERNET, arp, 64)
    assert (p.ethertype, p.src_ip, p.src_port) == (0x0806, None, None)
    assert parse_header(15, arp, 64) is None  # 802.11: not parsed


def test_decoded_ipv4_record_when_there_is_no_header():
    record = SampledIpv4(1000, 17, ipaddress.ip_address("198.18.0.1").packed,
                         ipaddress.ip_address("198.18.0.2").packed, 53, 5353, 0, 0)
    p = packet_of([record])
    assert (p.frame_length, p.ip_protocol, p.src_port, p.dst_port, p.tcp_flags) == (1000, 17, 53, 5353, None)


addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.tuples(st.just(4), addresses4, addresses4), st.tuples(st.just(6), addresses6, addresses6)),
       st.sampled_from([6, 17]), ports, ports, st.integers(0, 255), st.lists(st.integers(1, 4094), max_size=2))
def test_agrees_with_the_sflowtool_style_decoder(ips, proto, sport, dport, tos, vlans):
    """The analyser's parser and hsagent.sflow.headers (checked against sflowtool) agree."""
    version, src, dst = ips
    l4 = tcp(sport, dport) if proto == 6 else udp(sport, dport, b"abc")
    if version == 4:
        frame = ethernet(ipv4(src, dst, proto, l4, tos=tos), 0x0800, vlans)
    else:
        frame = ethernet(ipv6(src, dst, proto, l4, tclass=tos), 0x86DD, vlans)
    p = parse_header(HEADER_PROTOCOL_ETHERNET, frame, len(frame) + 4)
    printed = dict(kv for kv in decode_header(HEADER_PROTOCOL_ETHERNET, frame, len(frame) + 4, 4) if kv[0])
    name = "TCP" if proto == 6 else "UDP"
    assert (p.src_port, p.dst_port) == (printed[name + "SrcPort"], printed[name + "DstPort"])
    assert (p.ip_protocol, p.tos) == (printed["IPProtocol"], printed["IPTOS"])
    if version == 4:
        assert (ip_text(p, "src_ip"), ip_text(p, "dst_ip")) == (printed["srcIP"], printed["dstIP"])
    else:
        assert (p.src_ip.hex(":", 2), p.dst_ip.hex(":", 2)) == (printed["srcIP6"], printed["dstIP6"])
    if vlans:
        assert p.vlan == printed["decodedVLAN"]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([HEADER_PROTOCOL_ETHERNET, HEADER_PROTOCOL_IPV4, HEADER_PROTOCOL_IPV6]),
       st.binary(max_size=160))
def test_any_bytes_parse_or_are_refused(protocol, header):
    packet = parse_header(protocol, header, 1000)
    assert packet is None or isinstance(packet, Packet)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 399), st.binary(min_size=1, max_size=8))
def test_damaged_datagrams_are_counted_never_raised(tail, at, garbage):
    """A real datagram with bytes overwritten somewhere, or random bytes: counted, not raised."""
    good = bytearray(datagram([flow_sample(1, udp_frame(1), 1), flow_sample(2, udp_frame(2), 5)]))
    good[at % len(good):at % len(good) + len(garbage)] = garbage
    analyser = Analyser([FlowSpec("f", FIVE_TUPLE)])
    analyser.receive(bytes(good), 0.0)
    analyser.receive(tail, 0.0)
    m = analyser.metrics
    assert m.datagrams + m.decode_errors == 2


# --- flows.py: EWMA ---------------------------------------------------------------------------

def test_rate_decays_exactly_between_samples():
    table = FlowTable(FlowSpec("f", ("src_ip",), t=2.0))
    assert table.add(("a", 1, b"x"), 1000, now=10.0) == pytest.approx(500)
    assert table.rate(("a", 1, b"x"), 12.0) == pytest.approx(500 / math.e)
    assert table.rate(("a", 1, b"x"), 16.0) == pytest.approx(500 * math.exp(-3))


@pytest.mark.parametrize("t", [0.5, 1.0, 5.0])
def test_step_response(t):
    """A constant stream of R/s switched on at 0 is seen as R (1 - e^(-s/t)); switched off, it
    decays as e^(-s/t). Samples every 1 ms: the sum of impulses is within 0.1% of the curve."""
    table, key, rate = FlowTable(FlowSpec("f", ("src_ip",), t=t)), ("a", 1, b"x"), 8e6
    step = 0.001
    for i in range(1, int(3 * t / step) + 1):
        now = i * step
        seen = table.add(key, rate * step, now)
        if i % 100 == 0:
            assert seen == pytest.approx(rate * (1 - math.exp(-now / t)), rel=2e-3)
    at_stop = table.rate(key, 3 * t)
    assert at_stop == pytest.approx(rate * (1 - math.exp(-3)), rel=2e-3)
    assert table.rate(key, 4 * t) == pytest.approx(at_stop / math.e)


def test_idle_flows_are_evicted():
    table = FlowTable(FlowSpec("f", ("src_ip",), t=1.0))
    table.add(("a", 1, b"old"), 100, now=0.0)
    table.add(("a", 1, b"new"), 100, now=9.0)
    assert table.evict_idle(10.5) == 1
    assert list(table.flows) == [("a", 1, b"new")]


def test_the_cap_drops_the_smallest_flows_first():
    table = FlowTable(FlowSpec("f", ("src_port",), t=1.0, max_flows=100))
    for port in range(100):
        table.add(("a", 1, port), 1000 + port, now=0.0)
    table.add(("a", 1, 1000), 10, now=0.0)  # the 101st, and the smallest
    assert len(table) == 90
    assert table.evicted == 11
    assert {k[2] for k in table.flows} == set(range(10, 100))
    assert [k[2] for k, _ in table.top(3, 0.0)] == [99, 98, 97]


def test_a_bad_definition_says_what_is_wrong():
    with pytest.raises(ValueError, match="keys must be some of.*not port"):
        FlowSpec("f", ("port",)).check()
    with pytest.raises(ValueError, match="filter"):
        FlowSpec("f", ("src_ip",), filter="sideways").check()


# --- thresholds.py ---------------------------------------------------------------------------

def test_threshold_fires_once_and_rearms_after_staying_below():
    table = FlowTable(FlowSpec("f", ("src_port",), t=1.0))
    monitor = Monitor(Threshold("big", "f", value=1000, timeout=5.0), table, lambda a, i: 0)
    key = ("a", 1, 80)
    events = []

    def feed(now, amount):
        event = monitor.update(key, table.add(key, amount, now), now, lambda: now)
        if event:
            events.append(event)

    for i in range(20):  # 2000/s for 2 s: crosses once
        feed(i * 0.1, 200)
    assert len(events) == 1 and events[0].limit == 1000 and events[0].rate >= 1000
    # silence: the rate falls under 1000 at about 2.6 s; not re-armed before 2.6 + 5 s
    monitor.sweep(5.0)
    assert key in monitor.fired
    assert monitor.fired[key] == pytest.approx(1.9 + math.log(table.flows[key][0] / 1000))
    monitor.sweep(7.4)
    assert key in monitor.fired
    monitor.sweep(7.8)
    assert key not in monitor.fired
    for i in range(20):
        feed(10 + i * 0.1, 200)
    assert len(events) == 2


def test_a_flow_back_above_before_the_timeout_raises_nothing():
    table = FlowTable(FlowSpec("f", ("src_port",), t=1.0))
    monitor = Monitor(Threshold("big", "f", value=1000, timeout=5.0), table, lambda a, i: 0)
    key, events = ("a", 1, 80), []
    for i in range(100):
        now = i * 0.1
        amount = 200 if (i // 10) % 3 != 2 else 0  # dips for a second now and then
        event = monitor.update(key, table.add(key, amount, now), now, lambda: now)
        monitor.sweep(now)
        events += [event] if event else []
    assert len(events) == 1


def test_fraction_of_port_speed_waits_for_the_speed():
    table = FlowTable(FlowSpec("f", ("src_port",), t=1.0))
    speeds = {}
    monitor = Monitor(Threshold("big", "f", fraction=0.1), table, lambda a, i: speeds.get((a, i), 0))
    key = ("a", 3, 80)
    assert monitor.update(key, table.add(key, 10**9, 0.0), 0.0, lambda: 0) is None
    speeds[("a", 3)] = 1_000_000_000  # 10% of 1 Gbit/s = 12.5 MB/s
    assert monitor.limit("a", 3) == 12_500_000
    assert monitor.update(key, table.add(key, 10**9, 0.1), 0.1, lambda: 0) is not None


def test_a_fraction_needs_a_bytes_flow():
    table = FlowTable(FlowSpec("f", ("src_port",), value="frames"))
    with pytest.raises(ValueError, match="needs a bytes flow"):
        Monitor(Threshold("x", "f", fraction=0.1), table, lambda a, i: 0)


# --- engine.py: datagrams in -----------------------------------------------------------------

def flow_sample(ifindex, frame, sequence, rate=100, drops=0, input_port=None):
    header = SampledHeader(HEADER_PROTOCOL_ETHERNET, len(frame) + 4, 4, frame[:128])
    port = Interface(0, ifindex if input_port is None else input_port)
    return FlowSample(0, ifindex, rate, sequence * rate, drops, port, Interface(0, 0x3FFFFFFF),
                      [header], sequence)


def datagram(samples, agent="198.18.0.1", sequence=1):
    return encode_datagram(Datagram(ipaddress.ip_address(agent), 0, sequence, 1000, samples))


def udp_frame(sport, size=1000, src="198.18.0.2"):
    return ethernet(ipv4(src, "198.18.1.2", 17, udp(sport, 5001, bytes(size - 42))), 0x0800)


def test_samples_are_scaled_by_the_rate_and_filtered_by_direction():
    analyser = Analyser([FlowSpec("in", FIVE_TUPLE), FlowSpec("out", FIVE_TUPLE, filter="egress"),
                         FlowSpec("frames", ("src_ip",), value="frames", filter="any")])
    frame = udp_frame(4000)
    samples = [flow_sample(3, frame, 1), flow_sample(3, frame, 2),
               flow_sample(3, frame, 3, input_port=0x3FFFFFFF)]  # sent by the host: not ingress
    assert analyser.receive(datagram(samples), now=0.0) == []
    key = ("198.18.0.1", 3, ipaddress.ip_address("198.18.0.2").packed,
           ipaddress.ip_address("198.18.1.2").packed, 17, 4000, 5001)
    assert analyser.tables["in"].rate(key, 0.0) == pytest.approx(2 * 100 * (len(frame) + 4))
    assert len(analyser.tables["out"]) == 0
    assert analyser.tables["frames"].rate(("198.18.0.1", 3, key[2]), 0.0) == pytest.approx(300)
    assert analyser.metrics.datagrams == 1 and analyser.metrics.flow_samples == 3


def test_lost_samples_are_spread_over_the_source():
    """Every 4th sample lost on the way and drops reported: each received sample stands for
    the rate x (taken / received), so the total scaled count stays the packets sent."""
    analyser = Analyser([FlowSpec("f", ("src_port",))])
    for seq in range(1, 802):
        if seq % 4 == 0:
            continue
        drops = seq // 100  # one sample dropped by the agent every 100
        analyser.receive(datagram([flow_sample(1, udp_frame(seq % 8), seq, drops=drops)]), now=0.0)
    total = sum(r for _, r in analyser.tables["f"].rates(0.0))
    packets = (801 + 8) * 100  # samples the agent took, each for 100 packets
    assert total == pytest.approx(packets * 1004, rel=0.02)
    assert analyser.metrics.lost_samples == 200 + 8


def test_port_speed_is_learnt_from_counter_samples():
    analyser = Analyser([FlowSpec("f", FIVE_TUPLE)], [Threshold("t", "f", fraction=0.1)])
    counters = IfCounters(7, 6, 10**9, 1, 3, *([0] * 14))
    analyser.receive(datagram([CountersSample(0, 7, [counters], 1)]), now=0.0)
    assert analyser.port_speed("198.18.0.1", 7) == 10**9
    # 12.5 MB/s is 10%: 200 samples of 1004 x 100 bytes within 20 ms cross it
    frame = udp_frame(9)
    events = []
    for seq in range(1, 201):
        events += analyser.receive(datagram([flow_sample(7, frame, seq)]), now=seq * 1e-4)
    assert len(events) == 1
    event = events[0]
    assert event.key[:2] == ("198.18.0.1", 7) and event.limit == 12_500_000
    assert analyser.metrics.events == 1


def test_only_accepted_agents_are_analysed():
    accepted = ipaddress.ip_network("198.18.0.0/24")
    analyser = Analyser([FlowSpec("f", FIVE_TUPLE)], accept_agent=lambda a: a in accepted)
    analyser.receive(datagram([flow_sample(1, udp_frame(1), 1)], agent="198.18.0.1"), 0.0)
    analyser.receive(datagram([flow_sample(1, udp_frame(1), 1)], agent="198.19.0.1"), 0.0)
    analyser.receive(datagram([flow_sample(1, udp_frame(1), 1)], agent="2001:db8::1"), 0.0)
    assert list(analyser.agents) == ["198.18.0.1"] and len(analyser.tables["f"]) == 1
    assert (analyser.metrics.datagrams, analyser.metrics.refused_datagrams) == (1, 2)


def test_silent_agents_are_forgotten():
    analyser = Analyser([FlowSpec("f", FIVE_TUPLE)])
    counters = IfCounters(7, 6, 10**9, 1, 3, *([0] * 14))
    analyser.receive(datagram([CountersSample(0, 7, [counters], 1), flow_sample(7, udp_frame(1), 1)],
                              agent="198.18.0.1"), now=0.0)
    analyser.receive(datagram([flow_sample(7, udp_frame(1), 1)], agent="198.18.0.2"), now=500.0)
    analyser.housekeeping(601.0)
    assert list(analyser.agents) == ["198.18.0.2"] and analyser.speeds == {}
    assert len(analyser.tables["f"]) == 0  # idle flows went long before


def test_bad_datagrams_and_truncated_headers_are_counted():
    analyser = Analyser([FlowSpec("f", FIVE_TUPLE)])
    good = datagram([flow_sample(1, udp_frame(1)[:30], 1)])  # cut inside the IP header
    assert analyser.receive(good, 0.0) == []
    assert analyser.receive(good[:-3], 0.0) == []
    assert analyser.receive(b"\0\0\0\4" + bytes(40), 0.0) == []
    m = analyser.metrics
    assert (m.datagrams, m.decode_errors, m.unparsed_headers, len(analyser.tables["f"])) == (1, 2, 1, 0)


# --- a real capture, decoded by sflowtool -------------------------------------------------------

def sflowtool_flow_samples(text: str):
    """(agent, source, sequence, input, rate, size, srcIP, dstIP, proto, sport, dport) per flow sample."""
    for block in text.split("startSample ----------------------")[1:]:
        fields = dict(line.split(" ", 1) for line in block.splitlines() if " " in line)
        if fields.get("sampleType") != "FLOWSAMPLE":
            continue
        yield fields


def test_real_capture_matches_sflowtool():
    """hsflowd's datagrams (tests/data): the flows the analyser finds and their byte counts are
    those sflowtool's decoding gives, sample by sample."""
    text = (DATA / "hsflowd-docker.sflowtool.txt").read_text()
    agents = re.findall(r"^agent (\S+)$", text, re.M)
    expected: dict[tuple, float] = {}
    sequences: dict[str, list[int]] = {}
    for f in sflowtool_flow_samples(text):
        ifindex = int(f["sourceId"].split(":")[1])
        sequences.setdefault(f["sourceId"], []).append(int(f["sampleSequenceNo"]))
        if int(f["inputPort"]) != ifindex:
            continue  # ingress only
        key = (agents[0], ifindex, f["srcIP"], f["dstIP"], int(f["IPProtocol"]),
               int(f["TCPSrcPort"]), int(f["TCPDstPort"]))
        expected[key] = expected.get(key, 0) + int(f["sampledPacketSize"]) * int(f["meanSkipCount"])
    for seqs in sequences.values():  # nothing lost in the capture: no loss correction expected
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len(set(agents)) == 1 and len(expected) > 3

    analyser = Analyser([FlowSpec("f", FIVE_TUPLE, t=1.0)])
    with open(DATA / "hsflowd-docker.pcap", "rb") as f:
        for packet in read_udp(f):
            analyser.receive(packet.payload, now=0.0)  # one instant: rates are plain sums
    got = {(k[0], k[1], field_text("src_ip", k[2]), field_text("dst_ip", k[3]), *k[4:]): rate
           for k, rate in analyser.tables["f"].rates(0.0)}
    assert got == pytest.approx(expected)
    assert analyser.metrics.decode_errors == 0
    assert analyser.metrics.datagrams == len(agents)
