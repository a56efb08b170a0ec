"""The OVS module's pure parts: the OVSDB replica, desired rows, reconcile."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given, strategies as st

from hsagent.config.conffile import ConfigError, parse
from hsagent.ovs import ovsdb
from hsagent.ovs.reconcile import (MARK, NO_SAMPLING, Bridge, Current, SflowRow, describe, desired,
                                   next_cfg_of, observe, reconcile, transaction_error, wanted_row)
from hsagent.settings import Collector, OvsSettings, Settings

AGENT = "198.18.0.1"
COLLECTORS = (Collector("198.51.100.7", 6343), Collector("2001:db8::7", 6400))
SETTINGS = Settings(collectors=COLLECTORS, polling=20, header_bytes=96,
                    sampling_by_speed=MappingProxyType({"10G": 2000}))


# --- the replica and what it says ----------------------------------------------------------

def _replica_with_two_bridges() -> ovsdb.Replica:
    """Initial monitor contents in RFC 7047's <table-updates> form."""
    replica = ovsdb.Replica()
    replica.update({
        "Open_vSwitch": {"root": {"new": {"bridges": ["set", [["uuid", "b0"], ["uuid", "b1"]]],
                                          "next_cfg": 4, "cur_cfg": 4}}},
        "Bridge": {
            "b0": {"new": {"name": "br0", "sflow": ["uuid", "s0"], "ports": ["set", [["uuid", "p0"], ["uuid", "p1"]]]}},
            "b1": {"new": {"name": "br1", "sflow": ["set", []], "ports": ["uuid", "p2"]}},
        },
        "Port": {"p0": {"new": {"interfaces": ["uuid", "i0"]}},
                 "p1": {"new": {"interfaces": ["set", [["uuid", "i1"], ["uuid", "i2"]]]}},
                 "p2": {"new": {"interfaces": ["uuid", "i3"]}}},
        "Interface": {"i0": {"new": {"link_speed": 1_000_000_000}},
                      "i1": {"new": {"link_speed": 10_000_000_000}},
                      "i2": {"new": {"link_speed": ["set", []]}},
                      "i3": {"new": {"link_speed": ["set", []]}}},
        "sFlow": {"s0": {"new": {"agent": "192.0.2.9", "targets": "192.0.2.1:6343", "polling": 30,
                                 "header": ["set", []], "sampling": 400,
                                 "external_ids": ["map", [["owner", "admin"]]]}}},
    })
    return replica


def test_observe_finds_bridges_their_fastest_interface_and_rows():
    current = observe(_replica_with_two_bridges())
    assert current.bridges == (Bridge("b0", "br0", "s0", 10_000_000_000), Bridge("b1", "br1", None, 0))
    assert current.sflow == {"s0": SflowRow("192.0.2.9", frozenset({"192.0.2.1:6343"}), 30, None, 400,
                                            ours=False)}


def test_replica_follows_modify_and_delete_and_remembers_speeds():
    replica = _replica_with_two_bridges()
    known = {"i3": 25_000_000_000}  # seen before ovsdb-server restarted; ephemeral, so now empty
    assert observe(replica, known).bridges[1].speed == 25_000_000_000
    replica.update({"Bridge": {"b0": {"old": {"name": "br0"}}},
                    "Interface": {"i3": {"old": {}, "new": {"link_speed": 1_000_000_000}}}})
    assert observe(replica, known).bridges == (Bridge("b1", "br1", None, 1_000_000_000),)


# --- desired rows --------------------------------------------------------------------------

def test_wanted_row_follows_the_settings():
    row = wanted_row(SETTINGS, AGENT, 10_000_000_000)
    assert row == SflowRow(AGENT, frozenset({"198.51.100.7:6343", "[2001:db8::7]:6400"}), 20, 96, 2000)
    assert wanted_row(SETTINGS, AGENT, 0).sampling == SETTINGS.sampling  # speed unknown
    assert wanted_row(SETTINGS, AGENT, 1_000_000_000).sampling == SETTINGS.sampling_rate(1_000_000_000)
    assert wanted_row(Settings(), AGENT, 0) is None  # no collector: no row


def test_sampling_off_keeps_counters_with_the_largest_rate():
    polling_only = Settings(collectors=COLLECTORS, sampling=0, sampling_bps_ratio=0)
    assert wanted_row(polling_only, AGENT, 10_000_000_000).sampling == NO_SAMPLING
    assert "sampling=4294967295" in describe(polling_only)
    assert "removes" in describe(Settings())


def test_the_module_off_means_no_rows():
    current = observe(_replica_with_two_bridges())
    assert desired(None, AGENT, current) == {"b0": None, "b1": None}


# --- reconcile -----------------------------------------------------------------------------

def _ours(**changes) -> SflowRow:
    base = wanted_row(SETTINGS, AGENT, 0)
    return SflowRow(**{**{c: getattr(base, c) for c in ("agent", "targets", "polling", "header",
                                                          "sampling")}, **changes})


def _ops(plan, op):
    return [o for o in plan.operations if o["op"] == op]


def test_a_bridge_without_sflow_gets_a_row_in_one_guarded_transaction():
    want = _ours()
    plan = reconcile({"b1": want}, Current((Bridge("b1", "br1", None, 0),), {}))
    assert plan.changes == ["br1: add sFlow"] and plan.foreign == []
    wait, insert, update = _ops(plan, "wait")[0], _ops(plan, "insert")[0], _ops(plan, "update")[0]
    assert wait["where"] == [["_uuid", "==", ["uuid", "b1"]]] and wait["rows"] == [{"sflow": ["set", []]}]
    assert insert["row"] == {"agent": AGENT, "targets": ["set", ["198.51.100.7:6343", "[2001:db8::7]:6400"]],
                             "polling": 20, "header": 96, "sampling": 400,
                             "external_ids": ["map", [list(MARK)]]}
    assert update["row"] == {"sflow": ["named-uuid", insert["uuid-name"]]}
    assert plan.operations[-2] == {"op": "mutate", "table": "Open_vSwitch", "where": [],
                                   "mutations": [["next_cfg", "+=", 1]]}
    assert plan.operations[-1]["op"] == "select" and plan.operations[0]["op"] == "comment"


def test_a_matching_row_needs_nothing():
    plan = reconcile({"b0": _ours()}, Current((Bridge("b0", "br0", "s0", 0),), {"s0": _ours()}))
    assert plan.operations == [] and plan.changes == []


def test_a_changed_row_is_put_back_column_by_column():
    current = Current((Bridge("b0", "br0", "s0", 0),), {"s0": _ours(sampling=7, header=None)})
    plan = reconcile({"b0": _ours()}, current)
    (update,) = _ops(plan, "update")
    assert update == {"op": "update", "table": "sFlow", "where": [["_uuid", "==", ["uuid", "s0"]]],
                      "row": {"header": 96, "sampling": 400}}
    assert plan.changes == ["br0: set header none -> 96, sampling 7 -> 400"]


def test_someone_elses_row_is_reported_never_touched():
    current = Current((Bridge("b0", "br0", "s0", 0),), {"s0": _ours(polling=5, ours=False)})
    for want in (_ours(), None):
        plan = reconcile({"b0": want}, current)
        assert plan.operations == [] and plan.foreign == ["br0"]


def test_rows_are_removed_by_unhooking_them_from_their_bridge():
    current = Current((Bridge("b0", "br0", "s0", 0), Bridge("b1", "br1", "s1", 0)),
                      {"s0": _ours(), "s1": _ours(ours=False)})
    plan = reconcile({"b0": None, "b1": None}, current)
    (update,) = _ops(plan, "update")
    assert update["where"] == [["_uuid", "==", ["uuid", "b0"]], ["sflow", "==", ["uuid", "s0"]]]
    assert update["row"] == {"sflow": ["set", []]}
    assert plan.foreign == ["br1"] and plan.changes == ["br0: remove sFlow"]


def test_a_row_of_ours_shared_by_two_bridges_is_split():
    current = Current((Bridge("b0", "br0", "s0", 0), Bridge("b1", "br1", "s0", 0)), {"s0": _ours()})
    plan = reconcile({"b0": _ours(), "b1": _ours()}, current)
    assert plan.changes == ["br1: add sFlow"]
    assert _ops(plan, "wait")[0]["rows"] == [{"sflow": ["uuid", "s0"]}]


def test_transaction_results():
    assert transaction_error([{}, {"count": 1}, {"rows": [{"next_cfg": 9}]}], None) is None
    assert next_cfg_of([{}, {"count": 1}, {"rows": [{"next_cfg": 9}]}]) == 9
    assert transaction_error([{"error": "timed out", "details": "wait"}], None) == "timed out: wait"
    assert transaction_error(None, {"error": "unknown database"}) == "{'error': 'unknown database'}"


# --- the ovs { } block ---------------------------------------------------------------------

def _conf(body: str) -> str:
    return f"sflow {{\n  collector {{ ip = 192.0.2.1 }}\n{body}\n}}\n"


def test_the_ovs_block_and_the_sub_agent_id_it_implies():
    settings, warnings = parse(_conf("  ovs { }"))
    assert settings.ovs == OvsSettings("unix:/run/openvswitch/db.sock") and warnings == []
    assert settings.datagram_sub_agent_id() == 100_000  # OVS's bridges are 0, 1, 2 ...
    settings, _ = parse(_conf("  subAgentId = 100005\n  ovs { db = unix:/tmp/x/db.sock }"))
    assert settings.ovs.db == "unix:/tmp/x/db.sock" and settings.datagram_sub_agent_id() == 100_005
    assert parse(_conf("  subAgentId = 3"))[0].datagram_sub_agent_id() == 3  # no OVS: as set


def test_ovs_block_errors_name_the_place():
    with pytest.raises(ConfigError, match=r"^f:3:14: bad value for db: 'tcp:127.0.0.1:6640' is not unix:"):
        parse(_conf("  ovs { db = tcp:127.0.0.1:6640 }"), "f")
    with pytest.raises(ConfigError, match=r"^f:3:3: subAgentId = 2 would share .* Open vSwitch"):
        parse(_conf("  subAgentId = 2\n  ovs { }"), "f")


# --- convergence: a plan, applied as OVSDB would, leaves nothing to do ---------------------

def _apply(plan, current: Current) -> Current:
    """What ovsdb-server makes of the plan's operations (the ones reconcile uses), all or
    nothing; unreferenced sFlow rows are garbage-collected, as for any non-root table."""
    bridges = {b.uuid: b for b in current.bridges}
    rows = dict(current.sflow)
    named = {}

    def matches(bridge, where):
        for column, _, value in where:
            if column == "_uuid" and value != ["uuid", bridge.uuid]:
                return False
            if column == "sflow" and value != (["uuid", bridge.sflow] if bridge.sflow else ["set", []]):
                return False
        return True

    def reference(value):
        return named[value[1]] if value[0] == "named-uuid" else None

    for op in plan.operations:
        if op["op"] == "wait":
            (want,) = op["rows"]
            if not all(matches(b, op["where"] + [["sflow", "==", want["sflow"]]])
                       for b in bridges.values() if matches(b, op["where"])):
                return current  # aborted
        elif op["op"] == "insert":
            named[op["uuid-name"]] = f"new{len(rows)}"
            rows[named[op["uuid-name"]]] = SflowRow.from_ovsdb(op["row"])
        elif op["op"] == "update" and op["table"] == "Bridge":
            for u, b in list(bridges.items()):
                if matches(b, op["where"]):
                    bridges[u] = Bridge(b.uuid, b.name, reference(op["row"]["sflow"]), b.speed)
        elif op["op"] == "update" and op["table"] == "sFlow":
            target = op["where"][0][2][1]
            old = rows[target]
            rows[target] = SflowRow.from_ovsdb({**old.to_ovsdb(), **op["row"],
                                                "external_ids": old.to_ovsdb()["external_ids"]
                                                if old.ours else ["map", []]})
    used = {b.sflow for b in bridges.values()}
    return Current(tuple(bridges.values()), {u: r for u, r in rows.items() if u in used})


ROWS = [_ours(), _ours(sampling=7), _ours(targets=frozenset({"192.0.2.9:1"}), header=None),
        _ours(polling=5, ours=False)]


@given(st.lists(st.tuples(st.sampled_from(["none", "0", "1", "2", "3", "shared"]),
                          st.sampled_from(["want", "other", "none"])), min_size=1, max_size=5))
def test_a_plan_applied_leaves_nothing_to_do(layout):
    bridges, rows, desired_rows = [], {}, {}
    for i, (has, want) in enumerate(layout):
        row = None
        if has == "shared" and rows:
            row = next(iter(rows))
        elif has not in ("none", "shared"):
            row = f"s{i}"
            rows[row] = ROWS[int(has)]
        bridges.append(Bridge(f"b{i}", f"br{i}", row, 0))
        desired_rows[f"b{i}"] = {"want": _ours(), "other": _ours(polling=9), "none": None}[want]
    current = Current(tuple(bridges), rows)
    after = _apply(reconcile(desired_rows, current), current)

    assert reconcile(desired_rows, after).operations == []
    for bridge in after.bridges:
        before = next(b for b in current.bridges if b.uuid == bridge.uuid)
        if before.sflow and not current.sflow[before.sflow].ours:
            assert bridge.sflow == before.sflow and after.sflow[bridge.sflow] == current.sflow[before.sflow]
        elif desired_rows[bridge.uuid] is None:
            assert bridge.sflow is None
        else:
            assert after.sflow[bridge.sflow] == desired_rows[bridge.uuid]
    ours = [b.sflow for b in after.bridges if b.sflow and after.sflow[b.sflow].ours]
    assert len(ours) == len(set(ours))  # one row of ours per bridge
