"""hsagent-acld's settings: defaults, then the configuration file, then the command line.

Every setting is declared once in `OPTIONS`; the command line takes it as `--name VALUE` and
the file as `name = VALUE` (one a line, `#` comments). A bad value names the file and line,
or the option.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, replace

from .rules import INTERFACE

DEFAULT_CONFIG_FILE = "/etc/hsagent-acld.conf"
ACLTOOL = "/usr/cumulus/bin/cl-acltool"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    listen: tuple[str, int] = ("127.0.0.1", 8081)
    token_file: str = "/etc/hsagent-acld/tokens"
    backend: str = "auto"  # cumulus where cl-acltool exists, else netfilter
    state_dir: str = "/var/lib/hsagent-acld"
    swp_pattern: str = "swp+"
    tls_cert: str | None = None
    tls_key: str | None = None
    max_rules: int = 1000
    max_body: int = 256 * 1024
    commit_interval: float = 0.1
    policy_dir: str = "/etc/cumulus/acl/policy.d"
    acltool: str = ACLTOOL
    file_prefix: str = "hsacld"
    insecure_no_auth: bool = False

    @property
    def backend_name(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "cumulus" if os.path.exists(self.acltool) else "netfilter"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError("expected ADDRESS:PORT, e.g. 127.0.0.1:8081 or [::1]:8081") from None
    if not sep or not 1 <= number <= 65535:
        raise ValueError("expected ADDRESS:PORT with a port 1-65535")
    return host, number


def choice(*names):
    def parse(text: str) -> str:
        if text not in names:
            raise ValueError(f"expected one of {', '.join(names)}")
        return text
    return parse


def bounded(kind, low, high):
    def parse(text: str):
        value = kind(text)
        if not low <= value <= high:
            raise ValueError(f"expected {low}-{high}")
        return value
    return parse


def interface_pattern(text: str) -> str:
    if not INTERFACE.match(text):
        raise ValueError("expected an interface name or pattern such as sw-+ (at most 15 "
                         "characters, '+' only at the end)")
    return text


def prefix(text: str) -> str:
    if not text.isalnum() or len(text) > 32:
        raise ValueError("expected 1-32 letters or digits")
    return text


def boolean(text: str) -> bool:
    if text.lower() in ("yes", "on", "true", "1"):
        return True
    if text.lower() in ("no", "off", "false", "0"):
        return False
    raise ValueError("expected yes or no")


# name -> (converter, help); the Settings field is the name with '-' as '_'
OPTIONS = {
    "listen": (parse_listen, "ADDRESS:PORT to serve on (default 127.0.0.1:8081)"),
    "token-file": (str, "bearer tokens, one a line (default /etc/hsagent-acld/tokens)"),
    "backend": (choice("auto", "netfilter", "cumulus"),
                "netfilter, cumulus, or auto: cumulus where cl-acltool exists (default auto)"),
    "state-dir": (str, "where the desired state is kept (default /var/lib/hsagent-acld)"),
    "swp-pattern": (interface_pattern, "netfilter: the interfaces swp+ means here (default swp+)"),
    "tls-cert": (str, "serve HTTPS with this PEM certificate (chain)"),
    "tls-key": (str, "the certificate's PEM private key"),
    "max-rules": (bounded(int, 1, 1_000_000), "most rules of all ACLs together (default 1000)"),
    "max-body": (bounded(int, 1024, 64 * 1024 * 1024), "largest request body in bytes (default 262144)"),
    "commit-interval": (bounded(float, 0.0, 60.0),
                        "least seconds between installs under load (default 0.1)"),
    "policy-dir": (str, "cumulus: the policy directory (default /etc/cumulus/acl/policy.d)"),
    "acltool": (str, f"cumulus: the cl-acltool to run (default {ACLTOOL})"),
    "file-prefix": (prefix, "cumulus: our files are 50PREFIX-NAME.rules (default hsacld)"),
    "insecure-no-auth": (boolean, "serve without authentication (never in production)"),
}


def field_name(option: str) -> str:
    return option.replace("-", "_")


def apply(settings: Settings, values: dict[str, str], where: dict[str, str]) -> Settings:
    """Settings with `values` (option name -> text) applied; `where` names each one's origin."""
    changes = {}
    for option, text in values.items():
        convert = OPTIONS[option][0]
        try:
            changes[field_name(option)] = convert(text)
        except ValueError as err:
            raise ConfigError(f"{where[option]}: {option} {text!r}: {err}") from None
    return check(replace(settings, **changes))


def check(settings: Settings) -> Settings:
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("tls-cert and tls-key go together")
    return settings


def read_file(path: str, required: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(option -> value, option -> 'FILE:LINE') from a configuration file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return {}, {}
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from None
    values, where = {}, {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not value:
            raise ConfigError(f"{path}:{number}: expected 'name = value'")
        if name not in OPTIONS:
            raise ConfigError(f"{path}:{number}: unknown setting {name!r}")
        values[name], where[name] = value, f"{path}:{number}"
    return values, where

