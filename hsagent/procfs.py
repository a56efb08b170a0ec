"""Where the kernel's files are, so tests can point pollers at a recorded fixture tree.

Like psutil's PROCFS_PATH and node_exporter's paths.go: pollers never spell "/proc" or "/sys"
themselves, they ask a `Roots` for the path. `HOST` is the running machine.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Roots(NamedTuple):
    proc: str = "/proc"
    sys: str = "/sys"
    etc: str = "/etc"

    def proc_path(self, *parts: str) -> str:
        return os.path.join(self.proc, *parts)

    def sys_path(self, *parts: str) -> str:
        return os.path.join(self.sys, *parts)

    def etc_path(self, *parts: str) -> str:
        return os.path.join(self.etc, *parts)


HOST = Roots()


def read_text(path: str) -> str:
    """The whole file. Kernel text files are ASCII; a stray byte must not stop a poll.

    Raw os calls: half the CPU of open() with a text wrapper, which matters when a poll reads
    several files for each of hundreds of containers.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", errors="replace")


def read_optional(path: str) -> str | None:
    """The whole file, or None when it cannot be read (absent, gone meanwhile, refused, or
    an attribute the device does not have: a down veth's speed is EINVAL)."""
    try:
        return read_text(path)
    except OSError:
        return None


class NetDev(NamedTuple):
    """One interface's line of /proc/net/dev: the columns the sFlow structures use."""

    rx_bytes: int
    rx_packets: int
    rx_errs: int
    rx_drop: int
    tx_bytes: int
    tx_packets: int
    tx_errs: int
    tx_drop: int


# receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets
# errs drop fifo colls carrier compressed
_NET_DEV_COLUMNS = (0, 1, 2, 3, 8, 9, 10, 11)


def parse_net_dev(text: str) -> dict[str, NetDev]:
    """Interface name -> its counters, from /proc/net/dev or /proc/<pid>/net/dev (the
    network namespace of that process)."""
    interfaces = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, _, values = line.partition(":")
        v = values.split()
        interfaces[name.strip()] = NetDev(*(int(v[column]) for column in _NET_DEV_COLUMNS))
    return interfaces
