"""sFlow v5 datagrams and samples: encoding, decoding and the size-capped datagram builder.

Samples are kept in one logical form whatever their wire form: the encoder uses the compact
formats (0:1, 0:2) and switches to the expanded ones (0:3, 0:4) by itself when a data-source
index does not fit in 24 bits or an interface value not in 30 (or when `expanded` is set).
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import time
from typing import NamedTuple, Union

from .records import COUNTER_RECORDS, FLOW_RECORDS, tag_text
from .xdr import U32, U32_MAX, DecodeError, Struct

log = logging.getLogger(__name__)

SFLOW_VERSION = 5
ADDRESS_IPV4, ADDRESS_IPV6 = 1, 2

# data_format of the four sample types (enterprise 0)
FLOW_SAMPLE, COUNTERS_SAMPLE, FLOW_SAMPLE_EXPANDED, COUNTERS_SAMPLE_EXPANDED = 1, 2, 3, 4

# Data-source classes (sFlow v5 sflow_data_source: the top 8 bits of source_id)
DS_IFINDEX, DS_VLAN, DS_PHYSICAL, DS_LOGICAL = 0, 1, 2, 3

# Interface encoding in flow samples (sFlow v5 interface: the format in the top 2 bits)
IF_FORMAT_IFINDEX, IF_FORMAT_DISCARDED, IF_FORMAT_MULTIPLE = 0, 1, 2
IF_INTERNAL = 0x3FFFFFFF  # "the host itself": originated by it (input) or delivered to it (output)


class Interface(NamedTuple):
    """Input or output port of a sampled packet: format (bits 31-30 compact) and value."""

    format: int = IF_FORMAT_IFINDEX
    value: int = 0  # ifIndex; 0 = unknown

    def compact(self) -> int:
        return (self.format << 30) | self.value


UNKNOWN_INTERFACE = Interface()
INTERNAL_INTERFACE = Interface(IF_FORMAT_IFINDEX, IF_INTERNAL)


class FlowSample(NamedTuple):
    ds_class: int
    ds_index: int
    sampling_rate: int
    sample_pool: int
    drops: int
    input: Interface
    output: Interface
    records: list
    sequence: int = 0  # stamped by DatagramBuilder.add
    expanded: bool = False


class CountersSample(NamedTuple):
    ds_class: int
    ds_index: int
    records: list
    sequence: int = 0  # stamped by DatagramBuilder.add
    expanded: bool = False


class UnknownSample(NamedTuple):
    """A sample type we do not decode, kept as its raw body."""

    tag: int
    data: bytes


class UnknownRecord(NamedTuple):
    """A flow or counter record we do not decode, kept as its raw body."""

    tag: int
    data: bytes


Sample = Union[FlowSample, CountersSample, UnknownSample]


class Datagram(NamedTuple):
    agent: ipaddress.IPv4Address | ipaddress.IPv6Address
    sub_agent_id: int
    sequence: int
    uptime: int  # ms
    samples: list
    version: int = SFLOW_VERSION


# Wire layouts of the sample headers; the records array follows each of them.
FLOW_SAMPLE_HEADER = Struct("flow_sample", [
    ("sequence", U32, "sampleSequenceNo"),
    ("source_id", U32, "sourceId"),  # ds_class << 24 | ds_index
    ("sampling_rate", U32, "meanSkipCount"),
    ("sample_pool", U32, "samplePool"),
    ("drops", U32, "dropEvents"),
    ("input", U32, "inputPort"),  # format << 30 | value
    ("output", U32, "outputPort"),
])
FLOW_SAMPLE_EXPANDED_HEADER = Struct("flow_sample_expanded", [
    ("sequence", U32, "sampleSequenceNo"),
    ("ds_class", U32, "sourceId"),
    ("ds_index", U32, "sourceId"),
    ("sampling_rate", U32, "meanSkipCount"),
    ("sample_pool", U32, "samplePool"),
    ("drops", U32, "dropEvents"),
    ("input_format", U32, "inputPort"),
    ("input_value", U32, "inputPort"),
    ("output_format", U32, "outputPort"),
    ("output_value", U32, "outputPort"),
])
COUNTERS_SAMPLE_HEADER = Struct("counters_sample", [
    ("sequence", U32, "sampleSequenceNo"),
    ("source_id", U32, "sourceId"),
])
COUNTERS_SAMPLE_EXPANDED_HEADER = Struct("counters_sample_expanded", [
    ("sequence", U32, "sampleSequenceNo"),
    ("ds_class", U32, "sourceId"),
    ("ds_index", U32, "sourceId"),
])

_U32 = struct.Struct(">I")
_TLV = struct.Struct(">II")  # data_format, length
_HEADER_V4 = struct.Struct(">II4sIIII")  # version, type, address, sub-agent, seq, uptime, count
_HEADER_V6 = struct.Struct(">II16sIIII")
# the agent address's IP version -> (its address type on the wire, the header layout)
_HEADERS = {4: (ADDRESS_IPV4, _HEADER_V4), 6: (ADDRESS_IPV6, _HEADER_V6)}


# --- encoding ------------------------------------------------------------------------------

def encode_record(record) -> bytes:
    if isinstance(record, UnknownRecord):
        tag, body = record.tag, record.data
    else:
        tag, body = record.spec.tag, record.spec.pack(record)
    return _TLV.pack(tag, len(body)) + body


def _encode_records(records) -> bytes:
    return _U32.pack(len(records)) + b"".join(encode_record(r) for r in records)


def _needs_expanded(sample) -> bool:
    if sample.expanded or sample.ds_index > 0xFFFFFF or sample.ds_class > 0xFF:
        return True
    if isinstance(sample, FlowSample):
        return sample.input.value > IF_INTERNAL or sample.output.value > IF_INTERNAL
    return False


def encode_sample(sample: Sample) -> bytes:
    if isinstance(sample, UnknownSample):
        return _TLV.pack(sample.tag, len(sample.data)) + sample.data
    expanded = _needs_expanded(sample)
    source_id = (sample.ds_class << 24) | sample.ds_index
    if isinstance(sample, FlowSample):
        if expanded:
            tag, head = FLOW_SAMPLE_EXPANDED, FLOW_SAMPLE_EXPANDED_HEADER.pack((
                sample.sequence, sample.ds_class, sample.ds_index, sample.sampling_rate,
                sample.sample_pool, sample.drops, *sample.input, *sample.output))
        else:
            tag, head = FLOW_SAMPLE, FLOW_SAMPLE_HEADER.pack((
                sample.sequence, source_id, sample.sampling_rate, sample.sample_pool,
                sample.drops, sample.input.compact(), sample.output.compact()))
    elif expanded:
        tag, head = COUNTERS_SAMPLE_EXPANDED, COUNTERS_SAMPLE_EXPANDED_HEADER.pack(
            (sample.sequence, sample.ds_class, sample.ds_index))
    else:
        tag, head = COUNTERS_SAMPLE, COUNTERS_SAMPLE_HEADER.pack((sample.sequence, source_id))
    body = head + _encode_records(sample.records)
    return _TLV.pack(tag, len(body)) + body


def _encode_header(agent, sub_agent_id: int, sequence: int, uptime: int, count: int) -> bytes:
    address_type, layout = _HEADERS[agent.version]
    return layout.pack(SFLOW_VERSION, address_type, agent.packed, sub_agent_id, sequence,
                       uptime & U32_MAX, count)


def encode_datagram(datagram: Datagram) -> bytes:
    samples = [encode_sample(s) for s in datagram.samples]
    return _encode_header(datagram.agent, datagram.sub_agent_id, datagram.sequence,
                          datagram.uptime, len(samples)) + b"".join(samples)


# --- decoding ------------------------------------------------------------------------------

def _read_u32(buf, off: int, end: int, what: str) -> int:
    if off + 4 > end:
        raise DecodeError(off, f"{what} runs past the end ({end - off} bytes left)")
    return _U32.unpack_from(buf, off)[0]


def _tlv(buf, off: int, end: int, what: str) -> tuple[int, int, int]:
    """Read data_format and length at `off`; returns (tag, body start, body end)."""
    if off + 8 > end:
        raise DecodeError(off, f"{what} header runs past the end ({end - off} bytes left)")
    tag, length = _TLV.unpack_from(buf, off)
    body_end = off + 8 + length
    if body_end > end:
        raise DecodeError(off, f"{what} {tag_text(tag)} claims {length} bytes, {end - off - 8} left")
    if length % 4:
        raise DecodeError(off, f"{what} {tag_text(tag)} length {length} is not a multiple of 4")
    return tag, off + 8, body_end


def _decode_records(buf, off: int, end: int, registry) -> list:
    count = _read_u32(buf, off, end, "record count")
    off += 4
    if count * 8 > end - off:
        raise DecodeError(off - 4, f"{count} records cannot fit in {end - off} bytes")
    records = []
    for _ in range(count):
        tag, start, stop = _tlv(buf, off, end, "record")
        spec = registry.get(tag)
        if spec is None:
            records.append(UnknownRecord(tag, bytes(buf[start:stop])))
        else:
            records.append(spec.unpack(buf, start, stop)[0])  # a longer body grew at the end
        off = stop
    if off != end:
        raise DecodeError(off, f"{end - off} bytes left over after the last record")
    return records


def _decode_sample(buf, tag: int, start: int, end: int) -> Sample:
    if tag == FLOW_SAMPLE:
        h, off = FLOW_SAMPLE_HEADER.unpack(buf, start, end)
        return FlowSample(h.source_id >> 24, h.source_id & 0xFFFFFF, h.sampling_rate,
                          h.sample_pool, h.drops, Interface(h.input >> 30, h.input & IF_INTERNAL),
                          Interface(h.output >> 30, h.output & IF_INTERNAL),
                          _decode_records(buf, off, end, FLOW_RECORDS), h.sequence, False)
    if tag == FLOW_SAMPLE_EXPANDED:
        h, off = FLOW_SAMPLE_EXPANDED_HEADER.unpack(buf, start, end)
        return FlowSample(h.ds_class, h.ds_index, h.sampling_rate, h.sample_pool, h.drops,
                          Interface(h.input_format, h.input_value),
                          Interface(h.output_format, h.output_value),
                          _decode_records(buf, off, end, FLOW_RECORDS), h.sequence, True)
    if tag == COUNTERS_SAMPLE:
        h, off = COUNTERS_SAMPLE_HEADER.unpack(buf, start, end)
        return CountersSample(h.source_id >> 24, h.source_id & 0xFFFFFF,
                              _decode_records(buf, off, end, COUNTER_RECORDS), h.sequence, False)
    if tag == COUNTERS_SAMPLE_EXPANDED:
        h, off = COUNTERS_SAMPLE_EXPANDED_HEADER.unpack(buf, start, end)
        return CountersSample(h.ds_class, h.ds_index,
                              _decode_records(buf, off, end, COUNTER_RECORDS), h.sequence, True)
    return UnknownSample(tag, bytes(buf[start:end]))


def decode_datagram(buf: bytes) -> Datagram:
    """Decode one UDP payload. Raises DecodeError (naming the offset) on any malformed input."""
    end = len(buf)
    version = _read_u32(buf, 0, end, "version")
    if version != SFLOW_VERSION:
        raise DecodeError(0, f"sFlow version {version}, only version 5 is supported")
    address_type = _read_u32(buf, 4, end, "agent address type")
    if address_type == ADDRESS_IPV4:
        layout = _HEADER_V4
    elif address_type == ADDRESS_IPV6:
        layout = _HEADER_V6
    else:
        raise DecodeError(4, f"unknown agent address type {address_type}")
    if layout.size > end:
        raise DecodeError(0, f"datagram header needs {layout.size} bytes, got {end}")
    _, _, address, sub_agent_id, sequence, uptime, count = layout.unpack_from(buf, 0)
    off = layout.size
    if count * 8 > end - off:
        raise DecodeError(off - 4, f"{count} samples cannot fit in {end - off} bytes")
    samples = []
    for _ in range(count):
        tag, start, stop = _tlv(buf, off, end, "sample")
        samples.append(_decode_sample(buf, tag, start, stop))
        off = stop
    if off != end:
        raise DecodeError(off, f"{end - off} bytes left over after the last sample")
    return Datagram(ipaddress.ip_address(address), sub_agent_id, sequence, uptime, samples, version)


# --- building datagrams --------------------------------------------------------------------

class DatagramBuilder:
    """Packs samples into datagrams of at most `max_bytes`, never splitting a sample.

    Owns the sequence numbers: one per datagram stream and one per data source and sample
    kind (flow samples count apart from counter samples). `add` returns the datagram that
    had to be closed to make room, if any; `flush` closes the one in progress.
    """

    def __init__(self, agent, sub_agent_id: int = 0, max_bytes: int = 1400, clock=time.monotonic):
        self.agent = ipaddress.ip_address(agent)
        self.sub_agent_id = sub_agent_id
        self.max_bytes = max_bytes
        self._clock = clock
        self._started = clock()
        self.sequence = 0
        self._sample_sequences: dict[tuple, int] = {}
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.oversized = 0  # samples dropped because they could never fit

    def set_agent(self, agent) -> None:
        """Identify as another address from the next datagram on (flush the pending one first)."""
        self.agent = ipaddress.ip_address(agent)

    def _header_size(self) -> int:
        return _HEADERS[self.agent.version][1].size

    def next_sample_sequence(self, sample) -> int:
        key = (type(sample), sample.ds_class, sample.ds_index)
        seq = (self._sample_sequences.get(key, 0) + 1) & U32_MAX
        self._sample_sequences[key] = seq
        return seq

    def reset_sample_sequence(self, sample_type, ds_class: int, ds_index: int) -> None:
        """Restart a data source's numbering: its counters (or sample pool) start afresh."""
        self._sample_sequences.pop((sample_type, ds_class, ds_index), None)

    def add(self, sample: FlowSample | CountersSample) -> bytes | None:
        data = encode_sample(sample._replace(sequence=self.next_sample_sequence(sample)))
        if self._header_size() + len(data) > self.max_bytes:
            self.oversized += 1
            log.warning("dropped a %d-byte sample of %d:%d: it cannot fit in %d-byte datagrams",
                        len(data), sample.ds_class, sample.ds_index, self.max_bytes)
            return None
        done = None
        if self._header_size() + self._pending_bytes + len(data) > self.max_bytes:
            done = self.flush()
        self._pending.append(data)
        self._pending_bytes += len(data)
        return done

    def flush(self) -> bytes | None:
        if not self._pending:
            return None
        self.sequence = (self.sequence + 1) & U32_MAX
        uptime = int((self._clock() - self._started) * 1000)
        header = _encode_header(self.agent, self.sub_agent_id, self.sequence, uptime,
                                len(self._pending))
        datagram = header + b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return datagram
