"""Classic BPF programs that sample 1 packet in N inside the kernel, and attaching them.

The program runs for every packet the socket would see; only the sampled ones (truncated
to the header bytes we keep) are queued to user space, so Python never handles more than
1 in N packets. Replacing the program on an open socket (SO_ATTACH_FILTER again) swaps it
atomically: the sampling rate changes with no gap and no reopening.
"""

from __future__ import annotations

import ctypes
import socket
import struct

# linux/filter.h, linux/bpf_common.h
BPF_LD, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x04, 0x05, 0x06
BPF_W, BPF_ABS, BPF_K = 0x00, 0x20, 0x00
BPF_MOD, BPF_JEQ = 0x90, 0x10
SKF_AD_OFF, SKF_AD_RANDOM = -0x1000, 56
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)

_INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k (host byte order)


def instruction(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return _INSTRUCTION.pack(code, jt, jf, k & 0xFFFFFFFF)


def sample_filter(rate: int, snaplen: int) -> bytes:
    """Pass 1 packet in `rate` at random, truncated to `snaplen` bytes.

    rate 1 passes every packet; rate 0 means sampling is off and passes none.
    """
    if rate < 0:
        raise ValueError(f"sampling rate {rate} is negative")
    if rate == 0:
        return instruction(BPF_RET | BPF_K, 0)
    if rate == 1:
        return instruction(BPF_RET | BPF_K, snaplen)
    return b"".join((
        instruction(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_RANDOM),  # A = random u32
        instruction(BPF_ALU | BPF_MOD | BPF_K, rate),  # A %= rate
        instruction(BPF_JMP | BPF_JEQ | BPF_K, 0, jt=0, jf=1),  # A == 0: keep, else skip one
        instruction(BPF_RET | BPF_K, snaplen),
        instruction(BPF_RET | BPF_K, 0),
    ))


def decode(program: bytes) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) of each instruction: for tests and debugging."""
    return [_INSTRUCTION.unpack_from(program, off) for off in range(0, len(program), _INSTRUCTION.size)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach(sock: socket.socket, program: bytes) -> None:
    """Attach (or replace) the socket's filter. The kernel copies the program during the call."""
    if not program or len(program) % _INSTRUCTION.size:
        raise ValueError(f"a BPF program is a whole number of {_INSTRUCTION.size}-byte instructions")
    code = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _INSTRUCTION.size, ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
