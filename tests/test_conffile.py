"""hsagent.config.conffile: the hsflowd.conf grammar -> Settings."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from hsagent.config.conffile import MAX_CONFIG_BYTES, SFLOW_KEYS, ConfigError, load, parse
from hsagent.settings import NflogSettings, OvsSettings, PsampleSettings, Collector, Settings

DATA = Path(__file__).parent / "data"
ETC = Path(__file__).parent.parent / "etc" / "hsagent.conf"


def sflow(body: str) -> tuple[Settings, list[str]]:
    return parse(f"sflow {{\n{body}\n}}\n", "test.conf")


def file_origins(settings: Settings) -> set[str]:
    return {name for name, origin in settings.origins.items() if origin == "file"}


# ---------------------------------------------------------------- files that work

def test_hsflowd_docker_conf_the_file_hsflowd_ran_with():
    settings, warnings = load(str(DATA / "hsflowd-docker.conf"))
    assert warnings == []
    assert settings.polling == 5
    assert settings.sampling == 20
    assert dict(settings.sampling_by_speed) == {"10G": 20}
    assert settings.collectors == (Collector("127.0.0.1", 6343),)
    assert settings.docker is True
    assert settings.pcap_devs == ("docker0",)
    assert settings.dnssd is False
    assert file_origins(settings) == {"dnssd", "polling", "sampling", "sampling_by_speed",
                                      "collectors", "docker", "pcap_devs"}
    assert settings.origin("header_bytes") == "default"


def test_hsflowd_own_example_conf():
    settings, warnings = load(str(DATA / "hsflowd.conf"))
    assert warnings == []
    assert settings.collectors == (Collector("127.0.0.1", 6343),)
    assert file_origins(settings) == {"collectors"}


def test_every_example_in_hsflowds_conf_uncommented():
    """Uncomment each example line of hsflowd's own file: what hsagent implements lands in
    Settings, every other hsflowd feature is a warning at its own line, nothing is an error."""
    text = (DATA / "hsflowd.conf").read_text()
    uncommented = re.sub(r"(?m)^(\s*)#\s{3,}(?=\S.*[={])", r"\1", text)
    settings, warnings = parse(uncommented, "hsflowd.conf")

    assert settings.agent == "eth0" and settings.agent_cidr == "192.168.0.0/16"
    assert settings.dnssd is True  # DNS-SD { }
    assert (settings.polling, settings.sampling, settings.sampling_bps_ratio) == (30, 400, 1_000_000)
    assert dict(settings.sampling_by_speed) == {"100M": 100, "1G": 1000, "10G": 10000, "40G": 40000}
    assert settings.pcap_devs == ("docker0", "eth0", "eth1")
    assert settings.nflog == NflogSettings(group=5, probability=0.0025)
    assert settings.psample == PsampleSettings(group=1)
    assert settings.docker
    assert settings.ovs == OvsSettings()  # ovs { }: the default OVSDB socket

    lines = uncommented.split("\n")
    warned = {}
    for warning in warnings:
        match = re.fullmatch(r"hsflowd\.conf:(\d+):(\d+): warning: ([^\s:]+)( \{ \})?[: ].*; ignored", warning)
        assert match, warning
        line, column, name = int(match[1]), int(match[2]), match[3]
        assert lines[line - 1][column - 1:].startswith(name)
        warned[name] = line
    assert set(warned) == {"sampling.http", "sampling.app.myapp", "json", "speed", "pcap", "ulog",
                           "egress", "dent", "dropmon", "nvml", "xen", "kvm", "tcp", "systemd",
                           "dbus", "eapi"}


def test_etc_hsagent_conf_works_out_of_the_box():
    settings, warnings = load(str(ETC))
    assert warnings == []
    assert settings.dnssd is False
    assert settings.polling == 30
    assert settings.collectors == (Collector("127.0.0.1", 6343),)


def test_etc_hsagent_conf_examples_all_parse():
    """The commented-out examples are valid too: uncommented, they parse without a warning."""
    text = ETC.read_text()
    uncommented = re.sub(r"(?m)^(\s*)#\s{3,}(?=\S+ *[={])", r"\1", text)
    for alternative in ("DNSSD = off", "dns-sd { }", "dns-sd { domain = .example.com }"):
        uncommented = uncommented.replace(f"  {alternative}\n", "")
    settings, warnings = parse(uncommented, "hsagent.conf")
    assert warnings == []
    assert settings.collectors == (Collector("127.0.0.1", 6343), Collector("2001:db8::10", 6343))
    assert (settings.dnssd_domain, settings.dnssd_server, settings.dnssd_port) == ("example.com", "192.0.2.53", 5353)
    assert settings.user == "hsagent" and settings.switchport == "swp.*"
    assert settings.nflog == NflogSettings(5, 0.0025)


# ---------------------------------------------------------------- grammar

def test_spacing_and_separators_are_free():
    compact, _ = parse("sflow{polling=10;collector{ip=10.0.0.1 udpport=6000}collector{ip=10.0.0.2}}")
    spread, _ = parse("sflow\n{\n  polling   =   10\n  collector\n  {\n ip = 10.0.0.1\n udpport = 6000 }\n"
                      "\tcollector {\r\n ip = 10.0.0.2\r\n }\r\n}\n")
    for settings in (compact, spread):
        assert settings.polling == 10
        assert settings.collectors == (Collector("10.0.0.1", 6000), Collector("10.0.0.2", 6343))


def test_names_are_case_insensitive_like_hsflowd():
    settings, warnings = parse("SFLOW { POLLING = 7 HeaderBytes = 100 Collector { IP = 10.1.1.1 UDPPort = 7000 }"
                               " DNS-SD { Domain = Example.COM } Sampling.1g = 5 AGENTip = 10.0.0.1 }")
    assert warnings == []
    assert (settings.polling, settings.header_bytes) == (7, 100)
    assert settings.collectors == (Collector("10.1.1.1", 7000),)
    assert settings.dnssd is True and settings.dnssd_domain == "Example.COM"
    assert settings.agent_ip == "10.0.0.1"
    assert dict(settings.sampling_by_speed) == {"1G": 5}


def test_comments_quotes_and_bom():
    settings, warnings = parse('\ufeff# top\nsflow { # open\n  switchport = "swp{1,2}#x" # regex with braces\n'
                               "  polling = 9#no space needed\n}\n# tail\n")
    assert warnings == []
    assert settings.switchport == "swp{1,2}#x"
    assert settings.polling == 9


@pytest.mark.parametrize("key, text, attr, value", [
    ("DNSSD", "on", "dnssd", True),
    ("DNSSD", "off", "dnssd", False),
    ("DNSSD_domain", ".example.com", "dnssd_domain", "example.com"),
    ("DNSSD_domain", "example.com", "dnssd_domain", "example.com"),
    ("polling", "20", "polling", 20),
    ("counterPollingInterval", "20", "polling", 20),
    ("sampling", "0", "sampling", 0),
    ("sampling", "2K", "sampling", 2000),
    ("packetSamplingRate", "512", "sampling", 512),
    ("sampling.bps_ratio", "0", "sampling_bps_ratio", 0),
    ("headerBytes", "256", "header_bytes", 256),
    ("datagramBytes", "1500", "datagram_bytes", 1500),
    ("maxSamplesPerSecond", "800", "max_samples_per_second", 800),
    ("agent", "eth0.100", "agent", "eth0.100"),
    ("agent.cidr", "10.1.2.3/8", "agent_cidr", "10.0.0.0/8"),
    ("agent.cidr", "2001:db8::/32", "agent_cidr", "2001:db8::/32"),
    ("agentIP", "2001:DB8::1", "agent_ip", "2001:db8::1"),
    ("subAgentId", "100000", "sub_agent_id", 100000),
    ("switchport", "swp[0-9]+", "switchport", "swp[0-9]+"),
    ("user", "hsagent", "user", "hsagent"),
])
def test_sflow_keys(key, text, attr, value):
    settings, warnings = sflow(f"collector {{ ip = 127.0.0.1 }}\n{key} = {text}")
    assert warnings == []
    assert getattr(settings, attr) == value
    assert file_origins(settings) == {"collectors", attr}


def test_every_sflow_key_is_tested():
    tested = {case[0] for case in test_sflow_keys.pytestmark[0].args[1]}
    assert tested == set(SFLOW_KEYS)


@pytest.mark.parametrize("written, key", [
    ("100M", "100M"), ("1000M", "1G"), ("1g", "1G"), ("10G", "10G"), ("25G", "25G"), ("40G", "40G"),
    ("50G", "50G"), ("100G", "100G"), ("400G", "400G"), ("2500M", "2G"), ("1T", "1T"), ("10K", "10K"),
])
def test_sampling_by_speed_spelt_as_hsflowd_does(written, key):
    settings, warnings = sflow(f"sampling.{written} = 123")
    assert warnings == []
    assert dict(settings.sampling_by_speed) == {key: 123}


def test_speed_rate_is_used_by_settings():
    settings, _ = sflow("sampling.10000M = 777\nsampling = 3")
    assert settings.sampling_rate(10 * 10**9) == 777
    assert settings.sampling_rate(0) == 3


def test_blocks():
    settings, warnings = sflow("""
        collector { ip = ::1 udpport = 6344 }
        collector { ip = 192.0.2.1 }
        dns-sd { domain = .example.net  server = ::1  port = 5353 }
        docker { }
        pcap { dev = eth0 }
        pcap { dev = veth-a.1 }
        nflog { group = 7  probability = 0.5 }
        psample { group = 4 }
    """)
    assert warnings == []
    assert settings.collectors == (Collector("::1", 6344), Collector("192.0.2.1", 6343))
    assert (settings.dnssd, settings.dnssd_domain, settings.dnssd_server, settings.dnssd_port) == (
        True, "example.net", "::1", 5353)
    assert settings.docker
    assert settings.pcap_devs == ("eth0", "veth-a.1")
    assert settings.nflog == NflogSettings(7, 0.5)
    assert settings.psample == PsampleSettings(4)
    assert file_origins(settings) == {"collectors", "dnssd", "dnssd_domain", "dnssd_server", "dnssd_port",
                                      "docker", "pcap_devs", "nflog", "psample"}


def test_dns_sd_limits():
    settings, warnings = sflow("dns-sd { maxCollectors = 2  minPolling = 60\n"
                               "  minSampling = 1K  maxHeaderBytes = 64 }")
    assert warnings == []
    assert (settings.dnssd_max_collectors, settings.dnssd_min_polling, settings.dnssd_min_sampling,
            settings.dnssd_max_header_bytes) == (2, 60, 1000, 64)
    defaults = Settings()
    assert (defaults.dnssd_max_collectors, defaults.dnssd_min_polling, defaults.dnssd_min_sampling,
            defaults.dnssd_max_header_bytes) == (4, 10, 100, 128)


@pytest.mark.parametrize("body, problem", [
    ("dns-sd { maxCollectors = 0 }", "bad value for maxCollectors: maxCollectors = 0 is out of range (1 to 64)"),
    ("dns-sd { maxCollectors = 65 }", "maxCollectors = 65 is out of range (1 to 64)"),
    ("dns-sd { maxHeaderBytes = 300 }", "maxHeaderBytes = 300 is out of range (64 to 256)"),
    ("dns-sd { minSampling = 0 }", "minSampling = 0 is out of range (1 to 2147483647)"),
    ("dns-sd { minPolling = 0 }", "minPolling = 0 is out of range (1 to 86400)"),
    ("minSampling = 10", "minSampling belongs inside dns-sd { }, not directly in sflow { }"),
])
def test_dns_sd_limits_out_of_range(body, problem):
    with pytest.raises(ConfigError) as caught:
        sflow(body)
    assert problem in caught.value.problem


def test_empty_module_blocks_take_defaults():
    settings, _ = sflow("nflog { }\npsample { }\ndns-sd { }")
    assert settings.nflog == NflogSettings() and settings.psample == PsampleSettings()
    assert settings.dnssd is True and settings.dnssd_domain is None


def test_repeated_setting_last_wins_with_a_warning():
    settings, warnings = parse("sflow {\n polling = 10\n polling = 20\n sampling.1G = 1\n sampling.1000M = 2\n}", "f")
    assert settings.polling == 20
    assert dict(settings.sampling_by_speed) == {"1G": 2}
    assert warnings == ["f:3:2: warning: polling given again (first at line 2); the last one wins",
                        "f:5:2: warning: sampling.1G given again (first at line 4); the last one wins"]


def test_repeated_collector_and_pcap_are_kept_once():
    settings, warnings = parse("sflow { collector { ip=::1 }\ncollector { ip=0:0::1 udpport=6343 }\n"
                               "pcap { dev=eth0 } pcap { dev=eth0 } }", "f")
    assert settings.collectors == (Collector("::1", 6343),)
    assert settings.pcap_devs == ("eth0",)
    assert warnings == ["f:2:1: warning: collector [::1]:6343 given twice; ignored",
                        "f:3:19: warning: pcap { dev = eth0 } given twice; ignored"]


@pytest.mark.parametrize("body, warning", [
    ("loopback = on", "2:1: warning: loopback: hsflowd feature not implemented by hsagent; ignored"),
    ("ulogGroup = 3", "2:1: warning: ulogGroup: hsflowd feature not implemented by hsagent; ignored"),
    ("nflogGroup=3", "2:1: warning: nflogGroup: hsflowd feature not implemented by hsagent; ignored"),
    ("uuid = 1", "2:1: warning: uuid: hsflowd feature not implemented by hsagent; ignored"),
    ("  kvm { refreshVMs = 60 }", "2:3: warning: kvm { }: hsflowd feature not implemented by hsagent; ignored"),
    ("os10 { port { dev = eth0 } udpport = 1 }",
     "2:1: warning: os10 { }: hsflowd feature not implemented by hsagent; ignored"),
    ("k8s { }", "2:1: warning: k8s { }: hsflowd feature not implemented by hsagent; ignored"),
    ("collector { ip = ::1 namespace = ns1 }",
     "2:22: warning: namespace: hsflowd feature not implemented by hsagent; ignored"),
    ("polling.app.x = 10", "2:1: warning: polling.app.x: per-application polling is not implemented by hsagent; ignored"),
    ("sampling.http = 10", "2:1: warning: sampling.http: application sampling is not implemented by hsagent; ignored"),
])
def test_hsflowd_features_hsagent_lacks_are_warnings(body, warning):
    settings, warnings = parse(f"sflow {{\n{body}\n}}", "f")
    assert warnings == [f"f:{warning}"]


# ---------------------------------------------------------------- errors

ERRORS = [
    # (text, line, column, problem)
    ("", 1, 1, "no settings (the file is empty or only comments): expected sflow { ... }"),
    ("# only\n   # comments\n\n", 1, 1, "no settings (the file is empty or only comments): expected sflow { ... }"),
    ("polling = 30\n", 1, 1, "expected 'sflow {' at the start, found 'polling': every setting goes inside sflow { }"),
    ("sflow { }\npolling = 30\n", 2, 1,
     "'polling' after the end of sflow { } (closed at line 1): every setting goes inside sflow { }"),
    ("sflow { }\nsflow { }\n", 2, 1,
     "'sflow' after the end of sflow { } (closed at line 1): every setting goes inside sflow { }"),
    ("sflow polling = 1", 1, 7, "expected '{' after sflow"),
    ("sflow", 1, 6, "expected '{' after sflow"),
    ("sflow {\n  pollng = 30\n}", 2, 3, "unknown setting 'pollng' in sflow { }; did you mean polling?"),
    ("sflow {\n  colector { ip = ::1 }\n}", 2, 3, "unknown setting 'colector' in sflow { }; did you mean collector?"),
    ("sflow {\n  frobnicate = 1\n}", 2, 3, "unknown setting 'frobnicate' in sflow { }"),
    ("sflow {\n collector { ip = ::1 udport = 1 }\n}", 2, 23,
     "unknown setting 'udport' in collector { }; did you mean udpport?"),
    ("sflow {\n  ip = 10.0.0.1\n}", 2, 3, "ip belongs inside collector { }, not directly in sflow { }"),
    ("sflow {\n  group = 1\n}", 2, 3, "group belongs inside nflog { } or psample { }, not directly in sflow { }"),
    ("sflow {\n  collector { ip = ::1\n  polling = 3\n}", 3, 3,
     "polling is not a collector setting: is the '}' that closes collector { (line 2) missing?"),
    ("sflow {\n  polling 30\n}", 2, 11, "expected '=' after polling"),
    ("sflow {\n  polling\n = 30\n}", 2, 10, "expected '=' after polling"),
    ("sflow {\n  polling { }\n}", 2, 11, "expected '=' after polling"),
    ("sflow {\n  docker = on\n}", 2, 10, "expected '{' after docker"),
    ("sflow {\n  polling =\n  sampling = 3\n}", 2, 12, "missing value after 'polling ='"),
    ("sflow {\n  polling = }", 2, 13, "missing value after 'polling ='"),
    ('sflow {\n  agent = ""\n}', 2, 11, "missing value after 'agent ='"),
    ("sflow {\n  polling =", 2, 12, "missing value after 'polling ='"),
    ("sflow {\n  polling = ten\n}", 2, 13, "bad value for polling: 'ten' is not a whole number"),
    ("sflow {\n  polling = -5\n}", 2, 13, "bad value for polling: '-5' is not a whole number"),
    ("sflow {\n  polling = 0\n}", 2, 13, "bad value for polling: polling = 0 is out of range (1 to 86400)"),
    ("sflow {\n  headerBytes = 257\n}", 2, 17,
     "bad value for headerBytes: headerBytes = 257 is out of range (64 to 256)"),
    ("sflow {\n  datagramBytes = 100\n}", 2, 19,
     "bad value for datagramBytes: datagramBytes = 100 is out of range (200 to 8192)"),
    ("sflow {\n  sampling = 4G\n}", 2, 14,
     "bad value for sampling: sampling = 4000000000 is out of range (0 to 2147483647)"),
    ("sflow {\n  subAgentId = 200000\n}", 2, 16,
     "bad value for subAgentId: subAgentId = 200000 is out of range (0 to 199999)"),
    ("sflow {\n  sampling.10G = x\n}", 2, 18, "bad value for sampling.10G: 'x' is not a whole number"),
    ("sflow {\n  sampling.0G = 1\n}", 2, 3, "sampling.0G: a link speed must be above 0"),
    ("sflow {\n  DNSSD = yes\n}", 2, 11, "bad value for DNSSD: 'yes' is not on or off"),
    ("sflow {\n  DNSSD_domain = exa mple\n}", 2, 22, "unknown setting 'mple' in sflow { }; did you mean psample?"),
    ("sflow {\n  DNSSD_domain = bad!name\n}", 2, 18,
     "bad value for DNSSD_domain: 'bad!name' is not a domain name such as .example.com"),
    ("sflow {\n  agentIP = 10.0.0.256\n}", 2, 13,
     "bad value for agentIP: '10.0.0.256' is not an IPv4 or IPv6 address"),
    ("sflow {\n  agent.cidr = 10.0.0.0/33\n}", 2, 16,
     "bad value for agent.cidr: '10.0.0.0/33' is not an address prefix such as 10.0.0.0/8"),
    ("sflow {\n  agent = a/b\n}", 2, 11,
     "bad value for agent: 'a/b' is not an interface name (at most 15 characters, no '/' or ':')"),
    ("sflow {\n  switchport = swp(\n}", 2, 16,
     "bad value for switchport: 'swp(' is not a valid regular expression "
     "(missing ), unterminated subpattern at position 3)"),
    ("sflow {\n  user = -root\n}", 2, 10, "bad value for user: '-root' is not a user name"),
    ("sflow {\n collector { ip = collector.example.com }\n}", 2, 19,
     "bad value for ip: 'collector.example.com' is not an IPv4 or IPv6 address"),
    ("sflow {\n collector { ip = ::1 udpport = 65536 }\n}", 2, 33,
     "bad value for udpport: udpport = 65536 is out of range (1 to 65535)"),
    ("sflow {\n collector { udpport = 6343 }\n}", 2, 2, "collector { } without ip = ADDRESS"),
    ("sflow {\n nflog { probability = 0 }\n}", 2, 24,
     "bad value for probability: '0' is not a probability above 0 and at most 1 (e.g. 0.001)"),
    ("sflow {\n nflog { probability = 1.5 }\n}", 2, 24,
     "bad value for probability: '1.5' is not a probability above 0 and at most 1 (e.g. 0.001)"),
    ("sflow {\n nflog { group = 70000 }\n}", 2, 18,
     "bad value for group: nflog.group = 70000 is out of range (0 to 65535)"),
    ("sflow {\n switchport = [\n}", 2, 15,
     "bad value for switchport: '[' is not a valid regular expression (unterminated character set at position 0)"),
    ("sflow {\n psample { group = 0 }\n}", 2, 20,
     "bad value for group: psample.group = 0 is out of range (1 to 4294967295)"),
    ("sflow {\n dns-sd { port = 0 }\n}", 2, 18, "bad value for port: udpport = 0 is out of range (1 to 65535)"),
    ("sflow {\n dns-sd { server = ns.example.com }\n}", 2, 20,
     "bad value for server: 'ns.example.com' is not an IPv4 or IPv6 address"),
    ("sflow {\n DNSSD = off\n}", 1, 1, "DNSSD is off and there is no collector { }: nowhere to send sFlow"),
    # braces
    ("sflow {\n  polling = 30\n", 1, 7, "this '{' of sflow (line 1) is never closed by '}'"),
    ("sflow {\n  collector { ip = ::1\n", 2, 13, "this '{' of collector (line 2) is never closed by '}'"),
    ("sflow {\n  kvm { xen {\n  }\n", 2, 7, "this '{' of kvm (line 2) is never closed by '}'"),
    ("sflow {\n  polling = 30\n}\n}\n", 4, 1, "'}' without a matching '{'"),
    ("}", 1, 1, "expected 'sflow {' at the start, found '}': every setting goes inside sflow { }"),
    ("sflow {\n  { }\n}", 2, 3, "expected a setting name in sflow { }, found '{'"),
    ("sflow {\n  = 3\n}", 2, 3, "expected a setting name in sflow { }, found '='"),
    ('sflow {\n  "polling" = 3\n}', 2, 3, 'expected a setting name in sflow { }, found "polling"'),
    ('sflow {\n  switchport = "swp.*\n}', 2, 16, "'\"' opens a string that is not closed on this line"),
    # not text
    ("sflow {\n  poll\0ing = 3\n}", 2, 7, "a NUL byte: this is not a text configuration file"),
    ("sflow {\x1b[31m }", 1, 8, "character U+001B: this is not a text configuration file"),
    ("\x7fELF\x02\x01", 1, 1, "character U+007F: this is not a text configuration file"),
]


@pytest.mark.parametrize("text, line, column, problem", ERRORS)
def test_errors_name_line_column_and_problem(text, line, column, problem):
    with pytest.raises(ConfigError) as caught:
        parse(text, "/etc/x.conf")
    error = caught.value
    assert (error.path, error.line, error.column, error.problem) == ("/etc/x.conf", line, column, problem)
    assert str(error) == f"/etc/x.conf:{line}:{column}: {problem}"


def test_config_error_is_a_value_error_that_pickles():
    error = ConfigError("p", 3, 4, "bad")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, copy.column, copy.problem, str(copy)) == ("p", 3, 4, "bad", "p:3:4: bad")


# ---------------------------------------------------------------- reading files

def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.conf")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: cannot read the file: No such file or directory"
    assert caught.value.line == 0


def test_directory(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(str(tmp_path))
    assert str(caught.value) == f"{tmp_path}: cannot read the file: not a regular file but a directory"


def load_within(path: str, seconds: float) -> ConfigError:
    """load(path) in a thread: a read that blocks (a FIFO without a writer) fails the test
    instead of hanging it."""
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(catch(path)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert outcome, f"reading {path} still blocks after {seconds} s"
    assert isinstance(outcome[0], ConfigError), outcome[0]
    return outcome[0]


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "hsagent.conf"
    os.mkfifo(fifo)
    error = load_within(str(fifo), 5)
    assert str(error) == f"{fifo}: cannot read the file: not a regular file but a FIFO"


def test_dev_zero_is_refused_even_through_a_link(tmp_path):
    link = tmp_path / "hsagent.conf"
    link.symlink_to("/dev/zero")
    for path in ("/dev/zero", str(link)):
        error = load_within(path, 5)
        assert str(error) == f"{path}: cannot read the file: not a regular file but a character device"


def test_size_is_bounded(tmp_path):
    path = tmp_path / "huge.conf"
    body = "sflow {\n" + "  polling = 30\n" * (MAX_CONFIG_BYTES // 15) + "}\n"
    assert len(body) > MAX_CONFIG_BYTES
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(caught.value) == f"{path}: cannot read the file: larger than {MAX_CONFIG_BYTES} bytes"
    within = body[:body.rindex("\n", 0, MAX_CONFIG_BYTES - 2) + 1] + "}\n"
    path.write_text(within)  # just within the bound: read and parsed
    assert load(str(path))[0].polling == 30


def collectors_text(count: int) -> str:
    return "sflow {\n" + "".join(f"  collector {{ ip = 10.0.{i // 256}.{i % 256} udpport = 6343 }}\n"
                                 for i in range(count)) + "}\n"


def best_parse_time(text: str) -> float:
    times = []
    for _ in range(3):  # the machine is shared: the fastest of three is the parser's own time
        started = time.perf_counter()
        parse(text)
        times.append(time.perf_counter() - started)
    return min(times)


def test_parsing_is_linear_in_the_number_of_collectors():
    """5,000 collectors took 3.8 s: each one was compared with all before it."""
    small, large = collectors_text(1000), collectors_text(5000)
    assert len(large) < MAX_CONFIG_BYTES
    settings, warnings = parse(large)
    assert len(settings.collectors) == 5000 and warnings == []
    assert settings.collectors[4999] == Collector("10.0.19.135", 6343)  # in the file's order
    ratio = best_parse_time(large) / best_parse_time(small)
    assert ratio < 10, f"5 times the collectors took {ratio:.1f} times as long"


def test_unreadable_file():
    """Root reads anything, so the read is tried as `nobody` in a forked child."""
    directory = tempfile.mkdtemp(prefix="hsagent-conf-")
    try:
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "secret.conf")
        shutil.copy(DATA / "hsflowd-docker.conf", path)
        os.chmod(path, 0o600 if os.geteuid() == 0 else 0o000)
        assert str(unprivileged_load(path)) == f"{path}: cannot read the file: Permission denied"
        if os.geteuid() == 0:
            assert load(path)[0].polling == 5  # the file itself is fine
    finally:
        shutil.rmtree(directory)


def unprivileged_load(path: str) -> str | ConfigError:
    if os.geteuid() != 0:
        return catch(path)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, try, report, leave without running pytest's cleanup
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(writer, pickle.dumps(catch(path)))
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        result = pickle.loads(pipe.read())
    os.waitpid(pid, 0)
    return result


def catch(path: str) -> str | ConfigError:
    try:
        return f"loaded: {load(path)}"
    except ConfigError as error:
        return error


def test_invalid_utf8_names_the_byte(tmp_path):
    path = tmp_path / "latin1.conf"
    path.write_bytes("sflow {\n  agent = \u00e9t\u00e9\n  # caf\u00e9\n}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(caught.value) == f"{path}:2:11: byte 0xe9 is not UTF-8: this is not a text configuration file"


def test_utf8_before_the_bad_byte_counts_as_characters(tmp_path):
    path = tmp_path / "mixed.conf"
    path.write_bytes("sflow { # caf\u00e9 ".encode() + b"\xff }")
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert (caught.value.line, caught.value.column) == (1, 16)


def test_a_binary_file_is_refused():
    with pytest.raises(ConfigError) as caught:
        load("/bin/true")
    assert (caught.value.line, caught.value.column) == (1, 1)
    assert "not a text configuration file" in caught.value.problem


def test_utf8_text_is_fine_in_comments_and_strings(tmp_path):
    path = tmp_path / "utf8.conf"
    path.write_text("# h\u00f4te \u2014 r\u00e9seau\nsflow { switchport = \"\u00e9th.*\" }\n", encoding="utf-8")
    settings, _ = load(str(path))
    assert settings.switchport == "\u00e9th.*"


# ---------------------------------------------------------------- never anything but ConfigError

WORDS = ["sflow", "collector", "ip", "udpport", "polling", "sampling.10G", "sampling.x", "docker",
         "pcap", "dev", "kvm", "dns-sd", "domain", "nflog", "probability", "group", "switchport",
         "DNSSD", "agent", "agent.cidr", "agentIP", "user", "psample", "loopback", "::1", "10.0.0.1",
         "eth0", "on", "off", "0", "30", "1.5", "(", "[", ".*", "\u00e9", "\0"]
SYMBOLS = ["{", "}", "=", "#", '"', ";", " ", "\n", "\t"]


@hsettings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_config_error(text):
    try_parse(text)


@hsettings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(WORDS + SYMBOLS), max_size=60))
def test_token_soup_raises_only_config_error(pieces):
    try_parse(" ".join(pieces))
    try_parse("".join(pieces))
    try_parse("sflow { " + " ".join(pieces) + " }")


def try_parse(text: str) -> None:
    try:
        settings, warnings = parse(text)
    except ConfigError as error:
        assert re.match(r"<string>:\d+:\d+: ", str(error))
    else:
        assert isinstance(settings, Settings)
        assert all(re.match(r"<string>:\d+:\d+: warning: ", warning) for warning in warnings)
