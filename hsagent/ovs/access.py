"""May the agent's user connect to the OVSDB socket? (`hsagent check` asks before it matters.)

Connecting to a unix socket needs write permission on the socket file. ovsdb-server creates
its socket mode 0770 less its umask, so on Debian /run/openvswitch/db.sock is root:root 0750
and an agent that dropped root cannot use it. hsagent's package ships an opt-in drop-in for
ovsdb-server.service (init/ovsdb-server-hsagent.conf) that gives the socket to group hsagent
with group write each time ovsdb-server (re)creates it.
"""

from __future__ import annotations

import os
import pwd
import stat

GRANT_HINT = ("the socket is root's: install /usr/share/hsagent/ovsdb-server-hsagent.conf as an "
              "ovsdb-server drop-in (README: Open vSwitch) so group hsagent may use it")


def connect_problem(path: str, account: pwd.struct_passwd | None) -> str | None:
    """None when `account` (None: the current user) may connect to `path`; else why not."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist (is ovsdb-server running?)"
    except PermissionError:
        return f"{path} cannot be reached (a directory on the way is closed)"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket"
    uid = os.geteuid() if account is None else account.pw_uid
    if uid == 0:
        return None
    groups = set(os.getgroups()) | {os.getegid()} if account is None else _groups_of(account)
    if st.st_uid == uid:
        allowed = st.st_mode & stat.S_IWUSR
    elif st.st_gid in groups:
        allowed = st.st_mode & stat.S_IWGRP
    else:
        allowed = st.st_mode & stat.S_IWOTH
    if allowed:
        return None
    name = account.pw_name if account is not None else str(uid)
    return (f"user {name} may not connect to {path} (owner {st.st_uid}, group {st.st_gid}, "
            f"mode {stat.S_IMODE(st.st_mode):04o}): {GRANT_HINT}")


def _groups_of(account: pwd.struct_passwd) -> set[int]:
    return set(os.getgrouplist(account.pw_name, account.pw_gid))
