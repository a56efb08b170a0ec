"""Pure: which sFlow row each bridge should have, and the one transaction that gets there.

The desired row of a bridge comes from the settings in force: agent = the address hsagent
elected (an IP literal, so OVS and hsagent name the same agent), targets = every collector
as ip:port ([addr]:port for IPv6, the form OVS parses), polling, header = headerBytes, and
sampling from the speed rule hsagent applies to its own interfaces, for the bridge's fastest
interface. Rows hsagent writes carry external_ids:created_by=hsagent; a bridge whose row
lacks that mark belongs to someone else and is never touched, only reported.

Open vSwitch turns a bridge's whole sFlow agent off, counters included, when sampling is 0
(ovs-vswitchd's bridge.c ignores such a row). Users who turn sampling off but keep polling
want the counters, so hsagent then writes the largest rate OVS takes, 2^32-1, whose
datapath probability rounds to 1 in 4,294,967,295 packets: counter samples as configured,
flow samples practically never.

`reconcile(desired, current)` returns the operations of one OVSDB transaction (RFC 7047
section 5.2): `wait` guards so a row someone adds meanwhile aborts the transaction instead of
being replaced, and a `next_cfg` increment so the agent learns when ovs-vswitchd has applied
it (Open_vSwitch `cur_cfg` catches up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ovsdb

MARK = ("created_by", "hsagent")  # external_ids entry on every row hsagent writes
NO_SAMPLING = 2**32 - 1  # OVS's largest sampling rate: counters on, flow samples ~never
COLUMNS = ("agent", "targets", "polling", "header", "sampling")
DESCRIBED_SPEEDS = (0, 10**9, 10**10)  # the link speeds whose sampling rate `check` shows


@dataclass(frozen=True)
class SflowRow:
    """One row of the sFlow table, as far as hsagent cares."""

    agent: str | None
    targets: frozenset[str]
    polling: int | None
    header: int | None
    sampling: int | None
    ours: bool = True  # carries MARK

    def differences(self, other: "SflowRow") -> list[str]:
        return [c for c in COLUMNS if getattr(self, c) != getattr(other, c)]

    def column_value(self, column: str):
        value = getattr(self, column)
        if column == "targets":
            return ovsdb.set_of(sorted(value))
        return ovsdb.set_of([]) if value is None else value

    def to_ovsdb(self) -> dict:
        row = {c: self.column_value(c) for c in COLUMNS}
        row["external_ids"] = ovsdb.map_of(dict([MARK]))
        return row

    @classmethod
    def from_ovsdb(cls, row: dict) -> "SflowRow":
        return cls(agent=ovsdb.optional(row.get("agent")),
                   targets=frozenset(ovsdb.atoms(row.get("targets"))),
                   polling=ovsdb.optional(row.get("polling")),
                   header=ovsdb.optional(row.get("header")),
                   sampling=ovsdb.optional(row.get("sampling")),
                   ours=ovsdb.to_map(row.get("external_ids")).get(MARK[0]) == MARK[1])


@dataclass(frozen=True)
class Bridge:
    uuid: str
    name: str
    sflow: str | None  # UUID of its sFlow row
    speed: int  # bits per second of its fastest interface, 0 when none is known


@dataclass(frozen=True)
class Current:
    """What OVSDB holds: every bridge, and every sFlow row by UUID."""

    bridges: tuple[Bridge, ...] = ()
    sflow: dict[str, SflowRow] = field(default_factory=dict)


@dataclass
class Plan:
    operations: list[dict]  # one transaction; empty when OVSDB already matches
    changes: list[str]  # what it does, one line per bridge
    foreign: list[str]  # bridges whose sFlow row someone else made (left alone)


# --- what OVSDB holds ----------------------------------------------------------------------

def link_speeds(replica: ovsdb.Replica) -> dict[str, int]:
    """Interface UUID -> link_speed, for the interfaces whose speed ovs-vswitchd has written."""
    speeds = {u: ovsdb.optional(row.get("link_speed"))
              for u, row in replica.rows("Interface").items()}
    return {u: speed for u, speed in speeds.items() if speed}


def observe(replica: ovsdb.Replica, known_speeds: dict[str, int] | None = None) -> Current:
    """The replica's tables as bridges with their fastest interface and sFlow rows.

    link_speed is ephemeral (not kept when ovsdb-server restarts) and rewritten by
    ovs-vswitchd only some time later; `known_speeds` (interface UUID -> speed seen before)
    fills the gap, so a restart does not flap the sampling rates."""
    speeds = {**(known_speeds or {}), **link_speeds(replica)}
    port_speed = {u: max((speeds.get(i, 0) for i in ovsdb.uuids(row.get("interfaces"))), default=0)
                  for u, row in replica.rows("Port").items()}
    bridges = []
    for u, row in replica.rows("Bridge").items():
        sflow = ovsdb.uuids(row.get("sflow"))
        ports = ovsdb.uuids(row.get("ports"))
        bridges.append(Bridge(u, row.get("name", ""), sflow[0] if sflow else None,
                              max((port_speed.get(p, 0) for p in ports), default=0)))
    rows = {u: SflowRow.from_ovsdb(row) for u, row in replica.rows("sFlow").items()}
    return Current(tuple(sorted(bridges, key=lambda b: b.name)), rows)


# --- what the settings call for ------------------------------------------------------------

def wanted_row(settings, agent_ip: str, speed: int) -> SflowRow | None:
    """The sFlow row for a bridge whose fastest interface runs at `speed` b/s; None: no row
    (no collector, or neither sampling nor polling)."""
    if not settings.collectors:
        return None
    rate = settings.sampling_rate(speed)
    if not rate and not settings.polling:
        return None
    return SflowRow(agent=agent_ip, targets=frozenset(str(c) for c in settings.collectors),
                    polling=settings.polling, header=settings.header_bytes,
                    sampling=rate or NO_SAMPLING)


def desired(settings, agent_ip: str | None, current: Current) -> dict[str, SflowRow | None]:
    """Bridge UUID -> its row; `settings` None (the module is off): no rows at all."""
    if settings is None or agent_ip is None:
        return {b.uuid: None for b in current.bridges}
    return {b.uuid: wanted_row(settings, agent_ip, b.speed) for b in current.bridges}


def describe(settings) -> str:
    """What Open vSwitch will do with these settings, for `hsagent check`."""
    if not settings.collectors:
        return "no collector: hsagent removes its sFlow rows from every bridge"
    rates = {speed: settings.sampling_rate(speed) for speed in DESCRIBED_SPEEDS}
    shown = ", ".join(f"{_speed_name(s)} {r or 'off'}" for s, r in rates.items())
    text = (f"every bridge gets an sFlow row: targets {', '.join(str(c) for c in settings.collectors)}, "
            f"polling {settings.polling} s, header {settings.header_bytes} bytes, sampling 1-in-N "
            f"for the bridge's fastest interface ({shown})")
    if 0 in rates.values():
        text += (f"; where sampling is off, OVS would stop its whole sFlow agent (counters too), "
                 f"so hsagent writes sampling={NO_SAMPLING}: counters as configured, flow samples "
                 f"practically never")
    return text


def _speed_name(speed: int) -> str:
    return f"{speed // 10**9}G" if speed else "unknown speed"


# --- the transaction -----------------------------------------------------------------------

def reconcile(desired_rows: dict[str, SflowRow | None], current: Current) -> Plan:
    """The operations that make OVSDB hold `desired_rows` (bridge UUID -> row or None)."""
    operations, changes, foreign = [], [], []
    claimed: set[str] = set()  # our rows already matched to a bridge
    for bridge in current.bridges:
        want = desired_rows.get(bridge.uuid)
        row = current.sflow.get(bridge.sflow) if bridge.sflow else None
        if row is not None and not row.ours:
            foreign.append(bridge.name)
            continue
        shared = bridge.sflow in claimed  # someone pointed a second bridge at one of our rows
        claimed.add(bridge.sflow)
        if want is None:
            if row is not None:
                operations.append(_detach(bridge))
                changes.append(f"{bridge.name}: remove sFlow")
        elif row is None or shared:
            operations += _attach_new(bridge, want, f"row{len(changes)}")
            changes.append(f"{bridge.name}: add sFlow")
        elif want.differences(row):
            columns = want.differences(row)
            operations.append({"op": "update", "table": "sFlow",
                               "where": [["_uuid", "==", ovsdb.uuid(bridge.sflow)]],
                               "row": {c: want.column_value(c) for c in columns}})
            changes.append(f"{bridge.name}: set " + ", ".join(
                f"{c} {_show(getattr(row, c))} -> {_show(getattr(want, c))}" for c in columns))
    if operations:
        operations = ([{"op": "comment", "comment": "hsagent: " + "; ".join(changes)}] + operations
                      + [{"op": "mutate", "table": "Open_vSwitch", "where": [],
                          "mutations": [["next_cfg", "+=", 1]]},
                         {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}])
    return Plan(operations, changes, foreign)


def _bridge_sflow(bridge: Bridge):
    return ovsdb.uuid(bridge.sflow) if bridge.sflow else ovsdb.set_of([])


def _attach_new(bridge: Bridge, want: SflowRow, name: str) -> list[dict]:
    """Insert a row and point the bridge at it, if the bridge still has what we saw."""
    where = [["_uuid", "==", ovsdb.uuid(bridge.uuid)]]
    return [
        {"op": "wait", "table": "Bridge", "where": where, "columns": ["sflow"], "until": "==",
         "rows": [{"sflow": _bridge_sflow(bridge)}], "timeout": 0},
        {"op": "insert", "table": "sFlow", "row": want.to_ovsdb(), "uuid-name": name},
        {"op": "update", "table": "Bridge", "where": where, "row": {"sflow": ovsdb.named_uuid(name)}},
    ]


def _detach(bridge: Bridge) -> dict:
    """Unhook our row; sFlow is not a root table, so OVSDB deletes the orphan itself."""
    return {"op": "update", "table": "Bridge",
            "where": [["_uuid", "==", ovsdb.uuid(bridge.uuid)], ["sflow", "==", ovsdb.uuid(bridge.sflow)]],
            "row": {"sflow": ovsdb.set_of([])}}


def _show(value) -> str:
    if isinstance(value, frozenset):
        return ",".join(sorted(value)) or "none"
    return "none" if value is None else str(value)


def transaction_error(result: list | None, error) -> str | None:
    """The first error of a `transact` reply (RFC 7047 section 4.1.3), or None."""
    if error is not None:
        return str(error)
    for outcome in result or []:
        if isinstance(outcome, dict) and "error" in outcome:
            return f"{outcome['error']}: {outcome.get('details', '')}".rstrip(": ")
    return None


def next_cfg_of(result: list) -> int | None:
    """The next_cfg value the final `select` of a plan read back."""
    try:
        return result[-1]["rows"][0]["next_cfg"]
    except (IndexError, KeyError, TypeError):
        return None
