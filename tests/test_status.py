"""`hsagent status` on the files it may meet: the live agent's, stale ones, broken ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hsagent import status


@pytest.fixture
def sleeper():
    """A live process that is not hsagent (its pid may be left in a stale status file)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("content", [
    "", "{", "[]", '"text"', "null",
    json.dumps({"pid": -1, "written": 0}),  # kill(-1, 0) succeeds: every process
    json.dumps({"pid": 0, "written": 0}),  # kill(0, 0) succeeds: our process group
    json.dumps({"pid": "1", "written": 0}),
    json.dumps({"pid": True, "written": 0}),
    json.dumps({"pid": 1.5, "written": 0}),
    json.dumps({"pid": 1}),  # no time of writing
    json.dumps({"pid": 1, "written": "yesterday"}),
])
def test_a_malformed_status_file_means_not_running(tmp_path, capsys, content):
    (tmp_path / "status").write_text(content)
    assert status.show(str(tmp_path)) == 3
    assert capsys.readouterr().out.startswith(f"hsagent is not running (no status in {tmp_path}")


def test_a_fifo_is_not_read(tmp_path, capsys):
    os.mkfifo(tmp_path / "status")
    assert status.show(str(tmp_path)) == 3  # and does not hang waiting for a writer
    assert "not a regular file" in capsys.readouterr().out


def test_a_dead_or_foreign_pid_is_not_running(tmp_path, capsys, sleeper):
    for pid in (_dead_pid(), sleeper):
        (tmp_path / "status").write_text(json.dumps({"pid": pid, "written": time.time()}))
        assert status.show(str(tmp_path)) == 3
        assert f"pid {pid} in" in capsys.readouterr().out


def test_a_live_agent_is_running(tmp_path, capsys):
    # A process that looks like the agent: "hsagent" in its command line.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "hsagent"])
    try:
        status.write(str(tmp_path / "status"), {"pid": proc.pid, "written": time.time() - 5,
                                                "datagrams_sent": 7})
        assert status.show(str(tmp_path)) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"hsagent is running, pid {proc.pid} (status written 5 s ago)")
        assert "  datagrams_sent: 7" in out
    finally:
        proc.kill()
        proc.wait()
