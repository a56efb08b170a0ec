"""The poller and sampler contracts (hsagent.pollers, hsagent.sampling): each registered module
says when it is enabled, and the Docker SDK is loaded only when Docker is watched."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import typing

import pytest

from hsagent import pollers
from hsagent.sampling import Sampler, samplers
from hsagent.settings import NflogSettings, PsampleSettings, Settings


def test_enabled_modules_follow_the_settings():
    assert pollers.enabled_modules(Settings()) == ["host", "interfaces"]
    assert pollers.enabled_modules(Settings(docker=True)) == ["host", "interfaces", "docker"]


@pytest.mark.parametrize("name", pollers.REGISTRY)
def test_each_poller_class_has_the_protocols_methods(name):
    cls = pollers.load(name)
    for method in ("sources", "poll", "close"):
        assert callable(getattr(cls, method)), method
    assert "peers" in inspect.signature(cls).parameters
    assert issubclass(cls, pollers.EventSource) == (name in ("interfaces", "docker"))
    assert issubclass(cls, pollers.HostsDomains) == (name == "docker")


def test_every_sampler_kind_declares_when_it_runs():
    settings = Settings(nflog=NflogSettings(group=5, probability=0.01), psample=PsampleSettings(3),
                        pcap_devs=("eth9",))
    links = samplers.Links({"eth9": 9, "lo": 1}, lambda name: 1_000_000_000)
    wanted = {}
    for kind in samplers.KINDS:
        module = importlib.import_module(f"hsagent.sampling.{kind}")
        assert module.enabled(settings) and not module.enabled(Settings())
        wanted.update((w.key[0], w) for w in module.wanted(settings, links))
    assert {kind: w.rate for kind, w in wanted.items()} == {"pcap": 1000, "nflog": 100, "psample": 400}
    assert wanted["pcap"].key == ("pcap", "eth9", 9, 128)


@pytest.mark.parametrize("cls", ["afpacket.PacketSampler", "nflog.NflogSampler", "psample.PsampleSampler"])
def test_each_sampler_class_has_what_the_agent_uses(cls):
    module, name = cls.split(".")
    sampler = getattr(importlib.import_module(f"hsagent.sampling.{module}"), name)
    wanted = {n for n in dir(Sampler) if not n.startswith("_")} | set(typing.get_type_hints(Sampler))
    source = inspect.getsource(sampler)
    for attribute in wanted:
        assert hasattr(sampler, attribute) or f"self.{attribute} =" in source, (cls, attribute)


class Hosting:
    def __init__(self, count):
        self.count = count

    def domain_count(self):
        return self.count


def test_domains_are_counted_over_the_peers_that_host_them():
    assert pollers.domain_count({"host": object()}) is None
    assert pollers.domain_count({"host": object(), "docker": Hosting(3), "kvm": Hosting(2)}) == 5


def test_host_virt_node_counts_the_running_peers(tmp_path):
    from hsagent.pollers import host

    peers = {}
    poller = host.Poller(Settings(), peers=peers)
    assert poller.virt_domains() is None
    peers["docker"] = Hosting(4)
    assert poller.virt_domains() == 4


def test_the_docker_sdk_loads_only_when_docker_is_watched():
    code = ("import sys\n"
            "from hsagent import pollers\n"
            "from hsagent.settings import Settings\n"
            "names = pollers.enabled_modules(Settings())\n"
            "for name in pollers.REGISTRY: pollers.module(name)\n"
            "print('docker' in sys.modules, 'dns' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
