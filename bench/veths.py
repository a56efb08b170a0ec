"""Shared by the interface benchmarks: CPU timing, the /proc/net/dev floor, and a network
namespace full of veth pairs."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
import uuid


def cpu_ms(action, repeat: int = 1) -> tuple[float, object]:
    """Median CPU milliseconds of `repeat` runs of action(); also its last result."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        result = action()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times), result


def read_proc_net_dev() -> bytes:
    """The baseline: what reading every interface's counters once costs at the least."""
    with open("/proc/net/dev", "rb") as f:
        return f.read()


@contextlib.contextmanager
def veth_namespace(prefix: str, pairs: int, up: bool = False):
    """A namespace (its name yielded) holding `pairs` veth pairs; deleted afterwards."""
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        batch = "link set lo up\n"
        batch += "".join(f"link add v{i}a type veth peer name v{i}b\n" for i in range(pairs))
        if up:
            batch += "".join(f"link set v{i}{end} up\n" for i in range(pairs) for end in "ab")
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
        if up:
            time.sleep(5)  # let the kernel finish adding their IPv6 link-local addresses
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
