"""Agent.apply is all or nothing: a part that fails half-way leaves the running settings in
force everywhere, as the datagrams sent afterwards show."""

from __future__ import annotations

import errno

import pytest

from conftest import Receiver
from hsagent.agent import Agent
from hsagent.settings import Collector, Settings


@pytest.fixture
def agent(tmp_path):
    running = Agent(auto_file=str(tmp_path / "hsagent.auto"), status_file=None)
    yield running
    running.close()


def sent_to(receiver):
    """(sub-agent id, largest datagram) of what the receiver got."""
    datagrams = receiver.datagrams
    return {d.sub_agent_id for d in datagrams}, max(len(raw) for raw in receiver.raw)


def test_a_failure_half_way_leaves_the_running_settings(agent, receiver, tmp_path, monkeypatch):
    other = Receiver()
    try:
        running = Settings(dnssd=False, collectors=(Collector(receiver.host, receiver.port),),
                           polling=30)
        agent.configure(running)
        auto = (tmp_path / "hsagent.auto").read_text()
        new = running.replace("file", collectors=(Collector(other.host, other.port),), polling=5,
                              datagram_bytes=1000, sub_agent_id=7)
        samplers_apply = agent.samplers.apply

        def out_of_descriptors(settings):
            if settings is new:  # the samplers fail after the builder and pollers changed
                raise OSError(errno.EMFILE, "Too many open files")
            samplers_apply(settings)

        monkeypatch.setattr(agent.samplers, "apply", out_of_descriptors)
        with pytest.raises(OSError, match="Too many open files"):
            agent.apply(new)
        assert agent.settings is running
        assert (agent.builder.max_bytes, agent.builder.sub_agent_id) == (1400, 0)
        assert (tmp_path / "hsagent.auto").read_text() == auto
        agent.run_once()
        assert receiver.wait_for(lambda r: len(r.raw) > 0, timeout=5)
        ids, largest = sent_to(receiver)
        assert ids == {0} and largest > 1000  # the host and interface samples fill 1400 bytes
        assert other.raw == []

        monkeypatch.setattr(agent.samplers, "apply", samplers_apply)
        agent.apply(new)  # now nothing fails: all of it applies
        assert agent.settings is new
        agent.run_once()
        assert other.wait_for(lambda r: len(r.raw) > 0, timeout=5)
        ids, largest = sent_to(other)
        assert ids == {7} and largest <= 1000
        assert f"collector={other.host} {other.port}" in (tmp_path / "hsagent.auto").read_text()
    finally:
        other.close()


def test_a_reload_that_cannot_be_applied_leaves_the_source_with_the_running_file(tmp_path, monkeypatch):
    """The refused file must not stay behind in the settings source, where the next DNS-SD
    answer would overlay it and bring it into force after all."""
    running = Settings(dnssd=False, polling=30)
    refused = running.replace("file", polling=5)
    agent = Agent(reload_config=lambda: refused, auto_file=str(tmp_path / "hsagent.auto"),
                  status_file=None)
    try:
        agent.configure(running)
        samplers_apply = agent.samplers.apply

        def out_of_descriptors(settings):
            if settings is refused:
                raise OSError(errno.EMFILE, "Too many open files")
            samplers_apply(settings)

        monkeypatch.setattr(agent.samplers, "apply", out_of_descriptors)
        agent.reload()
        assert agent.settings is running
        assert agent.source.file_settings is running and agent.source.settings is running
    finally:
        agent.close()
