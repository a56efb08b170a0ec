"""The running agent's self-telemetry: written to a small file, shown by `hsagent status`."""

from __future__ import annotations

import json
import os
import time

from . import files, procfs

MAX_STATUS_BYTES = 1 << 20  # a status file is a few kilobytes; more is not ours


def write(path: str, state: dict) -> None:
    files.replace(path, json.dumps(state, indent=1, sort_keys=True))


def _running(pid: int) -> bool:
    """Is `pid` an hsagent process? A pid left in a stale file may since belong to another."""
    try:
        with open(procfs.HOST.proc_path(str(pid), "cmdline"), "rb") as f:
            command = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # /proc mounted with hidepid: existence is all we can learn
        return os.path.exists(procfs.HOST.proc_path(str(pid)))
    return b"hsagent" in command  # a zombie's is empty


def _read(path: str) -> dict:
    """The status file's object; ValueError or OSError says why there is none."""
    state = json.loads(files.read_small(path, MAX_STATUS_BYTES))
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    pid = state.get("pid")
    # kill(0, 0) and kill(-1, 0) succeed (our process group, every process): never a pid
    if type(pid) is not int or pid <= 0:
        raise ValueError(f"no valid pid ({pid!r})")
    if not isinstance(state.get("written"), (int, float)):
        raise ValueError("no time of writing")
    return state


def show(runtime_dir: str) -> int:
    """Print the status; exit code 0 running, 3 not running (as LSB `status` does)."""
    path = os.path.join(runtime_dir, "status")
    try:
        state = _read(path)
    except (OSError, ValueError) as err:
        print(f"hsagent is not running (no status in {path}: {getattr(err, 'strerror', None) or err})")
        return 3
    if not _running(state["pid"]):
        print(f"hsagent is not running (pid {state['pid']} in {path} has exited or is not hsagent)")
        return 3
    age = time.time() - state["written"]
    print(f"hsagent is running, pid {state['pid']} (status written {age:.0f} s ago)")
    for key in sorted(state):
        if key not in ("pid", "written"):
            print(f"  {key}: {state[key]}")
    return 0
