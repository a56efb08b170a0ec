"""Where the settings in force come from: the config file, overlaid by DNS-SD when it is on.

Precedence: defaults <- the file <- DNS-SD (each TXT key overrides the file's value of that key,
DNS-SD's collectors replace the file's; see dnssd.apply). `SettingsSource` is what the running
agent holds: it builds, replaces and closes the DNS-SD watcher as the file's DNS-SD settings
change, re-reads the file on SIGHUP and always hands back whole `Settings`. `lookup_now` is
the one-shot lookup that `hsagent --once`, `check` and `discover` use.

dnspython is imported only when DNS-SD is on: an agent with DNSSD = off never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from ..settings import SETTINGS, Settings

log = logging.getLogger(__name__)


class Lookup(NamedTuple):
    settings: Settings  # the file's settings, overlaid with the answer when there is one
    result: object | None  # the dnssd.DnsSdResult, None when DNS-SD is off or failed
    error: str | None  # why there is no answer (DNS-SD on)


def lookup_now(file_settings: Settings) -> Lookup:
    """One blocking DNS-SD lookup (when DNSSD is on) overlaid on the file's settings."""
    if not file_settings.dnssd:
        return Lookup(file_settings, None, None)
    from . import dnssd

    try:
        result = dnssd.lookup(file_settings)
    except dnssd.DnsSdError as err:
        return Lookup(file_settings, None, str(err))
    return Lookup(dnssd.apply(file_settings, result), result, None)


def _watcher_key(settings: Settings) -> tuple | None:
    """What a DNS-SD watcher is built for: everything in dns-sd { }, where to ask and the
    limits its answers are held to; None when DNS-SD is off."""
    if not settings.dnssd:
        return None
    return tuple(getattr(settings, attr) for attr, option in SETTINGS.items() if option.block == "dns-sd")


class SettingsSource:
    """The settings in force for a running agent.

    `watch(fd)` / `unwatch(fd)` put the DNS-SD watcher's descriptor in the agent's selector,
    which calls `handle_events()` when it is readable. `reread()` returns fresh Settings from
    the config file and raises on a bad file.
    """

    def __init__(self, file_settings: Settings, reread: Callable[[], Settings] | None = None, *,
                 watch: Callable[[int], None] = lambda fd: None,
                 unwatch: Callable[[int], None] = lambda fd: None):
        self._reread = reread
        self._watch, self._unwatch = watch, unwatch
        self._watcher = None  # the DNS-SD watcher, while DNSSD is on
        self._watcher_key = None
        self._dnssd = None  # hsagent.config.dnssd, imported once DNSSD is on
        self.dns_result = None  # the last good DNS-SD answer
        self.file_settings = file_settings
        self._follow(file_settings)

    @property
    def settings(self) -> Settings:
        """The file's settings overlaid with the last good DNS-SD answer."""
        if self._watcher_key is not None and self.dns_result is not None:
            return self._dnssd.apply(self.file_settings, self.dns_result)
        return self.file_settings

    def handle_events(self) -> Settings | None:
        """The watcher's descriptor is readable: new settings when DNS-SD changed them."""
        result = self._watcher.handle_events()
        if result is None:
            return None
        self.dns_result = result  # the watcher has logged what changed
        return self.settings

    def reload(self) -> Settings:
        """SIGHUP: re-read the file (raising, with nothing changed, when it is bad) and look
        DNS-SD up again now."""
        if self._reread is None:
            return self.settings
        file_settings = self._reread()
        self.file_settings = file_settings
        self._follow(file_settings)
        return self.settings

    def restore(self, file_settings: Settings) -> None:
        """The agent could not apply a reloaded file: go back to the file settings it runs
        with, so that the next DNS-SD answer overlays those, not the refused ones."""
        self.file_settings = file_settings
        self._follow(file_settings)

    def lookup_now(self) -> Settings:
        """One blocking lookup (hsagent --once cannot wait for the watcher)."""
        if self._watcher_key is None:
            return self.settings
        found = lookup_now(self.file_settings)
        if found.error is not None:
            log.warning("DNS-SD: %s; using the config file's settings", found.error)
        else:
            self.dns_result = found.result
        return self.settings

    def state(self) -> str:
        return self._watcher.state() if self._watcher is not None else "off"

    def close(self) -> None:
        self._follow(Settings(dnssd=False))

    def _follow(self, settings: Settings) -> None:
        """A watcher for these DNS-SD settings: the running one (asked to look again now), a
        new one, or none."""
        key = _watcher_key(settings)
        if key == self._watcher_key:
            if self._watcher is not None:
                self._watcher.refresh()  # SIGHUP also means "look again now"
            return
        if self._watcher is not None:
            self._unwatch(self._watcher.fileno())
            self._watcher.close()
            self._watcher = self.dns_result = None
        self._watcher_key = key
        if key is not None:
            from . import dnssd  # dnspython is loaded only when DNS-SD is on

            self._dnssd = dnssd
            self._watcher = dnssd.DnsSdWatcher(settings)
            self._watch(self._watcher.fileno())
