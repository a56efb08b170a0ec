"""hsagent.transport: every collector gets each datagram, and one that fails costs only itself.

Collectors are loopback receivers (IPv4 and IPv6); an unreachable one lives in a namespace
with no route; a refusing one is the IPv4 broadcast address, which the kernel refuses to send
to without SO_BROADCAST, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import socket
import sys

from conftest import Receiver
from hsagent.settings import Collector
from hsagent.transport import Transport

DATAGRAM = b"\x00\x00\x00\x05" + bytes(range(200))


def wait_for_datagrams(receiver, count):
    return receiver.wait_for(lambda r: len(r.raw) >= count and r.raw, timeout=5)


def test_each_collector_gets_every_datagram_over_ipv4_and_ipv6(receiver, receiver6):
    second = Receiver()
    transport = Transport()
    try:
        collectors = [Collector(r.host, r.port) for r in (receiver, second, receiver6)]
        for _ in range(3):
            transport.send(DATAGRAM, collectors)
        for r in (receiver, second, receiver6):
            assert wait_for_datagrams(r, 3) == [DATAGRAM] * 3
        assert (transport.datagrams_sent, transport.send_errors) == (9, 0)
    finally:
        transport.close()
        second.close()


def test_a_refusing_collector_costs_one_error_and_one_log_line(receiver, caplog):
    transport = Transport()
    refusing = Collector("255.255.255.255", 6343)  # EACCES: no SO_BROADCAST
    try:
        with caplog.at_level(logging.WARNING, logger="hsagent.transport"):
            for _ in range(5):
                transport.send(DATAGRAM, [refusing, Collector(receiver.host, receiver.port)])
        assert wait_for_datagrams(receiver, 5) == [DATAGRAM] * 5
        assert (transport.datagrams_sent, transport.send_errors) == (5, 5)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "255.255.255.255:6343" in warnings[0]
    finally:
        transport.close()


def test_the_socket_is_reopened_after_an_error_of_its_own(receiver):
    transport = Transport()
    collectors = [Collector(receiver.host, receiver.port)]
    try:
        transport.send(DATAGRAM, collectors)
        # The socket breaking under the transport (EBADF here) is an error of the socket, not
        # of a collector: that send fails, and the next one goes out on a new socket.
        transport._sockets[socket.AF_INET].close()
        transport.send(DATAGRAM, collectors)
        transport.send(DATAGRAM, collectors)
        assert wait_for_datagrams(receiver, 2) == [DATAGRAM] * 2
        assert (transport.datagrams_sent, transport.send_errors) == (2, 1)
    finally:
        transport.close()


UNREACHABLE = """
import json, socket
from hsagent.settings import Collector
from hsagent.transport import Transport
listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener.bind(("127.0.0.1", 0))
listener.settimeout(5)
transport = Transport()
collectors = [Collector("198.18.0.9", 6343), Collector("127.0.0.1", listener.getsockname()[1])]
for _ in range(3):
    transport.send(b"sflow", collectors)
received = [listener.recv(100) for _ in range(3)]
print(json.dumps([transport.datagrams_sent, transport.send_errors, len(received)]))
"""


def test_an_unreachable_collector_does_not_stop_the_others(netns):
    ns = netns("hstr")  # only loopback: 198.18.0.9 has no route (ENETUNREACH)
    sent, errors, received = json.loads(ns.run(sys.executable, "-c", UNREACHABLE).stdout)
    assert (sent, errors, received) == (3, 3, 3)
