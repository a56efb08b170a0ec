"""The agent: one loop that polls counters, reads samplers and sends datagrams.

Data flow: settings -> enabled pollers and samplers -> every second, the data sources
that are due are polled -> samples go into the datagram builder (which sends when full) ->
at the end of each tick the builder is flushed -> the transport sends to every collector.
Event sources (signals, link changes, Docker events, DNS-SD results, sampled packets) are
file descriptors in the same selector, so nothing waits on anything else.
"""

from __future__ import annotations

import functools
import heapq
import logging
import os
import random
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from types import MappingProxyType

from . import agent_address, files, pollers
from .logs import Throttle
from .config.source import SettingsSource
from .settings import DEFAULT_AUTO_FILE, Settings, auto_file_text
from .sampling.samplers import Samplers
from .sflow.datagram import DS_IFINDEX, CountersSample, DatagramBuilder, FlowSample
from .status import write as write_status
from .transport import Transport

log = logging.getLogger(__name__)

TICK = 1.0  # seconds: samples are never held longer than this
HOUSEKEEPING_INTERVAL = 30.0  # seconds between agent-address checks and status updates
LINK_EVENTS_SETTLE = 0.1  # seconds from a link event until the samplers follow the links


class Schedule:
    """When each data source of one poller is next polled.

    A heap of (when, data source) finds the due ones without looking at the others. Entries are
    never removed from the middle: one whose time is no longer its data source's (the source
    went away, or was given a new time) is skipped when it comes to the top."""

    def __init__(self):
        self.when: dict[pollers.DataSource, float] = {}
        self._heap: list[tuple[float, pollers.DataSource]] = []
        self.changes: int | None = None  # the poller's `changes` when its sources were last read

    def __len__(self) -> int:
        return len(self.when)

    def set(self, source: pollers.DataSource, when: float) -> None:
        self.when[source] = when
        heapq.heappush(self._heap, (when, source))
        if len(self._heap) > 2 * len(self.when) + 64:  # churn left mostly skipped entries
            self._heap = [(when, source) for source, when in self.when.items()]
            heapq.heapify(self._heap)

    def drop(self, source: pollers.DataSource) -> None:
        del self.when[source]

    def take_due(self, now: float) -> set[pollers.DataSource]:
        """The data sources due by `now`, taken off the heap: give each its next time."""
        due = set()
        while self._heap and self._heap[0][0] <= now:
            when, source = heapq.heappop(self._heap)
            if self.when.get(source) == when:
                due.add(source)
        return due


@dataclass
class Stats:
    samples: int = 0
    polls: int = 0
    slow_polls: int = 0  # poller polls that took longer than a tick of wall time
    poll_errors: int = 0


class Agent:
    def __init__(self, *, reload_config=None, on_datagram=None,
                 auto_file: str | None = DEFAULT_AUTO_FILE, status_file: str | None = None,
                 clock=time.monotonic, rng: random.Random | None = None):
        """Call `configure(settings)` next. `reload_config()` returns fresh Settings from the
        config file (SIGHUP), raising on a bad file; `on_datagram(bytes)` sees every datagram
        sent (--print); `auto_file` is where the settings in force are written, `status_file`
        where self-telemetry goes (None: nowhere)."""
        self.auto_file = auto_file
        self.status_file = status_file
        self._started = time.time()
        self.settings: Settings | None = None  # what is in force
        self.source: SettingsSource | None = None  # where settings come from: file, DNS-SD
        self._reload_config = reload_config
        self._on_datagram = on_datagram
        self._clock = clock
        self._rng = rng or random.Random()
        self.transport = Transport()
        self.builder: DatagramBuilder | None = None
        self.agent_ip: str | None = None
        self.agent_device: str | None = None
        self.pollers: dict[str, pollers.Poller] = {}
        self.samplers = Samplers(opened=self._watch_sampler, closed=self._unwatch_sampler,
                                 deliver=self._add_samples, link_speed=self._link_speed,
                                 links=self._link_names)
        self.ovs = None  # hsagent.ovs.sync.OvsSync while ovs { } is on
        self._due: dict[str, Schedule] = {}  # by poller name
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._reload_requested = False
        self._follow_links_at: float | None = None  # when link events are next applied
        self._throttle = Throttle(log)
        self._auto_text: str | None = None
        self._next_housekeeping = 0.0
        self.stats = Stats()

    # --- settings ------------------------------------------------------------------------

    def configure(self, file_settings: Settings) -> None:
        """Start with the config file's settings; DNS-SD (when on) overlays them from now on."""
        self.source = SettingsSource(file_settings, self._reload_config, watch=self._watch_source,
                                     unwatch=self._selector.unregister)
        self.apply(self.source.settings)

    def _watch_source(self, fd: int) -> None:
        self._selector.register(fd, selectors.EVENT_READ, self._on_source_events)

    def _on_source_events(self) -> None:
        settings = self.source.handle_events()
        if settings is not None:
            self.apply(settings)
            self._write_status()  # what DNS-SD gave and skipped shows at once, not in 30 s

    def lookup_dnssd_now(self) -> None:
        """One blocking DNS-SD lookup (hsagent --once cannot wait for the watcher)."""
        self.apply(self.source.lookup_now())

    def apply(self, settings: Settings) -> None:
        """Put new settings in force without a restart; unchanged parts are left alone.

        All or nothing: `self.settings` becomes `settings` only once every part runs with them.
        When a part fails, the parts already changed are put back to the running settings,
        which stay in force, and the error is raised."""
        old = self.settings
        try:
            self._put_in_force(settings)
        except Exception:
            if old is not None:
                self._roll_back(old)
            raise
        self.settings = settings
        if old is not None and old.polling != settings.polling:
            self._reschedule(settings.polling)
        self._write_auto_file()

    def _put_in_force(self, settings: Settings) -> None:
        """Make every part run with `settings` (each compares with what it runs with now)."""
        self._choose_agent_address(settings)
        sub_agent_id = settings.datagram_sub_agent_id()
        if self.builder is None:
            self.builder = DatagramBuilder(self.agent_ip, sub_agent_id, settings.datagram_bytes,
                                           clock=self._clock)
        elif (settings.datagram_bytes, sub_agent_id) != (self.builder.max_bytes, self.builder.sub_agent_id):
            self._send(self.builder.flush())
            self.builder.max_bytes = settings.datagram_bytes
            self.builder.sub_agent_id = sub_agent_id
        self._apply_pollers(settings)
        self.samplers.apply(settings)
        self._apply_ovs(settings)

    def _roll_back(self, running: Settings) -> None:
        try:
            self._put_in_force(running)
        except Exception as err:  # the parts that could be put back are; the loop goes on
            log.error("could not fully restore the running settings: %s", err)
            log.debug("restoring the running settings", exc_info=True)

    def _apply_pollers(self, settings: Settings) -> None:
        """Start the pollers these settings enable and stop the others; a running poller keeps
        the settings it was built with."""
        wanted = pollers.enabled_modules(settings)
        for name in list(self.pollers):
            if name not in wanted:
                self._remove_poller(name)
        for name in wanted:
            if name not in self.pollers:
                self._add_poller(name, settings)

    def _apply_ovs(self, settings: Settings) -> None:
        """ovs { }: Open vSwitch's sFlow rows follow these settings and the agent address."""
        if self.ovs is not None and (settings.ovs is None or settings.ovs.db != self.ovs.db):
            self._stop_ovs()
        if settings.ovs is None:
            return
        if self.ovs is None:
            from .ovs.sync import OvsSync  # the service beside the agent, loaded only with ovs { }

            self.ovs = OvsSync(settings.ovs.db, on_change=self._write_status)
            self._selector.register(self.ovs.fileno(), selectors.EVENT_READ, self.ovs.handle_events)
        self.ovs.configure(settings, self.agent_ip)

    def _stop_ovs(self) -> None:
        """Stop following OVS; hsagent's rows are removed first (as hsflowd does on exit)."""
        self._selector.unregister(self.ovs.fileno())
        self.ovs.close(remove_rows=True)
        self.ovs = None

    def _add_poller(self, name: str, settings: Settings) -> None:
        try:
            poller = pollers.load(name)(settings, peers=MappingProxyType(self.pollers))
        except Exception as err:  # a module that cannot start must not stop the others
            log.error("cannot start the %s poller: %s", name, err, exc_info=log.isEnabledFor(logging.DEBUG))
            return
        self.pollers[name] = poller
        self._due[name] = Schedule()
        if isinstance(poller, pollers.EventSource):
            self._selector.register(poller.fileno(), selectors.EVENT_READ,
                                    functools.partial(self._on_poller_events, poller))

    def _on_poller_events(self, poller) -> None:
        poller.handle_events()
        # Links (or containers) came or went: a configured device may exist now, a switch port
        # appear or go, a link change speed. The samplers follow LINK_EVENTS_SETTLE later, so
        # the events of a thousand ports deleted at once cost a few passes, not a thousand.
        if self._follow_links_at is None:
            self._follow_links_at = self._clock() + LINK_EVENTS_SETTLE

    def _remove_poller(self, name: str) -> None:
        poller = self.pollers.pop(name)
        self._due.pop(name, None)
        if isinstance(poller, pollers.EventSource):
            self._selector.unregister(poller.fileno())
        poller.close()

    def _link_names(self) -> dict[str, int] | None:
        interfaces = self.pollers.get("interfaces")
        return None if interfaces is None else interfaces.names()

    def _link_speed(self, ifindex: int) -> int | None:
        """From the interface poller's table, which link events keep current."""
        interfaces = self.pollers.get("interfaces")
        return None if interfaces is None else interfaces.link_speed(ifindex)

    def _watch_sampler(self, sampler) -> None:
        self._selector.register(sampler.fileno(), selectors.EVENT_READ,
                                functools.partial(self._read_sampler, sampler))

    def _unwatch_sampler(self, sampler) -> None:
        self._selector.unregister(sampler.fileno())
        # A new sampler starts a new sample_pool; its sequence numbers start again with it.
        for ds_index in sampler.data_sources():
            self.builder.reset_sample_sequence(FlowSample, DS_IFINDEX, ds_index)

    def _read_sampler(self, sampler) -> None:
        self._add_samples(self.samplers.read(sampler))

    def _add_samples(self, samples) -> None:
        for sample in samples:
            self.add_sample(sample)

    def _choose_agent_address(self, settings: Settings) -> None:
        try:
            ip, device = agent_address.choose(settings, self.agent_ip)
        except OSError as err:  # netlink trouble: keep the address we have, if any
            self._throttle(logging.WARNING, "address", "cannot list local addresses: %s", err)
            if self.agent_ip is not None:
                return
            ip, device = agent_address.FALLBACK
        if ip != self.agent_ip:
            if self.builder is not None:
                self._send(self.builder.flush())
                self.builder.set_agent(ip)
            log.info("agent address %s%s", ip, f" ({device})" if device else "")
            if self.ovs is not None:
                self.ovs.configure(settings, ip)  # OVS names the same agent
        self.agent_ip, self.agent_device = ip, device

    def _write_auto_file(self) -> None:
        text = auto_file_text(self.settings, self.agent_ip, self.agent_device)
        if text == self._auto_text or not self.auto_file:
            return
        try:
            files.replace(self.auto_file, text)
        except OSError as err:
            self._throttle(logging.WARNING, "auto", "cannot write %s: %s", self.auto_file, err)
            return
        self._auto_text = text

    def status(self) -> dict:
        return {
            "pid": os.getpid(), "written": time.time(), "started": self._started,
            "agent_address": self.agent_ip, "collectors": [str(c) for c in self.settings.collectors],
            "datagrams_sent": self.transport.datagrams_sent, "send_errors": self.transport.send_errors,
            "samples": self.stats.samples, "polls": self.stats.polls, "slow_polls": self.stats.slow_polls,
            "poll_errors": self.stats.poll_errors, "oversized_samples": self.builder.oversized,
            "data_sources": {name: len(due) for name, due in self._due.items()},
            "dnssd": self.source.state(),
            "samplers": {name: {"rate": s.rate, "configured": configured, "drops": s.drops}
                         for name, s, configured in self.samplers.labelled()},
            "sample_budget": {"samples_per_second": self.samplers.budget,
                              "configured_rates_would_give": round(self.samplers.demand),
                              "samplers_refused": self.samplers.refused,
                              "max_samplers": self.samplers.max_samplers},
            "ovs": self.ovs.status() if self.ovs is not None else "off",
        }

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        try:
            write_status(self.status_file, self.status())
        except OSError as err:
            self._throttle(logging.WARNING, "status", "cannot write %s: %s", self.status_file, err)

    # --- polling -------------------------------------------------------------------------

    def _reschedule(self, polling: int) -> None:
        now = self._clock()
        for schedule in self._due.values():
            for ds, when in list(schedule.when.items()):
                sooner = now + self._rng.uniform(0, polling)
                if sooner < when:
                    schedule.set(ds, sooner)

    def poll_due(self, now: float, everything: bool = False) -> None:
        """Poll the data sources due by `now` (all of them with `everything`). The work is in
        proportion to what is due and to what changed, not to how many data sources there are."""
        polling = self.settings.polling
        for name, poller in list(self.pollers.items()):
            schedule = self._due[name]
            changes = poller.changes
            if changes != schedule.changes:
                self._follow_sources(schedule, poller.sources(), now, everything)
                schedule.changes = changes  # only once followed: a failure is retried next tick
            due = set(schedule.when) if everything else schedule.take_due(now)
            if due:
                self._poll(name, poller, due)
                for ds in due:
                    schedule.set(ds, max(schedule.when[ds] + polling, now))

    def _follow_sources(self, schedule: Schedule, sources, now: float, everything: bool) -> None:
        current = set(sources)
        for gone in schedule.when.keys() - current:
            schedule.drop(gone)
            # Gone means a new instance if it comes back (a re-created interface, a new
            # container on a reused index): its counters and sequence numbers start afresh.
            self.builder.reset_sample_sequence(CountersSample, *gone)
        for new in current - schedule.when.keys():
            # A fleet must not poll in step: each data source starts at its own offset.
            # Sources that appear later (a container starting) are polled at once.
            at_once = everything or self.stats.polls
            schedule.set(new, now if at_once else now + self._rng.uniform(0, self.settings.polling))

    def _poll(self, name: str, poller, due: set) -> None:
        started = time.monotonic()
        try:
            samples = poller.poll(due)
        except Exception as err:
            self.stats.poll_errors += 1
            self._throttle(logging.ERROR, f"poll:{name}", "%s poller failed: %s", name, err)
            log.debug("%s poller failure", name, exc_info=True)
            return
        self.stats.polls += 1
        if time.monotonic() - started > TICK:  # samples would wait longer than promised
            self.stats.slow_polls += 1
        for sample in samples:
            self.add_sample(sample)

    def add_sample(self, sample) -> None:
        self.stats.samples += 1
        self._send(self.builder.add(sample))

    def _send(self, datagram: bytes | None) -> None:
        if datagram is None:
            return
        self.transport.send(datagram, self.settings.collectors)
        if self._on_datagram is not None:
            self._on_datagram(datagram)

    def flush(self) -> None:
        self._send(self.builder.flush())

    # --- the loop ------------------------------------------------------------------------

    def run_once(self) -> None:
        """Poll every data source once, send, and return (hsagent --once)."""
        self.poll_due(self._clock(), everything=True)
        self.flush()

    def run(self, ready=lambda: None) -> None:
        """Run until SIGTERM/SIGINT. SIGHUP re-reads the config file. `ready()` is called once
        the signal handlers are in place (before that, SIGTERM would kill the process)."""
        wakeup_r, wakeup_w = socket.socketpair()
        wakeup_r.setblocking(False)
        wakeup_w.setblocking(False)
        self._selector.register(wakeup_r, selectors.EVENT_READ, lambda: wakeup_r.recv(4096))
        previous_fd = signal.set_wakeup_fd(wakeup_w.fileno())
        handlers = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            ready()
            self._loop()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            self._selector.unregister(wakeup_r)
            wakeup_r.close()
            wakeup_w.close()

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stopping = True

    def _loop(self) -> None:
        next_tick = self._clock()
        while not self._stopping:
            wake = next_tick if self._follow_links_at is None else min(next_tick, self._follow_links_at)
            for key, _ in self._selector.select(max(0.0, wake - self._clock())):
                # A callback earlier in this batch may have closed this descriptor (a sampler
                # whose port went away) or replaced it: only what the selector still holds runs.
                if self._selector.get_map().get(key.fd) is key:
                    self._run_callback(key.data)
            if self._follow_links_at is not None and self._clock() >= self._follow_links_at:
                self._follow_links_at = None
                self._run_callback(self._follow_links)
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            now = self._clock()
            if now >= next_tick:
                try:
                    self._tick(now)
                except Exception as err:  # a bug in one part must not end the agent
                    self._throttle(logging.ERROR, "tick", "internal error: %s", err)
                    log.debug("internal error", exc_info=True)
                next_tick = max(next_tick + TICK, now)
        self.flush()

    def _follow_links(self) -> None:
        self.samplers.apply(self.settings)

    def _run_callback(self, callback) -> None:
        try:
            callback()
        except Exception as err:
            # keyed by what failed (its function's name), not by the callable's repr, which
            # holds an address: repeats must be counted, not logged each time
            name = getattr(getattr(callback, "func", callback), "__qualname__", type(callback).__name__)
            self._throttle(logging.ERROR, f"event:{name}", "%s failed: %s", name, err)
            log.debug("event handling failure", exc_info=True)

    def _tick(self, now: float) -> None:
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
            # each step on its own: one that fails (say, iptables) must not stop the others
            # (the status file is how an operator sees what failed)
            for step in (functools.partial(self._choose_agent_address, self.settings),
                         self._follow_links,  # a speed change can come without a link event
                         self._write_auto_file, self._write_status):
                self._run_callback(step)
        if self.samplers.rebalance(now):
            self._write_status()  # `hsagent status` shows the rates in force
        if self.ovs is not None:
            self.ovs.tick(now)
        self.poll_due(now)
        self.flush()

    def reload(self) -> None:
        """Re-read the config file; a bad file leaves the running settings as they are."""
        running_file = self.source.file_settings
        try:
            settings = self.source.reload()
        except Exception as err:
            log.error("keeping the running settings: %s", err)
            return
        try:
            self.apply(settings)
        except Exception as err:  # apply() has put the running settings back; so does the source
            self.source.restore(running_file)
            log.error("cannot apply the reloaded configuration, keeping the running settings: %s", err)
            log.debug("applying the configuration", exc_info=True)
            return
        log.info("configuration reloaded")

    def close(self) -> None:
        if self.ovs is not None:
            self._stop_ovs()
        if self.source is not None:
            self.source.close()
        self.samplers.close()
        for name in list(self.pollers):
            self._remove_poller(name)
        self.transport.close()
        self._selector.close()

