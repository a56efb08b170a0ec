"""DNS-SD lookups against a real BIND serving tests/data/zones/hsn.test.zone on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.message
import pytest

from conftest import Named, wait_until
from hsagent.config import dnssd
from hsagent.config.source import SettingsSource
from hsagent.config.dnssd import DnsSdError, DnsSdWatcher
from hsagent.settings import Collector, Settings

ZONE_FILE = Path(__file__).parent / "data" / "zones" / "hsn.test.zone"
ZONE = "hsn.test"
TIMEOUT = 0.5  # per query: short, so a dead server costs little test time


def edit(server: Named, old: str, new: str) -> None:
    """Change the zone as an operator does: edit the records, bump the serial, reload (if
    running)."""
    text = server.zone_file.read_text()
    assert text.count(old) == 1 and text.count("2024010101 ; serial") == 1
    server.write(text.replace(old, new).replace("2024010101 ; serial", "2024010102 ; serial"))


def settings_for(server: Named, domain: str = ZONE) -> Settings:
    return Settings(dnssd_domain=domain, dnssd_server="127.0.0.1", dnssd_port=server.port)


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """The zone as written, for tests that only read it (this module's zone, not conftest's)."""
    server = Named(tmp_path_factory.mktemp("hsn-named"), ZONE, ZONE_FILE.read_text())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_named(tmp_path):
    """A named this test may edit, reload and stop."""
    server = Named(tmp_path, ZONE, ZONE_FILE.read_text())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def lookup(server: Named, domain: str = ZONE) -> dnssd.DnsSdResult:
    return dnssd.lookup(settings_for(server, domain), timeout=TIMEOUT)


def dig(server: Named, name: str, rdtype: str) -> list[str]:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(server.port), "+short", name, rdtype],
                         check=True, capture_output=True, text=True, timeout=10)
    return out.stdout.split("\n")[:-1]


# --- a real zone, read as written ----------------------------------------------------------

def test_lookup_gives_receiver_and_settings(named):
    result = lookup(named)
    assert result.query == "_sflow._udp.hsn.test."
    assert result.collectors == (Collector("127.0.0.1", 6343),)
    assert result.settings == {"polling": 20, "sampling_by_speed": {"10G": 2000}}
    assert result.ttl == 300
    assert result.warnings == []
    assert "_sflow._udp.hsn.test. 300 IN SRV 0 0 6343 collector1.hsn.test." in result.answers
    assert "collector1.hsn.test. 300 IN A 127.0.0.1" in result.answers


@pytest.mark.parametrize("domain", ["two.hsn.test", "v6.hsn.test", "odd.hsn.test",
                                    "ttl15.hsn.test"])
def test_receivers_match_what_dig_says(named, domain):
    """Each SRV target's lowest IPv4 address (else IPv6) and port, as dig resolves them."""
    expected = set()
    for line in dig(named, f"_sflow._udp.{domain}", "SRV"):
        _priority, _weight, port, target = line.split()
        if target == ".":
            continue
        addresses = dig(named, target, "A") or dig(named, target, "AAAA")
        if addresses:
            expected.add(Collector(min(addresses), int(port)))
    assert expected and lookup(named, domain).collectors == tuple(sorted(expected))


@pytest.mark.parametrize("domain", [".hsn.test", "hsn.test.", " .hsn.test. "])
def test_domain_spellings(named, domain):
    assert lookup(named, domain).query == "_sflow._udp.hsn.test."


def test_apply_overlays_file_settings_with_origin_dns(named):
    base = Settings().replace("file", collectors=(Collector("192.0.2.1", 7000),), polling=60,
                              header_bytes=200, sampling_by_speed={"1G": 500, "10G": 9999})
    applied = dnssd.apply(base, lookup(named))
    assert applied.collectors == (Collector("127.0.0.1", 6343),)
    assert applied.polling == 20
    assert dict(applied.sampling_by_speed) == {"1G": 500, "10G": 2000}
    assert applied.sampling_rate(10_000_000_000) == 2000
    assert applied.sampling_rate(1_000_000_000) == 500
    assert applied.header_bytes == 200
    assert {name: applied.origin(name) for name in
            ("collectors", "polling", "sampling_by_speed", "header_bytes", "sampling")} == {
        "collectors": "dns", "polling": "dns", "sampling_by_speed": "dns",
        "header_bytes": "file", "sampling": "default"}


def test_two_collectors_in_stable_order(named):
    """BIND rotates the SRV records between answers; the receivers keep one order."""
    results = [lookup(named, "two.hsn.test") for _ in range(12)]
    assert len({tuple(r.answers[:2]) for r in results}) == 2  # the server did rotate them
    for result in results:
        assert result.collectors == (Collector("127.0.0.1", 6344), Collector("127.0.0.2", 6343))
        assert result.same_config(results[0])


def test_aaaa_only_target_is_an_ipv6_receiver(named):
    result = lookup(named, "v6.hsn.test")
    assert result.collectors == (Collector("::1", 6343),)
    assert str(result.collectors[0]) == "[::1]:6343"


def test_root_and_addressless_targets_skipped_and_ipv4_preferred(named):
    result = lookup(named, "odd.hsn.test")
    assert result.collectors == (Collector("127.0.0.3", 6345),)  # dual has A 127.0.0.3 and AAAA ::3
    assert len(result.warnings) == 2
    assert result.warnings[0] == "SRV 0 0 6343 . skipped: target too short"
    assert result.warnings[1] == "SRV 0 0 6343 nowhere.hsn.test. skipped: no such name (NXDOMAIN)"


def test_malformed_txt_skipped_good_keys_apply(named):
    result = lookup(named, "bad.hsn.test")
    assert result.collectors == (Collector("127.0.0.1", 6343),)
    assert result.settings == {"polling": 15, "agent_cidr": "10.0.0.0/8",
                               "sampling_by_speed": {"100M": 250}}
    skipped = ["novalue", "sampling=abc", "headerBytes=1000", "sampling.1G=-5", "sampling.fast=10",
               "polling=0", "binary=1", "agentIP=192.0.2.300", "agent=xxxx"]
    assert len(result.warnings) == len(skipped)
    for text, warning in zip(skipped, result.warnings):
        assert text in warning and "skipped" in warning
    assert "longer than" in result.warnings[-1] and len(result.warnings[-1]) < 120
    applied = dnssd.apply(Settings(), result)
    assert (applied.polling, applied.header_bytes, applied.sampling) == (15, 128, 400)


# --- what a hostile or broken zone cannot do --------------------------------------------------

def test_one_target_that_fails_to_resolve_costs_only_itself(named):
    """Its address query is refused: the other collector and the TXT settings still apply."""
    assert dig(named, "collector.example.org", "A") == []  # REFUSED: not this server's zone
    result = lookup(named, "partial.hsn.test")
    assert result.collectors == (Collector("127.0.0.1", 6343),)
    assert result.settings == {"polling": 25}
    [warning] = result.warnings
    assert warning.startswith("SRV 0 0 6343 collector.example.org. skipped: collector.example.org. A:")
    assert warning.endswith("answered REFUSED")


class DroppingProxy:
    """Relays UDP queries to a real nameserver, except those for one name, which it drops
    (a server that times out for one target)."""

    def __init__(self, upstream_port: int, drop: str):
        self.upstream_port, self.drop = upstream_port, dns.name.from_text(drop)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.settimeout(2)
            while not self._stop.is_set():
                if not wait_readable(self.sock.fileno(), 0.1):
                    continue
                query, client = self.sock.recvfrom(4096)
                if dns.message.from_wire(query).question[0].name == self.drop:
                    self.dropped += 1
                    continue
                upstream.sendto(query, ("127.0.0.1", self.upstream_port))
                self.sock.sendto(upstream.recv(65535), client)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_one_target_that_times_out_costs_only_itself(named):
    proxy = DroppingProxy(named.port, "slow.hsn.test.")
    try:
        settings = Settings(dnssd_domain="slow.hsn.test", dnssd_server="127.0.0.1",
                            dnssd_port=proxy.port)
        result = dnssd.lookup(settings, timeout=TIMEOUT)
    finally:
        proxy.close()
    assert proxy.dropped == 1  # the A query of slow.hsn.test, which timed out
    assert dig(named, "slow.hsn.test", "A") == ["127.0.0.9"]  # without the proxy it resolves
    assert result.collectors == (Collector("127.0.0.1", 6343),)
    assert result.settings == {"polling": 25}
    assert result.warnings == [f"SRV 0 0 6343 slow.hsn.test. skipped: slow.hsn.test. A: no answer "
                               f"from 127.0.0.1 port {proxy.port} within {TIMEOUT:g} s"]


def test_no_target_resolving_is_a_failed_lookup_not_no_collectors(named):
    with pytest.raises(DnsSdError, match="no SRV target could be resolved: .*REFUSED"):
        lookup(named, "unresolved.hsn.test")


HOSTILE = {  # target -> what it is refused for
    "zero": "0.0.0.0 (unspecified)", "thisnet": "0.1.2.3 (unspecified)",
    "bcast": "255.255.255.255 (broadcast)", "mcast": "239.1.2.3 (multicast), ff02::1 (multicast)",
    "any6": ":: (unspecified)", "linklocal6": "fe80::1 (link-local, which needs an interface",
    "mapped6": "::ffff:0:0 (unspecified)",
}


def test_collectors_are_unicast_addresses_a_datagram_can_reach(named):
    settings = settings_for(named, "hostile.hsn.test").replace("file", dnssd_max_collectors=9)
    result = dnssd.lookup(settings, timeout=TIMEOUT)
    # a target with a refused address and a good one: the good one; A refused: its AAAA
    assert sorted(dig(named, "mixed.hsn.test", "A")) == ["0.0.0.0", "127.0.0.4"]
    assert result.collectors == (Collector("127.0.0.4", 6346), Collector("::1", 6347))
    refused = {w.split()[4].split(".")[0]: w for w in result.warnings}
    assert refused.keys() == HOSTILE.keys()
    for target, why in HOSTILE.items():
        addresses = dig(named, f"{target}.hsn.test", "A") + dig(named, f"{target}.hsn.test", "AAAA")
        assert addresses and all(str(ipaddress.ip_address(a)) in refused[target] for a in addresses)
        assert f"{target}.hsn.test. skipped: no unicast address a datagram can reach: refused {why}" \
            in refused[target]


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", None), ("192.0.2.1", None), ("169.254.1.1", None), ("::1", None),
    ("2001:db8::1", None), ("::ffff:192.0.2.1", None),
    ("0.0.0.0", "unspecified"), ("0.255.255.255", "unspecified"), ("::", "unspecified"),
    ("::ffff:0.0.0.0", "unspecified"), ("255.255.255.255", "broadcast"),
    ("::ffff:255.255.255.255", "broadcast"), ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"), ("ff05::2", "multicast"), ("fe80::1", "link-local"),
])
def test_unusable_addresses(address, problem):
    found = dnssd.unusable(ipaddress.ip_address(address))
    assert found == problem if problem is None else found.startswith(problem)


def test_collectors_capped_in_srv_preference_order(named):
    """Lowest priority first, then highest weight; the file sets the cap."""
    result = lookup(named, "many.hsn.test")
    assert result.collectors == tuple(Collector(f"127.0.1.{n}") for n in (0, 1, 2, 22))
    assert result.warnings == ["3 more SRV records not used: at most 4 collectors from DNS-SD "
                               "(dns-sd { maxCollectors = 4 })"]
    three = settings_for(named, "many.hsn.test").replace("file", dnssd_max_collectors=3)
    assert dnssd.lookup(three, timeout=TIMEOUT).collectors == tuple(
        Collector(f"127.0.1.{n}") for n in (0, 1, 22))  # c2b weighs 20, c2 10


def test_a_hundred_srv_records_are_not_a_hundred_collectors(own_named):
    """(BIND serves at most 100 records of a type at a name; the issue's zone listed 1,000.)"""
    records = "".join(f"_sflow._udp.hundred IN SRV 0 0 {7000 + i} collector1\n" for i in range(100))
    edit(own_named, "; many.hsn.test:", records + "; many.hsn.test:")
    assert wait_until(lambda: len(dig(own_named, "_sflow._udp.hundred.hsn.test", "SRV")) == 100, 10)
    started = time.monotonic()
    result = lookup(own_named, "hundred.hsn.test")
    assert time.monotonic() - started < 5  # four address look-ups, not a hundred
    assert len(result.collectors) == 4
    assert result.warnings == ["96 more SRV records not used: at most 4 collectors from DNS-SD "
                               "(dns-sd { maxCollectors = 4 })"]


def test_txt_of_another_version_is_refused_whole(named):
    result = lookup(named, "v2.hsn.test")
    assert result.collectors == (Collector("127.0.0.1", 6343),)
    assert result.settings == {}
    assert result.warnings == ["TXT 'txtvers=2': not version 1, so every TXT setting is refused "
                               "(another version may mean something else by them)"]


@pytest.mark.parametrize("strings, accepted", [
    ([b"txtvers=1", b"polling=20"], True), ([b"polling=20"], True),
    ([b"TXTVERS=2", b"polling=20"], False), ([b"polling=20", b"txtvers=1", b"txtvers=2"], False),
    ([b"txtvers=", b"polling=20"], False), ([b"txtvers=01", b"polling=20"], False),
])
def test_txtvers(strings, accepted):
    settings, warnings = dnssd.parse_txt(strings)
    assert (settings == {"polling": 20}) is accepted and (warnings == []) is accepted


def test_the_config_file_bounds_what_dns_may_set(named):
    result = lookup(named, "greedy.hsn.test")
    assert result.settings == {"sampling_bps_ratio": 1_000_000_000}
    assert result.warnings == [
        "TXT 'sampling=1' skipped: 1 is below the config file's floor for DNS-SD, "
        "dns-sd { minSampling = 100 }",
        "TXT 'sampling.10G=50' skipped: 50 is below the config file's floor for DNS-SD, "
        "dns-sd { minSampling = 100 }",
        "TXT 'headerBytes=256' skipped: 256 is above the config file's ceiling for DNS-SD, "
        "dns-sd { maxHeaderBytes = 128 }",
        "TXT 'polling=1' skipped: 1 is below the config file's floor for DNS-SD, "
        "dns-sd { minPolling = 10 }",
    ]
    applied = dnssd.apply(Settings(), result)
    assert (applied.sampling, applied.header_bytes, applied.polling) == (400, 128, 30)
    # a ratio that would sample 10G links 1-in-10 is held at the floor
    assert applied.sampling_rate(10_000_000_000) == 100
    assert applied.sampling_rate(400_000_000_000) == 400
    # the same ratio from the file is the operator's own choice
    assert Settings(sampling_bps_ratio=1_000_000_000).sampling_rate(10_000_000_000) == 10

    trusting = settings_for(named, "greedy.hsn.test").replace(
        "file", dnssd_min_sampling=1, dnssd_max_header_bytes=256, dnssd_min_polling=1)
    result = dnssd.lookup(trusting, timeout=TIMEOUT)
    assert result.warnings == []
    applied = dnssd.apply(trusting, result)
    assert (applied.sampling, applied.header_bytes, applied.polling) == (1, 256, 1)
    assert applied.sampling_rate(10_000_000_000) == 50
    assert applied.sampling_rate(25_000_000_000) == 25


def test_name_missing_inside_zone_is_nxdomain(named):
    with pytest.raises(DnsSdError, match="NXDOMAIN"):
        lookup(named, "nothing.hsn.test")


def test_domain_not_served_is_refused(named):
    with pytest.raises(DnsSdError, match="REFUSED"):
        lookup(named, "example.org")


def test_zero_srv_means_no_collectors(named):
    result = lookup(named, "txtonly.hsn.test")
    assert result.collectors == ()
    assert result.settings == {"polling": 60}
    assert dnssd.apply(Settings(collectors=(Collector("192.0.2.1"),)), result).collectors == ()


def test_ttl_drives_next_delay(named):
    result = lookup(named, "ttl15.hsn.test")
    assert result.ttl == 15
    delays = [dnssd.next_delay(result, 0, random.Random(seed)) for seed in range(50)]
    assert all(13.5 <= d <= 16.5 for d in delays) and max(delays) - min(delays) > 1
    assert 270 <= dnssd.next_delay(lookup(named), 0) <= 330


def test_search_list_tried_in_order(named, tmp_path):
    resolv_conf = tmp_path / "resolv.conf"

    def lookup_with(search_line: str):
        resolv_conf.write_text(f"nameserver 127.0.0.1\n{search_line}\n")
        settings = Settings(dnssd_server="127.0.0.1", dnssd_port=named.port)
        return dnssd.lookup(settings, timeout=TIMEOUT, resolv_conf=str(resolv_conf))

    # NXDOMAIN and REFUSED before a domain with SRV records: that one answers
    found = lookup_with("search nothing.hsn.test example.org hsn.test")
    assert found.query == "_sflow._udp.hsn.test."
    # none has SRV records but one exists: no collectors
    assert lookup_with("search nothing.hsn.test txtonly.hsn.test").collectors == ()
    with pytest.raises(DnsSdError, match="NXDOMAIN"):
        lookup_with("domain nothing.hsn.test")
    # a domain that might have had the records failed: no verdict
    with pytest.raises(DnsSdError, match="REFUSED"):
        lookup_with("search example.org txtonly.hsn.test")
    with pytest.raises(DnsSdError, match="no DNS-SD domain"):
        lookup_with("options ndots:1")


# --- a zone that changes, a server that stops ----------------------------------------------

def test_reload_changes_collector(own_named):
    assert lookup(own_named).collectors == (Collector("127.0.0.1", 6343),)
    edit(own_named, "_sflow._udp 300 IN SRV 0 0 6343 collector1",
                   "_sflow._udp 300 IN SRV 0 0 6343 collector2")
    changed = wait_until(lambda: lookup(own_named).collectors == (Collector("127.0.0.2", 6343),), 5)
    assert changed


def test_stopped_server_times_out_quickly(own_named):
    own_named.stop()
    start = time.monotonic()
    with pytest.raises(DnsSdError, match="no answer from 127.0.0.1 port"):
        lookup(own_named)
    assert TIMEOUT * 0.8 <= time.monotonic() - start < TIMEOUT + 0.5


def test_no_nameserver_configured(tmp_path):
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("search hsn.test\n")
    with pytest.raises(DnsSdError, match="no nameserver"):
        dnssd.lookup(Settings(dnssd_domain=ZONE), timeout=TIMEOUT, resolv_conf=str(resolv_conf))


def wait_readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_watcher_delivers_changes_and_keeps_last_good(own_named, caplog):
    caplog.set_level(logging.INFO, logger="hsagent.config.dnssd")
    now = [1000.0]
    watcher = DnsSdWatcher(settings_for(own_named), clock=lambda: now[0], timeout=TIMEOUT,
                           first_delay=0)
    try:
        assert wait_readable(watcher.fileno(), 5)
        first = watcher.handle_events()
        assert first.collectors == (Collector("127.0.0.1", 6343),)
        now[0] += 30
        assert "last success 30 s ago (collectors: 1)" in watcher.state()
        # TTL 300 s +-10 %, less the 30 s just passed
        assert 235 <= int(re.search(r"next query in (\d+) s", watcher.state())[1]) <= 301

        watcher.refresh()  # same answer again: nothing new for the loop
        assert wait_readable(watcher.fileno(), 5)
        assert watcher.handle_events() is None

        own_named.stop()
        def failed():
            return [r.getMessage() for r in caplog.records if "lookup failed" in r.getMessage()]

        for _ in range(4):
            logged = len(failed())
            watcher.refresh()
            # the third failure logs nothing: that wait runs its course
            wait_until(lambda: len(failed()) > logged, TIMEOUT + 1)
        failed = failed()
        # failures 1..4 logged as: first, repeated 2, (3 silent), repeated 4
        assert len(failed) == 3, failed
        assert "keeping the last good settings" in failed[0] and "no answer" in failed[0]
        assert "repeated 2 times" in failed[1] and "repeated 4 times" in failed[2]
        assert watcher.handle_events() is None
        assert watcher.result.same_config(first)
        assert "last error 0 s ago: _sflow._udp.hsn.test. SRV: no answer" in watcher.state()

        edit(own_named, "_sflow._udp 300 IN SRV 0 0 6343 collector1",
                       "_sflow._udp 300 IN SRV 0 0 6343 collector2")
        own_named.start()
        watcher.refresh()
        assert wait_readable(watcher.fileno(), 5)
        second = watcher.handle_events()
        assert second.collectors == (Collector("127.0.0.2", 6343),)
        assert any("succeeded after 4 failures" in r.getMessage() for r in caplog.records)
    finally:
        watcher.close()
    assert wait_until(lambda: not watcher._thread.is_alive(), TIMEOUT + 2)


class Silent:
    """A nameserver that never answers: every query waits out its timeout."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def queried(self, timeout: float) -> bool:
        """A query arrived (so a lookup is waiting on us now)."""
        if not wait_readable(self.sock.fileno(), timeout):
            return False
        self.sock.recv(4096)
        return True

    def names_asked(self) -> list[str]:
        names = []
        while wait_readable(self.sock.fileno(), 0):
            names.append(dns.message.from_wire(self.sock.recv(4096)).question[0].name.to_text())
        return names

    def settings(self, domain: str | None = "silent.test") -> Settings:
        return Settings(dnssd_domain=domain, dnssd_server="127.0.0.1", dnssd_port=self.port)

    def close(self):
        self.sock.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.close()


def dnssd_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "dnssd"]


def test_watcher_survives_an_unexpected_exception(named, monkeypatch, caplog):
    """Anything but DnsSdError used to end the thread without a word."""
    real_lookup, calls = dnssd.lookup, []

    def lookup_with_a_bug_the_first_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        return real_lookup(*args, **kwargs)

    monkeypatch.setattr(dnssd, "lookup", lookup_with_a_bug_the_first_time)
    watcher = DnsSdWatcher(settings_for(named), timeout=TIMEOUT, first_delay=0)
    try:
        assert wait_until(lambda: "last error" in watcher.state(), 5)
        state = watcher.state()
        assert "last error 0 s ago: internal error: KeyError: 'a bug'" in state
        assert "next query in" in state
        logged = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
        assert logged and logged[0].exc_info and logged[0].levelname == "ERROR"
        watcher.refresh()  # the thread still runs: it looks again and delivers
        assert wait_readable(watcher.fileno(), 5)
        assert watcher.handle_events().collectors == (Collector("127.0.0.1", 6343),)
    finally:
        watcher.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_status_shows_no_countdown_for_a_thread_that_has_ended(named, monkeypatch):
    def end_the_thread(*args, **kwargs):
        raise SystemExit  # what nothing in the thread catches

    monkeypatch.setattr(dnssd, "lookup", end_the_thread)
    watcher = DnsSdWatcher(settings_for(named), timeout=TIMEOUT, first_delay=0)
    try:
        assert wait_until(lambda: not watcher._thread.is_alive(), 5)
        state = watcher.state()
        assert "next query in" not in state
        assert "lookups stopped: the DNS-SD thread has ended" in state
    finally:
        watcher.close()


def test_status_names_what_was_skipped(named):
    watcher = DnsSdWatcher(settings_for(named, "partial.hsn.test"), timeout=TIMEOUT, first_delay=0)
    try:
        assert wait_readable(watcher.fileno(), 5)
        assert watcher.handle_events().settings == {"polling": 25}
        assert re.search(r"\(collectors: 1\); skipped 1: SRV 0 0 6343 collector.example.org. skipped: "
                         r".*REFUSED; next query in", watcher.state())
    finally:
        watcher.close()


def test_close_does_not_wait_for_a_query_in_progress(silent):
    watcher = DnsSdWatcher(silent.settings(), timeout=1.5, first_delay=0)
    assert silent.queried(5)
    started = time.monotonic()
    watcher.close()
    assert time.monotonic() - started < 0.2  # it waited up to the query timeout
    # the thread ends when its query times out, and delivers nothing
    assert wait_until(lambda: not watcher._thread.is_alive(), 1.5 + 2)
    # nothing after that query (a resend of it within its timeout would be the resolver's own)
    assert set(silent.names_asked()) <= {"_sflow._udp.silent.test."}


def test_a_cancelled_lookup_stops_before_its_next_query(silent, tmp_path):
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\nsearch a.test b.test c.test d.test e.test\n")
    cancel, outcome = threading.Event(), []

    def look_up():
        try:
            dnssd.lookup(silent.settings(None), timeout=0.5, resolv_conf=str(resolv_conf),
                         cancel=cancel)
        except DnsSdError as error:
            outcome.append(error)

    thread = threading.Thread(target=look_up)
    thread.start()
    assert silent.queried(5)  # the SRV query of a.test
    cancel.set()
    thread.join(0.5 + 2)
    assert not thread.is_alive() and isinstance(outcome[0], dnssd.Cancelled)
    assert set(silent.names_asked()) <= {"_sflow._udp.a.test."}  # b.test .. e.test never asked


def test_changing_the_domain_does_not_block_nor_leave_the_old_thread(silent, named):
    """SIGHUP with a new dns-sd domain: the loop waited up to 2 s for the old thread."""
    new_file = settings_for(named)
    source = SettingsSource(silent.settings(), reread=lambda: new_file)
    try:
        assert silent.queried(5)  # the first watcher is in a query that will time out
        started = time.monotonic()
        source.reload()
        assert time.monotonic() - started < 0.5
        # the old thread ends with its query (QUERY_TIMEOUT); only the new one goes on
        assert wait_until(lambda: len(dnssd_threads()) == 1, dnssd.QUERY_TIMEOUT + 2)
        assert wait_until(lambda: source._watcher.result is not None, 5)
        assert source.handle_events().collectors == (Collector("127.0.0.1", 6343),)
    finally:
        source.close()
    assert wait_until(lambda: not dnssd_threads(), 5)


def test_new_limits_by_sighup_apply_to_the_next_answer(named):
    """The watcher held the limits it was built with: a file that trusts DNS-SD more (or less)
    changed nothing until a restart."""
    strict = settings_for(named, "greedy.hsn.test")
    trusting = strict.replace("file", dnssd_min_sampling=1, dnssd_max_header_bytes=256)
    source = SettingsSource(strict, reread=lambda: trusting)
    try:
        assert wait_until(lambda: source.handle_events(), 5)
        assert (source.settings.sampling, source.settings.header_bytes) == (400, 128)
        source.reload()
        assert wait_until(lambda: source.handle_events(), 5)
        assert (source.settings.sampling, source.settings.header_bytes) == (1, 256)
    finally:
        source.close()


# --- pure parts ----------------------------------------------------------------------------

def test_parse_txt_checks_each_string_alone():
    settings, warnings = dnssd.parse_txt([
        b"txtvers=1", b"Polling=25", b"SAMPLING=800", b"sampling.1000M=900", b"sampling.10g=5000",
        b"sampling.bps_ratio=0", b"headerbytes=64", b"agent=eth0", b"agentIP=2001:db8::1",
        b"agent.cidr=10.1.0.0/16", b"sampling=" + b"1" * 291, b"polling=1e3", b"polling= 5",
        b"polling=+5", b"sampling.0G=5", b"sampling.http=100", b"agent=far-too-long-ifname",
        b"\xff\xfe=1", b"dropLimit=5", b"=", b"polling=30",
    ])
    assert settings == {
        "polling": 30, "sampling": 800, "sampling_bps_ratio": 0, "header_bytes": 64,
        "agent": "eth0", "agent_ip": "2001:db8::1", "agent_cidr": "10.1.0.0/16",
        "sampling_by_speed": {"10G": 5000, "1G": 900},
    }
    assert len(warnings) == 11
    assert "'sampling=1111" in warnings[0] and "longer than 128 bytes" in warnings[0]
    assert len(warnings[0]) < 100
    assert "given twice" in warnings[-1]


def test_search_list_last_line_wins():
    text = "nameserver 10.0.0.1\nsearch a.example b.example\n# search c.example\ndomain d.example\n"
    assert dnssd.search_list(text) == ["d.example"]
    assert dnssd.search_list("search a.example b.example\n") == ["a.example", "b.example"]
    assert dnssd.search_list("nameserver 10.0.0.1\n") == []


class Middle:
    """An rng whose jitter is zero."""

    @staticmethod
    def uniform(low, high):
        return (low + high) / 2


def result_with_ttl(ttl):
    return dnssd.DnsSdResult("_sflow._udp.x.", (), {}, ttl, [], [])


@pytest.mark.parametrize("result, failures, expected", [
    (result_with_ttl(15), 0, 15), (result_with_ttl(1), 0, 10), (result_with_ttl(86400), 0, 3600),
    (result_with_ttl(None), 0, 300), (None, 0, 300),
    (None, 1, 10), (None, 2, 20), (None, 3, 40), (None, 5, 160), (None, 6, 300), (None, 10**6, 300),
])
def test_next_delay(result, failures, expected):
    assert dnssd.next_delay(result, failures, Middle) == pytest.approx(expected)
