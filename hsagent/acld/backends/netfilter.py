"""The netfilter backend: plain Linux (and the tests) without cl-acltool.

hsagent-acld owns one chain per built-in chain its rules use, `hsacld-<CHAIN>` in the same table,
jumped to from the top of the built-in chain. Each install is one `iptables-restore --noflush`
(and one `ip6tables-restore --noflush`) transaction that declares our chains (which flushes
them) and appends every rule: nothing else in the kernel is touched, and a table's rules change
all at once. Rules are ordered by ACL name, as cl-acltool orders the files.

Cumulus-only targets become their Linux equivalents: `SETQOS --set-dscp N` (or
`--set-dscp-class`) the DSCP target, `SETQOS --set-cos N` a CLASSIFY priority (skb->priority
N, what Linux egress QoS maps to a class of service). The kernel decides where those may be used:
CLASSIFY only in FORWARD, OUTPUT and POSTROUTING, so a `--set-cos` rule in PREROUTING is an
install error here, found and reported by the committer like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Mapping

from ..rules import Acl, Rule
from . import InstallError, run

log = logging.getLogger(__name__)

CHAIN_PREFIX = "hsacld-"
TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}


@dataclass
class TableState:
    """What the kernel has of ours in one table: our chains, their rules, and our jumps."""
    chains: set[str] = field(default_factory=set)
    rules: list[str] = field(default_factory=list)
    jumps: set[str] = field(default_factory=set)  # built-in chains that jump to ours


def parse_save(text: str) -> dict[str, TableState]:
    """Our part of iptables-save's output, per table."""
    tables: dict[str, TableState] = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = tables.setdefault(line[1:], TableState())
        elif table is None:
            continue
        elif line.startswith(":" + CHAIN_PREFIX):
            table.chains.add(line[1:].split()[0])
        elif line.startswith("-A " + CHAIN_PREFIX):
            table.rules.append(line)
        elif line.startswith("-A "):
            parts = line.split()
            if parts[2:] == ["-j", CHAIN_PREFIX + parts[1]]:
                table.jumps.add(parts[1])
    return tables


def netfilter_rules(rule: Rule) -> list[Rule]:
    """The Linux targets for a Cumulus rule: SETQOS becomes CLASSIFY and/or DSCP."""
    if rule.target != "SETQOS":
        return [rule]
    plain = replace(rule, set_dscp=None, set_dscp_class=None, set_cos=None)
    rules = []
    if rule.set_cos is not None:
        rules.append(replace(plain, target="CLASSIFY", set_cos=rule.set_cos))
    if rule.set_dscp is not None or rule.set_dscp_class is not None:
        rules.append(replace(plain, target="DSCP", set_dscp=rule.set_dscp,
                             set_dscp_class=rule.set_dscp_class))
    return rules


def target_args(rule: Rule) -> list[str]:
    if rule.target == "CLASSIFY":
        return ["-j", "CLASSIFY", "--set-class", f"0:{rule.set_cos}"]
    return ["-j", rule.target] + rule.target_options()


def rule_lines(acls: Mapping[str, Acl], family: int, swp_pattern: str) -> dict[str, dict[str, list[str]]]:
    """table -> our chain -> its `-A` lines, for the rules of one family, ordered by ACL name."""
    tables: dict[str, dict[str, list[str]]] = {}
    for name in sorted(acls):
        for rule in acls[name].rules:
            if rule.family != family:
                continue
            chain = CHAIN_PREFIX + rule.chain
            lines = tables.setdefault(rule.table, {}).setdefault(chain, [])
            for linux_rule in netfilter_rules(rule):
                lines.append(" ".join(["-A", chain] + linux_rule.matches(swp_pattern)
                                      + ["-m", "comment", "--comment", f"hsacld:{name}"]
                                      + target_args(linux_rule)))
    return tables


def restore_input(wanted: dict[str, dict[str, list[str]]], current: dict[str, TableState]) -> str:
    """The iptables-restore --noflush input making our chains exactly `wanted`: every chain of
    ours that exists or is wanted is declared (so flushed), missing jumps are inserted first."""
    out = []
    for table in sorted(set(wanted) | {t for t, s in current.items() if s.chains}):
        state = current.get(table, TableState())
        chains = wanted.get(table, {})
        out.append(f"*{table}")
        out += [f":{chain} - [0:0]" for chain in sorted(state.chains | set(chains))]
        for chain in sorted(chains):
            builtin = chain[len(CHAIN_PREFIX):]
            if builtin not in state.jumps:
                out.append(f"-I {builtin} 1 -j {chain}")
        for chain in sorted(chains):
            out += chains[chain]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def rollback_input(current: dict[str, TableState], wanted: dict[str, dict[str, list[str]]]) -> str:
    """Put back what `current` had in our chains (and empty the chains the failed install made)."""
    out = []
    for table in sorted({t for t, s in current.items() if s.chains} | set(wanted)):
        state = current.get(table, TableState())
        out.append(f"*{table}")
        out += [f":{chain} - [0:0]" for chain in sorted(state.chains | set(wanted.get(table, {})))]
        out += state.rules
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


class NetfilterBackend:
    name = "netfilter"

    def __init__(self, swp_pattern: str):
        self.swp_pattern = swp_pattern

    def install(self, acls: Mapping[str, Acl]) -> None:
        done = []  # (family, rollback input) of the families already changed
        try:
            for family in (4, 6):
                wanted = rule_lines(acls, family, self.swp_pattern)
                current = self._current(family, needed=bool(wanted))
                text = restore_input(wanted, current)
                if not text:
                    continue
                rollback = rollback_input(current, wanted)
                try:
                    run([TOOLS[family][1], "--noflush", "--wait"], stdin=text)
                except InstallError:
                    self._restore(family, rollback)  # a failed table may follow a good one
                    raise
                done.append((family, rollback))
        except InstallError:
            for family, rollback in done:
                self._restore(family, rollback)
            raise

    def _current(self, family: int, needed: bool) -> dict[str, TableState]:
        """Our chains in the kernel now. Without rules of this family to install, a failing
        *-save (no IPv6 in this kernel) just means there is nothing of ours to clear."""
        try:
            return parse_save(run([TOOLS[family][0]]).stdout)
        except InstallError:
            if needed:
                raise
            return {}

    def _restore(self, family: int, rollback: str) -> None:
        try:
            run([TOOLS[family][1], "--noflush", "--wait"], stdin=rollback)
        except InstallError as err:
            log.error("putting back the IPv%d rules after a failed install failed too: %s %s",
                      family, err, " / ".join(err.lines))
