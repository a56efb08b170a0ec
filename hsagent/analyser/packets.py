"""A flow sample's packet -> the fields flows are keyed on.

The sampled header (flow record 0:1) is parsed through Ethernet, 802.1Q/802.1ad tags, IPv4 or
IPv6 (with its extension headers) to TCP, UDP or ICMP. Unlike `hsagent.sflow.headers`, which
prints what sflowtool prints, this keeps binary values (addresses as packed bytes, so a flow
key is cheap to hash) and refuses a header that ends before the fields it promises: a
truncated header is skipped, never completed with guesses. Agents that send only the decoded
forms (records 0:3 and 0:4) are read from those.

Layouts: IEEE 802.3 and 802.1Q (Ethernet, tags), RFC 791 (IPv4), RFC 8200 (IPv6 and its
extension headers), RFC 4302 (AH), RFC 793, RFC 768, RFC 792 (TCP, UDP, ICMP), RFC 4443 (ICMPv6).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from ..sflow.headers import (ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
                             VLAN_ETHERTYPES)
from ..sflow.records import (HEADER_PROTOCOL_ETHERNET, HEADER_PROTOCOL_IPV4, HEADER_PROTOCOL_IPV6,
                             SampledHeader, SampledIpv4, SampledIpv6)

IPPROTO_ICMPV6 = 58
# IPv6 extension headers whose length is (octet 1 + 1) x 8: hop-by-hop, routing, destination
IPV6_OPTION_HEADERS = frozenset((0, 43, 60))
IPV6_FRAGMENT, IPV6_AH = 44, 51

_U16 = struct.Struct(">H")
_PORTS = struct.Struct(">HH")


class Packet(NamedTuple):
    """What a sampled packet is. Absent fields are None (an ICMP packet has no ports)."""

    frame_length: int  # bytes on the wire (the sFlow frame_length)
    src_mac: bytes | None = None
    dst_mac: bytes | None = None
    vlan: int | None = None  # the outermost tag's VLAN id
    ethertype: int | None = None
    src_ip: bytes | None = None  # packed: 4 bytes IPv4, 16 bytes IPv6
    dst_ip: bytes | None = None
    ip_protocol: int | None = None
    tos: int | None = None  # IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN)
    src_port: int | None = None  # TCP and UDP
    dst_port: int | None = None
    tcp_flags: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


FIELDS = Packet._fields[1:]  # what a flow may be keyed on


def field_text(name: str, value) -> str | int | None:
    """A key field as people read it: addresses in their usual notation, MACs in hex."""
    if value is None or isinstance(value, int):
        return value
    if name.endswith("_ip"):
        return str(ipaddress.ip_address(value))
    return value.hex()


def packet_of(records) -> Packet | None:
    """The packet a flow sample's records describe; None if there is none or it is truncated."""
    for record in records:
        if type(record) is SampledHeader:
            return parse_header(record.header_protocol, record.header, record.frame_length)
    for record in records:
        if type(record) in (SampledIpv4, SampledIpv6):
            return _from_decoded(record)
    return None


def parse_header(protocol: int, header: bytes, frame_length: int) -> Packet | None:
    """Parse a sampled header of that sFlow header_protocol; None when it cannot be trusted."""
    if protocol == HEADER_PROTOCOL_ETHERNET:
        return _ethernet(header, frame_length)
    if protocol == HEADER_PROTOCOL_IPV4:
        return _ipv4(header, 0, frame_length, {})
    if protocol == HEADER_PROTOCOL_IPV6:
        return _ipv6(header, 0, frame_length, {})
    return None


def _ethernet(buf: bytes, frame_length: int) -> Packet | None:
    if len(buf) < 14:
        return None
    fields = {"dst_mac": buf[0:6], "src_mac": buf[6:12]}
    ethertype, at = _U16.unpack_from(buf, 12)[0], 14
    while ethertype in VLAN_ETHERTYPES:  # the tag types sflowtool walks too
        if len(buf) < at + 4:
            return None
        fields.setdefault("vlan", _U16.unpack_from(buf, at)[0] & 0x0FFF)
        ethertype, at = _U16.unpack_from(buf, at + 2)[0], at + 4
    fields["ethertype"] = ethertype
    if ethertype == ETHERTYPE_IPV4:
        return _ipv4(buf, at, frame_length, fields)
    if ethertype == ETHERTYPE_IPV6:
        return _ipv6(buf, at, frame_length, fields)
    return Packet(frame_length, **fields)


def _ipv4(buf: bytes, at: int, frame_length: int, fields: dict) -> Packet | None:
    if len(buf) < at + 20 or buf[at] >> 4 != 4:
        return None
    header_length = (buf[at] & 15) * 4
    if header_length < 20 or len(buf) < at + header_length:
        return None
    protocol = buf[at + 9]
    fields.update(src_ip=buf[at + 12:at + 16], dst_ip=buf[at + 16:at + 20], ip_protocol=protocol,
                  tos=buf[at + 1])
    if _U16.unpack_from(buf, at + 6)[0] & 0x1FFF:  # a later fragment: no transport header
        return Packet(frame_length, **fields)
    return _transport(buf, at + header_length, protocol, frame_length, fields)


def _ipv6(buf: bytes, at: int, frame_length: int, fields: dict) -> Packet | None:
    if len(buf) < at + 40 or buf[at] >> 4 != 6:
        return None
    fields.update(src_ip=buf[at + 8:at + 24], dst_ip=buf[at + 24:at + 40],
                  tos=((buf[at] & 15) << 4) | (buf[at + 1] >> 4))
    protocol, at = buf[at + 6], at + 40
    while protocol in IPV6_OPTION_HEADERS or protocol in (IPV6_FRAGMENT, IPV6_AH):
        if len(buf) < at + 8:
            return None
        if protocol == IPV6_FRAGMENT:
            if _U16.unpack_from(buf, at + 2)[0] & 0xFFF8:  # a later fragment
                fields["ip_protocol"] = buf[at]
                return Packet(frame_length, **fields)
            length = 8
        elif protocol == IPV6_AH:
            length = (buf[at + 1] + 2) * 4
        else:
            length = (buf[at + 1] + 1) * 8
        protocol, at = buf[at], at + length
    fields["ip_protocol"] = protocol
    return _transport(buf, at, protocol, frame_length, fields)


def _transport(buf: bytes, at: int, protocol: int, frame_length: int, fields: dict) -> Packet | None:
    if protocol == IPPROTO_TCP:
        if len(buf) < at + 14:
            return None
        fields["src_port"], fields["dst_port"] = _PORTS.unpack_from(buf, at)
        fields["tcp_flags"] = buf[at + 13]
    elif protocol == IPPROTO_UDP:
        if len(buf) < at + 4:
            return None
        fields["src_port"], fields["dst_port"] = _PORTS.unpack_from(buf, at)
    elif protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if len(buf) < at + 2:
            return None
        fields["icmp_type"], fields["icmp_code"] = buf[at], buf[at + 1]
    return Packet(frame_length, **fields)


def _from_decoded(record) -> Packet:
    """Records 0:3 / 0:4: the agent parsed the packet itself (ports are 0 when not TCP/UDP)."""
    has_ports = record.protocol in (IPPROTO_TCP, IPPROTO_UDP)
    tos = record.tos if type(record) is SampledIpv4 else record.priority
    return Packet(record.length, ethertype=ETHERTYPE_IPV4 if type(record) is SampledIpv4
                  else ETHERTYPE_IPV6, src_ip=record.src_ip, dst_ip=record.dst_ip,
                  ip_protocol=record.protocol, tos=tos,
                  src_port=record.src_port if has_ports else None,
                  dst_port=record.dst_port if has_ports else None,
                  tcp_flags=record.tcp_flags if record.protocol == IPPROTO_TCP else None)
