"""hsagent-acld's settings: defaults, then the configuration file, then the command line.

Every setting is declared once in `OPTIONS` (`hsagent.service.options`' table shape); the
command line takes it as `--name VALUE` and the file as `name = VALUE` (one a line, `#`
comments). A bad value names the file and line, or the option.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from ..service.options import (ConfigError, Endpoint, Given, Option, boolean, choice, convert,
                               endpoint, ranged)
from .rules import INTERFACE

DEFAULT_CONFIG_FILE = "/etc/hsagent-acld.conf"
ACLTOOL = "/usr/cumulus/bin/cl-acltool"


@dataclass(frozen=True)
class Settings:
    listen: Endpoint = Endpoint("127.0.0.1", 8081)
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


def interface_pattern(text: str) -> str:
    if not INTERFACE.match(text):
        raise ValueError("expected an interface name or pattern such as sw-+ (at most 15 "
                         "characters, '+' only at the end)")
    return text


def prefix(text: str) -> str:
    if not text.isalnum() or len(text) > 32:
        raise ValueError("expected 1-32 letters or digits")
    return text


# the Settings field of each is its name with '-' as '_'
OPTIONS = {
    "listen": Option(endpoint, "where to serve (default 127.0.0.1:8081)", "ADDR:PORT"),
    "token-file": Option(str, "bearer tokens, one a line (default /etc/hsagent-acld/tokens)",
                         "FILE"),
    "backend": Option(choice("auto", "netfilter", "cumulus"),
                      "netfilter, cumulus, or auto: cumulus where cl-acltool exists (default auto)",
                      "netfilter|cumulus|auto"),
    "state-dir": Option(str, "where the desired state is kept (default /var/lib/hsagent-acld)",
                        "DIR"),
    "swp-pattern": Option(interface_pattern,
                          "netfilter: the interfaces swp+ means here (default swp+)", "PATTERN"),
    "tls-cert": Option(str, "serve HTTPS with this PEM certificate (chain)", "FILE"),
    "tls-key": Option(str, "the certificate's PEM private key", "FILE"),
    "max-rules": Option(ranged(1, 1_000_000), "most rules of all ACLs together (default 1000)", "N"),
    "max-body": Option(ranged(1024, 64 * 1024 * 1024),
                       "largest request body in bytes (default 262144)", "BYTES"),
    "commit-interval": Option(ranged(0.0, 60.0, float),
                              "least seconds between installs under load (default 0.1)", "SECONDS"),
    "policy-dir": Option(str, "cumulus: the policy directory (default /etc/cumulus/acl/policy.d)",
                         "DIR"),
    "acltool": Option(str, f"cumulus: the cl-acltool to run (default {ACLTOOL})", "FILE"),
    "file-prefix": Option(prefix, "cumulus: our files are 50PREFIX-NAME.rules (default hsacld)",
                          "PREFIX"),
    "insecure-no-auth": Option(boolean, "serve without authentication (never in production)", None),
}


def apply(settings: Settings, given: dict[str, Given]) -> Settings:
    """Settings with the options `given` applied; errors quote the value, as
    "FILE:LINE: max-rules '0': expected 1-1000000"."""
    settings = replace(settings, **convert(given, OPTIONS, quote=True))
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("tls-cert and tls-key go together")
    return settings
