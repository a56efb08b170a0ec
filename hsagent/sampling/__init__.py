"""Packet sampling done by the kernel, turned into sFlow flow samples.

Each kind of sampler is one module named in samplers.KINDS, with

    enabled(settings) -> bool               are samplers of this kind wanted? (module level)
    wanted(settings, links) -> [Wanted]     the samplers these settings want, each with the key
                                            that says when it needs a new socket, its rate and
                                            how to open it

and a sampler class satisfying `Sampler`:

- afpacket.PacketSampler: one interface, an AF_PACKET socket with a BPF 1-in-N filter (bpf.py)
- nflog.NflogSampler: an iptables `statistic` + NFLOG rule feeding a netlink group
- psample.PsampleSampler: the kernel's psample channel (tc `sample` action, switch ASICs)

Adding a sampler is one module plus its name in KINDS. flows.py builds the samples for all of
them, so header and interface conventions live in one place; budget.py decides the rates that
keep the host under its samples-per-second budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

from ..sflow.datagram import FlowSample


class Sampler(Protocol):
    """What the agent's selector loop and its status rely on."""

    rate: int  # 1-in-N in force
    drops: int  # cumulative: sampled packets the kernel could not queue to hsagent

    def fileno(self) -> int:
        """Readable when sampled packets are queued."""

    def read(self) -> list[FlowSample]:
        """Non-blocking; drains at most a bounded batch per call. Samples carry sequence 0
        (the datagram builder numbers them)."""

    def set_rate(self, rate: int) -> None:
        """Change the rate live, keeping the socket open."""

    def alive(self) -> bool:
        """False once what it samples is gone for good (its device deleted, even if one of
        the same name and ifIndex has appeared since): it must be replaced."""

    def data_sources(self) -> Iterable[int]:
        """The ifIndexes (ds_index of 0:ifIndex) its flow samples are for."""

    def close(self) -> None:
        ...


class Links(NamedTuple):
    """The host's interfaces as samplers see them."""

    indexes: Mapping[str, int]  # name -> ifIndex
    speed: Callable[[str], int]  # name -> bits per second, 0 when unknown


class Wanted(NamedTuple):
    key: tuple  # (kind, what needs a new socket when it changes...); its first two name it in logs
    rate: int
    start: Callable[[], Sampler]  # opens the sampler; raises when it cannot
    # True: the agent sets the rate in the kernel, so the samples-per-second budget may raise
    # it; False: someone else's (a tc sample action, an administrator's iptables rule): its
    # samples count against the budget, its rate is left alone
    budgeted: bool = True
