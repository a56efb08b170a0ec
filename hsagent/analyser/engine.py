"""The analyser: sFlow datagrams in, flow rates, port speeds and threshold events out.

Scaling a sample: each flow sample stands for `sampling_rate` packets, and for a share of the
samples that were lost. Lost samples are counted per data source from what every agent sends
the same way: a gap in the sample sequence numbers (lost on the way) and a rise in `drops`
(samples the agent could not send). `sample_pool` is not used for this: most agents count
every packet in it, but those that only hear of the packets sampled (hsflowd's and hsagent's
nflog and psample samplers) add the rate per sample delivered, so its meaning differs. The loss is
spread over all of a source's flows (taken / received, over roughly its last 1,000 samples)
rather than charged to the one flow whose sample came next.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from ..sflow.datagram import DS_IFINDEX, IF_FORMAT_IFINDEX, CountersSample, FlowSample, decode_datagram
from ..sflow.records import IfCounters
from ..sflow.xdr import DecodeError
from .flows import FlowSpec, FlowTable
from .packets import packet_of
from .thresholds import Event, Monitor, Threshold

MAX_SEQUENCE_GAP = 10_000  # a larger jump (or a step back) is an agent restart, not loss
LOSS_MEMORY = 1_000  # samples over which a data source's loss ratio is averaged
AGENT_IDLE = 600.0  # seconds: an agent silent this long is forgotten (its ports and sources)


class Metrics:
    """Counters since start; the API turns them into rates."""

    def __init__(self):
        self.datagrams = 0
        self.refused_datagrams = 0  # from agents not accepted
        self.decode_errors = 0
        self.flow_samples = 0
        self.counter_samples = 0
        self.unparsed_headers = 0  # flow samples whose packet was truncated or not understood
        self.lost_samples = 0  # sequence gaps and agent drops
        self.events = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


class _Source:
    """Loss bookkeeping of one agent's data source."""

    __slots__ = ("sequence", "drops", "taken", "received")

    def __init__(self, sample: FlowSample):
        self.sequence, self.drops = sample.sequence, sample.drops
        self.taken = self.received = 1.0

    def scale(self, sample: FlowSample) -> tuple[float, int]:
        """(packets this sample stands for, samples found lost since the previous one)."""
        gap = (sample.sequence - self.sequence) & 0xFFFFFFFF
        dropped = (sample.drops - self.drops) & 0xFFFFFFFF
        self.sequence, self.drops = sample.sequence, sample.drops
        if not 0 < gap <= MAX_SEQUENCE_GAP or dropped > MAX_SEQUENCE_GAP:
            gap, dropped = 1, 0  # restarted (or reordered): start counting afresh
        self.taken += gap + dropped
        self.received += 1
        if self.received >= LOSS_MEMORY:
            self.taken /= 2
            self.received /= 2
        return sample.sampling_rate * self.taken / self.received, gap - 1 + dropped


class Analyser:
    """Flow definitions and thresholds applied to the datagrams of every agent."""

    def __init__(self, specs: Iterable[FlowSpec], thresholds: Iterable[Threshold] = (),
                 wall_clock=time.time, accept_agent: Callable[[object], bool] | None = None):
        self.tables = {spec.name: FlowTable(spec) for spec in specs}
        self.speeds: dict[tuple[str, int], int] = {}  # (agent, ifIndex) -> bits per second
        self.agents: dict[str, float] = {}  # agent address -> when its last datagram came
        self.monitors = [Monitor(th, self._table(th.flow), self.port_speed) for th in thresholds]
        self.metrics = Metrics()
        self._wall = wall_clock
        self._accept_agent = accept_agent  # None: every agent
        self._sources: dict[tuple, _Source] = {}
        self._specs = [(table, table.spec.key_getter(), table.spec.filter,
                        table.spec.value == "bytes",
                        [m for m in self.monitors if m.threshold.flow == name])
                       for name, table in self.tables.items()]

    def _table(self, name: str) -> FlowTable:
        if name not in self.tables:
            raise ValueError(f"threshold on unknown flow {name!r}")
        return self.tables[name]

    def port_speed(self, agent: str, ifindex: int) -> int:
        return self.speeds.get((agent, ifindex), 0)

    def receive(self, data: bytes, now: float) -> list[Event]:
        """One UDP payload; a malformed one is counted and ignored."""
        try:
            datagram = decode_datagram(data)
        except DecodeError:
            self.metrics.decode_errors += 1
            return []
        return self.add_datagram(datagram, now)

    def add_datagram(self, datagram, now: float) -> list[Event]:
        if self._accept_agent is not None and not self._accept_agent(datagram.agent):
            self.metrics.refused_datagrams += 1
            return []
        self.metrics.datagrams += 1
        agent = str(datagram.agent)
        self.agents[agent] = now
        events: list[Event] = []
        for sample in datagram.samples:
            if type(sample) is FlowSample:
                self.metrics.flow_samples += 1
                if sample.ds_class == DS_IFINDEX and sample.sampling_rate:
                    self._add_flow_sample(agent, sample, now, events)
            elif type(sample) is CountersSample:
                self.metrics.counter_samples += 1
                self._learn_speed(agent, sample)
        self.metrics.events += len(events)
        return events

    def _learn_speed(self, agent: str, sample: CountersSample) -> None:
        for record in sample.records:
            if type(record) is IfCounters and record.if_speed:
                self.speeds[(agent, record.if_index)] = record.if_speed

    def _add_flow_sample(self, agent: str, sample: FlowSample, now: float, events: list) -> None:
        source_key = (agent, sample.ds_index)
        source = self._sources.get(source_key)
        if source is None:
            source = self._sources[source_key] = _Source(sample)
            scale = float(sample.sampling_rate)
        else:
            scale, lost = source.scale(sample)
            self.metrics.lost_samples += lost
        packet = packet_of(sample.records)
        if packet is None:
            self.metrics.unparsed_headers += 1
            return
        ingress = sample.input.format == IF_FORMAT_IFINDEX and sample.input.value == sample.ds_index
        egress = sample.output.format == IF_FORMAT_IFINDEX and sample.output.value == sample.ds_index
        for table, get_key, direction, count_bytes, monitors in self._specs:
            if (direction == "ingress" and not ingress) or (direction == "egress" and not egress):
                continue
            fields = get_key(packet)
            if None in fields:
                continue
            key = source_key + fields
            rate = table.add(key, scale * packet.frame_length if count_bytes else scale, now)
            for monitor in monitors:
                event = monitor.update(key, rate, now, self._wall)
                if event is not None:
                    events.append(event)

    def housekeeping(self, now: float) -> None:
        """Re-arm thresholds, evict idle flows and forget silent agents; call once a second."""
        for monitor in self.monitors:
            monitor.sweep(now)
        for table in self.tables.values():
            table.evict_idle(now)
        gone = {agent for agent, seen in self.agents.items() if now - seen > AGENT_IDLE}
        if gone:
            for state in (self.agents, self.speeds, self._sources):
                for key in [k for k in state if (k if isinstance(k, str) else k[0]) in gone]:
                    del state[key]
