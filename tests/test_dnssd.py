"""DNS-SD lookups against a real BIND serving tests/data/zones/hsn.test.zone on 127.0.0.1."""

from __future__ import annotations

import logging
import random
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Named, wait_until
from hsagent.config import dnssd
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
    assert "'.'" in result.warnings[0] and "nowhere.hsn.test." in result.warnings[1]


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
    assert not watcher._thread.is_alive()


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
