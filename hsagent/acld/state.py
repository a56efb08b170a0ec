"""The desired state on disk, so that a restart re-installs every ACL.

One JSON file, `acls.json` in the state directory: `{"version": 1, "acls": {name: [lines]}}`,
the lines as rendered from the parsed rules. It is read back through the same parser as a
request, so a file edited by hand cannot smuggle in what the API would refuse.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping

from .. import files
from .rules import Acl, RuleError, parse_acl

log = logging.getLogger(__name__)

VERSION = 1


class StateStore:
    def __init__(self, directory: str):
        self.path = os.path.join(directory, "acls.json")
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def load(self) -> dict[str, Acl]:
        try:
            with open(self.path, encoding="utf-8") as f:
                saved = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.error("%s: cannot read the saved ACLs (%s); starting with none", self.path, err)
            return {}
        acls = {}
        entries = saved.get("acls", {}) if isinstance(saved, dict) else {}
        for name, lines in entries.items() if isinstance(entries, dict) else ():
            try:
                acls[name] = parse_acl(name, lines)
            except RuleError as err:
                log.error("%s: ACL %r left out: %s", self.path, name, err)
        return acls

    def save(self, acls: Mapping[str, Acl]) -> None:
        state = {"version": VERSION, "acls": {name: acls[name].lines() for name in sorted(acls)}}
        files.replace(self.path, json.dumps(state, indent=1) + "\n", mode=0o600)
        files.sync_directory(os.path.dirname(self.path))
