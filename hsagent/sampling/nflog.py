"""Sampling with iptables: a `statistic --mode random` rule sends 1 in N packets to an NFLOG group.

The kernel logs each sampled packet (its IP packet, truncated to the header bytes, plus the
input/output ifIndex and, on input, the link-layer header) as a netlink message on a
NETLINK_NETFILTER socket bound to the group. The rate is 1/probability of the rule, and as
the kernel does not tell how many packets the rule saw, sample_pool grows by the rate per
sample (hsflowd's approximation). drops come from gaps in the instance's sequence numbers.

The rule is the administrator's unless `install_rule` is used (hsagent.conf
`nflog { probability = ... }`); then the sampler owns it and removes it on close.

Parsing is pure (`parse_packet`, `packet_sample`, `decode_samples`, on hsagent.netlink's
framing); the socket and the iptables calls are thin wrappers around it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import time
from typing import NamedTuple

from ..netlink import (NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSGHDR, attribute, attributes,
                       error_code, messages, pending_datagrams, set_receive_buffer)
from ..sflow.datagram import INTERNAL_INTERFACE
from . import Wanted, flows

NETLINK_NETFILTER = 12

# linux/netfilter/nfnetlink_log.h
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = NFNL_SUBSYS_ULOG << 8 | 0
NFULNL_MSG_CONFIG = NFNL_SUBSYS_ULOG << 8 | 1
NFULA_PACKET_HDR, NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV = 1, 4, 5
NFULA_PAYLOAD, NFULA_SEQ, NFULA_HWTYPE, NFULA_HWHEADER = 9, 12, 15, 16
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ, NFULA_CFG_TIMEOUT = 1, 2, 3, 4
NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 5, 6
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND, NFULNL_CFG_CMD_PF_BIND = 1, 2, 3
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 0x0001
ARPHRD_ETHER = 1

# Batching: the kernel sends up to QUEUE_THRESHOLD packets per netlink datagram and flushes
# a partial batch after FLUSH_TIMEOUT hundredths of a second, well inside sFlow's 1 s hold.
QUEUE_THRESHOLD, FLUSH_TIMEOUT, KERNEL_BUFFER = 64, 10, 65536
RECEIVE_SIZE = 2 * KERNEL_BUFFER
DEFAULT_RCVBUF = 4 << 20
DEFAULT_BATCH = 1000
RULE_CHAINS = ("INPUT", "FORWARD")
RULE_COMMENT = "hsagent sampling"

_NFGENMSG = struct.Struct(">BBH")  # family, version, resource id (the group)
_BE32, _BE16 = struct.Struct(">I"), struct.Struct(">H")


# --- NFLOG messages ---------------------------------------------------------------------------

class NflogPacket(NamedTuple):
    indev: int  # ifIndex, 0 when the hook has none (OUTPUT, POSTROUTING)
    outdev: int  # ifIndex, 0 on INPUT and PREROUTING
    payload: bytes  # from the IP header on, truncated to the copy range
    hwheader: bytes  # the Ethernet header of a received frame, else b""
    seq: int | None  # instance-local sequence number


def config_message(group: int, family: int, attrs: bytes, seq: int = 0) -> bytes:
    body = _NFGENMSG.pack(family, 0, group) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), NFULNL_MSG_CONFIG,
                          NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_messages(group: int, copy_range: int) -> list[bytes]:
    """Requests that bind the group to this socket and ask for packets with sequence numbers."""
    pf_bind = attribute(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_PF_BIND]))
    return [
        # PF_BIND is a no-op since Linux 3.17 and needed before it
        config_message(0, socket.AF_INET, pf_bind, 1),
        config_message(0, socket.AF_INET6, pf_bind, 2),
        config_message(group, socket.AF_UNSPEC, b"".join((
            attribute(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
            attribute(NFULA_CFG_MODE, _BE32.pack(copy_range) + bytes([NFULNL_COPY_PACKET, 0])),
            attribute(NFULA_CFG_NLBUFSIZ, _BE32.pack(KERNEL_BUFFER)),
            attribute(NFULA_CFG_QTHRESH, _BE32.pack(QUEUE_THRESHOLD)),
            attribute(NFULA_CFG_TIMEOUT, _BE32.pack(FLUSH_TIMEOUT)),
            attribute(NFULA_CFG_FLAGS, _BE16.pack(NFULNL_CFG_F_SEQ)),
        )), 3),
    ]


def parse_packet(payload) -> NflogPacket:
    """One NFULNL_MSG_PACKET message body (after the netlink header)."""
    attrs = attributes(payload, _NFGENMSG.size)

    def be32(kind):
        value = attrs.get(kind)
        return _BE32.unpack(value)[0] if value is not None and len(value) == 4 else None

    hwheader = b""
    hwtype = attrs.get(NFULA_HWTYPE)
    if hwtype is not None and _BE16.unpack(hwtype[:2])[0] == ARPHRD_ETHER:
        hwheader = bytes(attrs.get(NFULA_HWHEADER, b""))
    return NflogPacket(be32(NFULA_IFINDEX_INDEV) or 0, be32(NFULA_IFINDEX_OUTDEV) or 0,
                       bytes(attrs.get(NFULA_PAYLOAD, b"")), hwheader, be32(NFULA_SEQ))


def packet_header(packet: NflogPacket, header_bytes: int):
    """The sampled_header record: Ethernet when the kernel gave us a plain Ethernet header."""
    length = flows.ip_length(packet.payload)
    if length is None:
        return None
    if len(packet.hwheader) == flows.ETHERNET_HEADER_BYTES:
        return flows.ethernet_header(packet.hwheader + packet.payload,
                                     flows.ETHERNET_HEADER_BYTES + length, header_bytes)
    return flows.ip_header(packet.payload, header_bytes)


def packet_sample(packet: NflogPacket, rate: int, pool: int, drops: int, header_bytes: int):
    """The flow sample of a logged packet, on the data source of the interface it used."""
    header = packet_header(packet, header_bytes)
    if header is None:
        return None
    source = flows.ifindex_interface(packet.indev) if packet.indev else INTERNAL_INTERFACE
    destination = flows.ifindex_interface(packet.outdev) if packet.outdev else INTERNAL_INTERFACE
    return flows.flow_sample(packet.indev or packet.outdev, rate, pool, drops, source,
                             destination, header)


def decode_samples(buf: bytes, counts: flows.SampleCounts, rate: int, header_bytes: int) -> list:
    """Flow samples of the packets in one datagram received from the NFLOG socket."""
    samples = []
    for kind, _, _, payload in messages(buf):
        if kind != NFULNL_MSG_PACKET:
            continue
        packet = parse_packet(payload)
        pool, drops = counts.count(packet.indev or packet.outdev, rate, packet.seq)
        sample = packet_sample(packet, rate, pool, drops, header_bytes)
        if sample is not None:
            samples.append(sample)
    return samples


# --- the iptables rule ------------------------------------------------------------------------

def rule_args(chain: str, probability: float, group: int) -> list[str]:
    return [chain, "-m", "statistic", "--mode", "random", "--probability", f"{probability:.10g}",
            "-m", "comment", "--comment", RULE_COMMENT, "-j", "NFLOG", "--nflog-group", str(group)]


# Run by path, never found on PATH; a tool that is not installed (no ip6tables) is skipped.
IPTABLES = ("/usr/sbin/iptables", "/usr/sbin/ip6tables")
IPTABLES_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
# iptables-legacy's -w without a time waits for the xtables lock for ever: wait at most this,
# and give a whole change (up to 8 runs) at most RULES_TIMEOUT on the agent's loop.
LOCK_WAIT, RULES_TIMEOUT = 2, 10.0


def _rule_tools() -> list[str]:
    return [tool for tool in IPTABLES if os.access(tool, os.X_OK)]


def _iptables(tool: str, action: str, args: list[str], deadline: float, check: bool = True) -> bool:
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise subprocess.TimeoutExpired(tool, RULES_TIMEOUT)
        done = subprocess.run([tool, "-w", str(LOCK_WAIT), action, *args], capture_output=True,
                              text=True, check=False, env=IPTABLES_ENV, timeout=left)
    except subprocess.TimeoutExpired:
        raise OSError(f"{tool} {action} {' '.join(args)}: no answer within {RULES_TIMEOUT:g} s") from None
    if check and done.returncode:
        raise OSError(f"{tool} {action} {' '.join(args)}: {done.stderr.strip()}")
    return done.returncode == 0


def install_rules(probability: float, group: int) -> None:
    """Insert the sampling rule in INPUT and FORWARD for IPv4 and IPv6, unless already there.
    All or nothing: on a failure the rules it inserted are taken out again."""
    deadline = time.monotonic() + RULES_TIMEOUT
    inserted = []
    try:
        for tool in _rule_tools():
            for chain in RULE_CHAINS:
                args = rule_args(chain, probability, group)
                if not _iptables(tool, "-C", args, deadline, check=False):
                    _iptables(tool, "-I", args, deadline)
                    inserted.append((tool, args))
    except OSError:
        undo = time.monotonic() + RULES_TIMEOUT
        for tool, args in inserted:
            with contextlib.suppress(OSError):
                _iptables(tool, "-D", args, undo, check=False)
        raise


def remove_rules(probability: float, group: int) -> None:
    deadline = time.monotonic() + RULES_TIMEOUT
    for tool in _rule_tools():
        for chain in RULE_CHAINS:
            args = rule_args(chain, probability, group)
            while _iptables(tool, "-C", args, deadline, check=False):
                _iptables(tool, "-D", args, deadline)


# --- the sampler ------------------------------------------------------------------------------

class NflogSampler:
    """Flow samples from NFLOG group `group`, logged by a rule sampling 1 in `rate` packets."""

    def __init__(self, group: int, rate: int, header_bytes: int = 128,
                 rcvbuf: int = DEFAULT_RCVBUF, batch: int = DEFAULT_BATCH):
        self.group = group
        self.rate = rate
        self.header_bytes = header_bytes
        self.batch = batch
        self.counts = flows.SampleCounts()
        self.owns_rule = False  # True: we installed the iptables rule and remove it on close
        self.probability: float | None = None  # of our rule while it is installed
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            set_receive_buffer(self._sock, rcvbuf)
            self._sock.bind((0, 0))
            self._sock.settimeout(2.0)
            for request in bind_messages(group, header_bytes):
                self._request(request)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    @classmethod
    def from_settings(cls, settings) -> NflogSampler:
        """hsagent.conf `nflog {}`: with a probability we install the rule, else the admin did
        and the rate is the configured `sampling`."""
        nflog = settings.nflog
        if nflog.probability is None:
            return cls(nflog.group, settings.sampling, settings.header_bytes)
        sampler = cls(nflog.group, round(1 / nflog.probability), settings.header_bytes)
        try:
            sampler.install_rule(nflog.probability)
        except BaseException:
            sampler.close()
            raise
        return sampler

    def _request(self, message: bytes) -> None:
        self._sock.send(message)
        for kind, _, _, payload in messages(self._sock.recv(RECEIVE_SIZE)):
            code = error_code(payload) if kind == NLMSG_ERROR else 0
            if code:
                raise OSError(code, f"NFLOG group {self.group}: {os.strerror(code)}")

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def drops(self) -> int:
        return self.counts.drops

    def alive(self) -> bool:
        return True  # a netlink group outlives any device

    def data_sources(self) -> set[int]:
        return self.counts.data_sources()

    def install_rule(self, probability: float) -> None:
        """Sample with our own iptables rule from now on (removed again by close)."""
        install_rules(probability, self.group)
        self.owns_rule, self.probability = True, probability

    def remove_rule(self) -> None:
        if self.probability is not None:
            remove_rules(self.probability, self.group)
        self.owns_rule, self.probability = False, None

    def set_rate(self, rate: int) -> None:
        """With our own rule: the new rule goes in before the old one leaves, so no gap.
        Rate 0 removes it (sampling off) until a later rate puts it back. When iptables
        fails, the rules and this sampler are left as they were (OSError says why)."""
        if self.owns_rule:
            old, new = self.probability, 1 / rate if rate else None
            if new is not None and new != old:
                install_rules(new, self.group)
            if old is not None and old != new:
                try:
                    remove_rules(old, self.group)
                except OSError:  # back as it was, as far as iptables lets us
                    with contextlib.suppress(OSError):
                        install_rules(old, self.group)
                    if new is not None:
                        with contextlib.suppress(OSError):
                            remove_rules(new, self.group)
                    raise
            self.probability = new
        self.rate = rate

    def read(self) -> list:
        samples = []
        for buf in pending_datagrams(self._sock, RECEIVE_SIZE, self.batch):
            samples += decode_samples(buf, self.counts, self.rate, self.header_bytes)
        return samples

    def close(self) -> None:
        try:
            self.remove_rule()
        finally:
            self._sock.close()


# --- when an NFLOG sampler runs (see hsagent.sampling) --------------------------------------

def enabled(settings) -> bool:
    return settings.nflog is not None


def wanted(settings, links) -> list:
    nflog = settings.nflog
    rate = round(1 / nflog.probability) if nflog.probability else settings.sampling
    ours = nflog.probability is not None  # our rule: the budget may change its probability
    return [Wanted(("nflog", nflog.group, ours, settings.header_bytes), rate,
                   lambda: NflogSampler.from_settings(settings), budgeted=ours)]

