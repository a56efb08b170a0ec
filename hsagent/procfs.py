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
    """The whole file. Kernel text files are ASCII; a stray byte must not stop a poll."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()
