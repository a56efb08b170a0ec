"""The 1-in-N BPF programs, checked instruction by instruction and on a real socket."""

import socket
import struct

import pytest

from hsagent.sampling import bpf

LD_RANDOM = (0x20, 0, 0, (-0x1000 + 56) & 0xFFFFFFFF)  # ld [SKF_AD_OFF + SKF_AD_RANDOM]


def test_one_in_n_program():
    assert bpf.decode(bpf.sample_filter(100, 128)) == [
        LD_RANDOM,
        (0x94, 0, 0, 100),  # A %= 100
        (0x15, 0, 1, 0),  # A == 0 ? next : skip one
        (0x06, 0, 0, 128),  # ret 128: keep the first 128 bytes
        (0x06, 0, 0, 0),  # ret 0: drop
    ]


def test_instruction_layout_is_struct_sock_filter():
    program = bpf.sample_filter(7, 256)
    assert len(program) == 5 * 8
    code, jt, jf, k = struct.unpack("=HBBI", program[8:16])
    assert (code, jt, jf, k) == (0x94, 0, 0, 7)


def test_rate_one_passes_everything_and_zero_nothing():
    assert bpf.decode(bpf.sample_filter(1, 128)) == [(0x06, 0, 0, 128)]
    assert bpf.decode(bpf.sample_filter(0, 128)) == [(0x06, 0, 0, 0)]


def test_negative_rate_is_refused():
    with pytest.raises(ValueError, match="negative"):
        bpf.sample_filter(-1, 128)


@pytest.mark.root
def test_kernel_accepts_the_programs():
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        for rate in (0, 1, 2, 400, 2**31 - 1):
            bpf.attach(sock, bpf.sample_filter(rate, 128))


@pytest.mark.root
def test_kernel_rejects_a_broken_program():
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        with pytest.raises(OSError):
            bpf.attach(sock, bpf.instruction(0x94, 0))  # ends without a return
        with pytest.raises(ValueError):
            bpf.attach(sock, b"\x06\x00")


@pytest.mark.root
def test_filter_on_a_live_socket_and_replacing_it():
    """Rate 1 passes all our datagrams on lo (each seen twice: sent and received), rate 0
    none; the swap happens on the open socket."""
    marker = b"hss-bpf-test"
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as tap, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        sink.bind(("127.0.0.1", 0))  # a listener, so no ICMP port-unreachable echoes the marker
        bpf.attach(tap, bpf.sample_filter(1, 256))
        tap.bind(("lo", 0x0003))
        tap.settimeout(0.5)
        for _ in range(20):
            udp.sendto(marker, sink.getsockname())
        assert _count(tap, marker) == 40
        bpf.attach(tap, bpf.sample_filter(0, 256))
        for _ in range(20):
            udp.sendto(marker, sink.getsockname())
        assert _count(tap, marker) == 0


def _count(tap, marker) -> int:
    seen = 0
    while True:
        try:
            frame = tap.recv(2048)
        except TimeoutError:
            return seen
        seen += frame.endswith(marker)
