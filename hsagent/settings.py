"""The one settings model: defaults <- config file <- DNS-SD produce one immutable `Settings`.

Each setting is declared once, as a field of `Settings` (or of the record a block builds:
`Collector`, `NflogSettings`, `PsampleSettings`, `OvsSettings`) made with `setting()`: its
default, the config-file key (and the block it lives in), how text becomes a value, its range,
whether DNS-SD TXT records may set it, and its key in hsagent.auto. The config-file grammar
(config/conffile.py), the TXT parser (config/dnssd.py) and the .auto writer below are derived
from these declarations, so adding a setting is one declaration plus the code that uses it.

Every source produces the same objects; a change replaces the whole `Settings`, which checks
its own ranges when it is built. `origins` records where each value came from ("default",
"file" or "dns") so `hsagent check` can show it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_BPS_RATIO = 1_000_000  # sampling 1-in-(link speed / this) when no rate is given
MIN_SPEED_RATE = 100  # floor of the speed rule
# Samples a second per host. The speed rule gives about 1,500 samples/s per saturated link
# (1 in 10,000 of 14.9 M minimum-size frames/s at 10G), so this leaves three such links
# their configured rates, for a sixth of a core at most (README: the budget); a switch ASIC
# stops near 16,000 for all its ports.
DEFAULT_SAMPLE_BUDGET = 5_000
DEFAULT_CONFIG_FILE = "/etc/hsagent.conf"
DEFAULT_AUTO_FILE = "/etc/hsagent.auto"
DEFAULT_RUNTIME_DIR = "/run/hsagent"
DEFAULT_OVSDB = "unix:/run/openvswitch/db.sock"
# Open vSwitch numbers its bridges' sFlow sub-agents 0, 1, 2 ... under the agent address they
# share with hsagent; hsagent's own datagrams then use hsflowd's id, above any bridge count.
OVS_SUB_AGENT_ID = 100_000
SPEED_PREFIX = "sampling."  # sampling.<speed> = N, in the file and in TXT records
U31_MAX, U32_MAX = 2**31 - 1, 2**32 - 1


# ---------------------------------------------------------------- values: text -> value
# Each raises ValueError naming the bad text; the config file and DNS-SD add where it was.

def integer(text: str) -> int:
    """A whole number; like hsflowd, a K/M/G/T suffix multiplies (10K = 10000)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return parse_speed_key(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def on_off(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise ValueError(f"{text!r} is not on or off")
    return text.lower() == "on"


def probability(text: str) -> float:
    if not re.fullmatch(r"[0-9]*\.?[0-9]+", text) or not 0 < float(text) <= 1:
        raise ValueError(f"{text!r} is not a probability above 0 and at most 1 (e.g. 0.001)")
    return float(text)


def regex(text: str) -> str:
    try:
        re.compile(text)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a valid regular expression ({exc})") from None
    return text


def device_name(text: str) -> str:
    """A Linux interface name, by the kernel's own rule (dev_valid_name)."""
    if len(text) > 15 or text in (".", "..") or re.search(r"[/:\s]", text):
        raise ValueError(f"{text!r} is not an interface name (at most 15 characters, no '/' or ':')")
    return text


def domain(text: str) -> str:
    """A DNS domain; hsflowd writes it with a leading dot (.example.com), which is optional here."""
    name = text.removeprefix(".").removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(re.fullmatch(r"[A-Za-z0-9_-]{1,63}", label) for label in labels):
        raise ValueError(f"{text!r} is not a domain name such as .example.com")
    return name


def user_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]+", text):
        raise ValueError(f"{text!r} is not a user name")
    return text


def ovsdb_remote(text: str) -> str:
    """`unix:/path/db.sock`: hsagent talks to ovsdb-server over its unix socket only."""
    if not text.startswith("unix:/"):
        raise ValueError(f"{text!r} is not unix:/path/to/db.sock (hsagent talks to ovsdb-server "
                         f"over its unix socket only)")
    return text


def check_ip(text: str) -> str:
    """Canonical text of an IPv4/IPv6 address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def check_cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an address prefix such as 10.0.0.0/8") from None


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


# ---------------------------------------------------------------- declaring a setting

@dataclass(frozen=True)
class Option:
    """How one setting is written: everything but its default and attribute name, which are
    the dataclass field's own."""

    key: str | None = None  # config-file key (in sflow { }, or in `block { }` when block is set)
    convert: Callable[[str], Any] | None = None  # text -> value, ValueError naming the problem
    limits: tuple[int, int] | None = None  # inclusive range of a number
    aliases: tuple[str, ...] = ()  # older spellings hsflowd still reads
    block: str | None = None  # the `block { }` this key (or, without key, the block) sets
    block_key: str | None = None  # the key inside `block { }` when there is also a sflow { } key
    txt: bool = False  # DNS-SD TXT records may set it too, spelt as `key`
    # the settings (attribute names) bounding what DNS-SD may set: the file's floor and ceiling
    txt_min: str | None = None
    txt_max: str | None = None
    auto: str | None = None  # its key in hsagent.auto
    label: str | None = None  # the name range errors use (default: key)

    def parse(self, text: str) -> Any:
        """The value of `text`, range included."""
        return self.check(self.convert(text))

    def check(self, value: Any) -> Any:
        if self.limits is not None and value is not None:
            low, high = self.limits
            if not low <= value <= high:
                raise ValueError(f"{self.label or self.key} = {value} is out of range ({low} to {high})")
        return value


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] = dataclasses.MISSING,
            **option) -> Any:
    """A dataclass field declaring one setting; `option` are Option's fields."""
    return field(default=default, default_factory=factory, metadata={"option": Option(**option)})


def options(record) -> dict[str, Option]:
    """Attribute -> Option for a settings record (class or instance), in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(record) if "option" in f.metadata}


def check_ranges(record) -> None:
    """Raise ValueError when a declared number of `record` (or a mapping's value) is out of range."""
    for attr, option in options(record).items():
        value = getattr(record, attr)
        for number in value.values() if isinstance(value, Mapping) else (value,):
            option.check(number)


NUMBER = dict(convert=integer)
UDP_PORT = dict(convert=integer, limits=(1, 65535), label="udpport")
SAMPLING_RATE = dict(convert=integer, limits=(0, U31_MAX))  # 0 = sampling off


# ---------------------------------------------------------------- the settings

@dataclass(frozen=True, order=True)
class Collector:
    """An sFlow collector: where datagrams go. collector { ip = ADDR udpport = N }"""

    ip: str = setting(key="ip", convert=check_ip)
    port: int = setting(6343, key="udpport", **UDP_PORT)

    def __post_init__(self):
        check_ranges(self)

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class NflogSettings:
    """nflog { group = N probability = P }"""

    group: int = setting(1, key="group", **NUMBER, limits=(0, 65535), label="nflog.group")  # 16 bits
    # set: hsagent installs the iptables rule itself
    probability: float | None = setting(None, key="probability", convert=probability)

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class PsampleSettings:
    """psample { group = N }"""

    group: int = setting(1, key="group", **NUMBER, limits=(1, U32_MAX), label="psample.group")

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class OvsSettings:
    """ovs { db = unix:PATH }: Open vSwitch's sFlow kept in step with these settings (hsagent.ovs)"""

    db: str = setting(DEFAULT_OVSDB, key="db", convert=ovsdb_remote)


@dataclass(frozen=True)
class Settings:
    collectors: tuple[Collector, ...] = setting((), block="collector", auto="collector")
    dnssd: bool = setting(True, key="DNSSD", convert=on_off)
    dnssd_domain: str | None = setting(None, key="DNSSD_domain", convert=domain,
                                       block="dns-sd", block_key="domain")
    # hsagent's extensions: a specific nameserver (tests, odd sites)
    dnssd_server: str | None = setting(None, key="server", convert=check_ip, block="dns-sd")
    dnssd_port: int = setting(53, key="port", block="dns-sd", **UDP_PORT)
    # What DNS-SD may set, bounded by the file: anyone who controls or spoofs the zone would
    # otherwise steer every host (sampling=1, headerBytes=256, a thousand collectors).
    dnssd_max_collectors: int = setting(4, key="maxCollectors", block="dns-sd", **NUMBER,
                                        limits=(1, 64))
    dnssd_min_polling: int = setting(10, key="minPolling", block="dns-sd", **NUMBER,
                                     limits=(1, 86400))
    dnssd_min_sampling: int = setting(MIN_SPEED_RATE, key="minSampling", block="dns-sd", **NUMBER,
                                      limits=(1, U31_MAX))
    dnssd_max_header_bytes: int = setting(128, key="maxHeaderBytes", block="dns-sd", **NUMBER,
                                          limits=(64, 256))
    polling: int = setting(30, key="polling", **NUMBER, limits=(1, 86400),
                           aliases=("counterPollingInterval",), txt=True,
                           txt_min="dnssd_min_polling", auto="polling")
    sampling: int = setting(400, key="sampling", **SAMPLING_RATE, aliases=("packetSamplingRate",),
                            txt=True, txt_min="dnssd_min_sampling", auto="sampling")
    # sampling.<speed> = N: its keys are link speeds, so the grammar and TXT parser know it by name
    sampling_by_speed: Mapping[str, int] = setting(factory=lambda: MappingProxyType({}),
                                                   **SAMPLING_RATE, label="sampling",
                                                   txt=True, txt_min="dnssd_min_sampling",
                                                   auto="sampling")
    # from DNS-SD, the rates it gives are raised to dnssd_min_sampling (sampling_rate())
    sampling_bps_ratio: int | None = setting(None, key="sampling.bps_ratio", **NUMBER,
                                             limits=(0, U31_MAX), txt=True)
    # the most flow samples a second the whole host sends, whatever the rates (0: no budget);
    # the config file's alone: DNS-SD may ask for any rate, never for more samples than this
    max_samples_per_second: int = setting(DEFAULT_SAMPLE_BUDGET, key="maxSamplesPerSecond", **NUMBER,
                                          limits=(0, 1_000_000))
    header_bytes: int = setting(128, key="headerBytes", **NUMBER, limits=(64, 256), txt=True,
                                txt_max="dnssd_max_header_bytes", auto="header")
    datagram_bytes: int = setting(1400, key="datagramBytes", **NUMBER, limits=(200, 8192),
                                  auto="datagram")
    # the agent address: this interface's, the first local address inside agent.cidr, or agentIP
    agent: str | None = setting(None, key="agent", convert=device_name, txt=True)
    agent_cidr: str | None = setting(None, key="agent.cidr", convert=check_cidr, txt=True)
    agent_ip: str | None = setting(None, key="agentIP", convert=check_ip, txt=True)
    sub_agent_id: int = setting(0, key="subAgentId", **NUMBER, limits=(0, 199_999))  # HSP_MAX_SUBAGENTID
    docker: bool = setting(False, block="docker")
    pcap_devs: tuple[str, ...] = setting((), key="dev", convert=device_name, block="pcap")
    switchport: str | None = setting(None, key="switchport", convert=regex)  # sampled switch ports
    nflog: NflogSettings | None = setting(None, block="nflog")
    psample: PsampleSettings | None = setting(None, block="psample")
    ovs: OvsSettings | None = setting(None, block="ovs")
    user: str | None = setting(None, key="user", convert=user_name)  # run as (None: stay)
    origins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self):
        check_ranges(self)

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
        """1-in-N for a link of this speed, in hsflowd's order: `sampling.<speed>`; else
        `sampling` for an unknown speed or a bps_ratio of 0; else speed / `sampling.bps_ratio`;
        else speed / 1,000,000, at least 100."""
        key = speed_key(speed_bps)
        if key in self.sampling_by_speed:
            return self.sampling_by_speed[key]
        if not speed_bps:
            return self.sampling
        if self.sampling_bps_ratio == 0:
            return self.sampling
        if self.sampling_bps_ratio is not None:
            rate = max(1, speed_bps // self.sampling_bps_ratio)
            if self.origin("sampling_bps_ratio") == "dns":  # a huge ratio would mean 1-in-1
                rate = max(rate, self.dnssd_min_sampling)
            return rate
        return max(MIN_SPEED_RATE, speed_bps // DEFAULT_BPS_RATIO)


SETTINGS = options(Settings)


def auto_file_text(settings: Settings, agent_ip: str | None, agent_device: str | None) -> str:
    """The settings in force, in hsflowd.auto's key=value style."""
    lines = ["# WARNING: Do not edit this file. It is generated automatically by hsagent.",
             "rev_start=1"]
    declared = [(option.auto, getattr(settings, attr)) for attr, option in SETTINGS.items() if option.auto]
    lines += [f"{key}={value}" for key, value in declared if not isinstance(value, (Mapping, tuple))]
    lines += [f"{key}.{speed}={rate}" for key, value in declared if isinstance(value, Mapping)
              for speed, rate in sorted(value.items())]
    lines += [f"{key}={collector.ip} {collector.port}" for key, value in declared
              if isinstance(value, tuple) for collector in value]
    if agent_ip:
        lines.append(f"agentIP={agent_ip}")
    if agent_device:
        lines.append(f"agent={agent_device}")
    lines.append("rev_end=1")
    return "\n".join(lines) + "\n"
