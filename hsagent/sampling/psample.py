"""Sampling through the kernel's psample channel (tc `sample` action, switch ASIC drivers).

Whoever configured the sampling (e.g. `tc filter ... action sample rate N group G`) decides
the rate; every sampled packet arrives as a PSAMPLE_CMD_SAMPLE message on the "packets"
multicast group of the "psample" generic netlink family, carrying its group, the rate, the
original size, the input/output ifIndex and the Ethernet frame (truncated by the sampler).
sample_pool grows by the rate per sample; drops are the gaps in the group's sequence numbers.

The family and group ids are resolved with pyroute2; reading and parsing is plain bytes.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from ..netlink import attributes, messages, pending_datagrams, set_receive_buffer
from . import Wanted, flows

FAMILY_NAME, MULTICAST_GROUP = "psample", "packets"
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
GENL_HEADER = struct.Struct("=BBH")  # cmd, version, reserved

# linux/psample.h
PSAMPLE_CMD_SAMPLE = 0
(PSAMPLE_ATTR_IIFINDEX, PSAMPLE_ATTR_OIFINDEX, PSAMPLE_ATTR_ORIGSIZE, PSAMPLE_ATTR_SAMPLE_GROUP,
 PSAMPLE_ATTR_GROUP_SEQ, PSAMPLE_ATTR_SAMPLE_RATE, PSAMPLE_ATTR_DATA) = range(7)

DEFAULT_RCVBUF = 4 << 20
DEFAULT_BATCH = 1000
RECEIVE_SIZE = 65536

_U16, _U32 = struct.Struct("=H"), struct.Struct("=I")


class PsampleUnavailable(OSError):
    """The kernel has no psample generic netlink family (CONFIG_PSAMPLE off, module not loaded)."""


class PsamplePacket(NamedTuple):
    group: int
    seq: int | None
    rate: int
    iifindex: int  # 0 = none
    oifindex: int
    origsize: int  # frame length without FCS
    data: bytes  # the Ethernet frame, possibly truncated


def parse_sample(payload) -> PsamplePacket | None:
    """A generic netlink message body (after the netlink header); None if not a sample."""
    if len(payload) < GENL_HEADER.size or payload[0] != PSAMPLE_CMD_SAMPLE:
        return None
    attrs = attributes(payload, GENL_HEADER.size)

    def number(kind, layout, default):
        value = attrs.get(kind)
        return layout.unpack(value)[0] if value is not None and len(value) == layout.size else default

    data = bytes(attrs.get(PSAMPLE_ATTR_DATA, b""))
    return PsamplePacket(number(PSAMPLE_ATTR_SAMPLE_GROUP, _U32, 0),
                         number(PSAMPLE_ATTR_GROUP_SEQ, _U32, None),
                         number(PSAMPLE_ATTR_SAMPLE_RATE, _U32, 0),
                         number(PSAMPLE_ATTR_IIFINDEX, _U16, 0),
                         number(PSAMPLE_ATTR_OIFINDEX, _U16, 0),
                         number(PSAMPLE_ATTR_ORIGSIZE, _U32, len(data)), data)


def packet_sample(packet: PsamplePacket, rate: int, pool: int, drops: int, header_bytes: int):
    """Sampled on the input interface when there is one (ingress sampling), else the output."""
    return flows.flow_sample(
        packet.iifindex or packet.oifindex, rate, pool, drops,
        flows.ifindex_interface(packet.iifindex), flows.ifindex_interface(packet.oifindex),
        flows.ethernet_header(packet.data, packet.origsize, header_bytes))


def decode_samples(buf: bytes, family: int, group: int, counts: flows.SampleCounts,
                   fallback_rate: int, header_bytes: int) -> list:
    """Flow samples of psample group `group` in one datagram from the multicast socket."""
    samples = []
    for kind, _, _, payload in messages(buf):
        packet = parse_sample(payload) if kind == family else None
        if packet is None or packet.group != group:
            continue
        rate = packet.rate or fallback_rate
        pool, drops = counts.count(packet.iifindex or packet.oifindex, rate, packet.seq)
        samples.append(packet_sample(packet, rate, pool, drops, header_bytes))
    return samples


def resolve_family() -> tuple[int, int]:
    """(family id, "packets" multicast group id) of the psample generic netlink family."""
    from pyroute2.netlink import genlmsg
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.generic import GenericNetlinkSocket

    with GenericNetlinkSocket() as control:
        try:
            control.bind(FAMILY_NAME, genlmsg)
        except NetlinkError as e:
            raise PsampleUnavailable(
                e.code, f"generic netlink family {FAMILY_NAME!r} not found "
                        "(kernel without CONFIG_PSAMPLE, or the psample module is not loaded)") from None
        return control.prid, control.mcast_groups[MULTICAST_GROUP]


class PsampleSampler:
    """Flow samples of psample group `group`."""

    def __init__(self, group: int, rate: int = 0, header_bytes: int = 128,
                 rcvbuf: int = DEFAULT_RCVBUF, batch: int = DEFAULT_BATCH):
        self.group = group
        self.rate = rate  # used only for messages that carry no rate
        self.header_bytes = header_bytes
        self.batch = batch
        self.counts = flows.SampleCounts()
        self.family, multicast = resolve_family()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_GENERIC)
        try:
            set_receive_buffer(self._sock, rcvbuf)
            self._sock.bind((0, 0))
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, multicast)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def drops(self) -> int:
        return self.counts.drops

    def alive(self) -> bool:
        return True  # a netlink group outlives any device

    def data_sources(self) -> set[int]:
        return self.counts.data_sources()

    def set_rate(self, rate: int) -> None:
        """The kernel reports the rate with each sample; this is only the fallback."""
        self.rate = rate

    def read(self) -> list:
        samples = []
        for buf in pending_datagrams(self._sock, RECEIVE_SIZE, self.batch):
            samples += decode_samples(buf, self.family, self.group, self.counts, self.rate,
                                      self.header_bytes)
        return samples

    def close(self) -> None:
        self._sock.close()


# --- when a psample sampler runs (see hsagent.sampling) -------------------------------------

def enabled(settings) -> bool:
    return settings.psample is not None


def wanted(settings, links) -> list:
    group, rate, header_bytes = settings.psample.group, settings.sampling, settings.header_bytes
    return [Wanted(("psample", group, header_bytes), rate,
                   lambda: PsampleSampler(group, rate, header_bytes), budgeted=False)]

