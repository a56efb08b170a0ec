"""Which samplers run, at which rates: the settings turned into open sockets.

Each kind in KINDS says which samplers the settings want (see hsagent.sampling): `pcap { dev
= X }` devices and switch ports (interfaces matching `switchport`) each get an AF_PACKET
sampler at the rate for their link speed; `nflog { }` and `psample { }` each get one netlink
sampler. `apply` is called with every new settings object, every link event and every
housekeeping round (switch ports come and go) and only touches what changed: a new
rate is a new kernel filter on the open socket, so no packet goes unsampled in between.

Link speeds come from `link_speed(ifindex)`, the interface poller's table that link events
keep current, so an event does not mean a sysfs read per sampled device; sysfs is read only
for a link that table does not hold (yet).
"""

from __future__ import annotations

import importlib
import logging
import socket
from typing import Callable

from ..logs import Throttle
from ..pollers.interfaces import read_link_speed
from . import Links, Sampler, Wanted

log = logging.getLogger(__name__)

# The kinds of sampler: modules of hsagent.sampling (light to import: each opens sockets only
# when one of its samplers starts). Adding one: its module and its name here.
KINDS = ("afpacket", "nflog", "psample")


class Samplers:
    """The running samplers; `opened`/`closed` tell the agent's selector about their sockets;
    `link_speed(ifindex)` is a link's speed in bits per second (0: unknown), or None when the
    caller does not know the link."""

    def __init__(self, opened, closed, link_speed: Callable[[int], int | None] = lambda index: None):
        self._opened, self._closed = opened, closed
        self._link_speed = link_speed
        self._running: dict[tuple, Sampler] = {}  # key -> sampler
        self._throttle = Throttle(log, interval=600)

    def __iter__(self):
        return iter(self._running.values())

    def labelled(self) -> list[tuple[str, Sampler]]:
        """(name, sampler) of each running sampler, e.g. ("pcap eth0", ...)."""
        return [(_name(key), sampler) for key, sampler in self._running.items()]

    def apply(self, settings) -> None:
        wanted = self._wanted(settings)
        for key in [k for k in self._running if k not in wanted]:
            self._stop(key)
        for key, want in wanted.items():
            sampler = self._running.get(key)
            if sampler is None:
                self._start(key, want.start)
            elif sampler.rate != want.rate:
                log.info("%s: sampling 1 in %d (was %d)", _name(key), want.rate, sampler.rate)
                sampler.set_rate(want.rate)

    def _wanted(self, settings) -> dict[tuple, Wanted]:
        """key -> what each kind wants. The key holds what needs a new socket."""
        indexes = {name: index for index, name in socket.if_nameindex()}
        links = Links(indexes, lambda name: self._speed(indexes[name], name))
        for dev in settings.pcap_devs:
            if dev not in links.indexes:
                self._throttle(logging.WARNING, f"missing:{dev}", "pcap device %s does not exist (yet)", dev)
        wanted = {}
        for kind in KINDS:
            module = importlib.import_module(f"{__package__}.{kind}")
            if module.enabled(settings):
                wanted.update((want.key, want) for want in module.wanted(settings, links))
        return wanted

    def _speed(self, ifindex: int, name: str) -> int:
        speed = self._link_speed(ifindex)
        return read_link_speed(name) if speed is None else speed

    def _start(self, key, start) -> None:
        try:
            sampler = start()
        except Exception as err:  # one sampler that cannot start must not stop the agent
            log.debug("starting %s failed", _name(key), exc_info=True)
            self._throttle(logging.ERROR, f"start:{key}", "cannot sample %s: %s", _name(key), err)
            return
        log.info("%s: sampling 1 in %d", _name(key), sampler.rate)
        self._running[key] = sampler
        self._opened(sampler)

    def _stop(self, key) -> None:
        sampler = self._running.pop(key)
        self._closed(sampler)
        sampler.close()

    def close(self) -> None:
        for key in list(self._running):
            self._stop(key)


def _name(key: tuple) -> str:
    return f"{key[0]} {key[1]}"
