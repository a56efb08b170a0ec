"""Flow analyser throughput and memory: run `python bench/bench_analyser.py` as root-or-not.

1. One core, in process: full datagrams (1400 bytes, 7 flow samples with 128-byte headers of
   UDP packets; 10,000 5-tuples from 200 agents, 21,000 flows as each agent's are its own) through the analyser (decode, parse the header,
   scale, update the EWMA, check the threshold). Baseline in the same run: `decode_datagram`
   alone, the floor the analysis is added to.
2. The whole process: `python3 -m hsagent.controller` listening on loopback while a sender
   paces the same datagrams at it; samples it counted per second of its own CPU time
   (/proc/PID/stat), and how many datagrams the socket dropped. Its ACL service URL is a closed
   port on 127.0.0.1 (no {agent}), so nothing leaves the host.
3. Memory: a fresh process's resident set before and after 100,000 active flows.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hsagent.analyser.engine import Analyser  # noqa: E402
from hsagent.analyser.thresholds import Threshold  # noqa: E402
from hsagent.controller.elephant import FLOW, flow_spec  # noqa: E402
from hsagent.sflow.datagram import (Datagram, FlowSample, Interface, decode_datagram,  # noqa: E402
                                    encode_datagram)
from hsagent.sflow.records import HEADER_PROTOCOL_ETHERNET, SampledHeader  # noqa: E402

SAMPLES_PER_DATAGRAM = 7  # what fits in 1400 bytes with 128-byte headers


def frame(flow: int) -> bytes:
    """Ethernet + IPv4 + UDP, 1000-byte packet, of flow number `flow`; first 128 bytes."""
    src = ipaddress.ip_address("198.18.0.0") + (flow % 60000)
    dst = ipaddress.ip_address("198.19.0.0") + (flow // 60000)
    udp = struct.pack(">HHHH", 1024 + flow % 50000, 5001, 980, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 1000, 0, 0, 64, 17, 0, src.packed, dst.packed)
    return (b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp + bytes(1000))[:128]


def datagrams(flows: int, agents: int, count: int) -> list[bytes]:
    headers = [SampledHeader(HEADER_PROTOCOL_ETHERNET, 1018, 4, frame(f)) for f in range(flows)]
    out, sequence = [], {}
    for d in range(count):
        agent = d % agents
        samples = []
        for i in range(SAMPLES_PER_DATAGRAM):
            seq = sequence[agent] = sequence.get(agent, 0) + 1
            header = headers[(d * SAMPLES_PER_DATAGRAM + i) % flows]
            samples.append(FlowSample(0, 3, 1000, seq * 1000, 0, Interface(0, 3),
                                      Interface(0, 4), [header], seq))
        address = ipaddress.ip_address("198.18.0.0") + agent + 1  # a label: never contacted
        out.append(encode_datagram(Datagram(address, 0, d + 1, 1000, samples)))
    return out


def analyser(max_flows: int = 100_000) -> Analyser:
    """The controller's flow and threshold (set high: no events, no ACL calls)."""
    return Analyser([flow_spec(1.0, max_flows)], [Threshold("elephant", FLOW, value=1e9)])


def per_second(action, items: list[bytes]) -> float:
    """Flow samples per CPU second of action(datagram, i) over `items` (best of 3)."""
    best = 0.0
    for _ in range(3):
        start = time.process_time()
        for i, item in enumerate(items):
            action(item, i)
        best = max(best, len(items) * SAMPLES_PER_DATAGRAM / (time.process_time() - start))
    return best


def in_process(items: list[bytes]) -> None:
    floor = per_second(lambda d, i: decode_datagram(d), items)
    a = analyser()
    full = per_second(lambda d, i: a.receive(d, i * 1e-4), items)
    print(f"one core, in process: decode alone (baseline) {floor:,.0f} samples/s; "
          f"decode + analyse {full:,.0f} samples/s; {len(a.tables[FLOW]):,} flows")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(kind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whole_process(items: list[bytes], rate: int, seconds: float) -> None:
    """Pace datagrams at `rate` samples/s into the controller for `seconds`."""
    sflow, api = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    with tempfile.NamedTemporaryFile("w", suffix=".tokens") as tokens:
        tokens.write("bench-token-0123456789\n")
        tokens.flush()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "hsagent.controller", "--sflow-listen",
                                 f"127.0.0.1:{sflow}", "--api-listen", f"127.0.0.1:{api}",
                                 "--threshold", "100G", "--acl-url", "http://127.0.0.1:9",
                                 "--acl-token-file", tokens.name], env=env, stderr=subprocess.DEVNULL)
        try:
            metrics = lambda: json.load(urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{api}/metrics", headers={"Authorization": "Bearer bench-token-0123456789"}), timeout=5))
            for _ in range(100):
                try:
                    metrics()
                    break
                except OSError:
                    time.sleep(0.1)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            datagrams_per_tick = max(1, rate // SAMPLES_PER_DATAGRAM // 100)
            cpu0, sent, start = cpu_seconds(proc.pid), 0, time.monotonic()
            while time.monotonic() - start < seconds:  # bounded in time
                tick = time.monotonic()
                for _ in range(datagrams_per_tick):
                    sender.sendto(items[sent % len(items)], ("127.0.0.1", sflow))
                    sent += 1
                time.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))
            time.sleep(0.5)
            cpu, got = cpu_seconds(proc.pid) - cpu0, metrics()
        finally:
            proc.terminate()
            proc.wait(10)
    samples = got["flow_samples"]
    print(f"whole process at {rate:,} samples/s offered for {seconds:.0f} s: {samples:,} samples "
          f"analysed ({got['datagrams']:,} of {sent:,} datagrams), {cpu:.2f} CPU s = "
          f"{samples / cpu:,.0f} samples per CPU second; {got['flows']:,} flows")


MEMORY = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from bench.bench_analyser import analyser, datagrams
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
items = datagrams(100_000, 1, 100_000 // 7 + 1)
a = analyser(max_flows=200_000)
before = rss()
for i, d in enumerate(items):
    a.receive(d, 0.0)
after = rss()
flows = len(a.tables["elephant"])
print(f"memory: {flows:,} active flows take {(after - before) / 2**20:.1f} MiB resident "
      f"({(after - before) / flows:.0f} bytes a flow)")
"""


def memory() -> None:
    subprocess.run([sys.executable, "-c", MEMORY, str(ROOT)], check=True)


def main() -> None:
    items = datagrams(10_000, 200, 3000)
    in_process(items)
    for rate in (50_000, 100_000):
        whole_process(items, rate=rate, seconds=5)
    memory()


if __name__ == "__main__":
    main()
