"""The UDP socket sFlow arrives on, read from an asyncio loop.

Listening on `::` (or on nothing in particular) takes IPv4 and IPv6 on one socket. With
`reuse_port`, several processes may bind the same port (SO_REUSEPORT): the kernel hashes each
sender's address and port to one of them, so every agent's datagrams keep going to the same
process and its flows are whole there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Callable

from ..netlink import set_receive_buffer

RECEIVE_BUFFER = 8 << 20  # bytes; without CAP_NET_ADMIN the kernel caps it at net.core.rmem_max
READS_PER_WAKEUP = 512  # bounded, so one busy socket cannot starve the loop's other work


def open_udp(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket; host '' or '::' is every IPv4 and IPv6 address (every
    IPv4 address on a host without IPv6)."""
    wildcard = host in ("", "::")
    family = socket.AF_INET6 if wildcard or ipaddress.ip_address(host).version == 6 else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        if not wildcard:
            raise
        return open_udp("0.0.0.0", port, reuse_port)
    try:
        if wildcard:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        set_receive_buffer(sock, RECEIVE_BUFFER)
        sock.bind((host or "::", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    """Hands every datagram that arrives on `sock` to `on_datagram(data)`."""

    def __init__(self, sock: socket.socket, on_datagram: Callable[[bytes], None]):
        self.sock = sock
        self._on_datagram = on_datagram
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        recv, handle = self.sock.recv, self._on_datagram
        for _ in range(READS_PER_WAKEUP):
            try:
                data = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            handle(data)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
