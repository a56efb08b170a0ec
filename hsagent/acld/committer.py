"""Desired state -> coalesced, all-or-nothing installs.

Requests change the desired state at once (so GET answers with what was asked for) and queue a
`Change`. One task installs: when idle it starts as soon as a request arrives (after a few
milliseconds for the rest of a burst), under load everything that arrived while the previous
install ran goes into the next one, and installs start at most every `interval` seconds. The
backend installs the whole resulting state or nothing. When it refuses, the batch is split in
halves and each half tried on top of what is live, down to the single change at fault: that
request fails with the backend's message, its ACLs go back to the live version, and every other
change still goes in. A failed change is dropped, so it never blocks later installs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping

from .backends import Backend, InstallError
from .rules import Acl
from .state import StateStore

log = logging.getLogger(__name__)

SETTLE = 0.005  # seconds an idle committer waits for the rest of a burst
HISTORY = 10000  # finished changes whose outcome can still be asked for


class CapacityError(Exception):
    """The change would take the rule count over the cap (what the hardware tables hold)."""

    def __init__(self, rules: int, limit: int):
        super().__init__(f"{rules} rules would exceed the limit of {limit}")
        self.rules, self.limit = rules, limit


class Closed(Exception):
    """The service is stopping and takes no more changes."""


@dataclass(frozen=True)
class Outcome:
    installed: bool
    error: dict | None = None  # acls, message, returncode, lines


@dataclass(eq=False)
class Change:
    id: int
    acls: dict[str, Acl | None]  # None deletes the ACL
    done: asyncio.Future = field(repr=False)

    @property
    def state(self) -> str:
        if not self.done.done():
            return "pending"
        return "installed" if self.done.result().installed else "failed"


def rule_count(acl: Acl | None) -> int:
    return len(acl.rules) if acl else 0


class Committer:
    def __init__(self, backend: Backend, store: StateStore, max_rules: int, interval: float):
        self.backend, self.store = backend, store
        self.max_rules, self.interval = max_rules, interval
        self.desired: dict[str, Acl] = {}
        self.live: dict[str, Acl] = {}
        self.installs = 0
        self.last_error: dict | None = None
        self.last_install: float | None = None  # wall-clock time of the last successful install
        self._rules = 0  # rules in self.desired
        self._queue: list[Change] = []
        self._latest: dict[str, Change] = {}  # name -> the newest unfinished change of it
        self._history: OrderedDict[int, Change] = OrderedDict()
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._closing = False
        self._last_start = float("-inf")
        self._task: asyncio.Task | None = None

    @property
    def rules(self) -> int:
        return self._rules

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self, saved: Mapping[str, Acl]) -> list[Change]:
        """Begin with the saved state: one change per ACL, so a bad one fails alone."""
        changes = [self._enqueue({name: acl}) for name, acl in sorted(saved.items())]
        self._task = asyncio.get_running_loop().create_task(self._run())
        return changes

    def submit(self, acls: dict[str, Acl | None]) -> Change:
        """Change the desired state now; the returned change's `done` tells how the install went."""
        if self._closing:
            raise Closed()
        after = self._rules + sum(rule_count(acl) - rule_count(self.desired.get(name))
                                  for name, acl in acls.items())
        if after > self.max_rules and after > self._rules:
            raise CapacityError(after, self.max_rules)
        return self._enqueue(acls)

    def change(self, change_id: int) -> Change | None:
        return self._history.get(change_id)

    async def stop(self, timeout: float) -> None:
        """Finish the install in flight and what is queued (bounded by `timeout`), then return."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            log.error("stopping: installs still running after %.0f s, abandoned", timeout)
            self._task.cancel()

    def _enqueue(self, acls: dict[str, Acl | None]) -> Change:
        change = Change(next(self._ids), dict(acls), asyncio.get_running_loop().create_future())
        for name, acl in acls.items():
            self._set_desired(name, acl)
            self._latest[name] = change
        self._queue.append(change)
        self._history[change.id] = change
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)
        self._wake.set()
        return change

    def _set_desired(self, name: str, acl: Acl | None) -> None:
        self._rules += rule_count(acl) - rule_count(self.desired.get(name))
        if acl is None:
            self.desired.pop(name, None)
        else:
            self.desired[name] = acl

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            await asyncio.sleep(max(SETTLE, self._last_start + self.interval - loop.time()))
            batch, self._queue = self._queue, []
            self._last_start = loop.time()
            try:
                await self._commit(batch)
            except Exception:  # noqa: BLE001 - a bug here must not leave requests hanging
                log.exception("commit failed")
                for change in batch:
                    if not change.done.done():
                        self._fail(change, InstallError("internal error (logged)"))
            if self._queue:
                self._wake.set()

    async def _commit(self, batch: list[Change]) -> None:
        started = time.monotonic()
        installs = self.installs
        await self._save()
        failures: list[dict] = []
        await self._apply(batch, failures)
        if failures:
            self.last_error = {"returncode": failures[-1]["returncode"],
                               "lines": [line for f in failures for line in f["lines"]],
                               "acls": sorted({n for f in failures for n in f["acls"]}),
                               "time": time.time()}
            await self._save()  # without the failed changes
        else:
            self.last_error = None
        log.info("%d change(s): %d ACLs, %d rules live after %d install(s) in %.0f ms%s",
                 len(batch), len(self.live), sum(map(rule_count, self.live.values())),
                 self.installs - installs, (time.monotonic() - started) * 1000,
                 f"; {len(failures)} failed" if failures else "")

    async def _apply(self, changes: list[Change], failures: list[dict]) -> None:
        """Install live + changes; on refusal, each half on its own, down to the one at fault."""
        target = dict(self.live)
        for change in changes:
            for name, acl in change.acls.items():
                if acl is None:
                    target.pop(name, None)
                else:
                    target[name] = acl
        if target != self.live:
            self.installs += 1
            try:
                await asyncio.to_thread(self.backend.install, target)
            except Exception as err:  # noqa: BLE001 - any failure is this batch's failure
                if not isinstance(err, InstallError):
                    log.exception("install failed unexpectedly")
                    err = InstallError(f"{type(err).__name__}: {err}")
                if len(changes) > 1:
                    middle = len(changes) // 2
                    await self._apply(changes[:middle], failures)
                    await self._apply(changes[middle:], failures)
                else:
                    failures.append(self._fail(changes[0], err))
                return
            self.live = target
            self.last_install = time.time()
        for change in changes:
            self._finish(change, Outcome(True))

    def _fail(self, change: Change, err: InstallError) -> dict:
        error = {"acls": sorted(change.acls), "message": err.message,
                 "returncode": err.returncode, "lines": err.lines}
        log.warning("install of ACL(s) %s failed: %s %s", ", ".join(error["acls"]), err.message,
                    " / ".join(err.lines))
        for name in change.acls:
            if self._latest.get(name) is change:  # nothing newer asked for this ACL
                self._set_desired(name, self.live.get(name))
        self._finish(change, Outcome(False, error))
        return error

    def _finish(self, change: Change, outcome: Outcome) -> None:
        for name in change.acls:
            if self._latest.get(name) is change:
                del self._latest[name]
        change.done.set_result(outcome)

    async def _save(self) -> None:
        try:
            await asyncio.to_thread(self.store.save, dict(self.desired))
        except OSError as err:
            log.error("cannot save the desired state to %s: %s", self.store.path, err)
