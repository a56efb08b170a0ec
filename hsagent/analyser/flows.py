"""Flow definitions and their tables of smoothed rates.

A flow definition (sFlow-RT's model): the packet fields that key a flow, the value counted
(bytes or frames), a filter on the sample's direction, and `t`, the time constant over which
each flow's rate is smoothed. Each sample adds `value x scale` (the scale turns one sample into
the packets it stands for) to the flow of its agent, port and key.

Smoothing is an exponentially weighted moving average computed exactly: between samples the
rate decays by exp(-dt / t), and a sample of `amount` adds amount / t. A constant stream of R
per second so converges on R, reaching 1 - 1/e (63%) of it after t seconds, whatever the
spacing of the samples.

A table is bounded twice over: a flow not seen for `idle` seconds is evicted by `evict_idle`,
and past `max_flows` the smallest flows (by current rate) go first.
"""

from __future__ import annotations

import heapq
import math
import operator
from typing import NamedTuple

from .packets import FIELDS, Packet

VALUES = ("bytes", "frames")
FILTERS = ("ingress", "egress", "any")
TRIM_TO = 0.9  # past the cap, trim to 90% of it, so trimming is paid once per 10% growth


class FlowSpec(NamedTuple):
    name: str
    keys: tuple[str, ...]  # Packet fields
    value: str = "bytes"
    filter: str = "ingress"  # ingress: packets that entered by the sampled port
    t: float = 1.0  # smoothing time constant, seconds
    max_flows: int = 100_000
    idle: float | None = None  # evict after this long unseen; default 10 t (rate < e^-10 of peak)

    def check(self) -> "FlowSpec":
        """The same definition, or ValueError saying what is wrong with it."""
        unknown = [k for k in self.keys if k not in FIELDS]
        if not self.keys or unknown:
            raise ValueError(f"flow {self.name}: keys must be some of {', '.join(FIELDS)}"
                             + (f"; not {', '.join(unknown)}" if unknown else ""))
        if self.value not in VALUES:
            raise ValueError(f"flow {self.name}: value must be one of {', '.join(VALUES)}")
        if self.filter not in FILTERS:
            raise ValueError(f"flow {self.name}: filter must be one of {', '.join(FILTERS)}")
        if not self.t > 0 or self.max_flows < 1:
            raise ValueError(f"flow {self.name}: t must be > 0 and max_flows >= 1")
        return self

    @property
    def idle_seconds(self) -> float:
        return self.idle if self.idle is not None else 10 * self.t

    def key_getter(self):
        """packet -> tuple of the key fields (itemgetter gives a bare value for one field)."""
        getter = operator.itemgetter(*(Packet._fields.index(k) for k in self.keys))
        if len(self.keys) == 1:
            return lambda packet: (getter(packet),)
        return getter


class FlowTable:
    """The flows of one definition across all agents: key -> [rate at `time`, time].

    Keys are (agent, ifIndex, *field values). Rates are in the definition's value per second.
    """

    def __init__(self, spec: FlowSpec):
        self.spec = spec.check()
        self.flows: dict[tuple, list[float]] = {}
        self.evicted = 0  # flows dropped by the cap (idle ones are not counted)
        self._t = spec.t

    def __len__(self) -> int:
        return len(self.flows)

    def add(self, key: tuple, amount: float, now: float) -> float:
        """Add one sample's amount to a flow at time `now`; returns the flow's new rate."""
        entry = self.flows.get(key)
        if entry is None:
            rate = amount / self._t
            self.flows[key] = [rate, now]
            if len(self.flows) > self.spec.max_flows:
                self._trim(now)
            return rate
        rate = entry[0] * math.exp(min(0.0, entry[1] - now) / self._t) + amount / self._t
        entry[0], entry[1] = rate, max(now, entry[1])
        return rate

    def rate(self, key: tuple, now: float) -> float:
        """A flow's rate decayed to `now`; 0 for a flow not in the table."""
        entry = self.flows.get(key)
        if entry is None:
            return 0.0
        return entry[0] * math.exp(min(0.0, entry[1] - now) / self._t)

    def fell_below(self, key: tuple, limit: float, now: float) -> float:
        """When a flow's decaying rate went under `limit` (no later than `now`)."""
        entry = self.flows.get(key)
        if entry is None or entry[0] <= limit or limit <= 0:
            return now if entry is None or limit <= 0 else min(now, entry[1])
        return min(now, entry[1] + self._t * math.log(entry[0] / limit))

    def rates(self, now: float):
        """(key, rate now) for every flow."""
        t = self._t
        for key, (rate, when) in self.flows.items():
            yield key, rate * math.exp(min(0.0, when - now) / t)

    def top(self, n: int, now: float):
        """The n largest flows now, largest first."""
        return heapq.nlargest(n, self.rates(now), key=operator.itemgetter(1))

    def evict_idle(self, now: float) -> int:
        """Drop the flows unseen for `idle` seconds; returns how many."""
        oldest = now - self.spec.idle_seconds
        quiet = [k for k, entry in self.flows.items() if entry[1] < oldest]
        for key in quiet:
            del self.flows[key]
        return len(quiet)

    def _trim(self, now: float) -> None:
        keep = int(self.spec.max_flows * TRIM_TO)
        smallest = heapq.nsmallest(len(self.flows) - keep, self.rates(now),
                                   key=operator.itemgetter(1))
        for key, _ in smallest:
            del self.flows[key]
        self.evicted += len(smallest)
