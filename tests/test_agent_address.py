"""Agent-address selection: the pure ranking on hand-made address lists, then `choose` in a
namespace with a default route through a veth peer (run there with `ip netns exec`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hsagent.agent_address import (RT_SCOPE_HOST, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, Candidate,
                                   select)
from hsagent.settings import Settings

REPO = Path(__file__).resolve().parent.parent
U, L, H = RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST

# A host as the kernel would list it: loopback first, then eth0 (no default route), then
# eth1 (the default route), IPv4 before IPv6.
HOST = [
    Candidate("lo", "127.0.0.1", H, False),
    Candidate("eth0", "198.18.5.1", U, False),
    Candidate("eth1", "198.18.4.1", U, True),
    Candidate("eth1", "198.18.4.7", U, True),
    Candidate("lo", "::1", H, False),
    Candidate("eth0", "2001:db8:5::1", U, False),
    Candidate("eth1", "fd00:4::1", U, True),
    Candidate("eth1", "2001:db8:4::1", U, True),
    Candidate("eth1", "fe80::1", L, True),
    Candidate("eth2", "fe80::2", L, False),
]


def test_automatic_prefers_the_default_route_device_then_ipv4():
    assert select(HOST, Settings()) == ("198.18.4.1", "eth1")
    v6_only_default = [c for c in HOST if not (c.device == "eth1" and "." in c.address)]
    assert select(v6_only_default, Settings()) == ("2001:db8:4::1", "eth1")  # global beats ULA


def test_without_default_route_any_global_address_ipv4_first():
    no_route = [c._replace(default_route=False) for c in HOST]
    assert select(no_route, Settings()) == ("198.18.5.1", "eth0")
    v6 = [c for c in no_route if ":" in c.address]
    assert select(v6, Settings()) == ("2001:db8:5::1", "eth0")
    assert select([c for c in v6 if c.scope != U], Settings()) == ("fe80::1", "eth1")
    assert select([c for c in HOST if c.device == "lo"], Settings()) == ("127.0.0.1", "lo")
    assert select([], Settings()) is None


def test_settings_in_order_of_precedence():
    assert select(HOST, Settings(agent_ip="192.0.2.9")) == ("192.0.2.9", None)
    assert select(HOST, Settings(agent_ip="198.18.5.1", agent="eth1")) == ("198.18.5.1", "eth0")
    assert select(HOST, Settings(agent="eth0")) == ("198.18.5.1", "eth0")
    assert select(HOST, Settings(agent_cidr="2001:db8:5::/48")) == ("2001:db8:5::1", "eth0")
    assert select(HOST, Settings(agent_cidr="198.18.4.4/30")) == ("198.18.4.7", "eth1")
    # A device wins over a prefix when both are set; the prefix then picks on that device.
    both = Settings(agent="eth1", agent_cidr="2001:db8::/32")
    assert select(HOST, both) == ("2001:db8:4::1", "eth1")


def test_settings_that_match_nothing_fall_through():
    assert select(HOST, Settings(agent="eth2")) == ("198.18.4.1", "eth1")  # only link-local
    assert select(HOST, Settings(agent="nosuchdev")) == ("198.18.4.1", "eth1")
    assert select(HOST, Settings(agent_cidr="10.0.0.0/8")) == ("198.18.4.1", "eth1")


def test_sticky_while_still_among_the_best():
    assert select(HOST, Settings(), current="198.18.4.7") == ("198.18.4.7", "eth1")
    assert select(HOST, Settings(), current="198.18.5.1") == ("198.18.4.1", "eth1")  # worse
    assert select(HOST, Settings(), current="198.18.9.9") == ("198.18.4.1", "eth1")  # gone
    # Still present but no longer what the settings ask for.
    assert select(HOST, Settings(agent="eth0"), current="198.18.4.7") == ("198.18.5.1", "eth0")


# --- in a namespace ------------------------------------------------------------------------

CHOOSE = """
import json, sys
from hsagent.agent_address import choose, local_candidates
from hsagent.settings import Settings
answers = [choose(Settings(**kw), current) for kw, current in json.loads(sys.argv[1])]
print(json.dumps({"answers": answers, "candidates": local_candidates()}))
"""


def choose_in(ns, *queries):
    """Run choose() inside the namespace for each (settings keywords, current address)."""
    done = ns.run(sys.executable, "-c", CHOOSE, json.dumps(queries),
                  env=dict(os.environ, PYTHONPATH=str(REPO)))
    reply = json.loads(done.stdout)
    return [tuple(a) for a in reply["answers"]], [Candidate(*c) for c in reply["candidates"]]


def addresses(ns) -> set[tuple[str, str, int]]:
    """(device, address, scope) of every usable address, as `ip` lists them."""
    scopes = {"global": U, "link": L, "host": H}
    return {(e["ifname"], a["local"], scopes[a["scope"]])
            for e in json.loads(ns.run("ip", "-j", "addr", "show").stdout)
            for a in e.get("addr_info", ())
            if not a.get("tentative") and not a.get("deprecated") and not a.get("dadfailed")}


def test_choose_in_a_namespace(netns):
    a, b = netns("hsi"), netns("hsi")
    # No duplicate address detection: link-local addresses are usable at once, not tentative
    # for a racy second or two.
    a.run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
    # hsd0 comes first (lower ifIndex, listed first); hsa0 carries the default route.
    a.run("ip", "link", "add", "hsd0", "type", "veth", "peer", "name", "hsd1")
    subprocess.run(["ip", "-n", a.name, "link", "add", "hsa0", "type", "veth",
                    "peer", "name", "hsa1", "netns", b.name], check=True)
    for ns, commands in [(a, ["addr add 198.18.5.1/24 dev hsd0",
                              "addr add 2001:db8:5::1/64 dev hsd0 nodad",
                              "addr add 198.18.4.1/24 dev hsa0",
                              "addr add 2001:db8:4::1/64 dev hsa0 nodad",
                              "link set hsd0 up", "link set hsd1 up", "link set hsa0 up"]),
                         (b, ["addr add 198.18.4.2/24 dev hsa1",
                              "addr add 2001:db8:4::2/64 dev hsa1 nodad", "link set hsa1 up"])]:
        for command in commands:
            ns.run("ip", *command.split())
    a.run("ip", "route", "add", "default", "via", "198.18.4.2")

    answers, candidates = choose_in(
        a, ({}, None), ({"agent": "hsd0"}, None), ({"agent_cidr": "2001:db8:5::/64"}, None),
        ({"agent_ip": "198.18.5.1"}, None), ({"agent": "hsd1"}, None))
    assert answers == [("198.18.4.1", "hsa0"), ("198.18.5.1", "hsd0"),
                       ("2001:db8:5::1", "hsd0"), ("198.18.5.1", "hsd0"),
                       ("198.18.4.1", "hsa0")]  # hsd1 has only a link-local address
    assert {(c.device, c.address, c.scope) for c in candidates} == addresses(a)
    assert {c.device for c in candidates if c.default_route} == {"hsa0"}

    # A second address on the same device: whichever is current stays.
    a.run("ip", "addr", "add", "198.18.4.7/24", "dev", "hsa0")
    answers, _ = choose_in(a, ({}, "198.18.4.7"), ({}, "198.18.4.1"), ({}, "198.18.5.1"))
    assert answers == [("198.18.4.7", "hsa0"), ("198.18.4.1", "hsa0"), ("198.18.4.1", "hsa0")]

    # IPv4 gone from hsa0 (and the IPv4 default route with it); an IPv6 default route left.
    a.run("ip", "addr", "flush", "dev", "hsa0", "scope", "global", "to", "198.18.4.0/24")
    a.run("ip", "-6", "route", "add", "default", "via", "2001:db8:4::2")
    assert choose_in(a, ({}, None))[0] == [("2001:db8:4::1", "hsa0")]

    # No default route at all: any global address, IPv4 first.
    a.run("ip", "-6", "route", "del", "default")
    assert choose_in(a, ({}, None))[0] == [("198.18.5.1", "hsd0")]


def test_choose_falls_back_to_loopback(netns):
    ns = netns("hsi")
    assert choose_in(ns, ({}, None))[0] == [("127.0.0.1", "lo")]
    ns.run("ip", "addr", "flush", "dev", "lo")
    assert choose_in(ns, ({}, None))[0] == [("127.0.0.1", None)]
