"""Counter pollers: one module per kind of data source.

Each module `hsagent.pollers.<name>` named in REGISTRY has

    enabled(settings) -> bool        is it wanted with these Settings? (module level, cheap:
                                     a module imports its heavy libraries only when it starts)
    Poller(settings, peers=...)      the poller, satisfying the `Poller` protocol below; `peers`
                                     is a live, read-only view of the other running pollers by
                                     name, for what pollers offer each other (`HostsDomains`)

Adding a poller is one module plus its name in REGISTRY. A poller is built once and runs until
new settings disable it; it reads what it needs from the settings it was built with.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from ..sflow.datagram import CountersSample

REGISTRY = ("host", "interfaces", "docker")

DataSource = tuple[int, int]  # (ds_class, ds_index) of an sFlow data source


class Poller(Protocol):
    changes: int
    """Grows whenever `sources()` may answer differently: the agent re-reads the sources only
    then, not on every tick (thousands of switch ports, polled a few at a time)."""

    def sources(self) -> Iterable[DataSource]:
        """The data sources it has right now."""

    def poll(self, due: set[DataSource]) -> list[CountersSample]:
        """Counters for the data sources in `due`. Samples carry sequence 0: the datagram
        builder numbers them."""

    def close(self) -> None:
        """Release sockets, threads, files."""


@runtime_checkable
class EventSource(Protocol):
    """A poller (or sampler) that learns of changes from the kernel or a daemon (link events,
    Docker events): the agent's selector watches `fileno()` and calls `handle_events()`."""

    def fileno(self) -> int:
        """Readable when events are waiting."""

    def handle_events(self) -> None:
        """Take them in; never blocks."""


@runtime_checkable
class HostsDomains(Protocol):
    """A poller of virtual machines or containers: the host's virt_node reports how many."""

    def domain_count(self) -> int:
        ...


def domain_count(peers: Mapping[str, object]) -> int | None:
    """Domains hosted by the running pollers; None when none of them hosts any kind."""
    hosts = [peer for peer in peers.values() if isinstance(peer, HostsDomains)]
    return sum(host.domain_count() for host in hosts) if hosts else None


def module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def enabled_modules(settings) -> list[str]:
    return [name for name in REGISTRY if module(name).enabled(settings)]


def load(name: str):
    """The Poller class of hsagent.pollers.<name>."""
    return module(name).Poller
