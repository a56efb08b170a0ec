"""`hsagent decode`: print sFlow datagrams from a UDP port or a pcap file, like sflowtool.

Text output follows sflowtool's layout line for line; `--json` prints one object per line.
A datagram that does not decode is reported on stderr (source and offset) and skipped.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sys
import time

from .sflow.datagram import decode_datagram
from .sflow.pcap import PcapError, read_udp
from .sflow.text import address_text, datagram_json, datagram_lines
from .sflow.xdr import DecodeError

PROG = "hsagent decode"
MAX_DATAGRAM = 65535


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the receive loop."""


def render(payload: bytes, source_ip: str, as_json: bool, received: float,
           captured: float | None = None) -> str:
    """The output for one UDP payload; raises DecodeError if it is not a valid datagram."""
    datagram = decode_datagram(payload)
    if as_json:
        obj = datagram_json(datagram, len(payload), source_ip, received, captured)
        return json.dumps(obj, separators=(",", ":")) + "\n"
    return "\n".join(datagram_lines(datagram, len(payload), source_ip, received, captured)) + "\n"


def _emit(payload: bytes, source: str, source_ip: str, as_json: bool,
          captured: float | None = None) -> None:
    try:
        text = render(payload, source_ip, as_json, time.time(), captured)
    except DecodeError as e:
        print(f"{PROG}: bad datagram from {source} ({len(payload)} bytes) at offset {e.offset}: "
              f"{e.problem}", file=sys.stderr, flush=True)
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def _from_pcap(path: str, count: int | None, as_json: bool) -> int:
    try:
        stream = open(path, "rb")
    except OSError as e:
        print(f"{PROG}: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    with stream:
        try:
            for n, packet in enumerate(read_udp(stream)):
                if count is not None and n >= count:
                    break
                source = f"{path} packet from {packet.src}:{packet.src_port}"
                _emit(packet.payload, source, "-", as_json, packet.timestamp)
        except PcapError as e:
            print(f"{PROG}: {path}: {e}", file=sys.stderr)
            return 2
    return 0


def _open_socket(bind: str, port: int) -> socket.socket:
    """UDP socket on `bind`; "::" (the default) receives both IPv6 and IPv4."""
    address = ipaddress.ip_address(bind)
    if address.version == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        if address.is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((bind, port))
    return sock


def _listen(bind: str, port: int, count: int | None, as_json: bool) -> int:
    try:
        sock = _open_socket(bind, port)
    except (OSError, ValueError) as e:
        print(f"{PROG}: cannot listen on [{bind}]:{port}: {e}", file=sys.stderr)
        return 2
    with sock:
        # Tests and scripts wait for this line; with --port 0 it tells them the port.
        print(f"{PROG}: listening on [{bind}]:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
        received = 0
        while count is None or received < count:
            payload, peer = sock.recvfrom(MAX_DATAGRAM)
            received += 1
            source_ip = _peer_text(peer[0])
            _emit(payload, f"{source_ip}:{peer[1]}", source_ip, as_json)
    return 0


def _peer_text(host: str) -> str:
    """The UDP peer as sflowtool prints it; IPv4 senders to a dual-stack socket stay IPv4."""
    address = ipaddress.ip_address(host.split("%")[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address_text(address)


def _on_sigterm(signum, frame):
    raise _Stop


def main(args) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Strings are escaped to printable characters (sflow.text.printable); one that the
    # terminal's encoding lacks (a UTF-8 hostname on an ASCII stdout) is escaped, not fatal.
    sys.stdout.reconfigure(errors="backslashreplace")
    try:
        if args.pcap:
            return _from_pcap(args.pcap, args.count, args.json)
        return _listen(args.bind, args.port, args.count, args.json)
    except (KeyboardInterrupt, _Stop):
        return 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly. Point stdout at /dev/null so
        # Python's flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
