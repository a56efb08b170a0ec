"""The OVS module as an event source of the agent's loop: OVSDB kept equal to the settings.

One connection to ovsdb-server. `monitor` (RFC 7047 section 4.1.5) fills a replica of the
tables that matter and then reports every change to them, so a new bridge, a port whose
speed changes or a hand edit of one of hsagent's rows is seen as it happens and answered by
one `transact`; so is a settings change (`configure`). One transaction is in flight at a
time, and none is sent until the replica has seen the previous one (its next_cfg), so the
plan is never computed from stale rows. When ovsdb-server goes away the agent keeps
running: it logs once, reconnects with backoff (1 s doubling to 30 s) and reconciles.

The socket is swapped on every reconnect, so the agent's selector watches an epoll
descriptor of our own (`fileno()`) that stays the same; `tick()` does the timed work.
"""

from __future__ import annotations

import logging
import selectors
import time

from ..logs import Throttle
from ..settings import DEFAULT_OVSDB, ovsdb_remote
from . import access, ovsdb, reconcile
from .jsonrpc import Connection, ConnectionLost

log = logging.getLogger(__name__)

MONITOR_ID = "hsagent"
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0
RETRY_AFTER_ERROR = 10.0  # seconds before a transaction OVSDB refused is tried again
PROBE_INTERVAL = 30.0  # idle this long: send `echo`; no answer in as long again: reconnect
FAILURES = ("down", "denied")  # connection trouble, each logged once until connected again
STOP_TIMEOUT = 2.0  # seconds `close` waits for ovsdb-server to remove hsagent's rows


def socket_path(db: str) -> str:
    """`unix:/path` -> /path (ValueError for anything else)."""
    return ovsdb_remote(db).removeprefix("unix:")


class OvsSync:
    def __init__(self, db: str = DEFAULT_OVSDB, on_change=lambda: None, clock=time.monotonic,
                 wall_clock=time.time):
        """`on_change()` is called when the connection comes or goes, after each transaction and
        after each change OVSDB reports (the agent rewrites its status file then)."""
        self.db, self.path = db, socket_path(db)
        self._on_change = on_change
        self._clock, self._wall_clock = clock, wall_clock
        self._selector = selectors.DefaultSelector()
        self._conn: Connection | None = None
        self._replica = ovsdb.Replica()
        self._settings = None
        self._agent_ip: str | None = None
        self._monitoring = False  # the monitor's initial contents are in the replica
        self._in_flight = False  # a transaction awaits its reply
        self._dirty = False  # something changed since the last plan
        self._awaited_cfg: int | None = None  # next_cfg of our last transaction
        self._connect_at = 0.0
        self._retry_at: float | None = None
        self._backoff = MIN_BACKOFF
        self._last_heard = 0.0
        self._probing = False
        self._throttle = Throttle(log, interval=600)
        self._foreign: tuple[str, ...] = ()
        self._speeds: dict[str, int] = {}  # interface UUID -> last link_speed seen
        self.last_transaction: dict | None = None
        self.last_error: str | None = None
        self.transactions = 0

    # --- the agent's side ----------------------------------------------------------------

    def fileno(self) -> int:
        return self._selector.fileno()

    def configure(self, settings, agent_ip: str | None) -> None:
        """New settings or agent address (None: the module is stopping, no rows): OVSDB
        follows at once. Not connected, and not waiting out a backoff: connect now (so an
        agent started as root connects before it drops privileges)."""
        self._settings, self._agent_ip = settings, agent_ip
        self._dirty = True
        if self._conn is None and settings is not None and self._clock() >= self._connect_at:
            self._connect()
        self._reconcile()

    def handle_events(self) -> None:
        """Read what ovsdb-server sent; never blocks."""
        if self._conn is None:
            return
        updated = False
        try:
            for _ in self._selector.select(0):
                notifications = self._conn.receive()
                self._last_heard, self._probing = self._clock(), False
                for message in notifications:
                    updated |= self._on_notification(message)
        except ConnectionLost as err:
            self._disconnect(str(err))
            return
        self._reconcile()
        if updated:
            self._on_change()

    def tick(self, now: float) -> None:
        """Timed work, once a second: connect, probe an idle server, retry after an error."""
        if self._conn is None:
            if now >= self._connect_at:
                self._connect()
            return
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._dirty = True
            self._reconcile()
        if now - self._last_heard >= PROBE_INTERVAL:
            if self._probing:
                self._disconnect(f"no answer to echo from {self.path} in {PROBE_INTERVAL:.0f} s")
                return
            self._probing = True
            self._last_heard = now
            self._call("echo", [], lambda result, error: None)

    def close(self, remove_rows: bool = True) -> None:
        """Stop; by default first take hsagent's rows out of OVSDB (as hsflowd does on exit),
        waiting at most STOP_TIMEOUT seconds for ovsdb-server."""
        if remove_rows and self._conn is not None and self._monitoring:
            deadline = self._clock() + STOP_TIMEOUT
            self._wait(lambda: not self._in_flight and self._caught_up(), deadline)
            self.configure(None, None)
            self._wait(lambda: not self._in_flight and self._caught_up(), deadline)
        self._drop_connection()
        self._selector.close()

    def status(self) -> dict:
        current = self._current()
        bridges = {}
        for bridge in current.bridges:
            row = current.sflow.get(bridge.sflow) if bridge.sflow else None
            bridges[bridge.name] = "none" if row is None else "hsagent" if row.ours else "foreign"
        root = self._replica.root() or {}
        return {
            "db": self.path,
            "connected": self._monitoring,
            "bridges": bridges,
            "rows": sum(1 for state in bridges.values() if state == "hsagent"),
            "foreign": list(self._foreign),
            "transactions": self.transactions,
            "last_transaction": self._shown(self.last_transaction),
            "next_cfg": root.get("next_cfg"), "cur_cfg": root.get("cur_cfg"),
            "last_error": self.last_error,
        }

    @staticmethod
    def _shown(transaction: dict | None) -> dict | None:
        """The last transaction for people: its time as UTC text, how long ovs-vswitchd took."""
        if transaction is None:
            return None
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(transaction["at"]))
        return {**transaction, "at": at}

    # --- connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            self._conn = Connection(self.path)
        except PermissionError as err:  # not an outage: logged on its own
            self._fail(f"cannot connect to OVSDB at {self.path}: {err.strerror} ({access.GRANT_HINT})",
                       "denied")
            return
        except OSError as err:
            self._fail(f"cannot connect to OVSDB at {self.path}: {err.strerror or err}")
            return
        self._selector.register(self._conn.sock, selectors.EVENT_READ)
        self._last_heard = self._clock()
        self._call("monitor", [ovsdb.DATABASE, MONITOR_ID, ovsdb.monitor_requests()], self._on_monitor)

    def _on_monitor(self, result, error) -> None:
        if error is not None:
            self._disconnect(f"OVSDB refused to monitor: {error}")
            return
        if self.last_error is not None:
            log.info("OVSDB at %s: connected again", self.path)
        else:
            log.info("OVSDB at %s: connected", self.path)
        for kind in FAILURES:
            self._throttle.clear(kind)
        self.last_error = None
        self._backoff = MIN_BACKOFF
        self._replica.clear()
        self._replica.update(result)
        self._monitoring, self._dirty = True, True
        self._awaited_cfg = None
        self._on_change()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._selector.unregister(self._conn.sock)
            self._conn.close()
            self._conn = None

    def _disconnect(self, reason: str) -> None:
        self._drop_connection()
        self._monitoring = self._in_flight = self._probing = False
        self._fail(reason)
        self._on_change()

    def _fail(self, reason: str, kind: str = "down") -> None:
        """Log once per kind of trouble (then rarely), retry with backoff."""
        self.last_error = reason
        self._throttle(logging.WARNING, kind, "%s; retrying", reason)
        self._connect_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def _call(self, method: str, params: list, handler) -> None:
        try:
            self._conn.call(method, params, handler)
        except ConnectionLost as err:
            self._disconnect(str(err))

    def _wait(self, done, deadline: float) -> None:
        """Handle events until done() or the deadline (only while stopping: the loop is over)."""
        while self._conn is not None and not done():
            left = deadline - self._clock()
            if left <= 0 or not self._selector.select(left):
                return
            self.handle_events()

    # --- reconciling ---------------------------------------------------------------------

    def _on_notification(self, message: dict) -> bool:
        """Apply a monitor update; True if it was one."""
        params = message.get("params") or [None, {}]
        if message.get("method") != "update" or params[0] != MONITOR_ID:
            return False
        self._replica.update(params[1])
        self._dirty = True
        self._note_applied()
        return True

    def _caught_up(self) -> bool:
        """The replica has seen our last transaction (its next_cfg came back in an update)."""
        root = self._replica.root() or {}
        return self._awaited_cfg is None or root.get("next_cfg", 0) >= self._awaited_cfg

    def _note_applied(self) -> None:
        """ovs-vswitchd has applied our last transaction once cur_cfg reaches its next_cfg."""
        last = self.last_transaction
        root = self._replica.root() or {}
        if last and last.get("next_cfg") is not None and not last.get("applied") \
                and root.get("cur_cfg", 0) >= last["next_cfg"]:
            last["applied"] = round(self._wall_clock() - last["at"], 3)
            log.debug("ovs-vswitchd applied next_cfg %d", last["next_cfg"])

    def _reconcile(self) -> None:
        if not (self._dirty and self._monitoring and not self._in_flight and self._caught_up()):
            return
        self._dirty = False
        current = self._current()
        plan = reconcile.reconcile(reconcile.desired(self._settings, self._agent_ip, current), current)
        self._report_foreign(plan.foreign)
        if not plan.operations:
            return
        self._in_flight = True
        started = self._wall_clock()
        self._call("transact", [ovsdb.DATABASE] + plan.operations,
                   lambda result, error: self._on_transaction(plan, started, result, error))

    def _current(self) -> reconcile.Current:
        interfaces = self._replica.rows("Interface")
        self._speeds = {u: speed for u, speed in {**self._speeds, **reconcile.link_speeds(self._replica)}.items()
                        if u in interfaces}
        return reconcile.observe(self._replica, self._speeds)

    def _on_transaction(self, plan, started: float, result, error) -> None:
        self._in_flight = False
        self.transactions += 1
        problem = reconcile.transaction_error(result, error)
        self.last_transaction = {"at": started, "changes": plan.changes, "result": problem or "ok",
                                 "next_cfg": None, "applied": None}
        if problem is None:
            for change in plan.changes:
                log.info("OVS %s", change)
            self._awaited_cfg = self.last_transaction["next_cfg"] = reconcile.next_cfg_of(result)
            self._note_applied()
        elif problem.startswith("timed out"):
            # a `wait` guard failed: someone changed a bridge meanwhile; their update is on its way
            log.debug("OVSDB changed under a transaction (%s); planning again", plan.changes)
        else:
            self.last_error = f"OVSDB refused {'; '.join(plan.changes)}: {problem}"
            self._throttle(logging.ERROR, "transact", "%s", self.last_error)
            self._retry_at = self._clock() + RETRY_AFTER_ERROR
        self._on_change()
        self._reconcile()

    def _report_foreign(self, bridges: list[str]) -> None:
        if tuple(bridges) != self._foreign:
            for name in sorted(set(bridges) - set(self._foreign)):
                log.warning("OVS bridge %s has an sFlow row hsagent did not make: leaving it alone", name)
            self._foreign = tuple(bridges)
