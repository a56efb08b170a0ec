"""Classic pcap files of sFlow datagrams: reading UDP payloads out, writing them in.

Reading accepts Ethernet (with 802.1Q tags), Linux cooked (SLL) and raw-IP link types,
IPv4 and IPv6, UDP on any port, either byte order, micro- or nanosecond timestamps.
Writing produces Ethernet/IPv4/UDP frames that tshark and sflowtool read as sFlow.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from typing import BinaryIO, Iterator, NamedTuple

MAGIC_US, MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6 = 1, 101, 113, 228, 229
ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
IPPROTO_UDP = 17
# libpcap's own ceiling on a record (MAXIMUM_SNAPLEN): a bigger captured length is a
# corrupt or hostile file, and trusting it would allocate up to 4 GiB.
MAX_RECORD_BYTES = 262144


class PcapError(ValueError):
    pass


class UdpPacket(NamedTuple):
    timestamp: float  # seconds since the epoch, from the capture
    src: str
    dst: str
    src_port: int
    dst_port: int
    payload: bytes


def read_udp(stream: BinaryIO) -> Iterator[UdpPacket]:
    """Yield every UDP packet of a classic pcap stream; other packets are skipped."""
    head = stream.read(24)
    if len(head) < 24:
        raise PcapError("not a pcap file: shorter than the 24-byte file header")
    for order in "<>":
        magic, _, _, _, _, _, linktype = struct.unpack(order + "IHHiIII", head)
        if magic in (MAGIC_US, MAGIC_NS):
            break
    else:
        raise PcapError(f"not a classic pcap file (magic {head[:4].hex()}; pcapng is not supported)")
    fraction = 1e-9 if magic == MAGIC_NS else 1e-6
    record = struct.Struct(order + "IIII")
    for number in itertools.count(1):
        at = stream.tell() if stream.seekable() else None
        rec = stream.read(record.size)
        if len(rec) < record.size:
            return
        seconds, frac, caplen, _ = record.unpack(rec)
        where = f"record {number}" + (f" (byte {at})" if at is not None else "")
        if caplen > MAX_RECORD_BYTES:
            raise PcapError(f"{where}: captured length {caplen} is over the "
                            f"{MAX_RECORD_BYTES}-byte maximum")
        frame = stream.read(caplen)
        if len(frame) < caplen:
            raise PcapError(f"{where}: the file ends in the middle of the packet")
        packet = _udp_from_frame(frame, linktype, seconds + frac * fraction)
        if packet is not None:
            yield packet


def _udp_from_frame(frame: bytes, linktype: int, timestamp: float) -> UdpPacket | None:
    if linktype == LINKTYPE_ETHERNET:
        off, ethertype = 12, None
        while off + 2 <= len(frame):
            ethertype = int.from_bytes(frame[off:off + 2], "big")
            off += 2
            if ethertype not in (ETH_P_8021Q, ETH_P_8021AD):
                break
            off += 2  # skip the tag's priority/VLAN id
        return _udp_from_ip(frame, off, ethertype, timestamp)
    if linktype == LINKTYPE_LINUX_SLL and len(frame) >= 16:
        return _udp_from_ip(frame, 16, int.from_bytes(frame[14:16], "big"), timestamp)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) and frame:
        version = frame[0] >> 4
        return _udp_from_ip(frame, 0, ETH_P_IP if version == 4 else ETH_P_IPV6, timestamp)
    return None


def _udp_from_ip(frame: bytes, off: int, ethertype, timestamp: float) -> UdpPacket | None:
    if ethertype == ETH_P_IP and len(frame) >= off + 20:
        ihl = (frame[off] & 0x0F) * 4
        if frame[off + 9] != IPPROTO_UDP or struct.unpack_from(">H", frame, off + 6)[0] & 0x1FFF:
            return None  # not UDP, or a non-first fragment
        src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
        off += ihl
    elif ethertype == ETH_P_IPV6 and len(frame) >= off + 40:
        if frame[off + 6] != IPPROTO_UDP:
            return None
        src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
        off += 40
    else:
        return None
    if len(frame) < off + 8:
        return None
    src_port, dst_port, length = struct.unpack_from(">HHH", frame, off)
    payload = frame[off + 8:off + max(length, 8)]
    return UdpPacket(timestamp, str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)),
                     src_port, dst_port, payload)


def write_udp(stream: BinaryIO, payloads, dst_port: int = 6343, timestamp: float = 0.0) -> None:
    """Write each payload as an Ethernet/IPv4/UDP frame 127.0.0.1:6343 -> 127.0.0.1:dst_port."""
    stream.write(struct.pack("<IHHiIII", MAGIC_US, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
    for payload in payloads:
        udp = struct.pack(">HHHH", 6343, dst_port, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, IPPROTO_UDP, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        ip = ip[:10] + struct.pack(">H", _ip_checksum(ip)) + ip[12:]
        frame = b"\x00" * 12 + struct.pack(">H", ETH_P_IP) + ip + udp
        seconds = int(timestamp)
        stream.write(struct.pack("<IIII", seconds, int((timestamp - seconds) * 1e6),
                                 len(frame), len(frame)))
        stream.write(frame)


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
