"""The physical host, data source 2:1: CPU, memory, disk, network and TCP/IP counters.

What psutil reads (CPU times and stats, memory and swap, partitions and their usage, disk and NIC
I/O, boot time, CPU clock) is read through psutil; the kernel's files are parsed here only for
what psutil lacks: paging and swapping in pages (/proc/vmstat), process counts (/proc/loadavg,
whose load averages come along), MIB-II by column name (/proc/net/snmp), which NICs are hardware
and the host UUID. Each block is a thin read turned into its record by a pure function below,
which the tests also feed with values they build. psutil reads under `psutil.PROCFS_PATH`, so a
test points it and `procfs.Roots` at the same fixture tree. A block that cannot be read is left
out of the sample (logged, rate-limited) rather than sent as zeros. Records go out in hsflowd's
order: virt_node (when the agent knows the container count), adapters, the four MIB-II groups,
disk, memory, cpu, net I/O, descr. Units and "unknown" values: sFlow Host Structures
(sflow.org, sflow_host.txt) and sFlow Host TCP/IP Counters (sflow_host_ip.txt).

What changes rarely (the NIC list, the mounted filesystems, the disks, the CPU clock) is
re-read every SLOW_REFRESH_S; everything else once per poll, each file once.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Callable, NamedTuple

import psutil

from .. import procfs
from ..logs import Throttle
from ..netlink import IFF_LOOPBACK, IFF_UP
from ..sflow import records
from ..sflow.datagram import DS_PHYSICAL, CountersSample
from ..sflow.xdr import U32_MAX
from . import domain_count

log = logging.getLogger(__name__)

HOST_SOURCE = (DS_PHYSICAL, 1)
SLOW_REFRESH_S = 60.0
MAX_ADAPTERS = 32  # hsflowd's cap per host_adapters record
UNKNOWN_COUNTER = U32_MAX  # a u32 counter this kernel does not have


# --- host_descr --------------------------------------------------------------------------

# uname machine prefix -> host_descr machine_type; first match wins, so x86_64 precedes x86.
_MACHINE_TYPES = [
    (("x86_64", "amd64"), records.MACHINE_TYPE_X86_64),
    (("i386", "i486", "i586", "i686", "x86"), records.MACHINE_TYPE_X86),
    (("ia64",), 4),
    (("sparc",), 5),
    (("alpha",), 6),
    (("ppc", "powerpc"), 7),
    (("m68k",), 8),
    (("mips",), 9),
    (("arm", "aarch64"), records.MACHINE_TYPE_ARM),  # hsflowd reports 64-bit ARM as arm too
    (("parisc", "hppa"), 11),
    (("s390",), 12),
]
MACHINE_TYPE_UNKNOWN, MACHINE_TYPE_OTHER = 0, 1


def machine_type(machine: str) -> int:
    if not machine:
        return MACHINE_TYPE_UNKNOWN
    for prefixes, value in _MACHINE_TYPES:
        if machine.startswith(prefixes):
            return value
    return MACHINE_TYPE_OTHER  # known but not in the enum, e.g. riscv64


def host_uuid(product_uuid: str | None, machine_id: str | None) -> bytes:
    """SMBIOS system UUID if the firmware gave a real one, else the machine-id's 128 bits,
    else zeros (unknown)."""
    if product_uuid:
        try:
            value = uuid.UUID(product_uuid.strip()).bytes
        except ValueError:
            value = bytes(16)
        if any(value):
            return value
    if machine_id and re.fullmatch(r"[0-9a-fA-F]{32}", machine_id.strip()):
        return bytes.fromhex(machine_id.strip())
    return bytes(16)


def host_descr(uname: os.uname_result, uuid_bytes: bytes) -> records.HostDescr:
    return records.HostDescr(
        hostname=uname.nodename,
        uuid=uuid_bytes,
        machine_type=machine_type(uname.machine),
        os_name=records.OS_NAME_LINUX,
        os_release=uname.release,
    )


# --- host_cpu ----------------------------------------------------------------------------

# psutil.cpu_times() fields in host_cpu's order; a kernel too old for one has no such field.
CPU_TIME_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
                   "guest", "guest_nice")


def cpu_times_ms(times, hz: int) -> tuple:
    """psutil's CPU times (seconds, i.e. the kernel's ticks / hz) as u32 milliseconds, the
    kernel's tick count converted as ticks * 1000 // hz; a field this kernel lacks is unknown."""
    values = []
    for name in CPU_TIME_FIELDS:
        seconds = getattr(times, name, None)
        values.append(UNKNOWN_COUNTER if seconds is None
                      else (round(seconds * hz) * 1000 // hz) & U32_MAX)
    return tuple(values)


def parse_loadavg(text: str) -> tuple[float, float, float, int, int]:
    """Load averages, runnable tasks (without the reader itself, as hsflowd) and total tasks."""
    one, five, fifteen, tasks = text.split()[:4]
    running, total = (int(v) for v in tasks.split("/"))
    return float(one), float(five), float(fifteen), max(running - 1, 0), total


def cpu_mhz(frequencies) -> int:
    """The first CPU's clock in MHz from psutil.cpu_freq(percpu=True); 0 (unknown) without."""
    return int(frequencies[0].current) if frequencies else 0


def host_cpu(loadavg: str, times_ms: tuple, stats, cpus: int, mhz: int,
             uptime: int) -> records.HostCpu:
    """`stats` is psutil.cpu_stats(); `uptime` whole seconds."""
    one, five, fifteen, running, total = parse_loadavg(loadavg)
    user, nice, system, idle, wio, intr, sintr, steal, guest, guest_nice = times_ms
    return records.HostCpu(
        one, five, fifteen, running, total,
        cpu_num=cpus,
        cpu_speed=mhz,
        uptime=uptime,
        cpu_user=user, cpu_nice=nice, cpu_system=system, cpu_idle=idle, cpu_wio=wio,
        cpu_intr=intr, cpu_sintr=sintr,
        interrupts=stats.interrupts & U32_MAX, contexts=stats.ctx_switches & U32_MAX,
        cpu_steal=steal, cpu_guest=guest, cpu_guest_nice=guest_nice,
    )


# --- host_memory -------------------------------------------------------------------------

def parse_counters(text: str) -> dict[str, int]:
    """`/proc/vmstat` lines ("name 123") as a dict."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            values[parts[0].rstrip(":")] = int(parts[1])
    return values


def host_memory(memory, swap, vmstat: dict[str, int]) -> records.HostMemory:
    """From psutil.virtual_memory() and swap_memory() (bytes, as free(1) counts them: cached
    includes SReclaimable, slab the kernel gives back on demand; shared is Shmem, where hsflowd
    sends 0, which reads as a real "nothing shared"), and /proc/vmstat for paging in pages
    (psutil has swapping in bytes only, and no paging)."""
    return records.HostMemory(
        mem_total=memory.total,
        mem_free=memory.free,
        mem_shared=memory.shared,
        mem_buffers=memory.buffers,
        mem_cached=memory.cached,
        swap_total=swap.total,
        swap_free=swap.free,
        page_in=vmstat.get("pgpgin", UNKNOWN_COUNTER) & U32_MAX,
        page_out=vmstat.get("pgpgout", UNKNOWN_COUNTER) & U32_MAX,
        swap_in=vmstat.get("pswpin", UNKNOWN_COUNTER) & U32_MAX,
        swap_out=vmstat.get("pswpout", UNKNOWN_COUNTER) & U32_MAX,
    )


# --- host_disk_io ------------------------------------------------------------------------

def local_mounts(partitions) -> list[str]:
    """Mount points of local read-write block-device filesystems, one per device, from
    psutil.disk_partitions(all=True).

    Like hsflowd: the device must be under /dev/ (which leaves out tmpfs, overlay, NFS and other
    pseudo or remote filesystems) and mounted read-write (read-only images such as snaps' squashfs
    would otherwise report themselves 100 % full). A device mounted twice (bind mounts, btrfs
    subvolumes) counts once.
    """
    seen, points = set(), []
    for p in partitions:
        if not p.device.startswith("/dev/") or p.device in seen or "ro" in p.opts.split(","):
            continue
        seen.add(p.device)
        points.append(p.mountpoint)
    return points


def disk_space(usages) -> tuple[int, int, int]:
    """(total bytes, available bytes, fullest partition's use in percent x 100 or -1) from
    psutil.disk_usage() of each partition.

    Use is df's: used / (used + available to unprivileged users), so reserved blocks do not
    make a partition look emptier than df says. (psutil's own `percent` is the same ratio,
    rounded to 0.1 %: too coarse for hundredths.)
    """
    total = free = 0
    max_used = -1
    for usage in usages:
        if not usage.total:
            continue
        total += usage.total
        free += usage.free
        if usage.used + usage.free:
            max_used = max(max_used, usage.used * 10000 // (usage.used + usage.free))
    return total, free, max_used


def whole_disks(names: list[str], has_device: Callable[[str], bool]) -> set[str]:
    """/sys/block entries backed by hardware, as /proc/diskstats names them.

    Partitions are not in /sys/block; loop, ram, zram, device-mapper and md devices have no
    `device` link. Their I/O ends up on (or never reaches) a real disk, so counting them too
    would count the same bytes twice. (hsflowd only skips md and device-mapper by major number,
    and counts partitions as well as their disks.)
    """
    return {name.replace("!", "/") for name in names if has_device(name)}


def disk_io(per_disk: dict, disks: set[str]) -> tuple[int, int, int, int, int, int]:
    """(reads, bytes read, read ms, writes, bytes written, write ms) summed over `disks`, from
    psutil.disk_io_counters(perdisk=True, nowrap=False) (the kernel's raw running totals)."""
    chosen = [io for name, io in per_disk.items() if name in disks]
    return tuple(sum(getattr(io, field) for io in chosen) for field in (
        "read_count", "read_bytes", "read_time", "write_count", "write_bytes", "write_time"))


def host_disk_io(space: tuple[int, int, int], io: tuple) -> records.HostDiskIo:
    total, free, max_used = space
    reads, bytes_read, read_ms, writes, bytes_written, write_ms = io
    return records.HostDiskIo(
        total, free, max_used,
        reads & U32_MAX, bytes_read, read_ms & U32_MAX,
        writes & U32_MAX, bytes_written, write_ms & U32_MAX,
    )


# --- host_adapters, host_net_io ----------------------------------------------------------

class Nic(NamedTuple):
    """One /sys/class/net entry, as far as choosing adapters goes."""

    name: str
    if_index: int
    if_link: int  # differs from if_index for veth, VLAN, macvlan: devices riding on another
    mac: bytes
    flags: int
    hardware: bool  # has a `device` link: a real (or paravirtual) NIC
    master: bool  # a bridge or bond: its traffic is its ports' traffic


def host_nics(nics: list[Nic]) -> list[Nic]:
    """The host's own NICs: hsflowd's adapters, and what host_net_io adds up.

    Up, with a real MAC, not loopback, and hardware-backed. Only those: a packet from a container
    to the world crosses its veth, docker0 and eth0, and summing all three would triple it.
    Where no NIC is hardware-backed (some virtual machines and sandboxes), fall back to the up
    interfaces that neither ride on another device nor aggregate others.
    """
    usable = [
        n for n in nics
        if n.flags & IFF_UP and not n.flags & IFF_LOOPBACK and len(n.mac) == 6 and any(n.mac)
    ]
    chosen = [n for n in usable if n.hardware]
    if not chosen:
        chosen = [n for n in usable if n.if_link == n.if_index and not n.master]
    return sorted(chosen, key=lambda n: n.if_index)[:MAX_ADAPTERS]


def host_adapters(nics: list[Nic]) -> records.HostAdapters:
    return records.HostAdapters([records.Adapter(n.if_index, [n.mac]) for n in nics])


# psutil.net_io_counters() fields in host_net_io's order
NET_IO_FIELDS = ("bytes_recv", "packets_recv", "errin", "dropin",
                 "bytes_sent", "packets_sent", "errout", "dropout")


def host_net_io(per_nic: dict, names: set[str]) -> records.HostNetIo:
    """Totals over the NICs in `names` of psutil.net_io_counters(pernic=True, nowrap=False):
    the kernel's raw running totals, the 32-bit ones wrapped."""
    chosen = [io for name, io in per_nic.items() if name in names]
    b_in, p_in, e_in, d_in, b_out, p_out, e_out, d_out = (
        sum(getattr(io, field) for io in chosen) for field in NET_IO_FIELDS)
    return records.HostNetIo(
        b_in, p_in & U32_MAX, e_in & U32_MAX, d_in & U32_MAX,
        b_out, p_out & U32_MAX, e_out & U32_MAX, d_out & U32_MAX,
    )


# --- MIB-II groups from /proc/net/snmp ---------------------------------------------------

# (record, /proc/net/snmp protocol, MIB name prefix, fields), in hsflowd's order.
_MIB2_GROUPS = [
    (records.Mib2UdpGroup, "Udp", "udp", tuple(records.MIB2_UDP_FIELDS)),
    (records.Mib2TcpGroup, "Tcp", "tcp", tuple(records.MIB2_TCP_FIELDS)),
    (records.Mib2IcmpGroup, "Icmp", "icmp", tuple(records.MIB2_ICMP_FIELDS)),
    (records.Mib2IpGroup, "Ip", "ip", tuple(records.MIB2_IP_FIELDS)),
]


def parse_snmp(text: str) -> dict[str, tuple[str, list[str]]]:
    """protocol -> (its header line's column names, its value line's values)."""
    lines = text.splitlines()
    tables = {}
    for header, values in zip(lines[0::2], lines[1::2]):
        proto, _, names = header.partition(":")
        tables[proto] = (names, values.partition(":")[2].split())
    return tables


def _kernel_column(mib_name: str, prefix: str) -> str:
    # Linux names a column after the MIB object minus its group prefix, except that it spells
    # icmp{In,Out}ParamProbs as {In,Out}ParmProbs.
    return mib_name[len(prefix):].replace("Param", "Parm")


@lru_cache(maxsize=32)
def _column_positions(names: str, prefix: str, fields: tuple) -> tuple:
    """Where each MIB field sits in a header line (None: this kernel lacks it). The header never
    changes while the kernel runs, so this is worked out once."""
    columns = {name: i for i, name in enumerate(names.split())}
    return tuple(columns.get(_kernel_column(f, prefix)) for f in fields)


def mib2_groups(snmp: str) -> list:
    """The MIB-II group records for every protocol /proc/net/snmp has, mapped by column name.

    Columns are matched by name because Linux's order differs from the sFlow structures (it
    inserts InCsumErrors, InTimestampReps, rate-limit counters...). Values wrap to 32 bits, so
    tcpMaxConn's -1 ("no limit") goes out as 0xFFFFFFFF; a column the kernel lacks is unknown.
    """
    tables = parse_snmp(snmp)
    groups = []
    for record, proto, prefix, fields in _MIB2_GROUPS:
        if proto not in tables:
            continue
        names, values = tables[proto]
        positions = _column_positions(names, prefix, fields)
        groups.append(record._make(
            UNKNOWN_COUNTER if i is None or i >= len(values) else int(values[i]) & U32_MAX
            for i in positions
        ))
    return groups


# --- readers -----------------------------------------------------------------------------

def read_nics(roots: procfs.Roots) -> list[Nic]:
    base = roots.sys_path("class", "net")
    nics = []
    for name in os.listdir(base):
        path = os.path.join(base, name)

        def attr(file: str, path: str = path) -> str:
            return procfs.read_text(os.path.join(path, file)).strip()

        try:
            nics.append(Nic(
                name=name,
                if_index=int(attr("ifindex")),
                if_link=int(attr("iflink")),
                mac=bytes.fromhex(attr("address").replace(":", "")),
                flags=int(attr("flags"), 16),
                hardware=os.path.exists(os.path.join(path, "device")),
                master=any(os.path.exists(os.path.join(path, d)) for d in ("bridge", "bonding")),
            ))
        except (OSError, ValueError):
            continue  # gone since listdir, or no link-layer address (e.g. a tunnel)
    return nics


def read_uuid(roots: procfs.Roots) -> bytes:
    return host_uuid(
        procfs.read_optional(roots.sys_path("class", "dmi", "id", "product_uuid")),  # root may read it
        procfs.read_optional(roots.etc_path("machine-id")),
    )


# --- the poller -----------------------------------------------------------------------

def enabled(settings) -> bool:
    return True


class Poller:
    """Counters of the physical host (2:1). `virt_domains` returns the number of containers or
    VMs (None while unknown, or nothing hosts any): with a number, virt_node is added, as
    hsflowd does on a Docker host. It counts what the running peers that host domains say."""

    def __init__(self, settings, peers: Mapping[str, object] = MappingProxyType({}),
                 roots: procfs.Roots = procfs.HOST, clock: Callable[[], float] = time.monotonic):
        self.virt_domains: Callable[[], int | None] | None = lambda: domain_count(peers)
        self._roots = roots
        self._clock = clock
        self._hz = os.sysconf("SC_CLK_TCK")
        self._descr = host_descr(os.uname(), read_uuid(roots))
        self._throttle = Throttle(log, interval=3600)
        self._refresh_at = float("-inf")
        self._nics: list[Nic] | None = None
        self._mounts: list[str] | None = None
        self._disks: set[str] | None = None
        self._cpus = 0
        self._mhz = 0
        self._boot_time: float | None = None

    changes = 0  # its one data source never changes

    def sources(self):
        return [HOST_SOURCE]

    def poll(self, due) -> list[CountersSample]:
        if HOST_SOURCE not in due:
            return []
        now = self._clock()
        if now >= self._refresh_at:
            self._refresh()
            self._refresh_at = now + SLOW_REFRESH_S
        cpu = self._try("host_cpu", self._host_cpu)
        memory = self._try("host_memory", self._host_memory)
        blocks = [
            self._virt_node(cpu, memory),
            None if self._nics is None else host_adapters(self._nics),
            *(self._try("mib2 groups", self._mib2_groups) or []),
            self._try("host_disk_io", self._host_disk_io),
            memory,
            cpu,
            self._try("host_net_io", self._host_net_io),
            self._descr,
        ]
        return [CountersSample(*HOST_SOURCE, [b for b in blocks if b is not None])]

    def close(self):
        """Nothing to release: every file is opened and closed within a poll."""

    def _refresh(self):
        """What changes rarely: the NICs, mounts, disks, CPUs and their clock, the boot time
        (which moves only when the wall clock is stepped)."""
        roots = self._roots
        self._cpus = self._try("cpu count", lambda: len(psutil.cpu_times(percpu=True))) or 0
        self._mhz = self._try("cpu clock", lambda: cpu_mhz(psutil.cpu_freq(percpu=True))) or 0
        self._boot_time = self._try("boot time", psutil.boot_time)
        self._nics = self._try("network adapters", lambda: host_nics(read_nics(roots)))
        self._mounts = self._try("mounts", lambda: local_mounts(psutil.disk_partitions(all=True)))
        block = roots.sys_path("block")
        self._disks = self._try("block devices", lambda: whole_disks(
            os.listdir(block), lambda name: os.path.exists(os.path.join(block, name, "device"))))

    def _try(self, what: str, read: Callable):
        """`read()`, or None when it failed; a failure is logged at once, then hourly while it
        lasts, and again at once should it come back after a recovery."""
        try:
            value = read()
        except (OSError, ValueError, KeyError, IndexError) as e:
            self._throttle(logging.WARNING, what, "host %s left out: %s", what, e)
            return None
        self._throttle.clear(what)
        return value

    def _proc(self, *parts: str) -> str:
        return procfs.read_text(self._roots.proc_path(*parts))

    def _host_cpu(self) -> records.HostCpu | None:
        if self._boot_time is None:
            return None
        return host_cpu(self._proc("loadavg"), cpu_times_ms(psutil.cpu_times(), self._hz),
                        psutil.cpu_stats(), self._cpus, self._mhz,
                        int(time.time() - self._boot_time))

    def _host_memory(self) -> records.HostMemory:
        return host_memory(psutil.virtual_memory(), psutil.swap_memory(),
                           parse_counters(self._proc("vmstat")))

    def _mib2_groups(self) -> list:
        return mib2_groups(self._proc("net", "snmp"))

    def _host_disk_io(self) -> records.HostDiskIo | None:
        if self._mounts is None or self._disks is None:
            return None
        usages = []
        for point in self._mounts:
            try:
                usages.append(psutil.disk_usage(point))
            except OSError:
                continue  # unmounted since the last refresh
        return host_disk_io(disk_space(usages), disk_io(
            psutil.disk_io_counters(perdisk=True, nowrap=False), self._disks))

    def _host_net_io(self) -> records.HostNetIo | None:
        if self._nics is None:
            return None
        return host_net_io(psutil.net_io_counters(pernic=True, nowrap=False),
                           {n.name for n in self._nics})

    def _virt_node(self, cpu, memory) -> records.VirtNode | None:
        domains = self.virt_domains() if self.virt_domains is not None else None
        if domains is None or cpu is None or memory is None:
            return None
        return records.VirtNode(
            cpu.cpu_speed, cpu.cpu_num, memory.mem_total, memory.mem_free, domains)
