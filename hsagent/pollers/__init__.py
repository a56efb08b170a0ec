"""Counter pollers: one module per kind of data source.

Each module defines a `Poller` class with this shape (the agent relies on nothing else):

    Poller(settings)                 build it for these Settings
    sources() -> iterable of (ds_class, ds_index)
                                        the data sources it has right now
    poll(due) -> list[CountersSample]   read counters for the data sources in `due` (a set of
                                        (ds_class, ds_index)); samples carry sequence 0, the
                                        datagram builder numbers them
    apply(settings)                     new settings are in force (optional)
    close()                             release sockets, threads, files

and, when it learns of changes from the kernel or a daemon (link events, Docker events):

    fileno()                            readable when events are waiting
    handle_events()                     take them in; never blocks

A module is imported only when its entry in REGISTRY says it is enabled, so an agent that
does not watch Docker never loads the Docker SDK.
"""

from __future__ import annotations

import importlib

# (module name, enabled for these settings?)
REGISTRY = [
    ("host", lambda settings: True),
    ("interfaces", lambda settings: True),
    ("docker", lambda settings: settings.docker),
]


def enabled_modules(settings) -> list[str]:
    return [name for name, enabled in REGISTRY if enabled(settings)]


def load(name: str):
    """The Poller class of hsagent.pollers.<name>."""
    return importlib.import_module(f"{__name__}.{name}").Poller
