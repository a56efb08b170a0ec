"""Which samplers run, at which rates: the settings turned into open sockets.

`pcap { dev = X }` devices and switch ports (interfaces matching `switchport`) each get an
AF_PACKET sampler at the rate for their link speed; `nflog { }` and `psample { }` each get
one netlink sampler. `apply` is called with every new settings object, every link event and
every housekeeping round (switch ports come and go) and only touches what changed: a new
rate is a new kernel filter on the open socket, so no packet goes unsampled in between.

Link speeds come from `link_speed(ifindex)`, the interface poller's table that link events
keep current, so an event does not mean a sysfs read per sampled device; sysfs is read only
for a link that table does not hold (yet).
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Callable

from ..logs import Throttle
from ..pollers.interfaces import read_link_speed

log = logging.getLogger(__name__)


def sampled_devices(settings, names) -> list[str]:
    """The configured pcap devices that exist, then every switch port, without repeats."""
    present = set(names)
    devices = [dev for dev in settings.pcap_devs if dev in present]
    if settings.switchport:
        pattern = re.compile(settings.switchport)
        devices += sorted(n for n in present if pattern.fullmatch(n) and n not in devices)
    return devices


class Samplers:
    """The running samplers; `opened`/`closed` tell the agent's selector about their sockets;
    `link_speed(ifindex)` is a link's speed in bits per second (0: unknown), or None when the
    caller does not know the link."""

    def __init__(self, opened, closed, link_speed: Callable[[int], int | None] = lambda index: None):
        self._opened, self._closed = opened, closed
        self._link_speed = link_speed
        self._running: dict[tuple, object] = {}  # key -> sampler
        self._throttle = Throttle(log, interval=600)

    def __iter__(self):
        return iter(self._running.values())

    def apply(self, settings) -> None:
        wanted = self._wanted(settings)
        for key in [k for k in self._running if k not in wanted]:
            self._stop(key)
        for key, (rate, start) in wanted.items():
            sampler = self._running.get(key)
            if sampler is None:
                self._start(key, start)
            elif sampler.rate != rate:
                log.info("%s: sampling 1 in %d (was %d)", _name(key), rate, sampler.rate)
                sampler.set_rate(rate)

    def _wanted(self, settings) -> dict[tuple, tuple]:
        """key -> (rate, function that opens the sampler). The key holds what needs a new socket."""
        wanted = {}
        header_bytes = settings.header_bytes
        indexes = {name: index for index, name in socket.if_nameindex()}
        for dev in settings.pcap_devs:
            if dev not in indexes:
                self._throttle(logging.WARNING, f"missing:{dev}", "pcap device %s does not exist (yet)", dev)
        for dev in sampled_devices(settings, indexes):
            speed = self._link_speed(indexes[dev])
            rate = settings.sampling_rate(read_link_speed(dev) if speed is None else speed)
            # The ifindex is in the key: a device deleted and made again needs a new socket.
            wanted[("pcap", dev, indexes[dev], header_bytes)] = (
                rate, lambda d=dev, r=rate: _afpacket(d, r, header_bytes))
        if settings.nflog is not None:
            nflog = settings.nflog
            rate = round(1 / nflog.probability) if nflog.probability else settings.sampling
            wanted[("nflog", nflog.group, nflog.probability is not None, header_bytes)] = (
                rate, lambda: _nflog(settings))
        if settings.psample is not None:
            group = settings.psample.group
            wanted[("psample", group, header_bytes)] = (
                settings.sampling, lambda: _psample(group, settings.sampling, header_bytes))
        return wanted

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


# Each kind is imported only when configured.
def _afpacket(dev: str, rate: int, header_bytes: int):
    from .afpacket import PacketSampler

    return PacketSampler(dev, rate, header_bytes)


def _nflog(settings):
    from .nflog import NflogSampler

    return NflogSampler.from_settings(settings)


def _psample(group: int, rate: int, header_bytes: int):
    from .psample import PsampleSampler

    return PsampleSampler(group, rate, header_bytes)
