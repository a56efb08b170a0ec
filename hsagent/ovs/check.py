"""`hsagent check` with ovs { }: what Open vSwitch will do with the settings, and whether the
agent's user may reach OVSDB."""

from __future__ import annotations

from .access import connect_problem
from .reconcile import describe
from .sync import socket_path


def report(settings, account) -> str:
    """`account`: the user the agent will run as (None: the one running this)."""
    path = socket_path(settings.ovs.db)
    problem = connect_problem(path, account)
    user = account.pw_name if account is not None else "this user"
    lines = [
        f"Open vSwitch (ovs {{ db = {settings.ovs.db} }}):",
        f"  {describe(settings)}",
        f"  datagrams: OVS's bridges are sub-agents 0, 1, 2 ... of the agent address; hsagent's own "
        f"are sub-agent {settings.datagram_sub_agent_id()}",
        f"  OVSDB: {problem}" if problem else f"  OVSDB: {user} may connect to {path}",
    ]
    return "\n".join(lines)
