"""DNS-SD: fleet-wide settings from `_sflow._udp` SRV and TXT records, as hsflowd's mod_dnssd.

One SRV query and one TXT query on `_sflow._udp.<domain>`. Every SRV answer is a collector;
each TXT character-string is one `key=value` setting, checked like the config file. The
result overlays the file's settings (`apply`), so DNS-SD feeds the same `Settings` model.

Choices where hsflowd's mod_dnssd leaves room:
- A collector name becomes ONE address: its lowest IPv4 address, else its lowest IPv6
  address. IPv4 first because a host with a link-local-only or unrouted IPv6 stack would
  silently lose datagrams; the lowest address so a round-robin server does not look like a
  change on every refresh. A name with neither is skipped with a warning.
- NXDOMAIN, timeouts and server failures are errors (the agent keeps its last good settings);
  a name that exists without SRV records means "no collectors: stop sending".
- TXT keys are matched without regard to case (as hsflowd's config tokens); a bad string is
  skipped with a warning and never affects the others.

DNS is unauthenticated, so whoever controls or spoofs the zone is bounded by the config file
(the `dns-sd { }` limits in settings.py): a collector must be a unicast address a datagram can
reach (not 0.0.0.0, ::, broadcast, multicast or an IPv6 link-local address, which needs a
scope DNS cannot give); at most `maxCollectors` are used, the SRV records taken in RFC 2782
order (lowest priority, then highest weight); a TXT value beyond the file's floor or ceiling
is skipped; a `txtvers` other than 1 refuses every TXT setting. One SRV target that fails to
resolve costs only itself: the others and the TXT settings still apply, unless no target
resolved at all (then the lookup failed, and the last good settings stay).

dnspython is blocking, so `DnsSdWatcher` runs the lookups in one thread and hands results to
the agent's loop through a `Handoff`.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType

import dns.exception
import dns.name
import dns.resolver

from .. import procfs
from ..handoff import Handoff
from ..settings import SETTINGS, SPEED_PREFIX, Collector, Settings, parse_speed_key, speed_key

log = logging.getLogger(__name__)

SERVICE = "_sflow._udp"
RESOLV_CONF = procfs.HOST.etc_path("resolv.conf")
QUERY_TIMEOUT = 2.0  # seconds for one query, retries included
MIN_REFRESH, MAX_REFRESH, DEFAULT_REFRESH = 10, 3600, 300  # seconds
RETRY_FIRST, RETRY_MAX = 10, 300  # seconds: backoff after failed lookups
JITTER = 0.1  # +-10 %, so a fleet started together does not query together
# The longest meaningful pair is agent.cidr with a full IPv6 prefix (about 55 bytes); anything
# much longer is a mistake, and is not worth echoing whole into the log.
MAX_TXT_STRING = 128


class DnsSdError(Exception):
    """The lookup gave no usable answer; the agent keeps its last good settings."""


class _NoSuchName(DnsSdError):
    """NXDOMAIN: lets a search-list walk move on to the next domain."""


class Cancelled(DnsSdError):
    """The lookup was abandoned between two queries (its watcher is closing)."""


@dataclass(frozen=True)
class DnsSdResult:
    query: str  # the name that answered, e.g. "_sflow._udp.example.com."
    collectors: tuple[Collector, ...]  # sorted; () means "no collectors: stop sending"
    settings: dict  # Settings attribute -> value, from the TXT strings
    ttl: int | None  # smallest TTL among the answers used; None when nothing was answered
    answers: list[str]  # the records used, in zone-file text, for `hsagent discover`
    warnings: list[str]  # what was skipped, and why

    def same_config(self, other: "DnsSdResult | None") -> bool:
        """True when `other` would configure the agent the same way (TTLs and order aside)."""
        return other is not None and (self.collectors, self.settings) == (other.collectors,
                                                                           other.settings)


# --- names ---------------------------------------------------------------------------------

def service_name(domain: str) -> dns.name.Name:
    """`_sflow._udp.<domain>.` for "example.com", ".example.com" or "example.com."."""
    bare = domain.strip().strip(".")
    if not bare:
        raise DnsSdError(f"DNS-SD domain {domain!r} is empty")
    try:
        return dns.name.from_text(f"{SERVICE}.{bare}.")
    except dns.exception.DNSException as error:
        raise DnsSdError(f"DNS-SD domain {domain!r} is not a valid name: {error}") from None


def search_list(resolv_conf_text: str) -> list[str]:
    """The domains of the last `search` or `domain` line (the one glibc obeys)."""
    domains: list[str] = []
    for line in resolv_conf_text.splitlines():
        words = line.split()
        if words and words[0] in ("search", "domain"):
            domains = words[1:]
    return domains


def _query_names(settings: Settings, resolv_conf: str) -> list[dns.name.Name]:
    if settings.dnssd_domain:
        return [service_name(settings.dnssd_domain)]
    domains = search_list(procfs.read_optional(resolv_conf) or "")
    if not domains:
        raise DnsSdError(f"no DNS-SD domain: none configured and no search list in {resolv_conf}")
    return [service_name(domain) for domain in domains]


# --- TXT -----------------------------------------------------------------------------------

# The settings declared `txt=True` (hsflowd's TXT keys): spelt and checked as in the config file.
TXT_KEYS = {option.key.lower(): (attr, option.parse)
            for attr, option in SETTINGS.items() if option.txt and option.key}


def _shown(raw: bytes) -> str:
    """A TXT string fit for a log line: quoted, escaped, cut short."""
    return repr(raw[:40])[1:] + ("..." if len(raw) > 40 else "")


def parse_string(raw: bytes, limits: Settings = Settings()) -> tuple[str, str | None, object] | None:
    """One TXT string -> (attribute, speed key or None, value), e.g. ("polling", None, 20) or
    ("sampling_by_speed", "10G", 2000); `limits` holds the file's bounds on DNS-SD's values.

    None for `txtvers`; ValueError naming the problem for anything unusable."""
    if len(raw) > MAX_TXT_STRING:
        raise ValueError(f"longer than {MAX_TXT_STRING} bytes")
    if not all(0x20 < byte < 0x7F for byte in raw):
        raise ValueError("contains spaces or bytes that are not printable ASCII")
    key, equals, value = raw.decode("ascii").partition("=")
    if not equals:
        raise ValueError("not key=value")
    key = key.lower()
    if key == "txtvers":
        return None
    if key in TXT_KEYS:
        attribute, check = TXT_KEYS[key]
        return attribute, None, within_limits(attribute, check(value), limits)
    if key.startswith(SPEED_PREFIX):
        speed = parse_speed_key(key[len(SPEED_PREFIX):])
        if not speed:
            raise ValueError("link speed 0 has no sampling rate")
        rate = SETTINGS["sampling_by_speed"].parse(value)
        return "sampling_by_speed", speed_key(speed), within_limits("sampling_by_speed", rate, limits)
    raise ValueError(f"unknown key {key!r}")


def within_limits(attribute: str, value, limits: Settings):
    """`value`, when the config file lets DNS-SD set it (0, sampling off, is always allowed)."""
    option = SETTINGS[attribute]
    if option.txt_min and value and value < getattr(limits, option.txt_min):
        raise ValueError(f"{value} is below the config file's floor for DNS-SD, "
                         f"dns-sd {{ {_limit_text(option.txt_min, limits)} }}")
    if option.txt_max and value > getattr(limits, option.txt_max):
        raise ValueError(f"{value} is above the config file's ceiling for DNS-SD, "
                         f"dns-sd {{ {_limit_text(option.txt_max, limits)} }}")
    return value


def _limit_text(attribute: str, limits: Settings) -> str:
    return f"{SETTINGS[attribute].key} = {getattr(limits, attribute)}"


def txt_version_problem(strings) -> str | None:
    """Why these TXT strings are of a version this agent does not know (RFC 6763 6.7), or
    None: `txtvers=1`, or no txtvers at all (hsflowd's records often have none)."""
    for raw in strings:
        key, _, version = raw.partition(b"=")
        if key.lower() == b"txtvers" and version != b"1":
            return (f"{_shown(raw)}: not version 1, so every TXT setting is refused "
                    "(another version may mean something else by them)")
    return None


def parse_txt(strings, limits: Settings = Settings()) -> tuple[dict, list[str]]:
    """TXT character-strings (bytes, in a stable order) -> (attribute -> value, warnings);
    `limits`: the file's settings, whose dns-sd { } limits bound the values."""
    version_problem = txt_version_problem(strings)
    if version_problem:
        return {}, [f"TXT {version_problem}"]
    settings: dict = {}
    by_speed: dict[str, int] = {}
    warnings: list[str] = []
    for raw in strings:
        try:
            parsed = parse_string(raw, limits)
        except ValueError as error:
            warnings.append(f"TXT {_shown(raw)} skipped: {error}")
            continue
        if parsed is None:
            continue
        attribute, speed, value = parsed
        target, name = (by_speed, speed) if speed else (settings, attribute)
        if name in target and target[name] != value:
            warnings.append(f"TXT {_shown(raw)}: given twice, this value wins")
        target[name] = value
    if by_speed:
        settings["sampling_by_speed"] = dict(sorted(by_speed.items()))
    return settings, warnings


# --- queries -------------------------------------------------------------------------------

def _resolver(settings: Settings, timeout: float, resolv_conf: str) -> dns.resolver.Resolver:
    if settings.dnssd_server:
        resolver = dns.resolver.Resolver(configure=False)
        try:
            resolver.nameservers = [settings.dnssd_server]
        except ValueError:
            raise DnsSdError(
                f"DNS-SD server {settings.dnssd_server!r} is not an IP address") from None
        resolver.port = settings.dnssd_port
    else:
        try:
            resolver = dns.resolver.Resolver(filename=resolv_conf)
        except dns.resolver.NoResolverConfiguration:
            raise DnsSdError(f"no nameserver configured in {resolv_conf}") from None
    resolver.timeout = resolver.lifetime = timeout
    return resolver


class _Asker:
    """The queries of one lookup: each is blocking, so a lookup that is no longer wanted
    (`cancel` set) stops before its next query instead of running them all."""

    def __init__(self, resolver: dns.resolver.Resolver, cancel: threading.Event | None):
        self.resolver = resolver
        self.cancel = cancel

    def __call__(self, name: dns.name.Name, rdtype: str):
        """The answer's RRset, None when the name exists without such records; DnsSdError else."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("lookup abandoned")
        try:
            return self.resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False).rrset
        except dns.resolver.NXDOMAIN:
            raise _NoSuchName(f"{name} does not exist (NXDOMAIN)") from None
        except dns.exception.Timeout:
            raise DnsSdError(f"{name} {rdtype}: no answer from {self.servers()} "
                             f"within {self.resolver.lifetime:g} s") from None
        except dns.resolver.NoNameservers as error:
            # each entry: (server, tcp?, port, rcode text or exception, response)
            said = "; ".join(f"{entry[0]} answered {entry[3]}" for entry in error.kwargs["errors"])
            raise DnsSdError(f"{name} {rdtype}: {said or 'no usable nameserver'}") from None
        except dns.exception.DNSException as error:
            raise DnsSdError(f"{name} {rdtype}: {error}") from None

    def servers(self) -> str:
        servers = ", ".join(str(server) for server in self.resolver.nameservers)
        return servers if self.resolver.port == 53 else f"{servers} port {self.resolver.port}"


def _find_service(ask: _Asker, names: list[dns.name.Name]):
    """(name, SRV RRset) for the first name with SRV records.

    Without any: (first name that exists, None) when the others do not exist; DnsSdError
    when any failed for another reason (it might have had the records)."""
    exists, failures = None, []
    for name in names:
        try:
            srv = ask(name, "SRV")
        except Cancelled:
            raise
        except DnsSdError as error:
            failures.append(error)
            continue
        if srv is not None:
            return name, srv
        exists = exists or name
    if exists and all(isinstance(error, _NoSuchName) for error in failures):
        return exists, None
    if len(failures) == 1:
        raise failures[0]
    raise DnsSdError("; ".join(str(error) for error in failures))


# Where a datagram cannot go, or goes to every host of a segment instead of one collector.
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # RFC 1122: a source, never a destination


def unusable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `address` cannot be a collector learnt from DNS, or None when it can."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return unusable(address.ipv4_mapped)
    if address.is_unspecified or (address.version == 4 and address in _THIS_NETWORK):
        return "unspecified"
    if address == _BROADCAST:
        return "broadcast"
    if address.is_multicast:
        return "multicast"
    if address.version == 6 and address.is_link_local:
        return "link-local, which needs an interface DNS cannot name"
    return None


def _target_address(ask: _Asker, target: dns.name.Name):
    """(lowest usable address, its RRset, None) of `target`, IPv4 before IPv6; (None, None,
    why not) when it has none. DnsSdError when a query failed."""
    refused = []
    for rdtype in ("A", "AAAA"):
        try:
            rrset = ask(target, rdtype)
        except _NoSuchName:
            return None, None, "no such name (NXDOMAIN)"
        usable = []
        for record in rrset or ():
            address = ipaddress.ip_address(record.address)
            problem = unusable(address)
            if problem:
                refused.append(f"{address} ({problem})")
            else:
                usable.append(address)
        if usable:
            return min(usable), rrset, None
    if refused:
        return None, None, "no unicast address a datagram can reach: refused " + ", ".join(refused)
    return None, None, "no A or AAAA record"


def _srv_order(record) -> tuple:
    """RFC 2782's preference (lowest priority, then highest weight), then a stable order."""
    return record.priority, -record.weight, record.target, record.port


def _collectors(ask: _Asker, srv, limit: int) -> tuple[tuple[Collector, ...], list, list[str]]:
    """(collectors sorted, address RRsets used, warnings): at most `limit` collectors from the
    SRV records in preference order, trying at most twice that many targets (each lookup may
    take a timeout). DnsSdError when targets failed to resolve and none did."""
    collectors, used, warnings, failed = set(), [], [], False
    records = sorted(srv or (), key=_srv_order)
    tried = 0
    for index, record in enumerate(records):
        if len(collectors) == limit or tried == 2 * limit:
            left = len(records) - index
            warnings.append(f"{left} more SRV record{'s' if left > 1 else ''} not used: at most "
                            f"{limit} collectors from DNS-SD (dns-sd {{ maxCollectors = {limit} }})")
            break
        shown = f"SRV {record.priority} {record.weight} {record.port} {record.target}"
        if len(record.target.to_text().rstrip(".")) < 4:  # hsflowd's rule; covers "." (RFC 2782: no service)
            warnings.append(f"{shown} skipped: target too short")
            continue
        if record.port == 0:
            warnings.append(f"{shown} skipped: port 0")
            continue
        tried += 1
        try:
            address, rrset, problem = _target_address(ask, record.target)
        except Cancelled:
            raise
        except DnsSdError as error:
            failed = True
            warnings.append(f"{shown} skipped: {error}")
            continue
        if address is None:
            warnings.append(f"{shown} skipped: {problem}")
            continue
        used.append(rrset)
        collectors.add(Collector(str(address), record.port))
    if failed and not collectors:
        raise DnsSdError("no SRV target could be resolved: " + "; ".join(warnings))
    return tuple(sorted(collectors)), used, warnings


def lookup(settings: Settings, timeout: float = QUERY_TIMEOUT, resolv_conf: str = RESOLV_CONF,
           cancel: threading.Event | None = None) -> DnsSdResult:
    """Query DNS-SD once. Raises DnsSdError when there is no trustworthy answer, Cancelled
    (before its next query) once `cancel` is set. The file's `settings` bound what DNS-SD
    may set."""
    ask = _Asker(_resolver(settings, timeout, resolv_conf), cancel)
    name, srv = _find_service(ask, _query_names(settings, resolv_conf))
    txt = ask(name, "TXT")
    collectors, addresses, warnings = _collectors(ask, srv, settings.dnssd_max_collectors)
    # servers may rotate records; sorting the TXT records keeps "which duplicate wins" stable
    strings = [s for record in sorted(txt or (), key=lambda r: r.strings) for s in record.strings]
    txt_settings, txt_warnings = parse_txt(strings, settings)
    rrsets = [rrset for rrset in (srv, txt, *addresses) if rrset is not None]
    return DnsSdResult(
        query=name.to_text(),
        collectors=collectors,
        settings=txt_settings,
        ttl=min((rrset.ttl for rrset in rrsets), default=None),
        answers=[line for rrset in rrsets for line in rrset.to_text().splitlines()],
        warnings=warnings + txt_warnings,
    )


def apply(base: Settings, result: DnsSdResult) -> Settings:
    """`base` (defaults <- file) overlaid with the DNS-SD values; DNS collectors replace the file's.

    `sampling.<speed>` entries merge per speed: a speed the TXT does not mention keeps the file's
    rate."""
    changes = dict(result.settings)
    if "sampling_by_speed" in changes:
        changes["sampling_by_speed"] = MappingProxyType(
            {**base.sampling_by_speed, **changes["sampling_by_speed"]})
    return base.replace("dns", collectors=result.collectors, **changes)


def next_delay(result: DnsSdResult | None, failures: int, rng=random) -> float:
    """Seconds until the next lookup: the answers' TTL after a success, backoff after failures."""
    if failures:
        base = min(RETRY_FIRST * 2 ** min(failures - 1, 8), RETRY_MAX)
    elif result is not None and result.ttl is not None:
        base = min(max(result.ttl, MIN_REFRESH), MAX_REFRESH)
    else:
        base = DEFAULT_REFRESH
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def describe(result: DnsSdResult) -> str:
    """One line for the log: the collectors and settings a result installs."""
    collectors = ", ".join(map(str, result.collectors)) or "none (sending stops)"
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    return f"{result.query} collectors: {collectors}" + (f"; {settings}" if settings else "")


# --- background lookups --------------------------------------------------------------------

class DnsSdWatcher:
    """Runs lookups in one background thread; the agent's loop takes results
    through a `Handoff`.

    The loop waits for `fileno()` to become readable and then calls `handle_events()`, which
    returns a new result only when it would change the configuration. Failures are logged
    (rate-limited) and leave the last good result in force. `clock` is the time source for
    the status text (`state()`); the schedule itself waits on real time.
    """

    def __init__(self, settings: Settings, clock=time.time, timeout: float = QUERY_TIMEOUT,
                 first_delay: float | None = None):
        self._settings = settings
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._latest: DnsSdResult | None = None  # last successful lookup (thread side)
        self._delivered: DnsSdResult | None = None  # last result handed to the loop
        self._success_at: float | None = None
        self._error: str | None = None
        self._error_at: float | None = None
        # a random start in [0, 1) s spreads a fleet that boots together
        delay = random.uniform(0, 1) if first_delay is None else first_delay
        self._next_at = clock() + delay
        self._handoff = Handoff()
        self._thread = threading.Thread(target=self._run, args=(delay,), name="dnssd",
                                        daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._handoff.fileno()

    @property
    def result(self) -> DnsSdResult | None:
        """The last good result (kept through failures)."""
        with self._lock:
            return self._latest

    def refresh(self) -> None:
        """Look up now instead of waiting for the schedule (e.g. on SIGHUP)."""
        self._wake.set()

    def handle_events(self) -> DnsSdResult | None:
        """Call when fileno() is readable: a result that changes the configuration, or None."""
        self._handoff.take()
        with self._lock:
            latest = self._latest
        if latest is None or latest.same_config(self._delivered):
            return None
        self._delivered = latest
        return latest

    def state(self) -> str:
        """Short status text: last success and what it skipped, last error, next query."""
        with self._lock:
            latest, success_at, error, error_at, next_at = (
                self._latest, self._success_at, self._error, self._error_at, self._next_at)
        now = self._clock()
        where = latest.query if latest else (self._settings.dnssd_domain or "search list")
        parts = [f"DNS-SD {where}"]
        if success_at is None:
            parts.append("no successful lookup yet")
        else:
            parts.append(f"last success {now - success_at:.0f} s ago "
                         f"(collectors: {len(latest.collectors)})")
            if latest.warnings:
                parts.append(f"skipped {len(latest.warnings)}: " + "; ".join(latest.warnings))
        if error is not None:
            parts.append(f"last error {now - error_at:.0f} s ago: {error}")
        if self._thread.is_alive():
            parts.append(f"next query in {max(0.0, next_at - now):.0f} s")
        else:
            parts.append("lookups stopped: the DNS-SD thread has ended (see the log)")
        return "; ".join(parts)

    def close(self) -> None:
        """Stop without waiting: a query in progress ends within its timeout, and the lookup
        stops there (it is cancelled) and delivers nothing."""
        self._stop.set()
        self._wake.set()
        # a lookup finishing later finds the handoff closed and posts nothing
        self._handoff.close()

    # thread side

    def _run(self, delay: float) -> None:
        failures = 0
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                fresh = lookup(self._settings, self._timeout, cancel=self._stop)
            except Cancelled:
                return
            except Exception as error:  # a bug must not end the lookups: retry with backoff
                if not isinstance(error, DnsSdError):
                    log.error("DNS-SD lookup failed unexpectedly", exc_info=True)
                    error = DnsSdError(f"internal error: {type(error).__name__}: {error}")
                failures += 1
                delay = next_delay(None, failures)
                self._failed(error, failures, delay)
            else:
                delay = next_delay(fresh, 0)
                self._succeeded(fresh, failures, delay)
                failures = 0

    def _failed(self, error: DnsSdError, failures: int, delay: float) -> None:
        if self._stop.is_set():  # closed during the last query: its outcome is nobody's
            return
        with self._lock:
            repeated = str(error) == self._error
            self._error = str(error)
            self._error_at = self._clock()
            self._next_at = self._error_at + delay
        if failures == 1 or not repeated:
            log.warning("DNS-SD lookup failed, keeping the last good settings: %s", error)
        elif failures & (failures - 1) == 0:  # 2, 4, 8, ...: rare enough not to flood the log
            log.warning("DNS-SD lookup failed: %s (repeated %d times)", error, failures)

    def _succeeded(self, fresh: DnsSdResult, failures: int, delay: float) -> None:
        if self._stop.is_set():
            return
        if failures:
            log.info("DNS-SD lookup succeeded after %d failures", failures)
        with self._lock:
            changed = not fresh.same_config(self._latest)
            self._latest = fresh
            self._success_at = self._clock()
            self._next_at = self._success_at + delay
        if changed:
            log.info("DNS-SD %s", describe(fresh))
            for warning in fresh.warnings:
                log.warning("DNS-SD %s: %s", fresh.query, warning)
        self._notify()

    def _notify(self) -> None:
        if not self._stop.is_set():
            self._handoff.post()
