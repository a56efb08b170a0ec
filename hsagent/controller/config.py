"""hsagent-controller's options: command line over config file over defaults.

Every option is declared once in OPTIONS (`hsagent.service.options`' table shape: parser,
help, metavar) beside its default in `Options`; the command line is `--name VALUE` and the
config file says `name = VALUE`, one a line, `#` starting a comment. An error names the file,
the line and the problem, or the option.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import dataclass
from typing import NamedTuple

from .. import __version__
from ..service.options import (ConfigError, Endpoint, Option, add_common_arguments, add_options,
                               boolean, convert, endpoint, gather, ranged)

DEFAULT_CONFIG = "/etc/hsagent-controller.conf"


class Threshold(NamedTuple):
    """An absolute rate in bits per second, or a fraction of the port's speed."""

    bits_per_second: float = 0.0
    fraction: float = 0.0

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction else f"{self.bits_per_second:g} bit/s"


SUFFIXES = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


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


OPTIONS = {
    "sflow-listen": Option(endpoint, "where sFlow arrives ([::]:6343: IPv4 and IPv6)", "ADDR:PORT"),
    "reuse-port": Option(boolean, "share the sFlow port with other processes (SO_REUSEPORT)", None),
    "agents": Option(networks, "take sFlow only from agents in these networks (comma-separated)",
                     "PREFIXES"),
    "threshold": Option(threshold, "elephant: bits per second, or a share of the port speed",
                        "10M|10%"),
    "smoothing": Option(positive, "time constant t of the rate's moving average", "SECONDS"),
    "interval": Option(positive, "how often controls of quiet flows are checked for removal",
                       "SECONDS"),
    "hysteresis": Option(fraction, "a control goes when its flow falls below this share of the "
                         "threshold", "FRACTION"),
    "dscp": Option(ranged(0, 63), "DSCP to mark elephants with", "N"),
    "cos": Option(ranged(0, 7), "802.1p class of service to set", "N"),
    "max-controls": Option(ranged(1, 100_000), "most controls in place on one switch", "N"),
    "max-flows": Option(ranged(1, 10_000_000), "most flows tracked (the smallest go first)", "N"),
    "acl-url": Option(url_template, "the ACL service of a switch; {agent} is its sFlow agent "
                      "address", "URL"),
    "acl-token-file": Option(str, "hsagent-acld's token file: its first token that may write is "
                             "sent", "FILE"),
    "acl-ca-file": Option(str, "CA certificates to check https ACL services with", "FILE"),
    "acl-timeout": Option(positive, "time allowed for one ACL request", "SECONDS"),
    "api-listen": Option(endpoint, "the read-only JSON API", "ADDR:PORT"),
    "api-token-file": Option(str, "tokens accepted by the API, one a line (default: "
                             "acl-token-file)", "FILE"),
    "api-cert": Option(str, "serve the API over TLS with this certificate", "FILE"),
    "api-key": Option(str, "and this key", "FILE"),
    "api-no-auth": Option(boolean, "serve the API to anyone (logged loudly)", None),
}


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsagent-controller",
        description="Find elephant flows in sFlow and mark them through each switch's ACL service.")
    add_common_arguments(parser, __version__, DEFAULT_CONFIG)
    add_options(parser, OPTIONS)
    return parser


def load(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    """Options from the config file and the command line; ConfigError says what is wrong, as
    "FILE:LINE: dscp: 64 is not in 0-63"."""
    args = arguments().parse_args(argv)
    options = Options(**convert(gather(args, OPTIONS, DEFAULT_CONFIG), OPTIONS, quote=False))
    if (options.api_cert is None) != (options.api_key is None):
        raise ConfigError("api-cert and api-key go together")
    return options, args
