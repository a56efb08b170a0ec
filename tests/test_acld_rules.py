"""hsagent-acld's pure parts: the rule allow-list and its rendering, the netfilter backend's
restore input, and the committer's coalescing and bisection (against a backend in memory that
refuses what a kernel would)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from hsagent.acld import rules
from hsagent.acld.backends import InstallError
from hsagent.acld.backends.netfilter import (TableState, parse_save, restore_input,
                                             rollback_input, rule_lines)
from hsagent.acld.committer import CapacityError, Committer
from hsagent.acld.rules import RuleError, parse_acl, parse_rule

ACCEPTED = [
    # (as a controller sends it, as hsagent-acld renders it)
    ("-A FORWARD --in-interface swp+ -d 10.10.100.10 -p udp --sport 53 -j DROP",
     "-A FORWARD -i swp+ -d 10.10.100.10 -p udp -m udp --sport 53 -j DROP"),
    ("-t mangle -A FORWARD -i swp+ -s 10.0.0.1/24 -p tcp -m multiport --dports 80,443,1000:2000 "
     "-j SETQOS --set-dscp 10 --set-cos 3",
     "-t mangle -A FORWARD -i swp+ -s 10.0.0.0/24 -p tcp -m multiport --dports 80,443,1000:2000 "
     "-j SETQOS --set-dscp 10 --set-cos 3"),
    ("-A INPUT -p tcp --syn -j LOG --log-prefix acl: --log-level 4",
     "-A INPUT -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -j LOG --log-prefix acl: --log-level warning"),
    ("-A INPUT -p icmp --icmp-type echo-request -m dscp --dscp 0x2e -j ACCEPT",
     "-A INPUT -p icmp -m icmp --icmp-type echo-request -m dscp --dscp 46 -j ACCEPT"),
    ("-t mangle -A POSTROUTING -o swp1 -p tcp --tcp-flags ALL SYN,ACK -j DSCP --set-dscp-class af41",
     "-t mangle -A POSTROUTING -o swp1 -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST,URG,PSH SYN,ACK "
     "-j DSCP --set-dscp-class AF41"),
    ("-t filter -A OUTPUT -p 17 --dport 1:1024 -j ACCEPT",
     "-A OUTPUT -p udp -m udp --dport 1:1024 -j ACCEPT"),
    ("-A INPUT   -p icmp  --icmp-type 3/4 -j DROP", "-A INPUT -p icmp -m icmp --icmp-type 3/4 -j DROP"),
]


@pytest.mark.parametrize("line, rendered", ACCEPTED)
def test_accepted_lines_render_canonically(line, rendered):
    rule = parse_rule(line, 4)
    assert rule.render() == rendered
    assert parse_rule(rendered, 4) == rule  # the rendering means the same


REFUSED = [
    ("-A FORWARD -j DROP -j ACCEPT", "given twice"),
    ("-A FORWARD -p tcp", "no -j"),
    ("-p tcp -j DROP", "no -A"),
    ("-A PREROUTING -j DROP", "not a built-in chain of the filter table"),
    ("-t mangle -A PREROUTING -o swp1 -j DROP", "-o cannot be used"),
    ("-A OUTPUT -i swp1 -j DROP", "-i cannot be used"),
    ("-A INPUT --dport 22 -j DROP", "ports need -p tcp"),
    ("-A INPUT -p udp --syn -j DROP", "need -p tcp"),
    ("-A INPUT -p tcp --icmp-type 8 -j DROP", "needs -p icmp"),
    ("-A INPUT -m multiport -j DROP", "without any of its options"),
    ("-A INPUT -m tcp -p udp --dport 1 -j DROP", "-m tcp needs -p tcp"),
    ("-A INPUT -p tcp --dport 1 --dports 2,3 -j DROP", "given twice"),
    ("-A INPUT -p tcp --sport 1 --dports 2,3 -j DROP", "together"),
    ("-A INPUT -p tcp --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15:16 -j DROP", "at most 15"),
    ("-A INPUT -p tcp --dport 2:1 -j DROP", "first <= last"),
    ("-A INPUT -p tcp --dport 1: -j DROP", "not a port"),
    ("-A INPUT -m dscp --dscp 64 -j DROP", "0-63"),
    ("-A INPUT -m dscp --dscp-class AF44 -j DROP", "DSCP class"),
    ("-t mangle -A INPUT -j SETQOS", "SETQOS needs"),
    ("-t mangle -A INPUT -j SETQOS --set-cos 8", "0-7"),
    ("-t mangle -A INPUT -j DSCP --set-cos 1", "exactly one"),
    ("-A INPUT -j DROP --set-dscp 1", "need -j SETQOS"),
    ("-A INPUT -j ACCEPT --log-prefix x", "need -j LOG"),
    ("-A INPUT -j LOG --log-level loud", "syslog level"),
    ("-A INPUT -s 10.0.0.0/33 -j DROP", "not an address"),
    ("-A INPUT -p gre -j DROP", "not allowed"),
    ("-A INPUT -p icmpv6 -j DROP", "protocol icmpv6 in an [iptables] section"),
    ("-A INPUT ! -s 10.0.0.1 -j DROP", "negated"),
    ("-A INPUT -p tcp --tcp-flags SYN ACK -j DROP", "among the flags examined"),
    ("-A INPUT -i swp+1 -j DROP", "interface"),
    ("-A INPUT -s", "needs a value"),
    ("-A INPUT 10.0.0.1 -j DROP", "unexpected"),
]


@pytest.mark.parametrize("line, words", REFUSED)
def test_refused_lines_say_why(line, words):
    with pytest.raises(RuleError) as refused:
        parse_rule(line, 4)
    assert words in str(refused.value)


def test_acl_sections_and_line_numbers():
    acl = parse_acl("mixed", ["# a comment", "", "[ip6tables]",
                              "-A FORWARD -s 2001:db8::/32 -p icmpv6 --icmpv6-type echo-request -j DROP",
                              "[iptables]", "-A INPUT -j ACCEPT", "[ip6tables]", "-A INPUT -j DROP"])
    assert acl.lines() == ["[ip6tables]",
                           "-A FORWARD -s 2001:db8::/32 -p icmpv6 -m icmp6 --icmpv6-type echo-request -j DROP",
                           "[iptables]", "-A INPUT -j ACCEPT", "[ip6tables]", "-A INPUT -j DROP"]
    with pytest.raises(RuleError) as refused:
        parse_acl("n", ["[iptables]", "-A INPUT -j ACCEPT", "-A INPUT -s 2001:db8::1 -j DROP"])
    assert refused.value.line == 3 and "IPv6 in an [iptables] section" in refused.value.problem


# Rule lines built from the allow-list's parts: whatever is accepted renders to a line that
# parses to the same rule, and uses only the characters a rule line may have.
addresses = st.builds(lambda a, n: f"{ipaddress.IPv4Address(a)}/{n}",
                      st.integers(0, 2**32 - 1), st.integers(0, 32))
ports = st.one_of(st.integers(0, 65535).map(str),
                  st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(
                      lambda p: f"{min(p)}:{max(p)}"))
interfaces = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}\+?\Z")
matches = st.lists(st.one_of(
    st.tuples(st.just("-s"), addresses), st.tuples(st.just("-d"), addresses),
    st.tuples(st.just("-i"), interfaces),
    st.tuples(st.just("-p tcp --dport"), ports), st.tuples(st.just("-p udp --sport"), ports),
    st.tuples(st.just("-p tcp -m multiport --dports"),
              st.lists(ports, min_size=1, max_size=7).map(",".join)),
    st.tuples(st.just("-m dscp --dscp"), st.integers(0, 63).map(str)),
    st.tuples(st.just("-p icmp --icmp-type"), st.integers(0, 255).map(str)),
), max_size=4)
targets = st.sampled_from(["ACCEPT", "DROP", "LOG", "LOG --log-prefix x: --log-level debug",
                           "SETQOS --set-dscp 46", "SETQOS --set-cos 5 --set-dscp-class cs3",
                           "DSCP --set-dscp 0x10"])


@settings(max_examples=300, deadline=None)
@given(matches, targets, st.sampled_from(["-A FORWARD", "-t mangle -A FORWARD", "-A INPUT"]))
def test_rendering_round_trips(matches, target, chain):
    line = " ".join([chain] + [f"{option} {value}" for option, value in matches] + ["-j", target])
    try:
        rule = parse_rule(line, 4)
    except RuleError:
        return  # e.g. two -p, or SETQOS in filter: refused with a reason, which is fine
    rendered = rule.render()
    assert rules.LINE_CHARACTERS.match(rendered)
    assert parse_rule(rendered, 4) == rule


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=5))
def test_any_text_is_a_rule_error_or_a_clean_rule(lines):
    try:
        acl = parse_acl("fuzz", ["[iptables]", *lines])
    except RuleError:
        return
    for line in acl.lines():
        assert line.isprintable() and rules.LINE_CHARACTERS.match(line)


SAVED = """# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:hsacld-INPUT - [0:0]
:other - [0:0]
-A INPUT -j hsacld-INPUT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -j other
-A hsacld-INPUT -p udp -m comment --comment "hsacld:a" -j DROP
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
COMMIT
"""


def test_restore_input_touches_only_our_chains():
    current = parse_save(SAVED)
    assert current["filter"] == TableState({"hsacld-INPUT"}, [
        '-A hsacld-INPUT -p udp -m comment --comment "hsacld:a" -j DROP'], {"INPUT"})
    acl = parse_acl("b", ["[iptables]", "-A FORWARD -i swp+ -j ACCEPT",
                          "-t mangle -A PREROUTING -p tcp -j SETQOS --set-dscp 8 --set-cos 1"])
    wanted = rule_lines({"b": acl}, 4, "sw-+")
    assert restore_input(wanted, current).splitlines() == [
        "*filter",
        ":hsacld-FORWARD - [0:0]",
        ":hsacld-INPUT - [0:0]",  # ours, no longer wanted: declared, so flushed
        "-I FORWARD 1 -j hsacld-FORWARD",  # a jump only where there is none yet
        "-A hsacld-FORWARD -i sw-+ -m comment --comment hsacld:b -j ACCEPT",
        "COMMIT",
        "*mangle",
        ":hsacld-PREROUTING - [0:0]",
        "-I PREROUTING 1 -j hsacld-PREROUTING",
        "-A hsacld-PREROUTING -p tcp -m comment --comment hsacld:b -j CLASSIFY --set-class 0:1",
        "-A hsacld-PREROUTING -p tcp -m comment --comment hsacld:b -j DSCP --set-dscp 8",
        "COMMIT"]
    assert rollback_input(current, wanted).splitlines() == [
        "*filter", ":hsacld-FORWARD - [0:0]", ":hsacld-INPUT - [0:0]",
        '-A hsacld-INPUT -p udp -m comment --comment "hsacld:a" -j DROP', "COMMIT",
        "*mangle", ":hsacld-PREROUTING - [0:0]", "COMMIT"]
    assert restore_input({}, {}) == ""


class MemoryBackend:
    """Refuses any state holding an ACL whose name starts with 'bad', as a kernel refuses a
    rule; records every install it is asked for."""
    name = "memory"

    def __init__(self):
        self.installs: list[set[str]] = []
        self.live: dict = {}

    def install(self, acls):
        self.installs.append(set(acls))
        if any(name.startswith("bad") for name in acls):
            raise InstallError("refused", 4, [f"refused {sorted(acls)}"])
        self.live = dict(acls)


class NoStore:
    path = "(memory)"

    def save(self, acls):
        pass


def acl(name, port=1):
    return parse_acl(name, ["[iptables]", f"-A INPUT -p udp --dport {port} -j DROP"])


def run(coroutine):
    return asyncio.run(coroutine)


def test_committer_coalesces_and_isolates_the_bad_change():
    async def scenario():
        backend = MemoryBackend()
        committer = Committer(backend, NoStore(), max_rules=100, interval=0.05)
        committer.start({})
        names = [f"good{n}" for n in range(15)] + ["bad"] + [f"good{n}" for n in range(15, 31)]
        changes = [committer.submit({name: acl(name)}) for name in names]
        await asyncio.gather(*(c.done for c in changes))
        await committer.stop(5)
        return backend, committer, changes

    backend, committer, changes = run(scenario())
    states = {next(iter(c.acls)): c.state for c in changes}
    assert states.pop("bad") == "failed" and set(states.values()) == {"installed"}
    assert set(backend.live) == {f"good{n}" for n in range(31)} == set(committer.live)
    assert "bad" not in committer.desired
    # one try with everything, then halves down to the one at fault: about 2 log2(32) installs
    assert len(backend.installs) <= 1 + 2 * 5
    assert committer.last_error["acls"] == ["bad"]


def test_committer_failed_change_keeps_the_live_version_and_newer_requests():
    async def scenario():
        backend = MemoryBackend()
        committer = Committer(backend, NoStore(), max_rules=100, interval=0)
        committer.start({})
        await committer.submit({"bad1": None, "x": acl("x", 1)}).done
        failed = committer.submit({"x": acl("x", 2), "bad2": acl("bad2")})  # atomic: all fail
        newer = committer.submit({"y": acl("y")})
        await asyncio.gather(failed.done, newer.done)
        await committer.stop(5)
        return committer, failed, newer

    committer, failed, newer = run(scenario())
    assert failed.state == "failed" and newer.state == "installed"
    assert committer.desired == {"x": acl("x", 1), "y": acl("y")} == committer.live


def test_committer_cap_refuses_before_installing():
    async def scenario():
        committer = Committer(MemoryBackend(), NoStore(), max_rules=2, interval=0)
        committer.start({})
        committer.submit({"a": acl("a"), "b": acl("b")})
        with pytest.raises(CapacityError):
            committer.submit({"c": acl("c")})
        committer.submit({"a": acl("a", 5)})  # a replacement that does not grow is fine
        await committer.stop(5)
        return committer

    assert set(run(scenario()).live) == {"a", "b"}
