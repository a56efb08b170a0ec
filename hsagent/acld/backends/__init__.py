"""Where ACLs get installed, behind one small interface.

A backend has a `name` and one method, `install(acls)`: make exactly these ACLs (a mapping of
name to `Acl`) the live ones, all or nothing. When it cannot, it raises `InstallError` with the
previous rules still live; the committer then finds the ACL at fault. `install` blocks (it runs
commands); the committer calls it from a worker thread, one call at a time.
"""

from __future__ import annotations

import subprocess
from typing import Mapping, Protocol

from ..rules import Acl

COMMAND_TIMEOUT = 60.0  # seconds; an install that hangs longer is a failed install


class InstallError(Exception):
    """The backend refused an install; `lines` are what its tool said."""

    def __init__(self, message: str, returncode: int | None = None, lines: list[str] | None = None):
        super().__init__(message)
        self.message, self.returncode, self.lines = message, returncode, lines or []


class Backend(Protocol):
    name: str

    def install(self, acls: Mapping[str, Acl]) -> None: ...


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """A command as an argument list (never a shell); InstallError if it cannot run or fails."""
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InstallError(f"{argv[0]}: {err}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise InstallError(f"{argv[0]} exited {done.returncode}", done.returncode, lines)
    return done
