"""Daemon start-up: the command reports the daemon's start-up result, and a root-started
daemon keeps only its two capabilities, even in its bounding set, with NoNewPrivs set."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HSAGENT, write_config
from hsagent.privileges import capability_mask


def _start(conf: str, directory: Path, pidfile: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HSAGENT, "-c", conf, "--pidfile", pidfile,
                           "--auto-file", str(directory / "auto"),
                           "--runtime-dir", str(directory / "run")],
                          capture_output=True, text=True, timeout=150)


def _running_with(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line holds `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


@pytest.fixture
def daemon_config(receiver, readable_dir):
    """make(user) -> a config path; any daemon still running with it is stopped afterwards
    (one that should not have started, too)."""
    path = readable_dir / "hsagent.conf"

    def make(user: str = "root") -> str:
        # polling = 2: each data source is first polled at a random offset within the interval
        return write_config(path, f"  DNSSD = off\n  user = {user}\n  polling = 2\n"
                                  f"  collector {{ ip = {receiver.host} udpport = {receiver.port} }}")

    yield make
    for pid in _running_with(str(path)):
        os.kill(pid, signal.SIGKILL)


def test_an_unwritable_pidfile_fails_the_start_and_says_why(daemon_config, readable_dir):
    conf = daemon_config()
    pidfile = str(readable_dir / "no-such-dir" / "hsagent.pid")
    run = _start(conf, readable_dir, pidfile)
    assert run.returncode == 1
    assert "hsagent: cannot write the pid file" in run.stderr and pidfile in run.stderr
    assert _running_with(conf) == []  # no daemon left behind


@pytest.mark.root
def test_a_refusal_after_detaching_fails_the_start(daemon_config, readable_dir, tmp_path):
    conf = daemon_config(user="nobody")
    (readable_dir / "run").symlink_to(tmp_path)  # an unsafe runtime directory
    run = _start(conf, readable_dir, str(readable_dir / "hsagent.pid"))
    assert run.returncode == 1
    assert "refusing to run" in run.stderr and "symbolic link" in run.stderr
    assert _running_with(conf) == []


@pytest.mark.root
def test_a_started_daemon_has_dropped_for_good(daemon_config, readable_dir, receiver):
    conf = daemon_config(user="nobody")
    pidfile = readable_dir / "hsagent.pid"
    run = _start(conf, readable_dir, str(pidfile))
    assert run.returncode == 0, run.stderr
    pid = int(pidfile.read_text())  # written before the command returned
    try:
        assert _running_with(conf) == [pid]
        mask = capability_mask()
        for task in Path(f"/proc/{pid}/task").iterdir():  # every thread
            status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines()
                          if ":" in line)
            assert status["Uid"].split() == ["65534"] * 4
            assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == mask
            assert int(status["CapBnd"], 16) == mask, task
            assert status["NoNewPrivs"].strip() == "1", task
        assert receiver.wait_for(lambda r: r.raw, timeout=10), "the daemon sends nothing"
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _running_with(conf) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running_with(conf) == []
