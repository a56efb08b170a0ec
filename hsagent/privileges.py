"""Least privilege: a root-started agent becomes an unprivileged user with two capabilities.

Packet sampling needs CAP_NET_RAW (AF_PACKET sockets) and CAP_NET_ADMIN (netfilter log
groups, iptables rules); nothing else the agent does needs root. Both are also ambient, so
the iptables it runs (nflog { probability }) has CAP_NET_ADMIN, as under the systemd unit's
AmbientCapabilities=. The switch happens before any thread starts, because capset(2) and
prctl(2) change only the calling thread (threads started later inherit its capabilities).
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd

from . import files as safe_files
from . import procfs

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
KEPT_CAPABILITIES = (CAP_NET_ADMIN, CAP_NET_RAW)
PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 8, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
FALLBACK_USERS = ("hsagent", "nobody")


class PrivilegeError(RuntimeError):
    pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capability_mask(capabilities=KEPT_CAPABILITIES) -> int:
    mask = 0
    for cap in capabilities:
        mask |= 1 << cap
    return mask


def target_user(configured: str | None) -> pwd.struct_passwd | None:
    """The account to run as; None means stay as we are (not root, or `user = root`)."""
    if os.geteuid() != 0:
        return None
    names = (configured,) if configured else FALLBACK_USERS
    for name in names:
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        return None if account.pw_uid == 0 else account
    raise PrivilegeError(f"user {configured!r} does not exist" if configured
                         else f"none of the users {', '.join(FALLBACK_USERS)} exists")


def prepare_paths(account: pwd.struct_passwd, files=(), directories=()) -> None:
    """Create what the agent writes after the switch, owned by the new user (never through a
    link: these paths may lie in directories other users can write)."""
    for directory in directories:
        safe_files.give_directory(directory, account.pw_uid, account.pw_gid)
    for path in files:
        safe_files.give_file(path, account.pw_uid, account.pw_gid)


def drop_to(account: pwd.struct_passwd, extra_groups=()) -> None:
    """Become `account`, keeping only KEPT_CAPABILITIES; raises PrivilegeError on any failure."""
    libc = ctypes.CDLL(None, use_errno=True)
    groups = {account.pw_gid}
    for name in extra_groups:
        try:
            groups.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass  # e.g. no docker group: the docker module will say it cannot connect
    try:
        _limit_bounding_set(libc)  # needs CAP_SETPCAP: while still root
        if libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
        os.setgroups(sorted(groups))
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        mask = capability_mask()
        # inheritable too: an ambient capability must be permitted and inheritable
        data = (_CapData * 2)(_CapData(mask, mask, mask), _CapData(0, 0, 0))
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
        # as the unit's AmbientCapabilities=: the iptables the NFLOG sampler runs (a plain
        # program, no file capabilities) gets CAP_NET_ADMIN from us, or it cannot change rules
        for cap in KEPT_CAPABILITIES:
            if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"prctl(PR_CAP_AMBIENT_RAISE, {cap})")
        # as the unit's NoNewPrivileges=yes: no program we run gains privileges (setuid, file caps)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    except OSError as err:
        raise PrivilegeError(f"cannot switch to user {account.pw_name}: {err}") from None
    _verify(account)


def _limit_bounding_set(libc) -> None:
    """As the unit's CapabilityBoundingSet=: no capability beyond the kept ones can ever be
    regained, by us or by any program we run."""
    last = int(procfs.read_text(procfs.HOST.proc_path("sys", "kernel", "cap_last_cap")))
    for cap in range(last + 1):
        if cap not in KEPT_CAPABILITIES and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def _verify(account: pwd.struct_passwd) -> None:
    """Refuse to go on unless the kernel confirms the user and capabilities we asked for."""
    text = procfs.read_text(procfs.HOST.proc_path("self", "status"))
    status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    uids = {int(u) for u in status["Uid"].split()}
    effective, bounding = int(status["CapEff"], 16), int(status["CapBnd"], 16)
    ambient = int(status["CapAmb"], 16)
    no_new_privs = status["NoNewPrivs"].strip()
    if (uids != {account.pw_uid} or effective != capability_mask()
            or bounding != capability_mask() or ambient != capability_mask() or no_new_privs != "1"):
        raise PrivilegeError(f"privileges not dropped as configured (uids {sorted(uids)}, "
                             f"CapEff {effective:#x}, CapBnd {bounding:#x}, CapAmb {ambient:#x}, "
                             f"NoNewPrivs {no_new_privs})")
