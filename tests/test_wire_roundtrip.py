"""Encoding and decoding agree, for every declared structure, and match the reference sizes."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsagent.sflow import records as r
from hsagent.sflow.datagram import (
    CountersSample, Datagram, DatagramBuilder, FlowSample, Interface, decode_datagram,
    encode_datagram, encode_sample,
)
from hsagent.sflow.text import datagram_lines
from hsagent.sflow.xdr import (
    F32, IP4, IP6, MAC, PERCENT100, U32, U64, UUID, Array, Opaque, String, Struct,
)

U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1

_FIXED = {
    id(U32): st.integers(0, U32_MAX),
    id(PERCENT100): st.integers(-(2**31), 2**31 - 1),
    id(U64): st.integers(0, U64_MAX),
    id(F32): st.floats(width=32, allow_nan=False),
    id(MAC): st.binary(min_size=6, max_size=6),
    id(IP4): st.binary(min_size=4, max_size=4),
    id(IP6): st.binary(min_size=16, max_size=16),
    id(UUID): st.binary(min_size=16, max_size=16),
}


def strategy(xtype) -> st.SearchStrategy:
    """Values of any XDR type or Struct, derived from its declaration."""
    if isinstance(xtype, Struct):
        return st.builds(xtype.value_type, *(strategy(f.type) for f in xtype.fields))
    if id(xtype) in _FIXED:
        return _FIXED[id(xtype)]
    if isinstance(xtype, String):
        return st.text(st.characters(blacklist_categories=("Cs",)), max_size=xtype.max_len).filter(
            lambda s: len(s.encode()) <= xtype.max_len)
    if isinstance(xtype, Opaque):
        return st.binary(max_size=200)
    if isinstance(xtype, Array):
        return st.lists(strategy(xtype.element), max_size=4)
    raise AssertionError(f"no strategy for {xtype!r}")


def roundtrip(spec: Struct, value):
    data = spec.pack(value)
    assert len(data) % 4 == 0
    decoded, end = spec.unpack(data, 0, len(data))
    assert end == len(data)
    return decoded


ALL_SPECS = list(r.FLOW_RECORDS.values()) + list(r.COUNTER_RECORDS.values())


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_record_round_trips(spec, data):
    value = data.draw(strategy(spec))
    assert roundtrip(spec, value) == value


ds_class = st.integers(0, 3)
ds_index = st.integers(0, U32_MAX)
interface = st.builds(Interface, st.integers(0, 2), st.integers(0, U32_MAX))


@st.composite
def flow_samples(draw):
    recs = draw(st.lists(st.one_of(*(strategy(s) for s in r.FLOW_RECORDS.values())), max_size=3))
    return FlowSample(draw(ds_class), draw(ds_index), draw(st.integers(0, U32_MAX)),
                      draw(st.integers(0, U32_MAX)), draw(st.integers(0, U32_MAX)),
                      draw(interface), draw(interface), recs, draw(st.integers(0, U32_MAX)))


@st.composite
def counter_samples(draw):
    recs = draw(st.lists(st.one_of(*(strategy(s) for s in r.COUNTER_RECORDS.values())), max_size=3))
    return CountersSample(draw(ds_class), draw(ds_index), recs, draw(st.integers(0, U32_MAX)))


@settings(max_examples=150, deadline=None)
@given(agent=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
       samples=st.lists(st.one_of(flow_samples(), counter_samples()), max_size=4),
       sub=st.integers(0, U32_MAX), seq=st.integers(0, U32_MAX), uptime=st.integers(0, U32_MAX))
def test_datagrams_with_sample_headers_round_trip(agent, samples, sub, seq, uptime):
    sent = Datagram(agent, sub, seq, uptime, samples)
    data = encode_datagram(sent)
    got = decode_datagram(data)
    assert got._replace(samples=[]) == sent._replace(samples=[])
    # The decoder reports which wire form it read; everything else is what was sent.
    assert [s._replace(expanded=False) for s in got.samples] == samples
    for s in got.samples:
        compact_fits = s.ds_index <= 0xFFFFFF and (
            isinstance(s, CountersSample) or max(s.input.value, s.output.value) <= 0x3FFFFFFF)
        assert s.expanded == (not compact_fits)
    assert datagram_lines(got, len(data))[-1].startswith("endDatagram")


FIXED_SIZES = {
    r.IfCounters: 88, r.EthernetCounters: 52, r.HostParent: 8, r.HostCpu: 80, r.HostMemory: 72,
    r.HostDiskIo: 52, r.HostNetIo: 40, r.Mib2IpGroup: 76, r.Mib2IcmpGroup: 100,
    r.Mib2TcpGroup: 60, r.Mib2UdpGroup: 28, r.VirtNode: 28, r.VirtCpu: 12, r.VirtMemory: 16,
    r.VirtDiskIo: 52, r.VirtNetIo: 40, r.SampledEthernet: 24, r.SampledIpv4: 32,
    r.SampledIpv6: 56, r.ExtendedSwitch: 16, r.ExtendedTimestamp: 8,
}


@pytest.mark.parametrize("cls,size", FIXED_SIZES.items(), ids=lambda v: getattr(v, "__name__", v))
def test_fixed_sizes_match_the_reference(cls, size):
    assert cls.spec.size == size
    zeros = cls._make([b"\0" * t.type.size if t.type in (MAC, IP4, IP6, UUID) else 0
                       for t in cls.spec.fields])
    assert len(cls.spec.pack(zeros)) == size


@pytest.mark.parametrize("sample,tag,fixed", [
    (FlowSample(0, 1, 1, 1, 0, Interface(), Interface(), []), 1, 32),
    (CountersSample(0, 1, []), 2, 12),
    (FlowSample(0, 2**24, 1, 1, 0, Interface(), Interface(), []), 3, 44),
    (CountersSample(0, 2**24, []), 4, 16),
])
def test_sample_fixed_parts(sample, tag, fixed):
    data = encode_sample(sample)
    assert struct.unpack(">II", data[:8]) == (tag, fixed)
    assert len(data) == 8 + fixed


@pytest.mark.parametrize("agent,size", [("192.0.2.1", 28), ("2001:db8::1", 40)])
def test_datagram_header_sizes(agent, size):
    assert len(encode_datagram(Datagram(ipaddress.ip_address(agent), 0, 1, 0, []))) == size


def test_reference_worked_example_byte_for_byte():
    datagram = Datagram(ipaddress.ip_address("192.0.2.1"), 0, 1, 1000,
                        [CountersSample(3, 100001, [r.HostParent(2, 1)], sequence=1)])
    expected = bytes.fromhex(
        "00000005 00000001 c0000201 00000000 00000001 000003e8 00000001"
        " 00000002 0000001c 00000001 030186a1 00000001 000007d2 00000008 00000002 00000001")
    assert encode_datagram(datagram) == expected
    assert len(expected) == 64
    assert decode_datagram(expected) == datagram


def test_host_descr_example_is_56_bytes():
    rec = r.HostDescr("myhost", bytes(range(16)), r.MACHINE_TYPE_X86_64, r.OS_NAME_LINUX,
                      "6.1.0-18-amd64")
    assert len(r.HostDescr.spec.pack(rec)) == 56
    assert roundtrip(r.HostDescr.spec, rec) == rec


def test_legacy_68_byte_host_cpu_decodes_with_none_for_the_newer_fields():
    values = [1.5, 0.5, 0.25] + list(range(4, 18))
    body = struct.pack(">3f14I", *values)
    assert len(body) == 68
    record = struct.pack(">II", r.HostCpu.spec.tag, len(body)) + body
    sample_body = struct.pack(">III", 1, 2, 1) + record  # seq, source 0:2, one record
    sample = struct.pack(">II", 2, len(sample_body)) + sample_body
    head = struct.pack(">II4sIIII", 5, 1, bytes([192, 0, 2, 1]), 0, 1, 0, 1)
    got = decode_datagram(head + sample)
    cpu = got.samples[0].records[0]
    assert list(cpu[:17]) == values
    assert (cpu.cpu_steal, cpu.cpu_guest, cpu.cpu_guest_nice) == (None, None, None)
    lines = datagram_lines(got, len(head + sample))
    assert "cpu_contexts 17" in lines
    assert not [line for line in lines if line.startswith(("cpu_steal", "cpu_guest"))]


@pytest.mark.parametrize("ds_index,expanded", [(2**24 - 1, False), (2**24, True)])
def test_compact_or_expanded_is_chosen_by_the_index(ds_index, expanded):
    counters = encode_sample(CountersSample(3, ds_index, [r.HostParent(2, 1)]))
    flows = encode_sample(FlowSample(0, ds_index, 1, 1, 0, Interface(), Interface(), []))
    assert struct.unpack(">I", counters[:4])[0] == (4 if expanded else 2)
    assert struct.unpack(">I", flows[:4])[0] == (3 if expanded else 1)


def test_an_interface_beyond_30_bits_forces_expanded():
    sample = FlowSample(0, 1, 1, 1, 0, Interface(0, 2**30), Interface(), [])
    data = encode_sample(sample)
    assert struct.unpack(">I", data[:4])[0] == 3


def test_values_wrap_instead_of_failing():
    rec = r.IfCounters(*([0] * 19))._replace(in_octets=2**64 + 5, in_ucast_pkts=2**32 + 7,
                                              out_discards=-1, if_speed=-1)
    got = roundtrip(r.IfCounters.spec, rec)
    assert got.in_octets == 5
    assert got.in_ucast_pkts == 7
    assert got.out_discards == U32_MAX
    assert got.if_speed == U64_MAX


def _sample_of(size_class: int, ds: int, kind: int):
    """A flow (kind 0) or counters (kind 1) sample of a few different sizes."""
    if kind:
        return CountersSample(3, ds, [r.HostDescr("h" * (10 * size_class), bytes(16), 3, 2, "x")])
    header = r.SampledHeader(1, 1000, 4, bytes(40 * size_class))
    return FlowSample(0, ds, 10, 10, 0, Interface(0, 1), Interface(0, 2), [header])


@settings(max_examples=60, deadline=None)
@given(plan=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 4), st.integers(0, 1)),
                     min_size=1, max_size=60),
       max_bytes=st.integers(300, 1400))
def test_builder_caps_datagrams_and_numbers_everything(plan, max_bytes):
    builder = DatagramBuilder("192.0.2.1", max_bytes=max_bytes)
    datagrams, added = [], 0
    for size_class, ds, kind in plan:
        done = builder.add(_sample_of(size_class, ds, kind))
        datagrams += [done] if done else []
    last = builder.flush()
    datagrams += [last] if last else []
    assert all(len(d) <= max_bytes for d in datagrams)
    decoded = [decode_datagram(d) for d in datagrams]  # a split sample would not decode
    assert [d.sequence for d in decoded] == list(range(1, len(decoded) + 1))
    samples = [s for d in decoded for s in d.samples]
    added = len(plan) - builder.oversized
    assert len(samples) == added
    sequences: dict = {}
    for s in samples:
        sequences.setdefault((type(s), s.ds_class, s.ds_index), []).append(s.sequence)
    for seqs in sequences.values():
        assert seqs == sorted(set(seqs))
    # Without oversized drops every stream counts 1, 2, 3 ... on its own; flow and counter
    # samples of the same index (1..4) are separate streams.
    if builder.oversized == 0:
        for seqs in sequences.values():
            assert seqs == list(range(1, len(seqs) + 1))


def test_flow_and_counter_sequences_are_independent():
    builder = DatagramBuilder("192.0.2.1")
    for _ in range(3):
        builder.add(_sample_of(1, 7, 0))
    builder.add(_sample_of(1, 7, 1))
    samples = decode_datagram(builder.flush()).samples
    assert [(type(s).__name__, s.sequence) for s in samples] == [
        ("FlowSample", 1), ("FlowSample", 2), ("FlowSample", 3), ("CountersSample", 1)]


def test_builder_sequences_continue_across_datagrams():
    builder = DatagramBuilder("192.0.2.1", max_bytes=400)
    datagrams = [d for d in (builder.add(_sample_of(5, 1, 0)) for _ in range(10)) if d]
    datagrams.append(builder.flush())
    assert len(datagrams) > 3
    seqs = [s.sequence for d in datagrams for s in decode_datagram(d).samples]
    assert seqs == list(range(1, 11))
