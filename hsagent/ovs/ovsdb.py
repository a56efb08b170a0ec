"""OVSDB's JSON notation (RFC 7047 section 5.1) and a replica of the tables hsagent watches.

A column value is an atom (string, integer, real, boolean, ["uuid", U] or ["named-uuid", N]),
a set ["set", [atoms]] (a set of exactly one may be written as the bare atom) or a map
["map", [[key, value], ...]]. The replica keeps, for each monitored table, every row by UUID
as the server last described it; `monitor` updates (section 4.1.6) keep it current.
"""

from __future__ import annotations

DATABASE = "Open_vSwitch"

# The tables and columns hsagent monitors (vswitch.ovsschema): enough to find every bridge,
# its sFlow row, and the link speed of every interface on it.
MONITORED = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "sflow", "ports"],
    "Port": ["interfaces"],
    "Interface": ["link_speed"],
    "sFlow": ["agent", "targets", "polling", "header", "sampling", "external_ids"],
}


# --- values --------------------------------------------------------------------------------

def atoms(value) -> list:
    """The members of a set column (a bare atom is a set of one; None, a column the row
    does not carry, is empty)."""
    if value is None:
        return []
    if isinstance(value, list) and value and value[0] == "set":
        return list(value[1])
    return [value]


def optional(value):
    """The atom of an optional column (min 0, max 1), or None when it is empty."""
    members = atoms(value)
    return members[0] if members else None


def uuid_of(atom) -> str:
    """["uuid", "0b3c..."] -> "0b3c..."."""
    return atom[1]


def uuids(value) -> list[str]:
    return [uuid_of(a) for a in atoms(value)]


def to_map(value) -> dict:
    return {key: val for key, val in value[1]} if isinstance(value, list) and value else {}


def uuid(text: str) -> list:
    return ["uuid", text]


def named_uuid(name: str) -> list:
    return ["named-uuid", name]


def set_of(members) -> list:
    return ["set", list(members)]


def map_of(mapping) -> list:
    return ["map", [[key, val] for key, val in sorted(mapping.items())]]


# --- the replica ---------------------------------------------------------------------------

def monitor_requests() -> dict:
    """The <monitor-requests> object of a `monitor` call: MONITORED's columns, every change."""
    return {table: {"columns": columns} for table, columns in MONITORED.items()}


class Replica:
    """table -> row UUID -> {column: value}, as of the last update applied."""

    def __init__(self):
        self.tables: dict[str, dict[str, dict]] = {table: {} for table in MONITORED}

    def clear(self) -> None:
        for rows in self.tables.values():
            rows.clear()

    def update(self, table_updates: dict) -> None:
        """Apply a <table-updates> object: the initial contents or one change notification.

        Each <row-update> has "new" (every monitored column) unless the row was deleted, so
        a row is replaced whole, never patched."""
        for table, rows in table_updates.items():
            replica = self.tables.setdefault(table, {})
            for row_uuid, change in rows.items():
                if "new" in change:
                    replica[row_uuid] = change["new"]
                else:
                    replica.pop(row_uuid, None)

    def rows(self, table: str) -> dict[str, dict]:
        return self.tables.get(table, {})

    def root(self) -> dict | None:
        """The single Open_vSwitch row (None before the first update)."""
        return next(iter(self.rows("Open_vSwitch").values()), None)
