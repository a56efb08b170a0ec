"""How fast sampled packets become encoded sFlow datagrams, and what an idle sampler costs.

    python3 bench/bench_sampling.py            (root: the socket figures need namespaces)

1. pure: frames -> flows.py samples -> DatagramBuilder datagrams, one core, no I/O.
2. socket: an AF_PACKET sampler at 1-in-1 on a veth flooded by a UDP sender in another
   process; CPU of the sampling process per 1,000 samples and samples/s it kept up with.
3. idle: a sender paced at IDLE_RATE packets/s, with a 1-in-1000 sampler and its selector
   loop vs without any sampler, over the same wall time: busy CPU of the whole machine (the
   kernel charges softirq packet work to whichever task is running, so a process's own CPU
   time overstates what sampling costs), this process's and the sender's CPU.
Namespaces hss-bench-a/b (198.18.3.0/24) are created and deleted around the socket runs.
"""

from __future__ import annotations

import os
import resource
import selectors
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hsagent.sampling import flows
from hsagent.sflow.datagram import INTERNAL_INTERFACE, DatagramBuilder, Interface

NS_A, NS_B, DEV_A, DEV_B = "hss-bench-a", "hss-bench-b", "hss-bn0", "hss-bn1"
SRC, DST = "198.18.3.1", "198.18.3.2"
IDLE_RATE = 50_000  # packets/s of the idle comparison: the same load with and without a sampler
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data, target = b"b" * 200, (sys.argv[1], 5555)
start, seconds, rate = time.monotonic(), float(sys.argv[2]), float(sys.argv[3])
sent = 0
while time.monotonic() - start < seconds:
    for _ in range(1000):
        s.sendto(data, target)
    sent += 1000
    if rate:  # paced: no faster than `rate` packets/s
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
"""


def busy_cpu_seconds() -> float:
    """CPU time of the whole machine, all cores, that was not idle or waiting for I/O."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def bench_pure(count: int = 200_000) -> None:
    frame = bytes(range(128))
    output = Interface(0, 2)
    builder, datagrams = DatagramBuilder("198.18.3.1"), 0
    start = time.process_time()
    for i in range(count):
        sample = flows.flow_sample(2, 400, i * 400, 0, INTERNAL_INTERFACE, output,
                                   flows.ethernet_header(frame, 1500, 128))
        datagrams += builder.add(sample) is not None
    datagrams += builder.flush() is not None
    cpu = time.process_time() - start
    print(f"pure: {count / cpu:,.0f} samples/s on one core, {cpu / count * 1e6:.0f} us CPU "
          f"per sample ({cpu / count * 1000 * 1000:.1f} ms per 1,000), {datagrams:,} datagrams")


def inside_socket(seconds: float) -> None:
    """In hss-bench-a: sample every packet of a flood, building datagrams, for `seconds`."""
    from hsagent.sampling.afpacket import PacketSampler
    sampler = PacketSampler(DEV_A, 1)
    builder, samples, datagrams = DatagramBuilder(SRC), 0, 0
    sender = subprocess.Popen([sys.executable, "-c", SENDER, DST, str(seconds), "0"])
    start_cpu, start = time.process_time(), time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(sampler, selectors.EVENT_READ)
        while sender.poll() is None:
            for _ in selector.select(0.2):
                for sample in sampler.read():
                    samples += 1
                    datagrams += builder.add(sample) is not None
    cpu, wall = time.process_time() - start_cpu, time.monotonic() - start
    print(f"socket: {samples / wall:,.0f} samples/s read and encoded ({samples:,} in {wall:.1f} s, "
          f"{datagrams:,} datagrams), sampler process CPU {cpu / wall:.0%} of a core, "
          f"{cpu / max(samples, 1) * 1e6:.0f} ms per 1,000 samples; kernel passed "
          f"{sampler.passed:,}, dropped {sampler.drops:,} (sender outran us)")
    sampler.close()


def inside_idle(seconds: float, with_sampler: bool) -> None:
    """In hss-bench-a: the sender for `seconds`, with or without a 1-in-1000 sampler loop."""
    from hsagent.sampling.afpacket import PacketSampler
    sampler = PacketSampler(DEV_A, 1000) if with_sampler else None
    builder, samples = DatagramBuilder(SRC), 0
    start_cpu, start_busy = time.process_time(), busy_cpu_seconds()
    sender = subprocess.Popen([sys.executable, "-c", SENDER, DST, str(seconds), str(IDLE_RATE)])
    with selectors.DefaultSelector() as selector:
        if sampler:
            selector.register(sampler, selectors.EVENT_READ)
        while sender.poll() is None:
            for _ in selector.select(1.0) if sampler else (time.sleep(1.0) or ()):
                for sample in sampler.read():
                    samples += 1
                    builder.add(sample)
            builder.flush()
    cpu, busy = time.process_time() - start_cpu, busy_cpu_seconds() - start_busy
    sender_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    label = "1-in-1000 sampler" if sampler else "no sampler       "
    print(f"idle: {label}: machine busy {busy / seconds:.1%} of one core; this process "
          f"{cpu / seconds:.2%} ({samples:,} samples); sender user {sender_cpu.ru_utime:.2f} s "
          f"+ system {sender_cpu.ru_stime:.2f} s")
    if sampler:
        sampler.close()


def run(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def in_namespace(*args: str) -> None:
    subprocess.run(["ip", "netns", "exec", NS_A, sys.executable, __file__, *args], check=True)


def bench_sockets() -> None:
    try:
        for ns in (NS_A, NS_B):
            run("netns", "add", ns)
        run("link", "add", DEV_A, "netns", NS_A, "type", "veth", "peer", "name", DEV_B, "netns", NS_B)
        run("-n", NS_A, "addr", "add", f"{SRC}/24", "dev", DEV_A)
        run("-n", NS_A, "link", "set", DEV_A, "up")
        run("-n", NS_B, "link", "set", DEV_B, "up")
        run("-n", NS_A, "neigh", "add", DST, "lladdr", "02:00:00:00:00:02", "dev", DEV_A,
            "nud", "permanent")
        in_namespace("--socket", "5")
        in_namespace("--idle", "10", "0")
        in_namespace("--idle", "10", "1")
    finally:
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def main() -> None:
    if sys.argv[1:2] == ["--socket"]:
        return inside_socket(float(sys.argv[2]))
    if sys.argv[1:2] == ["--idle"]:
        return inside_idle(float(sys.argv[2]), sys.argv[3] == "1")
    bench_pure()
    if os.geteuid() == 0:
        bench_sockets()
    else:
        print("socket and idle figures need root (network namespaces)")


if __name__ == "__main__":
    main()
