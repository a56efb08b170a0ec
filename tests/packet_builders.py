"""Packets built by hand, field by field (RFC 791, 8200, 768, 793), for the analyser's and the
controller's tests."""

from __future__ import annotations

import ipaddress
import struct

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def udp(sport, dport, payload=b""):
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport, dport, flags=0x18):
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 2, 5 << 4, flags, 1000, 0, 0)


def ipv4(src, dst, proto, payload, tos=0, fragment_offset=0):
    return struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), 1, fragment_offset, 64,
                       proto, 0, ipaddress.ip_address(src).packed,
                       ipaddress.ip_address(dst).packed) + payload


def ipv6(src, dst, proto, payload, tclass=0):
    first = (6 << 28) | (tclass << 20)
    return struct.pack(">IHBB16s16s", first, len(payload), proto, 64,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed) + payload


def ethernet(payload, ethertype, vlans=()):
    tags = b"".join(struct.pack(">HH", 0x8100, vid) for vid in vlans)
    return MAC_B + MAC_A + tags + struct.pack(">H", ethertype) + payload
