"""Malformed input never crashes the decoder or the printers: DecodeError is the only failure.

Seeds are the real hsflowd datagrams of the capture and our own encodings; each round applies
one mutation (bit flips, truncation, edits of length and count fields, splices, random bytes).
"""

from __future__ import annotations

import ipaddress
import json
import random
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsagent.sflow import records as r
from hsagent.sflow.datagram import (
    CountersSample, Datagram, FlowSample, Interface, UnknownRecord, decode_datagram,
    encode_datagram,
)
from hsagent.sflow.headers import decode_header
from hsagent.sflow.pcap import read_udp
from hsagent.sflow.text import datagram_json, datagram_lines
from hsagent.sflow.xdr import DecodeError

PCAP = Path(__file__).parent / "data" / "hsflowd-docker.pcap"
ROUNDS = 100_000
U32 = struct.Struct(">I")


def _our_datagrams() -> list[bytes]:
    tcp = bytes.fromhex("0242ac1100020242a47548ce0800" "4500003c16e440004006cbb2ac110001ac110002"
                        "a8601f90bc713a2400000000a002faf058540000")
    ipv6 = (bytes.fromhex("6b8abcde002611ff") + bytes(range(32))
            + bytes.fromhex("14e90035002e0000"))
    flows = FlowSample(0, 3, 400, 8000, 0, Interface(0, 0x3FFFFFFF), Interface(2, 3), [
        r.SampledHeader(1, 1500, 4, tcp), r.SampledHeader(12, 200, 0, ipv6),
        r.SampledHeader(11, 60, 0, tcp[14:]), r.ExtendedSwitch(1, 2, 3, 4),
        r.SampledEthernet(64, b"\1" * 6, b"\2" * 6, 0x800),
        r.SampledIpv4(60, 6, b"\1\2\3\4", b"\5\6\7\x08", 1, 2, 3, 4),
        r.SampledIpv6(60, 17, bytes(16), bytes(range(16)), 1, 2, 3, 4),
        r.ExtendedTimestamp(2**60), UnknownRecord(4096 + 7, bytes(8)),
    ])
    counters = CountersSample(3, 2**24 + 5, [
        r.HostDescr("host", bytes(16), 3, 2, "6.1"), r.HostAdapters([r.Adapter(2, [b"\1" * 6])]),
        r.HostCpu(*([1.5] * 3), *range(17)), r.HostDiskIo(1, 2, -1, 3, 4, 5, 6, 7, 8),
        r.PortName("eth0"), r.IfCounters(*range(19)),
    ])
    return [encode_datagram(Datagram(ipaddress.ip_address(agent), 1, 2, 3, [flows, counters]))
            for agent in ("198.18.0.1", "2001:db8::1")]


def seeds() -> list[bytes]:
    with open(PCAP, "rb") as f:
        return [p.payload for p in read_udp(f)] + _our_datagrams()


def structure_words(buf: bytes) -> list[int]:
    """Offsets of the count, tag and length words of a well-formed datagram."""
    off = 28 if U32.unpack_from(buf, 4)[0] == 1 else 40
    words = [off - 4]
    for _ in range(U32.unpack_from(buf, off - 4)[0]):
        tag, length = struct.unpack_from(">II", buf, off)
        words += [off, off + 4]
        fixed = {1: 28, 2: 8, 3: 40, 4: 12}.get(tag)
        if fixed is not None:
            at = off + 8 + fixed
            words.append(at)
            at += 4
            while at < off + 8 + length:
                words += [at, at + 4]
                at += 8 + U32.unpack_from(buf, at + 4)[0]
        off += 8 + length
    return words


def _interesting_value(rng: random.Random, old: int) -> int:
    return rng.choice([0, 1, 2, 3, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, old + 4, old - 4, old + 1,
                       old * 2, rng.getrandbits(32), rng.getrandbits(8)]) & 0xFFFFFFFF


def mutate(rng: random.Random, seed: bytes, words: list[int], other: bytes) -> bytes:
    buf = bytearray(seed)
    kind = rng.randrange(7)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf) * 8)
            buf[i // 8] ^= 1 << (i % 8)
    elif kind == 1:  # truncation
        del buf[rng.randrange(len(buf)):]
    elif kind in (2, 3):  # a length, count or tag word edited
        at = rng.choice(words)
        U32.pack_into(buf, at, _interesting_value(rng, U32.unpack_from(buf, at)[0]))
    elif kind == 4:  # random bytes overwritten
        at = rng.randrange(len(buf))
        buf[at:at + rng.randint(1, 16)] = rng.randbytes(rng.randint(1, 16))
    elif kind == 5:  # splice of two datagrams
        buf = buf[:rng.randrange(len(buf))] + other[rng.randrange(len(other)):]
    else:  # random bytes, sometimes behind a valid header
        tail = rng.randbytes(rng.randrange(1500))
        buf = buf[:rng.choice((0, 28, 36))] + tail
    return bytes(buf)


def exercise(data: bytes) -> bool:
    """Decode and print; True if it decoded. Anything but DecodeError propagates."""
    try:
        datagram = decode_datagram(data)
    except DecodeError as e:
        assert 0 <= e.offset <= len(data)
        return False
    assert datagram_lines(datagram, len(data), received=0.0)[-1].startswith("endDatagram")
    json.dumps(datagram_json(datagram, len(data), received=0.0), allow_nan=False)
    return True


@pytest.mark.slow
def test_a_hundred_thousand_mutations():
    rng = random.Random(6343)
    pool = seeds()
    words = [structure_words(s) for s in pool]
    started, decoded = time.monotonic(), 0
    for _ in range(ROUNDS):
        i = rng.randrange(len(pool))
        data = mutate(rng, pool[i], words[i], rng.choice(pool))
        try:
            decoded += exercise(data)
        except Exception as e:
            raise AssertionError(f"{type(e).__name__}: {e} on input {data.hex()}") from e
    elapsed = time.monotonic() - started
    # Many mutations keep the datagram valid (a flipped counter bit), so the printers get
    # real work too; far fewer would mean the mutations are not reaching the decoder.
    assert ROUNDS // 10 < decoded < ROUNDS - ROUNDS // 10
    assert elapsed < 120


@settings(max_examples=2000, deadline=None)
@given(protocol=st.sampled_from([1, 11, 12, 15, 2, 99]), header=st.binary(max_size=120),
       frame=st.integers(0, 2**32 - 1), stripped=st.integers(0, 2**32 - 1))
def test_header_decoder_never_raises(protocol, header, frame, stripped):
    for key, value in decode_header(protocol, header, frame, stripped):
        assert key is None or isinstance(value, (int, str))


@settings(max_examples=2000, deadline=None)
@given(agent=st.sampled_from([b"\0\0\0\1" + bytes(4), b"\0\0\0\2" + bytes(16)]),
       rest=st.lists(st.one_of(st.integers(0, 40).map(U32.pack), st.binary(max_size=8)),
                     max_size=40))
def test_structured_garbage_after_a_valid_header(agent, rest):
    head = U32.pack(5) + agent + bytes(8) + U32.pack(0)
    body = b"".join(rest)
    exercise(head[:-4] + U32.pack(len(rest) % 4) + body)
