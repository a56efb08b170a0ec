"""Per-cgroup CPU, memory and block I/O counters from the kernel (cgroup v1 and v2).

Where a process's counters live is found once (mount table + /proc/<pid>/cgroup) and kept as
`CgroupDirs`; after that a poll reads only a few small files. Each reader is a thin function
around a pure parser, so tests feed the parsers recorded text directly.

Files read (kernel Documentation/admin-guide/cgroup-v1 and cgroup-v2.rst):
    v2: cpu.stat (usage_usec), memory.current, memory.max ("max" = no limit),
        io.stat ("MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.." per device)
    v1: cpuacct.usage (ns), memory.usage_in_bytes, memory.limit_in_bytes (a huge number
        = no limit), blkio.throttle.io_service_bytes / io_serviced ("MAJ:MIN Read N" lines)
"""

from __future__ import annotations

import os
from typing import NamedTuple

from . import procfs
from .procfs import read_text

# v1 controller (as named in /proc/<pid>/cgroup and mount options) for each counter kind
V1_CPU, V1_MEMORY, V1_IO = "cpuacct", "memory", "blkio"
# A v1 memory.limit_in_bytes at or above this means "no limit" (the kernel reports
# PAGE_COUNTER_MAX rounded to pages, e.g. 9223372036854771712).
V1_NO_LIMIT = 1 << 62


class Layout(NamedTuple):
    """Where the cgroup hierarchies are mounted on this host."""

    v1: dict  # controller -> mount point
    v2: str | None  # mount point of the unified hierarchy, if any

    @property
    def version(self) -> int:
        """2 when the counters come from the unified hierarchy (no v1 memory controller)."""
        return 1 if V1_MEMORY in self.v1 else 2


class CgroupDirs(NamedTuple):
    """The directories holding one cgroup's counter files."""

    version: int
    cpu: str
    memory: str
    io: str


class BlockIo(NamedTuple):
    read_bytes: int
    write_bytes: int
    reads: int
    writes: int


class Memory(NamedTuple):
    usage: int  # bytes
    limit: int | None  # bytes; None = no limit


# --- where the counters are ------------------------------------------------------------

def parse_mountinfo(text: str) -> Layout:
    """Cgroup mount points from /proc/self/mountinfo."""
    v1, v2 = {}, None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        mount_point = left.split()[4]
        fstype, _source, options = (right.split() + ["", ""])[:3]
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            for option in options.split(","):
                v1.setdefault(option, mount_point)
    return Layout(v1, v2)


def read_layout(roots: procfs.Roots = procfs.HOST) -> Layout:
    return parse_mountinfo(read_text(roots.proc_path("self", "mountinfo")))


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Controller -> cgroup path from /proc/<pid>/cgroup; the unified hierarchy is key "".

    Lines are "id:controllers:path"; co-mounted v1 controllers ("cpu,cpuacct") get one
    entry each. Handles cgroupfs (/docker/<id>) and systemd (/system.slice/docker-<id>.scope)
    drivers alike because the path is taken as the kernel gives it.
    """
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def cgroup_dirs(layout: Layout, paths: dict[str, str]) -> CgroupDirs:
    """The counter directories for a process with these memberships; KeyError if unmounted."""
    if layout.version == 2:
        if layout.v2 is None or "" not in paths:
            raise KeyError("no cgroup2 hierarchy")
        d = _join(layout.v2, paths[""])
        return CgroupDirs(2, d, d, d)
    return CgroupDirs(1, *(_join(layout.v1[c], paths[c]) for c in (V1_CPU, V1_MEMORY, V1_IO)))


def _join(mount_point: str, path: str) -> str:
    return mount_point.rstrip("/") + "/" + path.lstrip("/") if path != "/" else mount_point


def process_cgroup_dirs(pid: int, layout: Layout, roots: procfs.Roots = procfs.HOST) -> CgroupDirs:
    return cgroup_dirs(layout, parse_proc_cgroup(read_text(roots.proc_path(str(pid), "cgroup"))))


# --- pure parsers ----------------------------------------------------------------------

def parse_keyed(text: str, key: str) -> int:
    """The value of `key` in a "key value" per line file such as cpu.stat."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise ValueError(f"no {key} line")


def parse_limit(text: str) -> int | None:
    """A memory limit: "max" (v2) or a v1 value near 2^63 means no limit (None)."""
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if value >= V1_NO_LIMIT else value


def parse_io_stat(text: str) -> BlockIo:
    """v2 io.stat summed over devices."""
    totals = dict.fromkeys(("rbytes", "wbytes", "rios", "wios"), 0)
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key in totals:
                totals[key] += int(value)
    return BlockIo(totals["rbytes"], totals["wbytes"], totals["rios"], totals["wios"])


def parse_blkio(text: str) -> tuple[int, int]:
    """(read, write) summed over devices from a v1 blkio.*io_service_bytes / io_serviced file."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:  # the trailing "Total N" line has two
            continue
        if parts[1] == "Read":
            read += int(parts[2])
        elif parts[1] == "Write":
            write += int(parts[2])
    return read, write


# --- readers (each raises OSError when the cgroup is gone) -----------------------------

def cpu_ms(dirs: CgroupDirs) -> int:
    """CPU time used by the cgroup, in milliseconds."""
    if dirs.version == 2:
        return parse_keyed(read_text(dirs.cpu + "/cpu.stat"), "usage_usec") // 1000
    return int(read_text(dirs.cpu + "/cpuacct.usage")) // 1_000_000


def memory(dirs: CgroupDirs) -> Memory:
    if dirs.version == 2:
        usage, limit = "memory.current", "memory.max"
    else:
        usage, limit = "memory.usage_in_bytes", "memory.limit_in_bytes"
    return Memory(int(read_text(f"{dirs.memory}/{usage}")),
                  parse_limit(read_text(f"{dirs.memory}/{limit}")))


def block_io(dirs: CgroupDirs) -> BlockIo:
    if dirs.version == 2:
        return parse_io_stat(read_text(dirs.io + "/io.stat"))
    # Recent kernels count these v1 files only in cgroups that have a throttle rule (any
    # blkio.throttle.*_device limit); v2's io.stat always counts.
    read_bytes, write_bytes = parse_blkio(read_text(dirs.io + "/blkio.throttle.io_service_bytes"))
    reads, writes = parse_blkio(read_text(dirs.io + "/blkio.throttle.io_serviced"))
    return BlockIo(read_bytes, write_bytes, reads, writes)


def exists(dirs: CgroupDirs) -> bool:
    return os.path.isdir(dirs.cpu)
