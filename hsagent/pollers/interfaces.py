"""Interface counters: every non-loopback interface is data source 0:ifIndex.

Cost is what shapes this module. A link dump of 1,000 interfaces is ten times dearer than a
stats dump, so the link table (name, flags, speed, duplex) is built once from one dump and then
kept current from RTNLGRP_LINK events read on `fileno()` by the agent's loop; a poll is one
RTM_GETSTATS dump plus arithmetic. Speed and duplex come from sysfs, read only when a link
appears, is renamed or changes state, never per poll.
"""

from __future__ import annotations

import errno
import logging
from typing import NamedTuple

from .. import netlink, procfs
from ..logs import Throttle
from ..netlink import IFF_LOOPBACK, IFF_PROMISC, IFF_RUNNING, IFF_UP, Link, LinkStats
from ..sflow.datagram import DS_IFINDEX, CountersSample
from ..sflow.records import EthernetCounters, IfCounters, PortName
from ..sflow.xdr import U32_MAX

log = logging.getLogger(__name__)

IFTYPE_ETHERNET = 6  # ethernetCsmacd: what hsflowd reports for every Linux interface
DIRECTION = {"full": 1, "half": 2}  # ifDirection; anything else is 0 (unknown)
UNKNOWN = U32_MAX
# A link event that changes one of these may change speed or duplex (carrier came up, say).
STATE_FLAGS = IFF_UP | IFF_RUNNING | netlink.IFF_LOWER_UP
# Asking for interfaces one by one beats a dump while fewer than 1 in 3 are wanted.
TARGETED_SHARE = 3


class Port(NamedTuple):
    """One interface as the link table knows it."""

    link: Link
    speed: int  # bits per second, 0 = unknown
    direction: int  # ifDirection: 0 unknown, 1 full, 2 half


# --- pure ----------------------------------------------------------------------------------

def speed_bps(text: str | None) -> int:
    """ifSpeed from /sys/class/net/X/speed (Mb/s; -1 or unreadable = unknown = 0)."""
    try:
        mbps = int(text)
    except (TypeError, ValueError):
        return 0
    return mbps * 1_000_000 if mbps > 0 else 0


def direction(text: str | None) -> int:
    return DIRECTION.get((text or "").strip(), 0)


def if_status(flags: int) -> int:
    """ifStatus: bit 0 admin up (IFF_UP), bit 1 oper up (IFF_RUNNING: operstate UP or UNKNOWN)."""
    return (1 if flags & IFF_UP else 0) | (2 if flags & IFF_RUNNING else 0)


def if_counters(port: Port, stats: LinkStats) -> IfCounters:
    """if_counters for one port. Linux counts no broadcasts, no unknown protocols and no sent
    multicasts, so those go out as unknown (all ones), as hsflowd sends them."""
    link = port.link
    return IfCounters(
        if_index=link.index,
        if_type=IFTYPE_ETHERNET,
        if_speed=port.speed,
        if_direction=port.direction,
        if_status=if_status(link.flags),
        in_octets=stats.rx_bytes,
        in_ucast_pkts=(stats.rx_packets - stats.multicast) & U32_MAX,
        in_multicast_pkts=stats.multicast & U32_MAX,
        in_broadcast_pkts=UNKNOWN,
        in_discards=stats.rx_dropped & U32_MAX,
        in_errors=stats.rx_errors & U32_MAX,
        in_unknown_protos=UNKNOWN,
        out_octets=stats.tx_bytes,
        out_ucast_pkts=stats.tx_packets & U32_MAX,
        out_multicast_pkts=UNKNOWN,
        out_broadcast_pkts=UNKNOWN,
        out_discards=stats.tx_dropped & U32_MAX,
        out_errors=stats.tx_errors & U32_MAX,
        promiscuous_mode=1 if link.flags & IFF_PROMISC else 0,
    )


def ethernet_counters(stats: LinkStats) -> EthernetCounters:
    """The dot3 counters Linux keeps, by the mapping include/uapi/linux/if_link.h documents;
    the others (single/multiple collisions, deferrals, MAC errors, too-long frames, symbol
    errors) have no Linux counter and go out as unknown."""
    return EthernetCounters(
        dot3StatsAlignmentErrors=stats.rx_frame_errors & U32_MAX,
        dot3StatsFCSErrors=stats.rx_crc_errors & U32_MAX,
        dot3StatsSingleCollisionFrames=UNKNOWN,
        dot3StatsMultipleCollisionFrames=UNKNOWN,
        dot3StatsSQETestErrors=stats.tx_heartbeat_errors & U32_MAX,
        dot3StatsDeferredTransmissions=UNKNOWN,
        dot3StatsLateCollisions=stats.tx_window_errors & U32_MAX,
        dot3StatsExcessiveCollisions=stats.tx_aborted_errors & U32_MAX,
        dot3StatsInternalMacTransmitErrors=UNKNOWN,
        dot3StatsCarrierSenseErrors=stats.tx_carrier_errors & U32_MAX,
        dot3StatsFrameTooLongs=UNKNOWN,
        dot3StatsInternalMacReceiveErrors=UNKNOWN,
        dot3StatsSymbolErrors=UNKNOWN,
    )


def counters_sample(port: Port, stats: LinkStats) -> CountersSample:
    # port_name last: tshark does not know it and misreads whatever follows it.
    records = [if_counters(port, stats)]
    if port.link.arphrd == netlink.ARPHRD_ETHER:
        records.append(ethernet_counters(stats))
    records.append(PortName(port.link.name))
    return CountersSample(DS_IFINDEX, port.link.index, records)


def needs_sysfs(old: Link | None, new: Link) -> bool:
    """Whether a link event can have changed speed or duplex."""
    return (old is None or old.name != new.name or old.operstate != new.operstate
            or (old.flags ^ new.flags) & STATE_FLAGS != 0)


# --- I/O -----------------------------------------------------------------------------------

def read_sysfs(name: str, attribute: str, roots: procfs.Roots = procfs.HOST) -> str | None:
    """One /sys/class/net attribute; None when unreadable (speed of a down veth: EINVAL)."""
    return procfs.read_optional(roots.sys_path("class", "net", name, attribute))


def read_link_speed(name: str, roots: procfs.Roots = procfs.HOST) -> int:
    """The link speed in bits per second, 0 when unknown: the one reader of it."""
    return speed_bps(read_sysfs(name, "speed", roots))


def enabled(settings) -> bool:
    return True


class Poller:
    def __init__(self, settings, peers=None, roots: procfs.Roots = procfs.HOST):
        self._roots = roots
        self._ports: dict[int, Port] = {}
        self.changes = 0  # ports came or went (the Poller protocol)
        self._loopbacks: dict[int, str] = {}  # not data sources, but a pcap { dev } may name one
        # Subscribe before dumping: an event that races the dump is then queued, not lost.
        self._events = netlink.open_socket(groups=netlink.RTMGRP_LINK)
        self._dumper = netlink.Dumper()
        self._throttle = Throttle(log)
        try:
            self._resync()
        except OSError:
            self.close()
            raise

    # --- link table --------------------------------------------------------------------

    def link_speed(self, ifindex: int) -> int | None:
        """Bits per second (0: unknown) of a link in the table; None for one it does not hold."""
        port = self._ports.get(ifindex)
        return None if port is None else port.speed

    def names(self) -> dict[str, int]:
        """name -> ifIndex of every link, as the kernel's link events last said: what the
        samplers need, without a descriptor of their own (if_nameindex opens one)."""
        names = {port.link.name: index for index, port in self._ports.items()}
        names.update((name, index) for index, name in self._loopbacks.items())
        return names

    def fileno(self) -> int:
        """Readable when link events are waiting: call handle_events()."""
        return self._events.fileno()

    def handle_events(self) -> None:
        try:
            for mtype, link in netlink.pending_link_events(self._events):
                if mtype == netlink.RTM_DELLINK:
                    self._drop(link.index)
                    self._loopbacks.pop(link.index, None)
                else:
                    self._update(link)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            log.info("link events overran the socket buffer: re-reading all links")
            self._resync()

    def _resync(self) -> None:
        links = {link.index: link for link in self._dumper.links()}
        for index in self._ports.keys() - links.keys():
            self._drop(index)
        self._loopbacks.clear()
        for link in links.values():
            self._update(link)

    def _update(self, link: Link) -> None:
        if link.flags & IFF_LOOPBACK:
            self._loopbacks[link.index] = link.name
            return
        old = self._ports.get(link.index)
        if old is not None and not needs_sysfs(old.link, link):
            self._ports[link.index] = old._replace(link=link)
            return
        if old is None:
            self.changes += 1
        self._ports[link.index] = Port(
            link,
            read_link_speed(link.name, self._roots),
            direction(read_sysfs(link.name, "duplex", self._roots)),
        )

    def _drop(self, index: int) -> None:
        if self._ports.pop(index, None) is not None:
            self.changes += 1

    # --- the Poller shape -----------------------------------------------------------

    def sources(self) -> set[tuple[int, int]]:
        return {(DS_IFINDEX, index) for index in self._ports}

    def poll(self, due) -> list[CountersSample]:
        """One stats dump serves every due interface; links that changed are caught up first."""
        self.handle_events()
        wanted = {index for ds_class, index in due if ds_class == DS_IFINDEX}
        try:
            # Random offsets spread an interval's polls over many ticks, each wanting a few
            # interfaces: ask for those alone then, and dump when many are due at once.
            if len(wanted) * TARGETED_SHARE < len(self._ports):
                stats = list(self._dumper.link_stats_of(wanted & self._ports.keys()))
            else:
                stats = list(self._dumper.link_stats())
        except OSError as e:
            self._throttle(logging.WARNING, "stats",
                           "interface counters unreadable (RTM_GETSTATS): %s", e)
            return []
        self._throttle.clear("stats")
        ports = self._ports
        return [counters_sample(ports[index], counters) for index, counters in stats
                if index in wanted and index in ports]

    def close(self) -> None:
        self._events.close()
        self._dumper.close()
