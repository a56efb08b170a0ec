"""Which samplers run at which rates: settings and links turned into open sockets."""

from __future__ import annotations

import json
import sys
from types import MappingProxyType

from hsagent import procfs
from hsagent.pollers.interfaces import read_link_speed
from hsagent.sampling.afpacket import sampled_devices
from hsagent.settings import Settings


def test_configured_devices_that_exist_then_switch_ports():
    settings = Settings(pcap_devs=("eth0", "gone0", "swp2"), switchport=r"swp\d+")
    names = ["lo", "eth0", "swp10", "swp2", "swp1", "swpx"]
    assert sampled_devices(settings, names) == ["eth0", "swp2", "swp1", "swp10"]
    assert sampled_devices(Settings(), names) == []


def test_link_speed_from_sysfs(tmp_path):
    net = tmp_path / "class" / "net"
    for name, text in (("fast", "25000\n"), ("down", "-1\n"), ("odd", "x\n")):
        (net / name).mkdir(parents=True)
        (net / name / "speed").write_text(text)
    roots = procfs.Roots(sys=str(tmp_path))
    assert read_link_speed("fast", roots) == 25_000_000_000
    assert read_link_speed("down", roots) == read_link_speed("odd", roots) == 0
    assert read_link_speed("missing", roots) == 0


def test_rates_follow_speed_rules():
    speeds = MappingProxyType({"10G": 2000})
    assert Settings(sampling_by_speed=speeds).sampling_rate(10_000_000_000) == 2000
    assert Settings().sampling_rate(10_000_000_000) == 10_000
    assert Settings().sampling_rate(1_000_000_000) == 1000
    assert Settings().sampling_rate(10_000_000) == 100  # the floor
    assert Settings(sampling=512).sampling_rate(0) == 512  # speed unknown


SCENARIO = """
import json, subprocess
from types import MappingProxyType
from hsagent.sampling.samplers import Samplers
from hsagent.settings import Settings

opened, closed = [], []
samplers = Samplers(opened=lambda s: opened.append(s.fileno()), closed=lambda s: closed.append(s.fileno()))
def veth():
    subprocess.run(["ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0"], check=True)
    for dev in ("a0", "b0"):  # a veth says 10 Gb/s only while up
        subprocess.run(["ip", "link", "set", dev, "up"], check=True)
veth()
settings = Settings(pcap_devs=("a0",))
samplers.apply(settings)
first = [s.rate for s in samplers]
same_socket = list(samplers)[0]
samplers.apply(settings.replace("dns", sampling_by_speed=MappingProxyType({"10G": 50})))
after_rate_change = ([s.rate for s in samplers], list(samplers)[0] is same_socket, len(opened))
subprocess.run(["ip", "link", "del", "a0"], check=True)
veth()  # the same name, a new ifindex: the old socket is bound to nothing
samplers.apply(settings)
after_recreate = (len(opened), len(closed), [s.rate for s in samplers])
subprocess.run(["ip", "link", "del", "a0"], check=True)
samplers.apply(settings)
print(json.dumps({"first": first, "rate": after_rate_change, "recreate": after_recreate,
                  "gone": (len(list(samplers)), len(closed))}))
"""


def test_samplers_follow_settings_and_links(netns):
    ns = netns("hsm")
    result = json.loads(ns.run(sys.executable, "-c", SCENARIO).stdout)
    # veths say 10 Gb/s: 1 in 10,000 by the speed rule, then sampling.10G
    assert result["first"] == [10_000]
    assert result["rate"] == [[50], True, 1]  # a new rate on the same socket
    assert result["recreate"] == [2, 1, [10_000]]  # a new socket for the new device
    assert result["gone"] == [0, 2]
