"""The cumulus backend: one policy file per ACL, installed by `cl-acltool -i`.

Cumulus Linux installs every `/etc/cumulus/acl/policy.d/*.rules` file at once with
`cl-acltool -i`, which programs the kernel and the switch ASIC and rolls back when the install
fails. Ours are `50<prefix>-<name>.rules` (the priority acl_server used, so they sort among the
same neighbours); files of any other name are never touched. Each file is written atomically
(temporary file, fsync, rename, then one fsync of the directory). When cl-acltool refuses,
the files are put back as they were, so that one bad ACL cannot make later installs fail.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

from ... import files
from ..rules import Acl
from . import run

PRIORITY = "50"
HEADER = "# Written by hsagent-acld: changes here are overwritten.\n"


class CumulusBackend:
    name = "cumulus"

    def __init__(self, policy_dir: str, prefix: str, acltool: str):
        self.policy_dir, self.prefix, self.acltool = policy_dir, prefix, acltool
        self._ours = re.compile(re.escape(f"{PRIORITY}{prefix}-") + r"([a-z0-9_][a-z0-9_-]*)\.rules\Z")

    def path(self, name: str) -> str:
        return os.path.join(self.policy_dir, f"{PRIORITY}{self.prefix}-{name}.rules")

    def install(self, acls: Mapping[str, Acl]) -> None:
        before = self._read_ours()
        wanted = {self.path(name): render(acl) for name, acl in acls.items()}
        if wanted == before:
            return  # the files are what cl-acltool last installed
        try:
            self._write(wanted, before)
            run([self.acltool, "-i"])
        except Exception:
            self._write(before, self._read_ours())  # as they were, even after a partial write
            raise

    def _read_ours(self) -> dict[str, bytes]:
        ours = {}
        for entry in os.scandir(self.policy_dir):
            if self._ours.match(entry.name) and entry.is_file(follow_symlinks=False):
                with open(entry.path, "rb") as f:
                    ours[entry.path] = f.read()
        return ours

    def _write(self, wanted: dict[str, bytes], present: dict[str, bytes]) -> None:
        """Make our files `wanted`, given that they are `present` now."""
        for path, data in wanted.items():
            if present.get(path) != data:
                files.replace(path, data)
        for path in present.keys() - wanted.keys():
            os.unlink(path)
        files.sync_directory(self.policy_dir)


def render(acl: Acl) -> bytes:
    return (HEADER + "".join(line + "\n" for line in acl.lines())).encode()
