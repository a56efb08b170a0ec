"""UDP to every collector. A collector that is down, unreachable or refusing costs one
failed sendto and a rate-limited log line; it never stops the agent or the other collectors."""

from __future__ import annotations

import errno
import logging
import socket

from .logs import Throttle

log = logging.getLogger(__name__)

# Errors that say something about one collector (or the network), not about our socket.
_PER_COLLECTOR = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                 errno.ENETDOWN, errno.EADDRNOTAVAIL, errno.EAGAIN, errno.ENOBUFS, errno.EPERM,
                 errno.EACCES, errno.EINVAL, errno.EMSGSIZE}


class Transport:
    def __init__(self):
        self._sockets: dict[int, socket.socket] = {}
        self._throttle = Throttle(log)
        self.datagrams_sent = 0
        self.send_errors = 0

    def _socket(self, family: int) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sockets[family] = sock
        return sock

    def send(self, datagram: bytes, collectors) -> None:
        for collector in collectors:
            family = socket.AF_INET6 if ":" in collector.ip else socket.AF_INET
            try:
                self._socket(family).sendto(datagram, (collector.ip, collector.port))
            except OSError as err:
                self.send_errors += 1
                self._throttle(logging.WARNING, str(collector),
                               "cannot send to collector %s: %s", collector, err.strerror or err)
                if err.errno not in _PER_COLLECTOR:
                    self._reopen(family)  # something is wrong with the socket itself
            else:
                self.datagrams_sent += 1

    def _reopen(self, family: int) -> None:
        sock = self._sockets.pop(family, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
