"""The agent's polling schedule, on a fake clock: random offsets, one poll per interval each."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from hsagent import agent as agent_module
from hsagent import pollers
from hsagent.agent import Agent
from hsagent.settings import Settings
from hsagent.sflow.datagram import CountersSample, decode_datagram
from hsagent.sflow.records import PortName


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class FakePoller:
    """Ten interfaces; records when each was polled."""

    def __init__(self, settings, peers=None):
        self.sources_now = {(0, i) for i in range(1, 11)}
        self.polls = defaultdict(list)  # data source -> times
        self.clock = None

    def sources(self):
        return self.sources_now

    def poll(self, due):
        for ds in due:
            self.polls[ds].append(self.clock.now)
        return [CountersSample(*ds, [PortName(f"if{ds[1]}")]) for ds in due]

    def close(self):
        pass


@pytest.fixture
def scheduled(monkeypatch):
    monkeypatch.setattr(pollers, "enabled_modules", lambda settings: ["fake"])
    monkeypatch.setattr(pollers, "load", lambda name: FakePoller)
    monkeypatch.setattr(agent_module.agent_address, "choose", lambda settings, current: ("192.0.2.1", None))
    clock = Clock()
    sent = []  # every datagram, as sent
    agent = Agent(auto_file=None, on_datagram=sent.append, clock=clock, rng=random.Random(7))
    agent.configure(Settings(dnssd=False, polling=10))
    fake = agent.pollers["fake"]
    fake.clock = clock

    def run_until(end):
        while clock.now < end:
            agent.poll_due(clock.now)
            clock.now += 1.0

    yield agent, fake, clock, run_until, sent
    agent.close()


def test_each_source_starts_at_its_own_offset_then_keeps_the_interval(scheduled):
    agent, fake, clock, run_until, _ = scheduled
    run_until(60)
    firsts = [times[0] for times in fake.polls.values()]
    assert len(fake.polls) == 10 and all(0 <= t < 10 for t in firsts)
    assert len(set(firsts)) > 3, "the offsets are not spread out"
    for times in fake.polls.values():
        assert [b - a for a, b in zip(times, times[1:])] == [10.0] * (len(times) - 1)


def test_a_source_that_appears_later_is_polled_at_once(scheduled):
    agent, fake, clock, run_until, _ = scheduled
    run_until(15)
    fake.sources_now.add((0, 99))
    run_until(16)
    assert fake.polls[(0, 99)] == [15.0]
    fake.sources_now.discard((0, 3))
    polled = len(fake.polls[(0, 3)])
    run_until(40)
    assert len(fake.polls[(0, 3)]) == polled, "a source that went away is still polled"


def test_a_new_polling_interval_applies_at_once(scheduled):
    agent, fake, clock, run_until, _ = scheduled
    run_until(20)
    agent.apply(agent.settings.replace("dns", polling=4))
    changed = clock.now
    run_until(60)
    for times in fake.polls.values():
        later = [t for t in times if t >= changed]
        assert later[0] <= changed + 4  # within one new interval (ticks are whole seconds)
        assert [b - a for a, b in zip(later, later[1:])] == [4.0] * (len(later) - 1)


def test_samples_are_numbered_per_source_in_the_datagrams(scheduled):
    agent, fake, clock, run_until, sent = scheduled
    run_until(30)
    agent.flush()
    sequences = defaultdict(list)
    for datagram in map(decode_datagram, sent):
        for sample in datagram.samples:
            sequences[sample.ds_index].append(sample.sequence)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in sequences.values())


def test_a_source_that_comes_back_is_numbered_afresh(scheduled):
    agent, fake, clock, run_until, sent = scheduled
    run_until(25)
    fake.sources_now.discard((0, 3))  # e.g. the interface was deleted ...
    run_until(40)
    fake.sources_now.add((0, 3))  # ... and made again: a new instance, new counters
    run_until(65)
    agent.flush()
    numbers = [s.sequence for d in map(decode_datagram, sent) for s in d.samples if s.ds_index == 3]
    restart = numbers.index(1, 1)  # the first poll after it came back
    before, after = numbers[:restart], numbers[restart:]
    assert before == list(range(1, len(before) + 1)) and len(before) >= 2
    assert after == list(range(1, len(after) + 1)) and len(after) >= 2
