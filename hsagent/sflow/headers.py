"""Decoding of sampled packet headers (flow record 0:1), key for key as sflowtool prints it.

`decode_header` returns (key, value) pairs in sflowtool's order; a pair with key None is one of
sflowtool's raw lines (NO_DECODE ..., header decode error ...). It never raises: a header that
is cut short simply ends the decode where sflowtool would stop.

Where sflowtool reads a few bytes past the end of the header (it reads on into the datagram),
we read zeros: the bytes that follow a header on the wire are usually its XDR padding.
"""

from __future__ import annotations

import ipaddress

from .records import HEADER_PROTOCOL_ETHERNET, HEADER_PROTOCOL_IPV4, HEADER_PROTOCOL_IPV6

ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
VLAN_ETHERTYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200, 0x9300))
IPX_ETHERTYPES = frozenset((0x0200, 0x0201, 0x0600))
MAX_8023_LENGTH = 1500
IPV6_EXTENSION_HEADERS = frozenset((0, 43, 44, 51, 60))  # hop, routing, fragment, auth, dst opts
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
# Header protocols sflowtool names but does not decode; others print "UNKNOWN".
NO_DECODE_PROTOCOLS = frozenset((2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 16, 17))
IEEE80211_MAC = 15
OVERREAD = 64  # zero bytes appended so reads past the end need no bounds checks


def decode_header(protocol: int, header: bytes, frame_length: int, stripped: int) -> list[tuple]:
    """Decode `header` (the sampled bytes) as sflowtool does; returns [(key, value), ...]."""
    out: list[tuple] = []
    end = len(header)
    buf = bytes(header) + bytes(OVERREAD)
    ipv4_at = ipv6_at = None
    if protocol == HEADER_PROTOCOL_ETHERNET:
        ipv4_at, ipv6_at = _ethernet(buf, end, out)
    elif protocol == HEADER_PROTOCOL_IPV4:
        ipv4_at = 0
    elif protocol == HEADER_PROTOCOL_IPV6:
        ipv6_at = 0
    elif protocol == IEEE80211_MAC:
        _ieee80211(buf, end, out)
    elif protocol in NO_DECODE_PROTOCOLS:
        out.append((None, f"NO_DECODE headerProtocol={protocol}"))
    else:
        out.append((None, f"UNKNOWN headerProtocol={protocol}"))
    if ipv4_at is not None:
        out.append(("IPSize", _signed32(frame_length - stripped - ipv4_at)))
        _ipv4(buf, ipv4_at, end, out)
    elif ipv6_at is not None:
        out.append(("IPSize", _signed32(frame_length - stripped - ipv6_at)))
        _ipv6(buf, ipv6_at, end, out)
    return out


def _signed32(n: int) -> int:
    """sflowtool computes IPSize in unsigned 32 bits and prints it with %d."""
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


def _u16(buf: bytes, at: int) -> int:
    return (buf[at] << 8) | buf[at + 1]


def _ethernet(buf: bytes, end: int, out: list) -> tuple[int | None, int | None]:
    """Ethernet II / 802.3 with VLAN tags; returns the offset of an IPv4 or IPv6 header found."""
    if end < 14:
        return None, None
    out.append(("dstMAC", buf[0:6].hex()))
    out.append(("srcMAC", buf[6:12].hex()))
    ethertype, at, depth = _u16(buf, 12), 14, 0
    while ethertype in VLAN_ETHERTYPES:
        if end - at < 4:
            return None, None
        tci = _u16(buf, at)
        suffix = f".{depth}" if depth else ""
        out.append(("decodedVLAN" + suffix, tci & 0x0FFF))
        out.append(("decodedPriority" + suffix, tci >> 13))
        depth += 1
        ethertype, at = _u16(buf, at + 2), at + 4
    if end < 20:
        return None, None
    if ethertype in IPX_ETHERTYPES and buf[at] == buf[at + 1] == 0xFF:
        if 30 <= _u16(buf, at + 2) <= 576:  # IPX: nothing more to print
            return None, None
    if ethertype <= MAX_8023_LENGTH:  # 802.3 length: look for LLC/SNAP
        if buf[at:at + 3] == b"\xaa\xaa\x03":
            oui = buf[at + 3:at + 6]
            if oui != b"\0\0\0":
                out.append(("VSNAP_OUI", "-".join(f"{b:02X}" for b in oui)))
                return None, None
            ethertype, at = _u16(buf, at + 6), at + 8
        elif buf[at] == buf[at + 1] == 0x06 and buf[at + 2] & 1:  # IP over 802.2
            ethertype, at = ETHERTYPE_IPV4, at + 3
        else:
            return None, None
    out.append(("ethernet_type", ethertype))
    if ethertype == ETHERTYPE_IPV4 and end - at >= 20 and buf[at] >> 4 == 4 and buf[at] & 15 >= 5:
        return at, None
    if ethertype == ETHERTYPE_IPV6 and buf[at] >> 4 == 6:
        return None, at
    return None, None


def _ieee80211(buf: bytes, end: int, out: list) -> None:
    if end < 24:
        return
    fc = buf[0] | (buf[1] << 8)
    if (fc >> 2) & 3 != 2:  # only data frames carry addresses sflowtool prints
        return
    to_ds, from_ds = (fc >> 8) & 1, (fc >> 9) & 1
    addr1, addr2, addr3, addr4 = buf[4:10], buf[10:16], buf[16:22], buf[24:30]
    if to_ds:
        dst, src = addr3, (addr4 if from_ds else addr2)
    else:
        dst, src = addr1, (addr3 if from_ds else addr2)
    out += [("srcMAC", src.hex()), ("dstMAC", dst.hex()), ("txMAC", addr2.hex()),
            ("rxMAC", addr1.hex())]


def _ipv4(buf: bytes, at: int, end: int, out: list) -> None:
    if end - at < 20:
        return
    out += [
        ("ip.tot_len", _u16(buf, at + 2)),
        ("srcIP", str(ipaddress.IPv4Address(buf[at + 12:at + 16]))),
        ("dstIP", str(ipaddress.IPv4Address(buf[at + 16:at + 20]))),
        ("IPProtocol", buf[at + 9]),
        ("IPTOS", buf[at + 1]),
        ("IPTTL", buf[at + 8]),
        # sflowtool prints the identification field without ntohs: little-endian byte order.
        ("IPID", buf[at + 4] | (buf[at + 5] << 8)),
    ]
    fragment_offset = _u16(buf, at + 6) & 0x1FFF
    if fragment_offset:
        out.append(("IPFragmentOffset", fragment_offset))
        return
    header_bytes = (buf[at] & 15) * 4
    if end - at < header_bytes:
        return
    _layer4(buf, buf[at + 9], at + header_bytes, end, out)


def _ipv6(buf: bytes, at: int, end: int, out: list) -> None:
    if end - at < 40:
        return
    version = buf[at] >> 4
    if version != 6:
        out.append((None, f"header decode error: unexpected IP version: {version}"))
        return
    payload_length = _u16(buf, at + 4)
    out += [
        ("IPTOS", ((buf[at] & 15) << 4) | (buf[at + 1] >> 4)),
        ("IP6_label", f"0x{((buf[at + 1] & 15) << 16) | _u16(buf, at + 2):x}"),
        ("IPV6_payloadLen", payload_length or "<jumbo>"),
        ("IPTTL", buf[at + 7]),
        ("srcIP6", buf[at + 8:at + 24].hex(":", 2)),
        ("dstIP6", buf[at + 24:at + 40].hex(":", 2)),
    ]
    next_header, at = buf[at + 6], at + 40
    while next_header in IPV6_EXTENSION_HEADERS:
        out.append(("IP6HeaderExtension", next_header))
        # sflowtool advances 2 bytes short of the extension's length; we follow it.
        next_header, at = buf[at], at + 8 * (buf[at + 1] + 1) - 2
        if at > end:
            return
    out.append(("IPProtocol", next_header))
    _layer4(buf, next_header, at, end, out)


def _layer4(buf: bytes, protocol: int, at: int, end: int, out: list) -> None:
    if at > end - 8:
        return
    if protocol == IPPROTO_ICMP:
        out += [("ICMPType", buf[at]), ("ICMPCode", buf[at + 1])]
    elif protocol == IPPROTO_TCP:
        out += [("TCPSrcPort", _u16(buf, at)), ("TCPDstPort", _u16(buf, at + 2)),
                ("TCPFlags", buf[at + 13])]
    elif protocol == IPPROTO_UDP:
        out += [("UDPSrcPort", _u16(buf, at)), ("UDPDstPort", _u16(buf, at + 2)),
                ("UDPBytes", _u16(buf, at + 4))]
