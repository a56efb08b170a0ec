"""The running agent's self-telemetry: written to a small file, shown by `hsagent status`."""

from __future__ import annotations

import json
import os
import time

from . import files


def write(path: str, state: dict) -> None:
    files.replace(path, json.dumps(state, indent=1, sort_keys=True))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just is not ours
    return True


def show(runtime_dir: str) -> int:
    """Print the status; exit code 0 running, 3 not running (as LSB `status` does)."""
    path = os.path.join(runtime_dir, "status")
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        print(f"hsagent is not running (no status in {path}: {getattr(err, 'strerror', err)})")
        return 3
    if not _alive(state.get("pid", 0)):
        print(f"hsagent is not running (pid {state.get('pid')} in {path} has exited)")
        return 3
    age = time.time() - state.get("written", 0)
    print(f"hsagent is running, pid {state['pid']} (status written {age:.0f} s ago)")
    for key in sorted(state):
        if key not in ("pid", "written"):
            print(f"  {key}: {state[key]}")
    return 0
