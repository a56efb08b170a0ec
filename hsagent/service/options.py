"""A service's options, declared once: the command line (`--name VALUE`) and the configuration
file (`name = VALUE`, one a line, `#` starting a comment) both come from one table, and the
command line wins over the file, which wins over the defaults.

A table maps each option's name as operators write it (`max-rules`) to an `Option`; the value
lands in the field of the same name with `_` for `-` (`max_rules`). An error names where the
value came from (`FILE:LINE` or `--name`), the option and the problem.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
from typing import Any, Callable, NamedTuple

from .. import logs

YES = ("yes", "on", "true", "1")
NO = ("no", "off", "false", "0")


class ConfigError(ValueError):
    pass


class Option(NamedTuple):
    convert: Callable[[str], Any]  # text -> value; ValueError says what is wrong
    help: str
    metavar: str | None = "VALUE"  # None: a flag, `--name` alone meaning yes


class Given(NamedTuple):
    """One option's text, and where it was given: 'FILE:LINE' or '--name'."""

    text: str
    where: str


def field(name: str) -> str:
    return name.replace("-", "_")


# --- the command line --------------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser, version: str, config_file: str) -> None:
    """What every service takes besides its options: version, config file, logging."""
    parser.add_argument("--version", action="version", version=f"{parser.prog} {version}")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help=f"configuration file (default {config_file}, if it exists)")
    parser.add_argument("-d", "--debug", action="count", default=0,
                        help="more logging (-dd: libraries too)")
    parser.add_argument("--syslog", action="store_true", help="log to syslog instead of stderr")
    parser.add_argument("--log-file", metavar="FILE", help="log to this file instead of stderr")


def add_options(parser: argparse.ArgumentParser, table: dict[str, Option]) -> None:
    for name, option in table.items():
        if option.metavar is None:
            parser.add_argument(f"--{name}", dest=field(name), action="store_const", const="yes",
                                help=option.help)
        else:
            parser.add_argument(f"--{name}", dest=field(name), metavar=option.metavar,
                                help=option.help)


def command_line(args: argparse.Namespace, table: dict[str, Option]) -> dict[str, Given]:
    """The options given on the command line, as text."""
    given = {}
    for name in table:
        text = getattr(args, field(name))
        if text is not None:
            given[name] = Given(text, f"--{name}")
    return given


def setup_logging(args: argparse.Namespace) -> None:
    """stderr or syslog as `hsagent.logs` sets it up, or `--log-file`."""
    logs.setup(args.debug, args.syslog)
    if args.log_file:
        handler = logging.FileHandler(args.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().handlers[:] = [handler]


# --- the configuration file ---------------------------------------------------------------------

def read_file(path: str, table: dict[str, Option], required: bool) -> dict[str, Given]:
    """The options a configuration file gives, as text; a missing file gives none unless
    `required` (named with -c)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from None
    given = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        written, equals, value = (part.strip() for part in line.partition("="))
        name = written.lower().replace("_", "-")
        if not equals or not value:
            raise ConfigError(f"{path}:{number}: expected 'name = value'")
        if name not in table:
            raise ConfigError(f"{path}:{number}: unknown setting {written!r}")
        given[name] = Given(value, f"{path}:{number}")
    return given


def gather(args: argparse.Namespace, table: dict[str, Option], config_file: str) -> dict[str, Given]:
    """The file's options (`-c FILE`, else `config_file` if it exists) under the command line's."""
    given = read_file(args.config or config_file, table, required=bool(args.config))
    given.update(command_line(args, table))
    return given


def convert(given: dict[str, Given], table: dict[str, Option], quote: bool) -> dict[str, Any]:
    """field -> value. `quote`: the error quotes the text and says what was expected
    ("max-rules '0': expected 1-1000000"); else the problem speaks of the value itself
    ("dscp: 64 is not in 0-63")."""
    values = {}
    for name, (text, where) in given.items():
        try:
            values[field(name)] = table[name].convert(text)
        except ValueError as err:
            if quote:
                problem = getattr(err, "expected", err)
                raise ConfigError(f"{where}: {name} {text!r}: {problem}") from None
            raise ConfigError(f"{where}: {name}: {err}") from None
    return values


# --- converters ------------------------------------------------------------------------------

class OutOfRange(ValueError):
    def __init__(self, value, low, high):
        super().__init__(f"{value} is not in {low}-{high}")
        self.expected = f"expected {low}-{high}"


def ranged(low, high, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """A number of `kind` from low to high, both included."""
    def parse(text: str):
        value = kind(text)
        if not low <= value <= high:
            raise OutOfRange(value, low, high)
        return value
    return parse


def choice(*names: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in names:
            raise ValueError(f"expected one of {', '.join(names)}")
        return text
    return parse


def boolean(text: str) -> bool:
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise ValueError(f"expected yes or no, not {text!r}")


class Endpoint(NamedTuple):
    """Where a service listens: an IP address ('' = every IPv4 and IPv6 address) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host or '[::]'}:{self.port}"


ENDPOINT = re.compile(r"\[([0-9A-Fa-f:.]*)\]:(\d+)|([0-9.]*):(\d+)")


def endpoint(text: str) -> Endpoint:
    """ADDRESS:PORT, [IPV6]:PORT, or :PORT and [::]:PORT for every address."""
    match = ENDPOINT.fullmatch(text.strip())
    expected = "expected ADDRESS:PORT, e.g. 127.0.0.1:8081 or [::1]:8081"
    if not match:
        raise ValueError(expected)
    host = match.group(1) if match.group(1) is not None else match.group(3)
    port = int(match.group(2) or match.group(4))
    if host not in ("", "::"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{expected}: {host!r} is not an IP address") from None
    if port > 65535:
        raise ValueError("expected ADDRESS:PORT with a port 0-65535")
    return Endpoint("" if host == "::" else host, port)
