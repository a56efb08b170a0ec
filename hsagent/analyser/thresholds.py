"""Thresholds on flow rates: one event per flow when it crosses, re-armed once it stays below.

A threshold is absolute (in the flow's value per second) or a fraction of the speed of the port
that reported the flow, as learnt from that port's counter samples (ifSpeed); a port whose
speed is not known yet raises nothing under a fractional threshold. Like sFlow-RT's byFlow
thresholds with a timeout: a flow that crossed raises no second event until its rate has
stayed below the threshold for `timeout` seconds.
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple

from .flows import FlowSpec, FlowTable

BITS_PER_BYTE = 8


class Threshold(NamedTuple):
    name: str
    flow: str  # a FlowSpec name
    value: float = 0.0  # absolute: the flow's value per second (bytes/s or frames/s)
    fraction: float = 0.0  # or this fraction of the port's speed (bytes flows only)
    timeout: float = 60.0  # seconds below before the flow may raise another event

    def check(self, spec: FlowSpec) -> "Threshold":
        if (self.value > 0) == (self.fraction > 0):
            raise ValueError(f"threshold {self.name}: give either a value or a fraction, > 0")
        if self.fraction and spec.value != "bytes":
            raise ValueError(f"threshold {self.name}: a fraction of the port speed needs a "
                             f"bytes flow; {spec.name} counts {spec.value}")
        if self.timeout < 0:
            raise ValueError(f"threshold {self.name}: timeout must be >= 0")
        return self


class Event(NamedTuple):
    id: int
    time: float  # wall clock, seconds since the epoch
    threshold: str
    flow: str
    key: tuple  # (agent, ifIndex, *field values)
    rate: float  # the flow's rate when it crossed
    limit: float  # the threshold for that port then


_event_ids = itertools.count(1)


class Monitor:
    """One threshold applied to every flow of its table.

    `fired` holds the flows that raised an event and are not re-armed: key -> the monotonic
    time since when the flow has been below the threshold, or None while it is above.
    """

    def __init__(self, threshold: Threshold, table: FlowTable,
                 port_speed: Callable[[str, int], int]):
        self.threshold = threshold.check(table.spec)
        self.table = table
        self._port_speed = port_speed
        self.fired: dict[tuple, float | None] = {}

    def limit(self, agent: str, ifindex: int) -> float | None:
        """The threshold for flows of this port, in the flow's value per second."""
        if self.threshold.value:
            return self.threshold.value
        speed = self._port_speed(agent, ifindex)
        return speed * self.threshold.fraction / BITS_PER_BYTE if speed else None

    def update(self, key: tuple, rate: float, now: float, wall_clock) -> Event | None:
        """A flow's rate changed to `rate` at `now`; the event if it just crossed.
        `wall_clock()` stamps the event (read only when there is one)."""
        limit = self.limit(key[0], key[1])
        if limit is None:
            return None
        fired = self.fired
        if rate < limit:
            if key in fired and fired[key] is None:
                fired[key] = now
            return None
        if key in fired:
            fired[key] = None
            return None
        fired[key] = None
        return Event(next(_event_ids), wall_clock(), self.threshold.name, self.table.spec.name, key,
                     rate, limit)

    def sweep(self, now: float) -> None:
        """Re-arm the flows that have stayed below for `timeout` (rates decay between samples)."""
        timeout = self.threshold.timeout
        for key, below_since in list(self.fired.items()):
            limit = self.limit(key[0], key[1])
            if limit is not None and self.table.rate(key, now) >= limit:
                self.fired[key] = None
                continue
            if below_since is None:
                below_since = self.fired[key] = self.table.fell_below(key, limit or 0.0, now)
            if now - below_since >= timeout:
                del self.fired[key]
