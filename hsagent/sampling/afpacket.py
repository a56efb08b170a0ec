"""Sampling one interface with an AF_PACKET socket and a 1-in-N BPF filter.

The kernel runs the filter on every packet the interface sends or receives and queues only
the sampled ones, already truncated to the header bytes; this module turns them into flow
samples. The original length of a truncated packet comes from PACKET_AUXDATA (tp_len):
recv's MSG_TRUNC would only report the length left after the filter cut it.

sample_pool is the interface's own packet count (rx + tx in /sys/class/net/<dev>/statistics)
since the sampler started, read once per read() that returned samples: that is exactly
"packets that could have been sampled", where hsflowd's `pool += N` per sample is only its
expectation. Should the counters become unreadable, the pool falls back to += N per sample.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import struct

from .. import procfs
from ..logs import Throttle
from ..netlink import set_receive_buffer
from . import Wanted, bpf, flows

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = getattr(socket, "SOL_PACKET", 263)
PACKET_STATISTICS, PACKET_AUXDATA = 6, 8

_AUXDATA = struct.Struct("=IIIHHHH")  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net, vlan tci, tpid
_STATS = struct.Struct("=II")  # struct tpacket_stats: tp_packets, tp_drops
_AUX_SPACE = socket.CMSG_SPACE(_AUXDATA.size)

# How the kernel says the device is going or gone: the socket's pending error on unregister or
# down (ENETDOWN), or a device that no longer exists (ENXIO, ENODEV). The link events say
# what became of it; the sampler is closed then.
DEVICE_GONE = (errno.ENETDOWN, errno.ENXIO, errno.ENODEV)

DEFAULT_RCVBUF = 4 << 20  # room for thousands of truncated samples between two reads
DEFAULT_BATCH = 1000  # packets per read(), so one busy interface cannot starve the loop
DRAIN_BATCHES = 4  # batches read at the old rate before a new filter goes in


def read_packet_count(ifname: str, roots: procfs.Roots = procfs.HOST) -> int:
    """Packets received plus sent by the interface, from its kernel counters."""
    return sum(int(procfs.read_text(roots.sys_path("class", "net", ifname, "statistics", name)))
               for name in ("rx_packets", "tx_packets"))


def original_length(ancdata, captured: int) -> int:
    """The packet's length before the filter truncated it, from the PACKET_AUXDATA message."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
            return _AUXDATA.unpack_from(data)[1]
    return captured


class PacketSampler:
    """Flow samples of 1 in `rate` packets sent or received on interface `ifname`."""

    def __init__(self, ifname: str, rate: int, header_bytes: int = 128,
                 rcvbuf: int = DEFAULT_RCVBUF, batch: int = DEFAULT_BATCH,
                 roots: procfs.Roots = procfs.HOST):
        self.ifname = ifname
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError:  # CPython's carries no errno: say what it is
            raise OSError(errno.ENODEV, f"{ifname}: no such device") from None
        self.rate = rate
        self.header_bytes = header_bytes
        self.batch = batch
        self.drops = 0  # cumulative: sampled packets the kernel could not queue to us
        self.passed = 0  # cumulative: packets the filter let through (queued or dropped)
        self._roots = roots
        self._throttle = Throttle(log)
        self._estimated_pool = 0
        self._pending: list = []  # samples read while the rate changed, at the old rate
        self._directions = {t: flows.host_interfaces(self.ifindex, t) for t in (
            flows.PACKET_HOST, flows.PACKET_BROADCAST, flows.PACKET_MULTICAST,
            flows.PACKET_OTHERHOST, flows.PACKET_OUTGOING)}
        # Protocol 0 receives nothing until bind(), so no unfiltered packet slips in before
        # the filter is attached.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            bpf.attach(self._sock, bpf.sample_filter(rate, header_bytes))
            set_receive_buffer(self._sock, rcvbuf)
            self._sock.setblocking(False)
            self._pool_base = self._packet_count()
            self._sock.bind((ifname, ETH_P_ALL))
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def alive(self) -> bool:
        """The kernel unbinds the socket when its device is unregistered (getsockname then
        names no interface); asking needs no new descriptor."""
        return bool(self._sock.getsockname()[0])

    def data_sources(self) -> set[int]:
        """The ifIndexes this sampler's flow samples are for."""
        return {self.ifindex}

    def set_rate(self, rate: int) -> None:
        """Replace the kernel filter in place. The packets queued so far were sampled at the
        old rate and are reported at it (the next read returns them): a sample's
        sampling_rate is the rate that sampled it."""
        program = bpf.sample_filter(rate, self.header_bytes)
        for _ in range(DRAIN_BATCHES):  # bounded: a flood may refill the queue as fast
            packets = self._receive()
            if not packets:
                break
            self._pending += self._samples(packets)
        bpf.attach(self._sock, program)
        self.rate = rate

    def read(self) -> list:
        samples, self._pending = self._pending, []
        packets = self._receive()
        return samples + self._samples(packets) if packets else samples

    def _receive(self) -> list:
        """Up to a batch of queued packets: (data, original length, packet type)."""
        packets = []
        for _ in range(self.batch):
            try:
                data, ancdata, _, address = self._sock.recvmsg(self.header_bytes, _AUX_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno not in DEVICE_GONE:
                    raise
                break
            packets.append((data, original_length(ancdata, len(data)), address[2]))
        if packets:
            self._read_statistics()
        return packets

    def _samples(self, packets) -> list:
        count = self._packet_count() if self._pool_base is not None else None
        samples = []
        for data, length, pkttype in packets:
            if count is None:
                self._estimated_pool += self.rate
                pool = self._estimated_pool
            else:
                pool = count - self._pool_base
            source, destination = self._directions.get(pkttype) or flows.host_interfaces(
                self.ifindex, pkttype)
            samples.append(flows.flow_sample(
                self.ifindex, self.rate, pool, self.drops, source, destination,
                flows.ethernet_header(data, length, self.header_bytes)))
        return samples

    def _packet_count(self) -> int | None:
        try:
            return read_packet_count(self.ifname, self._roots)
        except (OSError, ValueError) as e:
            if isinstance(e, FileNotFoundError) or getattr(e, "errno", None) in DEVICE_GONE:
                return None  # the device went away: its last samples need no warning
            self._throttle(logging.WARNING, "count",
                           "%s: cannot read packet counters (%s); sample_pool += %d per sample",
                           self.ifname, e, self.rate)
            return None

    def _read_statistics(self) -> None:
        """Add the kernel's counts since the last call (reading them resets them)."""
        packets, drops = _STATS.unpack(self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                             _STATS.size))
        self.passed += packets
        self.drops += drops

    def close(self) -> None:
        self._sock.close()


# --- which interfaces are sampled (see hsagent.sampling) ------------------------------------

def enabled(settings) -> bool:
    return bool(settings.pcap_devs or settings.switchport)


def sampled_devices(settings, names) -> list[str]:
    """The configured pcap devices that exist, then every switch port, without repeats."""
    present = set(names)
    devices = [dev for dev in settings.pcap_devs if dev in present]
    if settings.switchport:
        pattern = re.compile(settings.switchport)
        devices += sorted(n for n in present if pattern.fullmatch(n) and n not in devices)
    return devices


def wanted(settings, links) -> list:
    """A sampler per pcap device and switch port, at the rate for its link speed."""
    header_bytes = settings.header_bytes
    samplers = []
    for dev in sampled_devices(settings, links.indexes):
        rate = settings.sampling_rate(links.speed(dev))
        # The ifindex is in the key: a device deleted and made again needs a new socket.
        samplers.append(Wanted(("pcap", dev, links.indexes[dev], header_bytes), rate,
                               lambda d=dev, r=rate: PacketSampler(d, r, header_bytes)))
    return samplers

