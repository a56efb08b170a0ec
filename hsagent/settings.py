"""The one settings model: defaults <- config file <- DNS-SD produce one immutable `Settings`.

Every source (the hsflowd.conf-style file, DNS-SD TXT records) produces the same objects;
a change replaces the whole `Settings`. `origins` records where each value came from
("default", "file" or "dns") so `hsagent check` can show it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

DEFAULT_PORT = 6343
DEFAULT_POLLING = 30
DEFAULT_SAMPLING = 400
DEFAULT_HEADER_BYTES = 128
DEFAULT_DATAGRAM_BYTES = 1400
DEFAULT_BPS_RATIO = 1_000_000  # sampling 1-in-(link speed / this) when no rate is given
MIN_SPEED_RATE = 100  # floor of the speed rule
DEFAULT_CONFIG_FILE = "/etc/hsagent.conf"
DEFAULT_AUTO_FILE = "/etc/hsagent.auto"
DEFAULT_RUNTIME_DIR = "/run/hsagent"
DEFAULT_OVSDB = "unix:/run/openvswitch/db.sock"
# Open vSwitch numbers its bridges' sFlow sub-agents 0, 1, 2 ... under the agent address they
# share with hsagent; hsagent's own datagrams then use hsflowd's id, above any bridge count.
OVS_SUB_AGENT_ID = 100_000

# Range checks shared by the config file and DNS-SD: name -> (min, max)
LIMITS = {
    "polling": (1, 86400),
    "sampling": (0, 2**31 - 1),  # 0 = sampling off
    "headerBytes": (64, 256),
    "datagramBytes": (200, 8192),
    "udpport": (1, 65535),
    "sampling.bps_ratio": (0, 2**31 - 1),
    "subAgentId": (0, 199_999),  # hsflowd's HSP_MAX_SUBAGENTID
    "nflog.group": (0, 65535),  # the kernel's NFLOG group is 16 bits
    "psample.group": (1, 2**32 - 1),
}


@dataclass(frozen=True, order=True)
class Collector:
    """An sFlow collector: where datagrams go."""

    ip: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class NflogSettings:
    group: int = 1
    probability: float | None = None  # set: hsagent installs the iptables rule itself


@dataclass(frozen=True)
class PsampleSettings:
    group: int = 1


@dataclass(frozen=True)
class OvsSettings:
    db: str = DEFAULT_OVSDB  # ovsdb-server's socket, unix:/path


@dataclass(frozen=True)
class Settings:
    collectors: tuple[Collector, ...] = ()
    dnssd: bool = True
    dnssd_domain: str | None = None
    dnssd_server: str | None = None  # extension: a specific nameserver (tests, odd sites)
    dnssd_port: int = 53
    polling: int = DEFAULT_POLLING
    sampling: int = DEFAULT_SAMPLING
    sampling_by_speed: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    sampling_bps_ratio: int | None = None
    header_bytes: int = DEFAULT_HEADER_BYTES
    datagram_bytes: int = DEFAULT_DATAGRAM_BYTES
    agent: str | None = None  # interface whose address identifies the agent
    agent_cidr: str | None = None  # or: the first local address inside this prefix
    agent_ip: str | None = None  # or: this address (DNS-SD `agentIP`)
    sub_agent_id: int = 0
    docker: bool = False
    pcap_devs: tuple[str, ...] = ()
    switchport: str | None = None  # regex: matching interfaces are sampled switch ports
    nflog: NflogSettings | None = None
    psample: PsampleSettings | None = None
    ovs: OvsSettings | None = None  # keep Open vSwitch's sFlow in step with these settings
    user: str | None = None  # drop privileges to this user after start-up (None: stay)
    origins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def replace(self, origin: str, **changes) -> "Settings":
        """A copy with `changes` applied and their origin recorded."""
        origins = dict(self.origins)
        origins.update(dict.fromkeys(changes, origin))
        return dataclasses.replace(self, origins=MappingProxyType(origins), **changes)

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")

    def datagram_sub_agent_id(self) -> int:
        """The sub-agent id of hsagent's own datagrams: `subAgentId`, or with ovs { } and no
        subAgentId, OVS_SUB_AGENT_ID (so they never share a stream with a bridge's)."""
        if self.ovs is not None and self.origin("sub_agent_id") == "default":
            return OVS_SUB_AGENT_ID
        return self.sub_agent_id

    def sampling_rate(self, speed_bps: int) -> int:
        """1-in-N for a link of this speed (hsflowd's order; section 7 of the reference)."""
        key = speed_key(speed_bps)
        if key in self.sampling_by_speed:
            return self.sampling_by_speed[key]
        if not speed_bps:
            return self.sampling
        if self.sampling_bps_ratio is not None:
            return max(1, speed_bps // self.sampling_bps_ratio) if self.sampling_bps_ratio else self.sampling
        return max(MIN_SPEED_RATE, speed_bps // DEFAULT_BPS_RATIO)


def speed_key(speed_bps: int) -> str:
    """hsflowd's spelling of a link speed in `sampling.<speed>`: 1e9 -> 1G, 1e8 -> 100M."""
    digits = str(speed_bps)
    for cut, suffix in ((12, "T"), (9, "G"), (6, "M"), (3, "K")):
        if len(digits) > cut:
            return digits[:-cut] + suffix
    return digits


def parse_speed_key(text: str) -> int:
    """`10G` -> 10_000_000_000; raises ValueError for anything else."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    number, unit = text[:-1], text[-1:].upper()
    if unit not in units or not number.isdigit():
        raise ValueError(f"speed {text!r} is not a number followed by K, M, G or T")
    return int(number) * units[unit]


def check_ip(text: str) -> str:
    """Canonical text of an IPv4/IPv6 address; raises ValueError naming the bad value."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def check_cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an address prefix such as 10.0.0.0/8") from None


def ovsdb_remote(text: str) -> str:
    """`unix:/path/db.sock`: hsagent speaks to ovsdb-server over its unix socket only."""
    if not text.startswith("unix:/"):
        raise ValueError(f"{text!r} is not unix:/path/to/db.sock (hsagent talks to ovsdb-server "
                         f"over its unix socket only)")
    return text


def check_range(name: str, value: int) -> int:
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise ValueError(f"{name} = {value} is out of range ({low} to {high})")
    return value


AUTO_KEYS = (
    # (key in hsagent.auto, Settings attribute) in the order they are written
    ("polling", "polling"), ("sampling", "sampling"), ("header", "header_bytes"),
    ("datagram", "datagram_bytes"),
)


def auto_file_text(settings: Settings, agent_ip: str | None, agent_device: str | None) -> str:
    """The settings in force, in hsflowd.auto's key=value style."""
    lines = ["# WARNING: Do not edit this file. It is generated automatically by hsagent.",
             "rev_start=1"]
    lines += [f"{key}={getattr(settings, attr)}" for key, attr in AUTO_KEYS]
    lines += [f"sampling.{k}={v}" for k, v in sorted(settings.sampling_by_speed.items())]
    lines += [f"collector={r.ip} {r.port}" for r in settings.collectors]
    if agent_ip:
        lines.append(f"agentIP={agent_ip}")
    if agent_device:
        lines.append(f"agent={agent_device}")
    lines.append("rev_end=1")
    return "\n".join(lines) + "\n"
