"""Codec throughput: run `python bench/bench_codec.py` (a fresh process, nothing else loaded).

Two datagrams: the host's counter sample (2:1, every host record, values from the hsflowd
capture) and a full 1400-byte datagram of flow samples with 128-byte sampled headers. For each:
encode and decode rates, plus the text printer. The baseline in the same run is packing the
same records' bodies alone, the floor our framing is added to.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hsagent.sflow import records as r  # noqa: E402
from hsagent.sflow.datagram import (  # noqa: E402
    CountersSample, Datagram, DatagramBuilder, FlowSample, Interface, decode_datagram,
    encode_datagram, encode_sample,
)
from hsagent.sflow.pcap import read_udp  # noqa: E402
from hsagent.sflow.text import datagram_lines  # noqa: E402

CAPTURE = ROOT / "tests" / "data" / "hsflowd-docker.pcap"
AGENT = ipaddress.ip_address("192.0.2.2")


def _capture() -> list[Datagram]:
    with open(CAPTURE, "rb") as f:
        return [decode_datagram(p.payload) for p in read_udp(f)]


def host_sample(captured: list[Datagram]) -> CountersSample:
    for datagram in captured:
        for s in datagram.samples:
            if isinstance(s, CountersSample) and (s.ds_class, s.ds_index) == (2, 1):
                return s._replace(expanded=False)
    raise SystemExit("no 2:1 counters sample in the capture")


def flow_datagram(captured: list[Datagram]) -> bytes:
    """A datagram filled to the 1400-byte limit with 128-byte-header flow samples."""
    header = next(rec for d in captured for s in d.samples if isinstance(s, FlowSample)
                  for rec in s.records
                  if isinstance(rec, r.SampledHeader) and len(rec.header) == 128)
    builder = DatagramBuilder(AGENT, max_bytes=1400)
    sample = FlowSample(0, 5, 20, 0, 0, Interface(0, 5), Interface(0, 0x3FFFFFFF),
                        [header, r.ExtendedSwitch(1, 0, 1, 0)])
    while True:
        done = builder.add(sample._replace(sample_pool=builder.sequence))
        if done:
            return done


def rate(fn, arg, seconds: float = 0.4, repeats: int = 5) -> float:
    """Best calls per second over a few timed runs."""
    n = 1
    while True:  # find a batch size that takes a measurable time
        start = time.perf_counter()
        for _ in range(n):
            fn(arg)
        if time.perf_counter() - start > seconds / 10:
            break
        n *= 2
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn(arg)
        best = max(best, n / (time.perf_counter() - start))
    return best


def decode_and_print(data: bytes) -> list[str]:
    return datagram_lines(decode_datagram(data), len(data), received=0.0)


def _pack_bodies(records) -> None:
    for rec in records:
        rec.spec.pack(rec)


def main() -> None:
    captured = _capture()
    host = host_sample(captured)
    host_datagram = Datagram(AGENT, 100001, 1, 1000, [host])
    host_bytes = encode_datagram(host_datagram)
    flow_bytes = flow_datagram(captured)
    flows = decode_datagram(flow_bytes)

    print(f"python {sys.version.split()[0]}")
    print(f"host counter datagram: {len(host_bytes)} bytes, {len(host.records)} records "
          f"({', '.join(r.tag_text(rec.spec.tag) for rec in host.records)})")
    print(f"  encode        {rate(encode_datagram, host_datagram):>10,.0f} datagrams/s")
    print(f"  decode        {rate(decode_datagram, host_bytes):>10,.0f} datagrams/s")
    print(f"  decode+text   {rate(decode_and_print, host_bytes):>10,.0f} datagrams/s")
    sample_rate = rate(encode_sample, host)
    floor = rate(_pack_bodies, host.records)
    print(f"  one host counter sample: {1e6 / sample_rate:.1f} us to encode "
          f"(baseline, record bodies only: {1e6 / floor:.1f} us)")
    print(f"flow datagram: {len(flow_bytes)} bytes, {len(flows.samples)} flow samples, "
          f"128-byte headers")
    print(f"  encode        {rate(encode_datagram, flows):>10,.0f} datagrams/s")
    print(f"  decode        {rate(decode_datagram, flow_bytes):>10,.0f} datagrams/s")
    print(f"  decode+text   {rate(decode_and_print, flow_bytes):>10,.0f} datagrams/s")


if __name__ == "__main__":
    main()
