"""Sampled packet -> FlowSample, the one place every sampler builds its samples.

Conventions (reference sections 2.7 and 3.1):
- An Ethernet frame is reported as header protocol 1 with the 4-byte FCS, which the kernel
  never shows us, added to frame_length and counted as stripped.
- A packet known only from its IP header on is reported as protocol 11/12; an Ethernet
  header is assumed to have been stripped as well, so stripped = 4 + 14.
- Host model: a packet this host transmits comes from "internal" and leaves by the sampled
  interface; a received one enters by the interface and is delivered to "internal".
"""

from __future__ import annotations

import struct

from ..sflow.datagram import (
    DS_IFINDEX,
    INTERNAL_INTERFACE,
    UNKNOWN_INTERFACE,
    FlowSample,
    Interface,
)
from ..sflow.records import (
    HEADER_PROTOCOL_ETHERNET,
    HEADER_PROTOCOL_IPV4,
    HEADER_PROTOCOL_IPV6,
    SampledHeader,
)

FCS_BYTES = 4
ETHERNET_HEADER_BYTES = 14

# sll_pkttype values (linux/if_packet.h)
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = 0, 1, 2, 3, 4

_IPV4_TOTAL_LENGTH = struct.Struct(">H")


def ethernet_header(frame: bytes, length: int, header_bytes: int) -> SampledHeader:
    """An Ethernet frame of `length` bytes (without FCS) of which `frame` was captured."""
    return SampledHeader(HEADER_PROTOCOL_ETHERNET, length + FCS_BYTES, FCS_BYTES,
                         bytes(frame[:header_bytes]))


def ip_length(packet: bytes) -> int | None:
    """Length of the IP packet starting at `packet`, from its own header; None if not IP."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 4:
        return _IPV4_TOTAL_LENGTH.unpack_from(packet, 2)[0]
    if version == 6 and len(packet) >= 6:
        return 40 + _IPV4_TOTAL_LENGTH.unpack_from(packet, 4)[0]  # fixed header + payload length
    return None


def ip_header(packet: bytes, header_bytes: int) -> SampledHeader | None:
    """A packet that starts at its IPv4/IPv6 header; None when it is neither."""
    length = ip_length(packet)
    if length is None:
        return None
    protocol = HEADER_PROTOCOL_IPV4 if packet[0] >> 4 == 4 else HEADER_PROTOCOL_IPV6
    stripped = FCS_BYTES + ETHERNET_HEADER_BYTES
    return SampledHeader(protocol, length + stripped, stripped, bytes(packet[:header_bytes]))


def host_interfaces(ifindex: int, pkttype: int) -> tuple[Interface, Interface]:
    """(input, output) of a packet seen on interface `ifindex` of this host."""
    port = Interface(0, ifindex)
    if pkttype == PACKET_OUTGOING:
        return INTERNAL_INTERFACE, port
    if pkttype == PACKET_OTHERHOST:
        return port, UNKNOWN_INTERFACE  # seen in promiscuous mode, not delivered to this host
    return port, INTERNAL_INTERFACE


def ifindex_interface(ifindex: int) -> Interface:
    """An ifIndex reported by the kernel; 0 stays "unknown"."""
    return Interface(0, ifindex) if ifindex else UNKNOWN_INTERFACE


def flow_sample(ds_index: int, rate: int, pool: int, drops: int, input: Interface,
                output: Interface, header: SampledHeader) -> FlowSample:
    """The flow sample of one packet sampled on data source 0:ds_index."""
    return FlowSample(DS_IFINDEX, ds_index, rate, pool & 0xFFFFFFFF, drops & 0xFFFFFFFF,
                      input, output, [header])


class SampleCounts:
    """sample_pool and drops of a sampler whose kernel reports only the sampled packets.

    The pool of each data source grows by the rate per sample (hsflowd's approximation, as
    the kernel does not say how many packets it skipped); drops are the gaps in the
    sequence numbers the kernel stamps on its messages (32-bit, wrapping).
    """

    def __init__(self):
        self.drops = 0
        self._pools: dict[int, int] = {}
        self._last_seq: int | None = None

    def data_sources(self) -> set[int]:
        """The ifIndexes sampled so far."""
        return set(self._pools)

    def count(self, ds_index: int, rate: int, seq: int | None) -> tuple[int, int]:
        """(sample_pool, drops) for a sample of data source 0:ds_index."""
        if seq is not None and self._last_seq is not None:
            self.drops += (seq - self._last_seq - 1) & 0xFFFFFFFF
        self._last_seq = seq
        pool = self._pools[ds_index] = self._pools.get(ds_index, 0) + rate
        return pool, self.drops
