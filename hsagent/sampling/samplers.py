"""Which samplers run, at which rates: the settings turned into open sockets.

Each kind in KINDS says which samplers the settings want (see hsagent.sampling): `pcap { dev
= X }` devices and switch ports (interfaces matching `switchport`) each get an AF_PACKET
sampler at the rate for their link speed; `nflog { }` and `psample { }` each get one netlink
sampler. `apply` is called with every new settings object, every batch of link events and
every housekeeping round (switch ports come and go) and only touches what changed: a new
rate is a new kernel filter on the open socket, so no packet goes unsampled in between.

Links come from `links()`, the interface poller's table that link events keep current: an
event costs no sysfs read and no new descriptor (closing the samplers of deleted ports must
work when descriptors have run out). Without that table, the kernel is asked (if_nameindex).

Descriptors: each sampler holds one. `max_samplers` (the soft RLIMIT_NOFILE less a reserve
for everything else the agent opens) caps them; past it new samplers are refused, with one
warning, until ports go away. Closing an AF_PACKET socket waits for an RCU grace period in
the kernel (packet_release's synchronize_net, ~13 ms here), so closes run on a few threads,
whose waits overlap: a thousand ports close in well under a second, not 13.

The samples-per-second budget (budget.py): `rebalance` is called every tick with the time,
measures each sampler's packets from the samples it read, and raises rates in the kernel
filters when the host would send more than `max_samples_per_second`.
"""

from __future__ import annotations

import errno
import importlib
import logging
import resource
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping

from ..logs import Throttle
from ..pollers.interfaces import read_link_speed
from . import Links, Sampler, Wanted, budget

log = logging.getLogger(__name__)

# The kinds of sampler: modules of hsagent.sampling (light to import: each opens sockets only
# when one of its samplers starts). Adding one: its module and its name here.
KINDS = ("afpacket", "nflog", "psample")

# Descriptors kept for the rest of the agent: stdio, the selector, netlink and UDP sockets,
# files being read or written, the Docker and OVSDB connections, DNS lookups, iptables' pipes.
DESCRIPTOR_RESERVE = 128
CLOSING_THREADS = 16


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the unit's LimitNOFILE, the shell's
    ulimit -Hn); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, err)
    return soft


def descriptor_cap(limit: int) -> int:
    return max(0, limit - DESCRIPTOR_RESERVE)


@dataclass
class _Running:
    key: tuple
    sampler: Sampler
    configured: int  # the rate the settings ask for; sampler.rate may be higher (the budget)
    budgeted: bool  # may the budget change its rate (Wanted.budgeted)
    packets: int = 0  # since the last rebalance: sum of the sampling_rate of its samples, and of lost ones
    drops: int = 0  # the sampler's drops when last read
    samples: int = 0  # since the last rebalance
    measured: float = 0.0  # packets per second over the last rebalance's interval
    sampled: float = 0.0  # samples per second over the same


class Samplers:
    """The running samplers; `opened`/`closed` tell the agent's selector about their sockets,
    `deliver(samples)` takes samples read outside the selector's calls (those a rate change
    drained from the queue, at the old rate);
    `links()` is the host's interfaces by name (None: not known, ask the kernel);
    `link_speed(ifindex)` a link's speed in bits per second (0: unknown), or None when the
    caller does not know the link."""

    def __init__(self, opened, closed, deliver=lambda samples: None,
                 link_speed: Callable[[int], int | None] = lambda index: None,
                 links: Callable[[], Mapping[str, int] | None] = lambda: None,
                 max_samplers: int | None = None):
        self._opened, self._closed, self._deliver = opened, closed, deliver
        self._link_speed = link_speed
        self._links = links
        self.max_samplers = descriptor_cap(resource.getrlimit(resource.RLIMIT_NOFILE)[0]) \
            if max_samplers is None else max_samplers
        self._running: dict[tuple, _Running] = {}  # key -> what runs
        self._by_sampler: dict[int, _Running] = {}  # id(sampler) -> the same
        self._throttle = Throttle(log, interval=600)
        self._budget_log = Throttle(log, interval=60)
        self._closer: ThreadPoolExecutor | None = None  # made at the first close
        self._measured_since: float | None = None
        self.budget = 0
        self.demand = 0.0  # samples/s the settings' rates would give, at the last rebalance
        self.refused = 0  # samplers not started for want of descriptors (last apply)

    def __iter__(self):
        return (running.sampler for running in self._running.values())

    def labelled(self) -> list[tuple[str, Sampler, int]]:
        """(name, sampler, configured rate) of each running sampler, e.g. ("pcap eth0", ...)."""
        return [(_name(key), r.sampler, r.configured) for key, r in self._running.items()]

    def apply(self, settings) -> None:
        self.budget = settings.max_samples_per_second
        wanted = self._wanted(settings)
        # a device deleted and made again between two applies: same key, a dead socket
        for key in [k for k, r in self._running.items() if k not in wanted or not r.sampler.alive()]:
            self._stop(key)
        refused, reconfigured = [], []
        for key, want in wanted.items():
            running = self._running.get(key)
            if running is None:
                if len(self._running) >= self.max_samplers:
                    refused.append(key)
                else:
                    self._start(key, want)
            elif running.configured != want.rate:
                reconfigured.append((running, running.configured))
                running.configured = want.rate
        self._refuse(refused)
        if reconfigured:
            self._reconfigure(reconfigured)

    def _wanted(self, settings) -> dict[tuple, Wanted]:
        """key -> what each kind wants. The key holds what needs a new socket."""
        indexes = self._links()
        if indexes is None:
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

    def _refuse(self, refused: list) -> None:
        if refused and not self.refused:
            log.warning("not sampling %d more ports (%s ...): %d samplers is the most the open "
                        "files limit allows (raise LimitNOFILE / ulimit -n)", len(refused),
                        _name(refused[0]), self.max_samplers)
        elif self.refused and not refused:
            log.info("sampling every wanted port again")
        self.refused = len(refused)

    def _start(self, key, want: Wanted) -> None:
        try:
            sampler = want.start()
        except Exception as err:  # one sampler that cannot start must not stop the agent
            log.debug("starting %s failed", _name(key), exc_info=True)
            if getattr(err, "errno", None) not in (errno.ENODEV, errno.ENXIO):
                self._throttle(logging.ERROR, f"start:{_name(key)}", "cannot sample %s: %s", _name(key), err)
            # else: the device went (or is not quite there) since the link events said it was;
            # the next event or housekeeping round tries again
            return
        self._throttle.clear(f"start:{_name(key)}")
        log.info("%s: sampling 1 in %d", _name(key), sampler.rate)
        running = self._running[key] = _Running(key, sampler, want.rate, want.budgeted,
                                                drops=sampler.drops)
        self._by_sampler[id(sampler)] = running
        self._opened(sampler)

    def _reconfigure(self, reconfigured: list[tuple[_Running, int]]) -> None:
        """New settings' rates, each raised at once where the budget needs it for the packet
        rates measured last (a DNS-SD `sampling=1` never reaches the kernel on a busy port).
        One that cannot be applied keeps its old configured rate: the next apply tries again."""
        rates = self._plan()
        for running, previous in reconfigured:
            rate = rates.get(running.key, running.configured)
            if rate != running.sampler.rate and not self._set_rate(running, rate):
                running.configured = previous

    def _demands(self) -> tuple[dict, int]:
        """The budgeted samplers' demands as last measured, and the budget left to them once
        the others' samples (whose rates are not ours to change) are counted."""
        ours = {key: budget.Demand(r.measured, r.configured, r.sampler.rate)
                for key, r in self._running.items() if r.budgeted}
        theirs = sum(r.sampled for r in self._running.values() if not r.budgeted)
        return ours, max(1, round(self.budget - theirs))

    def _plan(self) -> dict:
        """key -> the rate each budgeted sampler should have now."""
        ours, left = self._demands()
        if not self.budget:
            return {key: demand.configured for key, demand in ours.items()}
        return budget.plan(ours, left)

    def _set_rate(self, running: _Running, rate: int, level: int = logging.INFO) -> bool:
        old = running.sampler.rate
        try:
            running.sampler.set_rate(rate)
        except Exception as err:  # e.g. iptables refused: the sampler keeps its old rate
            self._throttle(logging.ERROR, f"rate:{_name(running.key)}", "%s: cannot sample 1 in %d: %s",
                           _name(running.key), rate, err)
            return False
        self._throttle.clear(f"rate:{_name(running.key)}")
        self._deliver(self.read(running.sampler))  # now: the socket may not be readable again soon
        extra = f", configured 1 in {running.configured}" if rate != running.configured else ""
        log.log(level, "%s: sampling 1 in %d (was %d%s)", _name(running.key), rate, old, extra)
        return True

    def _stop(self, key) -> None:
        running = self._running.pop(key)
        del self._by_sampler[id(running.sampler)]
        self._closed(running.sampler)
        if self._closer is None:
            self._closer = ThreadPoolExecutor(CLOSING_THREADS, thread_name_prefix="close")
        self._closer.submit(_close, key, running.sampler)

    # --- reading and the budget ------------------------------------------------------------

    def read(self, sampler: Sampler) -> list:
        """The sampler's pending samples, counted for the budget."""
        samples = sampler.read()
        running = self._by_sampler.get(id(sampler))
        if running is not None:
            # samples the kernel could not queue stood for packets too: a sampler that cannot
            # keep up must not look quieter than it is
            lost, running.drops = sampler.drops - running.drops, sampler.drops
            running.packets += sum(sample.sampling_rate for sample in samples) + lost * sampler.rate
            running.samples += len(samples) + lost
        return samples

    def rebalance(self, now: float) -> bool:
        """Measure each sampler's packets per second since the last call and, when the budget
        binds, raise (or lower again) the rates in force; True when a rate changed."""
        since, self._measured_since = self._measured_since, now
        if since is None or now <= since:
            return False
        elapsed = now - since
        for running in self._running.values():
            running.measured, running.sampled = running.packets / elapsed, running.samples / elapsed
            running.packets = running.samples = 0
        ours, left = self._demands()
        self.demand = sum(budget.samples_per_second(d, d.configured) for d in ours.values()) \
            + sum(r.sampled for r in self._running.values() if not r.budgeted)
        if not self.budget:  # none (any more): the configured rates
            rates = {key: demand.configured for key, demand in ours.items()}
        elif budget.needs_plan(ours, left):
            rates = budget.plan(ours, left)
        else:
            return False
        # one line per change of plan, not per sampler: a switch may re-rate thousands of ports
        changed = [f"{_name(key)} 1 in {rate}" for key, rate in rates.items()
                   if rate != self._running[key].sampler.rate
                   and self._set_rate(self._running[key], rate, logging.DEBUG)]
        if changed:
            self._budget_log(logging.INFO, "budget",
                           "budget of %d samples/s (the configured rates would give %.0f): now %s",
                           self.budget, self.demand, ", ".join(changed[:8])
                           + (f" and {len(changed) - 8} more" if len(changed) > 8 else ""))
        return bool(changed)

    def close(self) -> None:
        for key in list(self._running):
            self._stop(key)
        if self._closer is not None:
            self._closer.shutdown(wait=True)
            self._closer = None


def _close(key, sampler: Sampler) -> None:
    try:
        sampler.close()
    except Exception as err:  # e.g. an iptables rule that would not go: said, not fatal
        log.error("closing %s: %s", _name(key), err)


def _name(key: tuple) -> str:
    return f"{key[0]} {key[1]}"
