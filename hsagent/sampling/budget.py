"""The samples-per-second budget: the 1-in-N rates that keep the whole host under it.

Whatever rates the settings ask for (DNS-SD can ask for 1 in 1 on every port), the agent
sends at most `budget` flow samples a second. Each sampler's packet rate is measured from
its own samples (each one stands for `sampling_rate` packets: sample_pool's growth), and the
budget is shared max-min fairly: a sampler whose configured rate yields fewer samples than
its fair share keeps that rate; the busier ones share the rest equally, their N raised in the
kernel filter to packets/s / share. So a quiet port keeps its configured visibility while a
flooded one is thinned, and sFlow's rule holds: every sample carries the rate really applied
(sFlow v5, section 4.2: sampling_rate is the ratio in force for that sample).

Pure: `plan` is fed measured rates and returns rates; samplers.py applies them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Hashable, NamedTuple

# Below this share of the budget the rates are planned again, so raised rates come back
# down; between it and the budget they stay, so a demand near the budget does not flap.
REPLAN_BELOW = 0.75


class Demand(NamedTuple):
    packets_per_second: float  # measured: the sampler's packets (sample_pool growth) per second
    configured: int  # the 1-in-N the settings ask for (0: sampling off)
    current: int  # the 1-in-N in force


def samples_per_second(demand: Demand, rate: int) -> float:
    return demand.packets_per_second / rate if rate else 0.0


def plan(demands: Mapping[Hashable, Demand], budget: int) -> dict[Hashable, int]:
    """key -> the 1-in-N to apply: the configured rate unless the budget needs a larger one.
    A rate is never below the configured one, and sampling off stays off."""
    wanted = {key: samples_per_second(d, d.configured) for key, d in demands.items()}
    share = fair_share(list(wanted.values()), budget)
    rates = {}
    for key, demand in demands.items():
        if share is None or wanted[key] <= share or not demand.configured:
            rates[key] = demand.configured
        else:
            rates[key] = max(demand.configured, math.ceil(demand.packets_per_second / share))
    return rates


def fair_share(wanted: list[float], budget: int) -> float | None:
    """The per-sampler cap c with sum(min(w, c)) == budget (water-filling); None when every
    sampler fits as it is."""
    if sum(wanted) <= budget:
        return None
    left, remaining = float(budget), len(wanted)
    for amount in sorted(wanted):
        share = left / remaining
        if amount > share:
            return share
        left -= amount
        remaining -= 1
    return None  # not reached: the sum exceeded the budget


def needs_plan(demands: Mapping[Hashable, Demand], budget: int) -> bool:
    """Over the budget at the rates in force, or well under it while some rate is raised."""
    flowing = sum(samples_per_second(d, d.current) for d in demands.values())
    raised = any(d.current != d.configured for d in demands.values())
    return flowing > budget or (raised and flowing < REPLAN_BELOW * budget)
