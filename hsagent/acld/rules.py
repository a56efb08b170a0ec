"""Cumulus Linux ACL rule lines, parsed into an allow-list and rendered again from the parsed form.

A Cumulus ACL file (`/etc/cumulus/acl/policy.d/*.rules`) holds sections (`[iptables]`,
`[ip6tables]`) of iptables-style lines, each one `-A CHAIN` append with matches and a target.
What a client sends never reaches a file or a command as text: every line is split into
tokens, every token must be a known option with a value of the right type, and the lines we
write or install are rendered from the resulting `Rule`. Anything else is a `RuleError` that
says which line and why.

What is allowed is what Cumulus ACLs can express in hardware (NVIDIA Cumulus Linux user guide,
"Netfilter - ACLs"): the filter and mangle tables, source/destination addresses and prefixes,
protocol, ports and port ranges (also as multiport lists), in/out interfaces with `+`
wildcards, DSCP, TCP flags, ICMP types; targets ACCEPT, DROP, LOG, SETQOS and DSCP.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

SECTIONS = {"[iptables]": 4, "[ip6tables]": 6}
SECTION_OF = {family: header for header, family in SECTIONS.items()}
CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
}
# Where the kernel knows no input (or output) interface yet, iptables refuses -i (or -o).
NO_IN_INTERFACE = {"OUTPUT", "POSTROUTING"}
NO_OUT_INTERFACE = {"PREROUTING", "INPUT"}
TARGETS = {
    "filter": ("ACCEPT", "DROP", "LOG"),
    "mangle": ("ACCEPT", "DROP", "LOG", "SETQOS", "DSCP"),
}
PROTOCOLS = {4: ("tcp", "udp", "icmp", "all"), 6: ("tcp", "udp", "icmpv6", "all")}
PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "0": "all"}
PROTOCOL_ALIASES = {"ipv6-icmp": "icmpv6"}
PORT_PROTOCOLS = ("tcp", "udp")
MODULES = ("tcp", "udp", "icmp", "icmp6", "multiport", "dscp")
TCP_FLAGS = ("SYN", "ACK", "FIN", "RST", "URG", "PSH")  # the order they are rendered in
DSCP_CLASSES = ("BE", "EF", *(f"CS{n}" for n in range(8)),
                *(f"AF{c}{d}" for c in range(1, 5) for d in range(1, 4)))
ICMP_NAMES = {
    4: ("echo-reply", "destination-unreachable", "source-quench", "redirect", "echo-request",
        "router-advertisement", "router-solicitation", "time-exceeded", "parameter-problem",
        "timestamp-request", "timestamp-reply", "any"),
    6: ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem",
        "echo-request", "echo-reply", "router-solicitation", "router-advertisement",
        "neighbour-solicitation", "neighbour-advertisement", "redirect"),
}
LOG_LEVELS = ("emerg", "alert", "crit", "error", "warning", "notice", "info", "debug")
MAX_MULTIPORT = 15  # xt_multiport's XT_MULTI_PORTS; a range takes two
MAX_LINE = 512
MAX_NAME = 64
NAME = re.compile(r"[a-z0-9_][a-z0-9_-]*\Z")  # acl_server's [a-z0-9_]+, plus '-'
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1); iptables' trailing '+' is a wildcard
INTERFACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,13}(?:[A-Za-z0-9_.:-]|\+)?\Z")
LOG_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,28}\Z")  # the kernel keeps 29 bytes with the NUL
# Everything a rule line can need; the rest gets a named refusal below.
LINE_CHARACTERS = re.compile(r"[A-Za-z0-9 _.:/,+!\[\]-]*\Z")
SHELL_CHARACTERS = set(";|&$`<>(){}'\"\\*?~#=%^")
FORBIDDEN_COMMANDS = {
    "-I": "insert", "--insert": "insert", "-D": "delete", "--delete": "delete",
    "-R": "replace", "--replace": "replace", "-F": "flush", "--flush": "flush",
    "-X": "delete-chain", "--delete-chain": "delete-chain", "-N": "new-chain",
    "--new-chain": "new-chain", "-P": "policy", "--policy": "policy", "-Z": "zero",
    "--zero": "zero", "-E": "rename-chain", "--rename-chain": "rename-chain",
    "-L": "list", "--list": "list", "-S": "list-rules", "--list-rules": "list-rules",
}


class RuleError(ValueError):
    """A line (1-based, of the ACL as sent) that is not an allowed rule, and why."""

    def __init__(self, problem: str, line: int | None = None, text: str | None = None):
        super().__init__(problem)
        self.problem, self.line, self.text = problem, line, text

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}" if self.line else self.problem


@dataclass(frozen=True)
class Ports:
    """A port or an inclusive range first:last."""
    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@dataclass(frozen=True)
class Rule:
    family: int  # 4: [iptables], 6: [ip6tables]
    table: str
    chain: str
    target: str
    in_interface: str | None = None
    out_interface: str | None = None
    source: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    destination: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    protocol: str | None = None
    source_ports: tuple[Ports, ...] = ()
    destination_ports: tuple[Ports, ...] = ()
    multiport: bool = False  # the ports came as -m multiport lists
    tcp_flags: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # (mask, set)
    icmp_type: str | None = None
    dscp: int | None = None
    dscp_class: str | None = None
    set_dscp: int | None = None
    set_dscp_class: str | None = None
    set_cos: int | None = None
    log_prefix: str | None = None
    log_level: str | None = None

    def matches(self, swp_pattern: str | None = None) -> list[str]:
        """The match arguments, in one fixed order; `swp+` becomes swp_pattern when given."""
        args: list[str] = []
        for option, name in (("-i", self.in_interface), ("-o", self.out_interface)):
            if name:
                args += [option, swp_pattern if swp_pattern and name == "swp+" else name]
        for option, network in (("-s", self.source), ("-d", self.destination)):
            if network:
                args += [option, address_text(network)]
        if self.protocol:
            args += ["-p", self.protocol]
        if self.protocol in PORT_PROTOCOLS and (self.tcp_flags or not self.multiport and (
                self.source_ports or self.destination_ports)):
            args += ["-m", self.protocol]
        if self.multiport:
            args += ["-m", "multiport"]
            for option, ports in (("--sports", self.source_ports), ("--dports", self.destination_ports)):
                if ports:
                    args += [option, ",".join(map(str, ports))]
        else:
            for option, ports in (("--sport", self.source_ports), ("--dport", self.destination_ports)):
                if ports:
                    args += [option, str(ports[0])]
        if self.tcp_flags:
            mask, flags = self.tcp_flags
            args += ["--tcp-flags", ",".join(mask) or "NONE", ",".join(flags) or "NONE"]
        if self.icmp_type is not None:
            args += (["-m", "icmp", "--icmp-type"] if self.family == 4
                     else ["-m", "icmp6", "--icmpv6-type"]) + [self.icmp_type]
        if self.dscp is not None:
            args += ["-m", "dscp", "--dscp", str(self.dscp)]
        if self.dscp_class:
            args += ["-m", "dscp", "--dscp-class", self.dscp_class]
        return args

    def target_options(self) -> list[str]:
        """The target's options, as Cumulus spells them."""
        args: list[str] = []
        for option, value in (("--set-dscp", self.set_dscp), ("--set-dscp-class", self.set_dscp_class),
                              ("--set-cos", self.set_cos), ("--log-prefix", self.log_prefix),
                              ("--log-level", self.log_level)):
            if value is not None:
                args += [option, str(value)]
        return args

    def render(self) -> str:
        """The rule as a Cumulus ACL line (`-t filter` left out, as it is the default)."""
        table = ["-t", self.table] if self.table != "filter" else []
        return " ".join(table + ["-A", self.chain] + self.matches() + ["-j", self.target]
                        + self.target_options())


def address_text(network) -> str:
    """A host as a bare address (as written), a prefix as address/length."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@dataclass(frozen=True)
class Acl:
    """A named ACL: its rules in order."""
    name: str
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        """Rendered as a Cumulus .rules file: a section header wherever the family changes."""
        lines, family = [], None
        for rule in self.rules:
            if rule.family != family:
                family = rule.family
                lines.append(SECTION_OF[family])
            lines.append(rule.render())
        return lines


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise RuleError(f"bad ACL name {name!r}: lower-case letters, digits, '_' and '-' only, "
                        "not starting with '-'")
    if len(name) > MAX_NAME:
        raise RuleError(f"ACL name is {len(name)} characters long, at most {MAX_NAME}")
    return name


def parse_acl(name: str, lines: object) -> Acl:
    """An ACL from a JSON value: a list of rule lines, section headers, blank lines and
    `#` comments (comments and blanks are dropped: only parsed rules are kept)."""
    check_name(name)
    if not isinstance(lines, list):
        raise RuleError(f"an ACL is a JSON array of rule lines, not {json_type(lines)}")
    rules, family = [], None
    for number, line in enumerate(lines, 1):
        if not isinstance(line, str):
            raise RuleError(f"a rule line is a JSON string, not {json_type(line)}", number)
        check_characters(line, number)
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("["):
            if text not in SECTIONS:
                raise RuleError(f"unknown section {text!r}: only [iptables] and [ip6tables]",
                                number, line)
            family = SECTIONS[text]
            continue
        if family is None:
            raise RuleError("a rule before any [iptables] or [ip6tables] section", number, line)
        try:
            rules.append(parse_rule(text, family))
        except RuleError as err:
            raise RuleError(err.problem, number, line) from None
    return Acl(name, tuple(rules))


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_characters(line: str, number: int) -> None:
    if len(line) > MAX_LINE:
        raise RuleError(f"line is {len(line)} characters long, at most {MAX_LINE}", number,
                        line[:80])
    if LINE_CHARACTERS.match(line) or line.lstrip().startswith("#") and line.isprintable():
        return
    for char in line:
        if not char.isprintable():
            raise RuleError(f"control character U+{ord(char):04X} in a rule line", number, line)
        if char in SHELL_CHARACTERS:
            raise RuleError(f"shell metacharacter {char!r} in a rule line", number, line)
        if not LINE_CHARACTERS.match(char):
            raise RuleError(f"character {char!r} is not allowed in a rule line", number, line)


def parse_rule(text: str, family: int) -> Rule:
    """One rule line of a section of that family (4 or 6)."""
    tokens = text.split()  # control characters are refused already: only spaces separate
    values: dict = {"family": family, "table": "filter"}
    seen: set[str] = set()
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token in FORBIDDEN_COMMANDS:
            raise RuleError(f"{token} ({FORBIDDEN_COMMANDS[token]}) is not allowed: a rule is "
                            "one -A CHAIN append")
        spec = OPTIONS.get(token)
        if spec is None:
            raise RuleError(unknown_option(token))
        key, arity, parse = spec
        arguments = tokens[position + 1:position + 1 + arity]
        if len(arguments) < arity:
            raise RuleError(f"{token} needs {'a value' if arity == 1 else f'{arity} values'}")
        if key in seen and key != "module":
            raise RuleError(f"{token} given twice")
        seen.add(key)
        parse(values, family, *arguments)
        position += 1 + arity
    return check_rule(values)


def unknown_option(token: str) -> str:
    if token in ("-g", "--goto"):
        return "jumps to other chains are not allowed"
    if token == "!":
        return "negated matches ('!') are not supported"
    if token.startswith("-"):
        return f"unknown option {token}"
    return f"unexpected {token!r} (an option's value without its option?)"


def check_rule(values: dict) -> Rule:
    """Cross-checks iptables (or the kernel) would make, so that they fail here with a reason."""
    table, chain, family = values["table"], values.get("chain"), values["family"]
    if chain is None:
        raise RuleError("no -A CHAIN")
    if chain not in CHAINS[table]:
        raise RuleError(f"chain {chain} is not a built-in chain of the {table} table "
                        f"({', '.join(CHAINS[table])})")
    target = values.get("target")
    if target is None:
        raise RuleError("no -j TARGET")
    if target not in TARGETS[table]:
        raise RuleError(f"target {target} is not allowed in the {table} table "
                        f"({', '.join(TARGETS[table])})")
    if values.get("in_interface") and chain in NO_IN_INTERFACE:
        raise RuleError(f"-i cannot be used in {chain}: there is no input interface there")
    if values.get("out_interface") and chain in NO_OUT_INTERFACE:
        raise RuleError(f"-o cannot be used in {chain}: there is no output interface yet")
    for key in ("source", "destination"):
        address = values.get(key)
        if address is not None and address.version != family:
            raise RuleError(f"{key} {address} is IPv{address.version} in an "
                            f"{SECTION_OF[family]} section")
    protocol = values.get("protocol")
    if protocol and protocol not in PROTOCOLS[family]:
        raise RuleError(f"protocol {protocol} in an {SECTION_OF[family]} section")
    check_protocol_options(values, protocol)
    check_modules(values)
    check_target_options(values, target)
    values.pop("modules", None)
    return Rule(**values)


def check_protocol_options(values: dict, protocol: str | None) -> None:
    ports = values.get("source_ports") or values.get("destination_ports")
    if ports and protocol not in PORT_PROTOCOLS:
        raise RuleError("ports need -p tcp or -p udp")
    if values.get("tcp_flags") and protocol != "tcp":
        raise RuleError("--tcp-flags and --syn need -p tcp")
    if values.get("icmp_type") is not None and protocol not in ("icmp", "icmpv6"):
        raise RuleError("an ICMP type needs -p icmp (or -p icmpv6 in [ip6tables])")
    if values.get("dscp") is not None and values.get("dscp_class"):
        raise RuleError("--dscp and --dscp-class together")
    multiport = values.get("multiport", False)
    singles = values.pop("single_ports", set())
    if multiport and singles:
        raise RuleError("--sport/--dport and --sports/--dports together")


def check_modules(values: dict) -> None:
    """-m names a module the options need; a module whose options are missing is refused."""
    used = {"multiport": values.get("multiport", False),
            "dscp": values.get("dscp") is not None or bool(values.get("dscp_class")),
            "icmp": values.get("icmp_type") is not None and values["family"] == 4,
            "icmp6": values.get("icmp_type") is not None and values["family"] == 6}
    for module in values.get("modules", ()):
        if module in ("tcp", "udp"):
            if values.get("protocol") != module:
                raise RuleError(f"-m {module} needs -p {module}")
        elif not used[module]:
            raise RuleError(f"-m {module} without any of its options")


def check_target_options(values: dict, target: str) -> None:
    qos = [k for k in ("set_dscp", "set_dscp_class", "set_cos") if values.get(k) is not None]
    log = [k for k in ("log_prefix", "log_level") if values.get(k) is not None]
    if target == "SETQOS":
        if not qos:
            raise RuleError("SETQOS needs --set-dscp, --set-dscp-class or --set-cos")
        if "set_dscp" in qos and "set_dscp_class" in qos:
            raise RuleError("--set-dscp and --set-dscp-class together")
    elif target == "DSCP":
        if len([k for k in qos if k != "set_cos"]) != 1 or "set_cos" in qos:
            raise RuleError("DSCP needs exactly one of --set-dscp or --set-dscp-class")
    elif qos:
        raise RuleError(f"--set-dscp/--set-dscp-class/--set-cos need -j SETQOS or DSCP, not {target}")
    if log and target != "LOG":
        raise RuleError(f"--log-prefix/--log-level need -j LOG, not {target}")


# Option parsers: each checks its value and stores the typed form.

def _table(values, family, name):
    if name not in CHAINS:
        raise RuleError(f"table {name!r} is not allowed (filter or mangle)")
    values["table"] = name


def _chain(values, family, name):
    values["chain"] = name


def _module(values, family, name):
    if name not in MODULES:
        raise RuleError(f"match module {name!r} is not allowed ({', '.join(MODULES)})")
    values.setdefault("modules", []).append(name)


def _target(values, family, name):
    if not any(name in targets for targets in TARGETS.values()):
        raise RuleError(f"target {name!r} is not allowed (ACCEPT, DROP, LOG, SETQOS, DSCP)")
    values["target"] = name


def _address(key):
    def parse(values, family, text):
        try:
            values[key] = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise RuleError(f"{text!r} is not an address or prefix") from None
    return parse


def _interface(key):
    def parse(values, family, name):
        if not INTERFACE.match(name):
            raise RuleError(f"{name!r} is not an interface name (at most 15 characters, "
                            "letters, digits, '_.:-', optionally ending in '+')")
        values[key] = name
    return parse


def _protocol(values, family, name):
    name = name.lower()
    name = PROTOCOL_ALIASES.get(name, PROTOCOL_NUMBERS.get(name, name))
    if name not in PROTOCOLS[4] + PROTOCOLS[6]:
        raise RuleError(f"protocol {name!r} is not allowed (tcp, udp, icmp, icmpv6, all)")
    values["protocol"] = name


def parse_ports(text: str) -> Ports:
    first, _, last = text.partition(":")
    if not first.isdigit() or (last and not last.isdigit()) or (_ and not last):
        raise RuleError(f"{text!r} is not a port or a FIRST:LAST range of port numbers")
    ports = Ports(int(first), int(last or first))
    if ports.last > 65535 or ports.first > ports.last:
        raise RuleError(f"port range {text!r} is not within 0-65535, first <= last")
    return ports


def _single_port(key):
    def parse(values, family, text):
        values[key] = (parse_ports(text),)
        values.setdefault("single_ports", set()).add(key)
    return parse


def _port_list(key):
    def parse(values, family, text):
        ports = tuple(parse_ports(item) for item in text.split(","))
        if sum(1 if p.first == p.last else 2 for p in ports) > MAX_MULTIPORT:
            raise RuleError(f"at most {MAX_MULTIPORT} ports in a multiport list (a range counts 2)")
        values[key] = ports
        values["multiport"] = True
    return parse


def parse_flags(text: str) -> tuple[str, ...]:
    names = text.upper().split(",")
    if names == ["ALL"]:
        return TCP_FLAGS
    if names == ["NONE"]:
        return ()
    unknown = [n for n in names if n not in TCP_FLAGS]
    if unknown:
        raise RuleError(f"unknown TCP flag {unknown[0]!r} ({', '.join(TCP_FLAGS)}, ALL, NONE)")
    return tuple(f for f in TCP_FLAGS if f in names)


def _tcp_flags(values, family, mask, flags):
    mask_flags, set_flags = parse_flags(mask), parse_flags(flags)
    if not set(set_flags) <= set(mask_flags):
        raise RuleError("--tcp-flags: the flags to be set must be among the flags examined")
    values["tcp_flags"] = (mask_flags, set_flags)


def _syn(values, family):
    values["tcp_flags"] = (("SYN", "ACK", "FIN", "RST"), ("SYN",))


def _icmp_type(option_family):
    def parse(values, family, text):
        if family != option_family:
            raise RuleError(f"{'--icmp-type' if family == 6 else '--icmpv6-type'} in an "
                            f"{SECTION_OF[family]} section")
        values["icmp_type"] = parse_icmp_type(text, family)
    return parse


def parse_icmp_type(text: str, family: int) -> str:
    kind, _, code = text.partition("/")
    numeric = kind.isdigit() and int(kind) <= 255 and (not _ or code.isdigit() and int(code) <= 255)
    if not numeric and (_ or kind.lower() not in ICMP_NAMES[family]):
        raise RuleError(f"{text!r} is not an ICMP type (TYPE, TYPE/CODE or a name such as "
                        f"{ICMP_NAMES[family][0]})")
    return text.lower() if not numeric else f"{int(kind)}" + (f"/{int(code)}" if _ else "")


def parse_dscp(text: str) -> int:
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise RuleError(f"DSCP {text!r} is not a number (0-63, decimal or 0x hex)") from None
    if not 0 <= value <= 63:
        raise RuleError(f"DSCP {text!r} is not within 0-63")
    return value


def parse_dscp_class(text: str) -> str:
    if text.upper() not in DSCP_CLASSES:
        raise RuleError(f"unknown DSCP class {text!r} (BE, EF, CS0-CS7, AF11-AF43)")
    return text.upper()


def _store(key, convert):
    def parse(values, family, text):
        values[key] = convert(text)
    return parse


def parse_cos(text: str) -> int:
    if not text.isdigit() or int(text) > 7:
        raise RuleError(f"class of service {text!r} is not within 0-7")
    return int(text)


def parse_log_prefix(text: str) -> str:
    if not LOG_PREFIX.match(text):
        raise RuleError("--log-prefix: 1-28 letters, digits or '_.:-'")
    return text


def parse_log_level(text: str) -> str:
    level = text.lower()
    if level.isdigit() and int(level) < len(LOG_LEVELS):
        level = LOG_LEVELS[int(level)]
    if level not in LOG_LEVELS:
        raise RuleError(f"--log-level {text!r} is not a syslog level ({', '.join(LOG_LEVELS)})")
    return level


# option -> (the Rule field it sets, how many values follow, parser)
OPTIONS = {
    "-t": ("table", 1, _table), "--table": ("table", 1, _table),
    "-A": ("chain", 1, _chain), "--append": ("chain", 1, _chain),
    "-m": ("module", 1, _module), "--match": ("module", 1, _module),
    "-j": ("target", 1, _target), "--jump": ("target", 1, _target),
    "-s": ("source", 1, _address("source")), "--source": ("source", 1, _address("source")),
    "--src": ("source", 1, _address("source")),
    "-d": ("destination", 1, _address("destination")),
    "--destination": ("destination", 1, _address("destination")),
    "--dst": ("destination", 1, _address("destination")),
    "-i": ("in_interface", 1, _interface("in_interface")),
    "--in-interface": ("in_interface", 1, _interface("in_interface")),
    "-o": ("out_interface", 1, _interface("out_interface")),
    "--out-interface": ("out_interface", 1, _interface("out_interface")),
    "-p": ("protocol", 1, _protocol), "--protocol": ("protocol", 1, _protocol),
    "--sport": ("source_ports", 1, _single_port("source_ports")),
    "--source-port": ("source_ports", 1, _single_port("source_ports")),
    "--dport": ("destination_ports", 1, _single_port("destination_ports")),
    "--destination-port": ("destination_ports", 1, _single_port("destination_ports")),
    "--sports": ("source_ports", 1, _port_list("source_ports")),
    "--source-ports": ("source_ports", 1, _port_list("source_ports")),
    "--dports": ("destination_ports", 1, _port_list("destination_ports")),
    "--destination-ports": ("destination_ports", 1, _port_list("destination_ports")),
    "--tcp-flags": ("tcp_flags", 2, _tcp_flags), "--syn": ("tcp_flags", 0, _syn),
    "--icmp-type": ("icmp_type", 1, _icmp_type(4)),
    "--icmpv6-type": ("icmp_type", 1, _icmp_type(6)),
    "--dscp": ("dscp", 1, _store("dscp", parse_dscp)),
    "--dscp-class": ("dscp_class", 1, _store("dscp_class", parse_dscp_class)),
    "--set-dscp": ("set_dscp", 1, _store("set_dscp", parse_dscp)),
    "--set-dscp-class": ("set_dscp_class", 1, _store("set_dscp_class", parse_dscp_class)),
    "--set-cos": ("set_cos", 1, _store("set_cos", parse_cos)),
    "--log-prefix": ("log_prefix", 1, _store("log_prefix", parse_log_prefix)),
    "--log-level": ("log_level", 1, _store("log_level", parse_log_level)),
}

