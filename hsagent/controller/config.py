"""hsagent-controller's options: command line over config file over defaults.

Every option is declared once in OPTIONS (name, parser, default, help); the command line is
`--name VALUE` and the config file says `name = VALUE`, one a line, `#` starting a comment.
An error names the file, the line and the problem, or the option.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from .. import __version__

DEFAULT_CONFIG = "/etc/hsagent-controller.conf"


class ConfigError(ValueError):
    pass


class Endpoint(NamedTuple):
    host: str  # '' = every IPv4 and IPv6 address
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host or '[::]'}:{self.port}"


class Threshold(NamedTuple):
    """An absolute rate in bits per second, or a fraction of the port's speed."""

    bits_per_second: float = 0.0
    fraction: float = 0.0

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction else f"{self.bits_per_second:g} bit/s"


SUFFIXES = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def endpoint(text: str) -> Endpoint:
    """ADDR:PORT, [IPV6]:PORT or :PORT (every address)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]*)\]:(\d+)|([0-9.]*):(\d+)", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not ADDR:PORT (IPv6 as [ADDR]:PORT)")
    host = match.group(1) if match.group(1) is not None else match.group(3)
    port = int(match.group(2) or match.group(4))
    if host not in ("", "::"):
        ipaddress.ip_address(host)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not 0-65535")
    return Endpoint("" if host == "::" else host, port)


def threshold(text: str) -> Threshold:
    """10M (bits per second, k/M/G/T suffixes) or 10% (of the port's speed)."""
    text = text.strip()
    if text.endswith("%"):
        value = positive(text[:-1])
        if value > 100:
            raise ValueError(f"{text} is more than the port's speed")
        return Threshold(fraction=value / 100)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKMGT]?)", text)
    if not match:
        raise ValueError(f"{text!r} is neither a rate (10M) nor a percentage (10%)")
    return Threshold(bits_per_second=positive(match.group(1)) * SUFFIXES[match.group(2)])


def positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{text} is not a number > 0")
    return value


def ranged(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{value} is not in {low}-{high}")
        return value
    return parse


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"{text} is not in (0, 1]")
    return value


def networks(text: str) -> tuple:
    """Comma-separated prefixes (10.0.0.0/8, 2001:db8::/32); a bare address is one host."""
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise ValueError(str(err)) from None


def url_template(text: str) -> str:
    if not re.fullmatch(r"https?://\S+", text) or text.count("{") != text.count("{agent}"):
        raise ValueError(f"{text!r} is not an http(s) URL (it may hold {{agent}})")
    return text.rstrip("/")


def boolean(text: str) -> bool:
    if text.lower() in ("1", "yes", "on", "true"):
        return True
    if text.lower() in ("0", "no", "off", "false"):
        return False
    raise ValueError(f"{text!r} is not on or off")


def path(text: str) -> str:
    return text


@dataclass(frozen=True)
class Options:
    sflow_listen: Endpoint = Endpoint("", 6343)
    reuse_port: bool = False
    agents: tuple = ()  # networks sFlow is taken from; () = every agent
    threshold: Threshold = Threshold(fraction=0.1)
    smoothing: float = 1.0
    interval: float = 5.0
    hysteresis: float = 0.5
    dscp: int = 10
    cos: int = 5
    max_controls: int = 100
    max_flows: int = 100_000
    acl_url: str = "http://{agent}:8081"  # hsagent-acld's port
    acl_token_file: str | None = "/etc/hsagent-acld/tokens"  # the file hsagent-acld reads
    acl_ca_file: str | None = None
    acl_timeout: float = 5.0
    api_listen: Endpoint = Endpoint("127.0.0.1", 8008)
    api_token_file: str | None = None  # default: acl_token_file
    api_cert: str | None = None
    api_key: str | None = None
    api_no_auth: bool = False


HELP = {
    "sflow_listen": ("ADDR:PORT", endpoint, "where sFlow arrives ([::]:6343: IPv4 and IPv6)"),
    "reuse_port": (None, boolean, "share the sFlow port with other processes (SO_REUSEPORT)"),
    "agents": ("PREFIXES", networks, "take sFlow only from agents in these networks (comma-separated)"),
    "threshold": ("10M|10%", threshold, "elephant: bits per second, or a share of the port speed"),
    "smoothing": ("SECONDS", positive, "time constant t of the rate's moving average"),
    "interval": ("SECONDS", positive, "how often controls of quiet flows are checked for removal"),
    "hysteresis": ("FRACTION", fraction, "a control goes when its flow falls below this share of the threshold"),
    "dscp": ("N", ranged(0, 63), "DSCP to mark elephants with"),
    "cos": ("N", ranged(0, 7), "802.1p class of service to set"),
    "max_controls": ("N", ranged(1, 100_000), "most controls in place on one switch"),
    "max_flows": ("N", ranged(1, 10_000_000), "most flows tracked (the smallest go first)"),
    "acl_url": ("URL", url_template, "the ACL service of a switch; {agent} is its sFlow agent address"),
    "acl_token_file": ("FILE", path, "hsagent-acld's token file: its first token that may write is sent"),
    "acl_ca_file": ("FILE", path, "CA certificates to check https ACL services with"),
    "acl_timeout": ("SECONDS", positive, "time allowed for one ACL request"),
    "api_listen": ("ADDR:PORT", endpoint, "the read-only JSON API"),
    "api_token_file": ("FILE", path, "tokens accepted by the API, one a line (default: acl-token-file)"),
    "api_cert": ("FILE", path, "serve the API over TLS with this certificate"),
    "api_key": ("FILE", path, "and this key"),
    "api_no_auth": (None, boolean, "serve the API to anyone (logged loudly)"),
}


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsagent-controller",
        description="Find elephant flows in sFlow and mark them through each switch's ACL service.")
    parser.add_argument("--version", action="version", version=f"hsagent-controller {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help=f"config file (default {DEFAULT_CONFIG} when it exists)")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    parser.add_argument("--log-file", metavar="FILE", help="log there instead of stderr")
    for name, (metavar, _, text) in HELP.items():
        option = "--" + name.replace("_", "-")
        if metavar is None:
            parser.add_argument(option, dest=name, action="store_const", const="on", help=text)
        else:
            parser.add_argument(option, dest=name, metavar=metavar, help=text)
    return parser


def read_file(file: str) -> dict[str, Any]:
    """`name = value` lines -> {field: parsed value}."""
    values: dict[str, Any] = {}
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, equals, text = (part.strip() for part in line.partition("="))
            field = name.replace("-", "_").lower()
            if not equals or not text:
                raise ConfigError(f"{file}:{number}: expected 'name = value'")
            if field not in HELP:
                raise ConfigError(f"{file}:{number}: unknown setting {name!r}")
            try:
                values[field] = HELP[field][1](text)
            except ValueError as err:
                raise ConfigError(f"{file}:{number}: {name}: {err}") from None
    return values


def load(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    """Options from the config file and the command line; ConfigError says what is wrong."""
    args = arguments().parse_args(argv)
    file = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    values = read_file(file) if file else {}
    for name, (_, parse, _) in HELP.items():
        text = getattr(args, name)
        if text is not None:
            try:
                values[name] = parse(text)
            except ValueError as err:
                raise ConfigError(f"--{name.replace('_', '-')}: {err}") from None
    options = Options(**values)
    if (options.api_cert is None) != (options.api_key is None):
        raise ConfigError("api-cert and api-key go together")
    return options, args
