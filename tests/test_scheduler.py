"""The agent's polling schedule, on a fake clock: random offsets, one poll per interval each."""

from __future__ import annotations

import json
import math
import random
import sys
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
    """Ten interfaces; records when each was polled, what each poll asked for, and how often
    its sources were read."""

    count = 10

    def __init__(self, settings, peers=None):
        self.sources_now = {(0, i) for i in range(1, self.count + 1)}
        self.changes = 0
        self.sources_read = 0
        self.polls = defaultdict(list)  # data source -> times
        self.asked = []  # (time, due) of each poll
        self.clock = None

    def add(self, ds):
        self.sources_now.add(ds)
        self.changes += 1

    def discard(self, ds):
        self.sources_now.discard(ds)
        self.changes += 1

    def sources(self):
        self.sources_read += 1
        return self.sources_now

    def poll(self, due):
        self.asked.append((self.clock.now, set(due)))
        for ds in due:
            self.polls[ds].append(self.clock.now)
        return [CountersSample(*ds, [PortName(f"if{ds[1]}")]) for ds in due]

    def close(self):
        pass


class ManyPoller(FakePoller):
    """A switch's worth of ports."""

    count = 5000


def start_agent(monkeypatch, poller_class, polling):
    monkeypatch.setattr(pollers, "enabled_modules", lambda settings: ["fake"])
    monkeypatch.setattr(pollers, "load", lambda name: poller_class)
    monkeypatch.setattr(agent_module.agent_address, "choose", lambda settings, current: ("192.0.2.1", None))
    clock = Clock()
    sent = []  # every datagram, as sent
    agent = Agent(auto_file=None, on_datagram=sent.append, clock=clock, rng=random.Random(7))
    agent.configure(Settings(dnssd=False, polling=polling))
    fake = agent.pollers["fake"]
    fake.clock = clock

    def run_until(end):
        while clock.now < end:
            agent.poll_due(clock.now)
            clock.now += 1.0

    return agent, fake, clock, run_until, sent


@pytest.fixture
def scheduled(monkeypatch):
    agent, *rest = start_agent(monkeypatch, FakePoller, polling=10)
    yield agent, *rest
    agent.close()


@pytest.fixture
def scheduled_many(monkeypatch):
    agent, *rest = start_agent(monkeypatch, ManyPoller, polling=3600)
    yield agent, *rest
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
    fake.add((0, 99))
    run_until(16)
    assert fake.polls[(0, 99)] == [15.0]
    fake.discard((0, 3))
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
    fake.discard((0, 3))  # e.g. the interface was deleted ...
    run_until(40)
    fake.add((0, 3))  # ... and made again: a new instance, new counters
    run_until(65)
    agent.flush()
    numbers = [s.sequence for d in map(decode_datagram, sent) for s in d.samples if s.ds_index == 3]
    restart = numbers.index(1, 1)  # the first poll after it came back
    before, after = numbers[:restart], numbers[restart:]
    assert before == list(range(1, len(before) + 1)) and len(before) >= 2
    assert after == list(range(1, len(after) + 1)) and len(after) >= 2


def test_sources_are_read_again_only_when_the_poller_says_they_changed(scheduled):
    agent, fake, clock, run_until, _ = scheduled
    run_until(30)
    assert fake.sources_read == 1
    fake.add((0, 99))
    run_until(31)
    assert fake.sources_read == 2 and fake.polls[(0, 99)] == [30.0]
    run_until(60)
    assert fake.sources_read == 2


def test_of_many_sources_only_the_due_ones_are_polled(scheduled_many):
    agent, fake, clock, run_until, _ = scheduled_many
    run_until(1)
    offsets = dict(agent._due["fake"].when)  # each source's first poll, drawn at the first tick
    assert len(offsets) == 5000 and not fake.asked
    run_until(120)
    expected = defaultdict(set)
    for ds, when in offsets.items():
        if math.ceil(when) < 120:  # the last tick was at 119 s; ticks fall on whole seconds
            expected[math.ceil(when)].add(ds)
    assert fake.asked == sorted(expected.items())
    assert 0 < sum(len(due) for _, due in fake.asked) < 500  # a few a tick, not 5,000
    assert fake.sources_read == 1


def test_a_source_that_went_away_and_came_back_keeps_one_time_only(scheduled):
    """The schedule skips the times it gave a data source before it went away."""
    agent, fake, clock, run_until, _ = scheduled
    run_until(12)
    for _ in range(3):
        fake.discard((0, 3))
        run_until(clock.now + 1)
        fake.add((0, 3))
        run_until(clock.now + 1)
    came_back = clock.now - 1
    run_until(60)
    times = [t for t in fake.polls[(0, 3)] if t >= came_back]
    assert times == [came_back + 10 * i for i in range(len(times))] and len(times) == 5


IN_NAMESPACE = """
import json, random, select, subprocess
from hsagent.agent import Agent
from hsagent.settings import Collector, Settings
from hsagent.sflow.datagram import decode_datagram

class Clock:
    now = 0.0
    def __call__(self):
        return self.now

clock, sent = Clock(), []
agent = Agent(auto_file=None, on_datagram=sent.append, clock=clock, rng=random.Random(7))
agent.configure(Settings(dnssd=False, polling=60, collectors=(Collector("127.0.0.1", 9),)))
interfaces = agent.pollers["interfaces"]

def ip(command):
    subprocess.run(["ip", "link", *command.split()], check=True)
    while select.select([interfaces], [], [], 0.5)[0]:  # the agent's selector would call this
        interfaces.handle_events()

def run_until(end):
    while clock.now < end:
        agent.poll_due(clock.now)
        agent.flush()
        clock.now += 1.0

run_until(70)  # every port polled once: from now on, new ones are polled at once
ip("add t1 index 4242 type veth peer name u1 index 4243")
run_until(80)
ip("del t1")
run_until(90)
ip("add t1 index 4242 type veth peer name u1 index 4243")
run_until(160)
polls = [(d.uptime, s.ds_index, s.sequence) for d in map(decode_datagram, sent)
         for s in d.samples if s.ds_class == 0]
print(json.dumps(polls))
"""


def test_with_the_interface_poller_new_ports_are_polled_at_once_and_gone_ones_never(netns):
    """The real poller and kernel: a veth pair made while the agent runs is polled on the next
    tick (not up to a polling interval later); deleted, it is not polled; made again on the same
    ifIndex, its sequence numbers start again at 1."""
    ns = netns("hss")
    ns.run("ip", "link", "add", "t0", "type", "veth", "peer", "name", "u0")
    polls = json.loads(ns.run(sys.executable, "-c", IN_NAMESPACE).stdout)
    seen = defaultdict(list)  # ifIndex -> [(second, sequence)]
    for uptime, index, sequence in polls:  # uptime in ms, on the fake clock
        seen[index].append((uptime // 1000, sequence))
    assert seen[4242] == seen[4243] == [(70, 1), (90, 1), (150, 2)]
    others = [times for index, times in seen.items() if index not in (4242, 4243)]
    assert len(others) == 2  # t0, u0: from their own offsets, 60 s apart
    for times in others:
        seconds = [second for second, _ in times]
        assert len(seconds) >= 2 and all(b - a == 60 for a, b in zip(seconds, seconds[1:]))
