"""Running as a service: readiness for systemd, rate-limited logs, the daemon and its pid file."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import HSAGENT
from hsagent.logs import Throttle


def test_foreground_agent_tells_systemd_it_is_ready(receiver, config, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    notify.bind(path)
    notify.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    agent = subprocess.Popen([*HSAGENT, "-f", "-c", config(receiver), "--auto-file", str(tmp_path / "auto"),
                              "--runtime-dir", str(tmp_path)], env=env, stderr=subprocess.DEVNULL)
    try:
        assert notify.recv(4096) == b"READY=1"
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(5) == 0
        notify.close()


def test_daemon_detaches_writes_its_pid_and_stops_on_sigterm(receiver, config, tmp_path):
    pidfile = tmp_path / "hsagent.pid"
    started = subprocess.run([*HSAGENT, "-c", config(receiver, body="  polling = 1"), "--pidfile", str(pidfile),
                              "--auto-file", str(tmp_path / "auto"), "--runtime-dir", str(tmp_path)],
                             timeout=30)
    assert started.returncode == 0  # the parent returns once the daemon is detached
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        # a session of its own, and (double fork) not its leader: it can never get a terminal
        assert os.getsid(pid) not in (os.getsid(0), pid)
        assert receiver.wait_for(lambda r: r.raw, timeout=10), "the daemon sends nothing"
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)


def running(pid: int) -> bool:
    """Alive and not a zombie: the daemon's parent is init, which may reap it late."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_repeated_errors_are_logged_once_then_counted(caplog):
    clock = Clock()
    throttle = Throttle(logging.getLogger("hsagent.test"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, "hsagent.test"):
        for second in range(150):
            clock.now = second
            throttle(logging.WARNING, "send", "cannot send to %s", "collector")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["cannot send to collector",
                        "cannot send to collector (repeated 59 times)",
                        "cannot send to collector (repeated 59 times)"]
    throttle.clear("send")
    throttle(logging.WARNING, "send", "cannot send to %s", "collector")
    assert caplog.records[-1].getMessage() == "cannot send to collector"


@pytest.mark.root
def test_refuses_to_run_when_it_cannot_become_the_configured_user(receiver, config, tmp_path):
    result = subprocess.run([*HSAGENT, "-f", "-c", config(receiver, user="no-such-user"), "--auto-file",
                             str(tmp_path / "auto"), "--runtime-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "refusing to run: user 'no-such-user' does not exist" in result.stderr
