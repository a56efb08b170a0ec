"""The hsflowd.conf grammar -> Settings.

    sflow {
      polling = 30                          # a comment runs to the end of the line
      collector { ip=127.0.0.1 udpport=6343 }
      pcap { dev = eth0 }
    }

As in hsflowd: tokens are separated by white space, ';' and '='; braces need no space around
them; a double-quoted string is one token (so a regex may hold '{', '}' or '='); names are
compared without regard to case. Stricter than hsflowd so that a mistake is reported where it
is made: a setting is `name = value` on one line, and everything lives in one sflow { }.
hsflowd features hsagent does not implement are skipped with a warning, not an error, so an
existing hsflowd.conf keeps working. Which keys exist, where, and how each value is checked come
from the declarations in hsagent/settings.py; this module adds only the grammar and what each
block means.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from .. import files
from ..settings import (OVS_SUB_AGENT_ID, SETTINGS, SPEED_PREFIX, Collector, NflogSettings,
                        OvsSettings, PsampleSettings, Settings, options, parse_speed_key, speed_key)

# A configuration with a thousand collectors is about 40 KB; a file six times that is not one,
# and reading and parsing at most this much on SIGHUP keeps the loop's pause short.
MAX_CONFIG_BYTES = 256 << 10


class ConfigError(ValueError):
    """A configuration that cannot be used. str() is `PATH:LINE:COL: problem` (lines and
    columns count from 1), or `PATH: problem` when line is 0: the file as a whole."""

    def __init__(self, path: str, line: int, column: int, problem: str):
        super().__init__(path, line, column, problem)
        self.path, self.line, self.column, self.problem = path, line, column, problem

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.path}: {self.problem}"
        return f"{self.path}:{self.line}:{self.column}: {self.problem}"


# ---------------------------------------------------------------- the grammar's tables
# Derived from the declarations in hsagent/settings.py: key -> (attribute, text -> value).

Converter = Callable[[str], Any]


def _sflow_keys() -> dict[str, tuple[str, Converter]]:
    keys = {}
    for attr, option in SETTINGS.items():
        if option.key and (option.block is None or option.block_key):
            keys.update(dict.fromkeys((option.key, *option.aliases), (attr, option.parse)))
    return keys


def _block_keys(block: str, record=None) -> dict[str, tuple[str, Converter]]:
    """The keys of `block { }`: every field of the record it builds, else the Settings fields
    declared in it."""
    if record is not None:
        return {option.key: (attr, option.parse) for attr, option in options(record).items()}
    return {option.block_key or option.key: (attr, option.parse)
            for attr, option in SETTINGS.items() if option.block == block and option.key}


SFLOW_KEYS = _sflow_keys()


@dataclass(frozen=True)
class Block:
    """A `name { ... }` section: its keys (key -> (attribute, converter)) and `finish`, which
    gets the values set inside one such block and records what they mean for Settings
    (sflow { } itself has none: its keys are Settings attributes)."""

    name: str
    keys: dict[str, tuple[str, Converter]]
    finish: Callable[["Parser", dict, "Token"], None] | None = None


def add_collector(parser: Parser, values: dict, where: Token) -> None:
    if "ip" not in values:
        raise parser.at(where, "collector { } without ip = ADDRESS")
    collector = Collector(**values)
    parser.append("collectors", collector, where, f"collector {collector}")


def add_pcap(parser: Parser, values: dict, where: Token) -> None:
    dev = values.get("pcap_devs")  # what `dev =` sets
    if dev is None:
        parser.warn(where, "pcap { } without dev: hsagent samples only devices named by dev; ignored")
        return
    parser.append("pcap_devs", dev, where, f"pcap {{ dev = {dev} }}")


def enable_dnssd(parser: Parser, values: dict, where: Token) -> None:
    for attr, value in dict(values, dnssd=True).items():
        parser.set(parser.top, attr, value, where, "dns-sd { }")


def enable(attr: str, record: Callable[..., Any] = lambda: True):
    """finish() of a block that turns one feature on: Settings.<attr> = record(**values)."""
    def finish(parser: Parser, values: dict, where: Token) -> None:
        parser.set(parser.top, attr, record(**values), where, f"{where.text} {{ }}")
    return finish


# Each block: the record whose declared keys it holds, and what its values mean for Settings.
BLOCKS = {block.name: block for block in (
    Block("collector", _block_keys("collector", Collector), add_collector),
    Block("pcap", _block_keys("pcap"), add_pcap),
    Block("dns-sd", _block_keys("dns-sd"), enable_dnssd),
    Block("docker", {}, enable("docker")),
    Block("nflog", _block_keys("nflog", NflogSettings), enable("nflog", NflogSettings)),
    Block("psample", _block_keys("psample", PsampleSettings), enable("psample", PsampleSettings)),
    Block("ovs", _block_keys("ovs", OvsSettings), enable("ovs", OvsSettings)),
)}

SFLOW = Block("sflow", SFLOW_KEYS)

# hsflowd's keywords (src/Linux/hsflowtokens.h, plus a few newer modules). Those hsagent does
# not implement are skipped with a warning; anything else unknown is an error.
HSFLOWD_TOKENS = frozenset(name.lower() for name in """
    sFlow subAgentId counterPollingInterval packetSamplingRate agentIP collector containerd IP
    UDPPort UDP agent uuid dbconfig DNSSD dns-sd DNSSD_domain domain polling sampling headerBytes
    ulog ulogGroup group ulogProbability probability nflog nflogGroup nflogProbability psample
    loopback json jsonPort jsonFIFO fifo agent.cidr datagramBytes refreshAdaptors checkAdaptors
    refreshVMs samplingDirection forgetVMs pcap dev speed promisc vport kvm xen
    xen.update.dominfo update.dominfo xen.dsk dsk vbd docker modules cumulus dent switchport OVS
    NVML OS10 OPX SONIC tcp dbus systemd dropPriv eapi port cgroup_procs cgroup_acct markTraffic
    namespace hostname dropmon start limit sw hw rn hw_unknown hw_function sw_passive hw_passive
    tunnel max unixsock ingress egress k8s waitReady dump vpp epcap
""".split())


# ---------------------------------------------------------------- tokens

class Token(NamedTuple):
    kind: str  # "word", "string" (quoted), "{", "}" or "="
    text: str  # a string without its quotes
    line: int
    column: int
    width: int  # characters in the file, quotes included

    @property
    def end(self) -> int:
        return self.column + self.width


TOKEN = re.compile(r"""
    (?P<space>(?:[^\S\n]|;)+)       # hsflowd separates tokens with ';' too
  | (?P<comment>\#.*)
  | (?P<string>"[^"]*")
  | (?P<open_quote>")
  | (?P<punct>[{}=])
  | (?P<word>[^\s;#"{}=]+)
""", re.VERBOSE)

# NUL and other control characters (tab, CR and LF aside), C1 controls and lone surrogates
# (bytes that are not UTF-8): what a binary file or a mis-decoded one looks like.
NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def tokenize(text: str, path: str) -> list[Token]:
    tokens = []
    for number, line in enumerate(text.split("\n"), 1):
        for match in TOKEN.finditer(line):
            kind, raw, column = match.lastgroup, match.group(), match.start() + 1
            if kind == "open_quote":
                raise ConfigError(path, number, column, "'\"' opens a string that is not closed on this line")
            if kind == "string":
                tokens.append(Token("string", raw[1:-1], number, column, len(raw)))
            elif kind in ("word", "punct"):
                tokens.append(Token("word" if kind == "word" else raw, raw, number, column, len(raw)))
    return tokens


def check_text(text: str, path: str) -> None:
    bad = NOT_TEXT.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - text.rfind("\n", 0, bad.start())
        raise ConfigError(path, line, column, f"{not_text(bad.group())}: this is not a text configuration file")


def not_text(char: str) -> str:
    if char == "\0":
        return "a NUL byte"
    if "\udc80" <= char <= "\udcff":  # how read_text() carries a byte that is not UTF-8
        return f"byte 0x{ord(char) - 0xdc00:02x} is not UTF-8"
    return f"character U+{ord(char):04X}"


def describe(token: Token) -> str:
    return f"'{token.text}'" if token.kind != "string" else f'"{token.text}"'


# ---------------------------------------------------------------- the parser

class Parser:
    """One pass over the tokens; each block's table says what may appear inside it."""

    def __init__(self, text: str, path: str):
        self.path = path
        check_text(text, path)
        self.tokens = tokenize(text, path)
        self.pos = 0
        self.warnings: list[str] = []
        self.top: dict[str, tuple[Any, Token]] = {}  # Settings attribute -> (value, where set)
        # what append() has added to a list setting: a set, so that 5,000 collectors cost
        # 5,000 look-ups and not 12.5 million comparisons
        self.appended: dict[str, set] = {}
        self.speed_rates: dict[str, tuple[int, Token]] = {}  # "10G" -> (1-in-N, where set)

    # ---- plumbing
    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> Token | None:
        token = self.peek()
        self.pos += token is not None
        return token

    def at(self, token: Token, problem: str) -> ConfigError:
        return ConfigError(self.path, token.line, token.column, problem)

    def warn(self, token: Token, message: str) -> None:
        self.warnings.append(f"{self.path}:{token.line}:{token.column}: warning: {message}")

    def set(self, into: dict, key: str, value: Any, where: Token, label: str) -> None:
        """hsflowd keeps the last of a repeated setting; so do we, but say so."""
        if key in into:
            first = into[key][1]
            self.warn(where, f"{label} given again (first at line {first.line}); the last one wins")
        into[key] = (value, where)

    def append(self, attr: str, item: Any, where: Token, label: str) -> None:
        seen = self.appended.setdefault(attr, set())
        if item in seen:
            self.warn(where, f"{label} given twice; ignored")
            return
        seen.add(item)
        self.top.setdefault(attr, ([], where))[0].append(item)

    # ---- grammar
    def parse(self) -> Settings:
        first = self.next()
        if first is None:
            raise ConfigError(self.path, 1, 1, "no settings (the file is empty or only comments): "
                                               "expected sflow { ... }")
        if first.kind != "word" or first.text.lower() != "sflow":
            raise self.at(first, f"expected 'sflow {{' at the start, found {describe(first)}: "
                                 "every setting goes inside sflow { }")
        closing = self.body(SFLOW, self.opening(first), self.top)
        extra = self.next()
        if extra is not None and extra.kind == "}":
            raise self.at(extra, "'}' without a matching '{'")
        if extra is not None:
            raise self.at(extra, f"{describe(extra)} after the end of sflow {{ }} (closed at line "
                                 f"{closing.line}): every setting goes inside sflow {{ }}")
        return self.settings(first)

    def opening(self, name: Token) -> Token:
        brace = self.next()
        if brace is None or brace.kind != "{":
            where = brace or name._replace(column=name.end)
            raise self.at(where, f"expected '{{' after {name.text}")
        return brace

    def body(self, block: Block, opening: Token, into: dict) -> Token:
        """Statements up to the '}' that closes `opening`; returns that '}'."""
        while (token := self.next()) is not None:
            if token.kind == "}":
                return token
            if token.kind != "word":
                raise self.at(token, f"expected a setting name in {block.name} {{ }}, found {describe(token)}")
            self.statement(token, block, opening, into)
        raise self.at(opening, f"this '{{' of {block.name} (line {opening.line}) is never closed by '}}'")

    def statement(self, name: Token, block: Block, opening: Token, into: dict) -> None:
        word = name.text.lower()
        key = next((key for key in block.keys if key.lower() == word), None)
        if block is SFLOW and word in BLOCKS:
            self.sub_block(name, BLOCKS[word])
        elif key is not None:
            attr, convert = block.keys[key]
            self.set(into, attr, self.converted(name, key, convert), name, key)
        elif block is SFLOW and word.startswith(SPEED_PREFIX.lower()):
            self.speed_sampling(name)
        elif block is SFLOW and word.startswith("polling."):
            self.skip(name, "per-application polling is not implemented by hsagent")
        elif block is SFLOW and (homes := [b.name for b in BLOCKS.values() if word in map(str.lower, b.keys)]):
            raise self.at(name, f"{name.text} belongs inside {' { } or '.join(homes)} {{ }}, "
                                "not directly in sflow { }")
        elif block is not SFLOW and (word in map(str.lower, SFLOW_KEYS) or word in BLOCKS
                                     or word.startswith((SPEED_PREFIX.lower(), "polling."))):
            raise self.at(name, f"{name.text} is not a {block.name} setting: is the '}}' that closes "
                                f"{block.name} {{ (line {opening.line}) missing?")
        elif word in HSFLOWD_TOKENS:
            self.skip(name, "hsflowd feature not implemented by hsagent")
        else:
            raise self.unknown(name, block)

    def sub_block(self, name: Token, block: Block) -> None:
        opening = self.opening(name)
        values: dict[str, tuple[Any, Token]] = {}
        self.body(block, opening, values)
        block.finish(self, {attr: value for attr, (value, _) in values.items()}, name)

    def value(self, name: Token) -> Token:
        """The value of `name = value`, all three on one line."""
        equals = self.peek()
        if equals is None or equals.line != name.line or equals.kind != "=":
            where = equals if equals is not None and equals.line == name.line else name._replace(column=name.end)
            raise self.at(where, f"expected '=' after {name.text}")
        self.next()
        value = self.peek()
        if value is None or value.line != name.line or value.kind not in ("word", "string") or not value.text:
            where = value if value is not None and value.line == name.line else equals._replace(column=equals.end)
            raise self.at(where, f"missing value after '{name.text} ='")
        return self.next()

    def converted(self, name: Token, key: str, convert: Converter) -> Any:
        value = self.value(name)
        try:
            return convert(value.text)
        except ValueError as exc:
            raise self.at(value, f"bad value for {key}: {exc}") from None

    def speed_sampling(self, name: Token) -> None:
        """sampling.<speed> = N, the speed spelt as hsflowd does (sampling.1000M is sampling.1G)."""
        try:
            speed = parse_speed_key(name.text[len(SPEED_PREFIX):])
        except ValueError:
            self.skip(name, "application sampling is not implemented by hsagent")
            return
        if speed == 0:
            raise self.at(name, f"{name.text}: a link speed must be above 0")
        rate = self.converted(name, name.text, SETTINGS["sampling_by_speed"].parse)
        self.set(self.speed_rates, speed_key(speed), rate, name, f"{SPEED_PREFIX}{speed_key(speed)}")

    def skip(self, name: Token, why: str) -> None:
        """Consume an hsflowd setting or block hsagent ignores (nested blocks included)."""
        label = name.text
        if (brace := self.peek()) is not None and brace.kind == "{":
            label += " { }"
            self.next()
            depth = 1
            while depth:
                token = self.next()
                if token is None:
                    raise self.at(brace, f"this '{{' of {name.text} (line {brace.line}) is never closed by '}}'")
                depth += {"{": 1, "}": -1}.get(token.kind, 0)
        else:
            self.value(name)
        self.warn(name, f"{label}: {why}; ignored")

    def unknown(self, name: Token, block: Block) -> ConfigError:
        known = list(block.keys) + (list(BLOCKS) if block is SFLOW else [])
        by_lower = {key.lower(): key for key in known}
        close = difflib.get_close_matches(name.text.lower(), by_lower, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(by_lower[c] for c in close)}?" if close else ""
        return self.at(name, f"unknown setting '{name.text}' in {block.name} {{ }}{hint}")

    def settings(self, sflow: Token) -> Settings:
        changes = {attr: tuple(value) if isinstance(value, list) else value
                   for attr, (value, _) in self.top.items()}
        if self.speed_rates:
            changes["sampling_by_speed"] = MappingProxyType(
                {key: rate for key, (rate, _) in self.speed_rates.items()})
        if "ovs" in self.top and self.top.get("sub_agent_id", (OVS_SUB_AGENT_ID,))[0] < OVS_SUB_AGENT_ID:
            value, where = self.top["sub_agent_id"]
            raise self.at(where, f"subAgentId = {value} would share its datagram stream with an Open vSwitch "
                                 f"bridge (ovs {{ }}: OVS numbers them 0, 1, 2 ...); use {OVS_SUB_AGENT_ID} or more")
        if changes.get("dnssd") is False and not changes.get("collectors"):
            raise self.at(sflow, "DNSSD is off and there is no collector { }: nowhere to send sFlow")
        return Settings().replace("file", **changes)


# ---------------------------------------------------------------- public API

def parse(text: str, path: str = "<string>") -> tuple[Settings, list[str]]:
    """Settings from hsflowd.conf-style text, and warnings ("PATH:LINE:COL: warning: ...")
    for what was ignored. Raises ConfigError."""
    parser = Parser(text.removeprefix("\ufeff"), path)
    return parser.parse(), parser.warnings


def read_text(path: str) -> str:
    """The file's text; a byte that is not UTF-8 becomes a lone surrogate, which parse()
    then reports at its line and column.

    Only a regular file of at most MAX_CONFIG_BYTES is read: a FIFO would block the agent's
    loop on SIGHUP, /dev/zero never ends, and a huge file costs seconds and memory."""
    try:
        data = files.read_small(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(path, 0, 0, f"cannot read the file: {exc.strerror}") from None
    return data.decode("utf-8", "surrogateescape")


def load(path: str) -> tuple[Settings, list[str]]:
    """Read and parse a configuration file. Raises ConfigError."""
    return parse(read_text(path), path)
