"""The SysV init script driving the real daemon, and the systemd unit checked by systemd itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest

from conftest import Receiver

TOP = Path(__file__).resolve().parent.parent
INIT_SCRIPT = TOP / "init" / "hsagent"
UNIT = TOP / "init" / "hsagent.service"
# The console script itself, not a wrapper such as a pyenv shim: the init script matches the
# daemon by process name, which is the name of the script the kernel started.
CONSOLE_SCRIPT = Path(sysconfig.get_path("scripts")) / "hsagent"
LSB_NOT_RUNNING = 3


def write_conf(path: Path, receiver: Receiver, extra: str = "") -> None:
    path.write_text("sflow {\n  DNSSD = off\n  polling = 1\n"
                    f"  collector {{ ip = {receiver.host} udpport = {receiver.port} }}\n{extra}}}\n")
    path.chmod(0o644)


class InitScript:
    """/etc/init.d/hsagent as the system would run it, pointed at test paths via its variables."""

    def __init__(self, workdir: Path):
        self.conf = workdir / "hsagent.conf"
        self.pidfile = workdir / "hsagent.pid"
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DAEMON": str(CONSOLE_SCRIPT),
            "CONF": str(self.conf),
            "PIDFILE": str(self.pidfile),
            "DAEMON_ARGS": f"--auto-file {workdir / 'hsagent.auto'} --runtime-dir {workdir / 'run'}",
        }

    def __call__(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(INIT_SCRIPT), action], env=self.env, capture_output=True,
                              text=True, timeout=30)

    def pid(self) -> int:
        return int(self.pidfile.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def init_script(readable_dir):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no installed hsagent console script at {CONSOLE_SCRIPT} (pip install .)")
    if os.geteuid() != 0:
        pytest.skip("the init script runs start-stop-daemon as root")
    script = InitScript(readable_dir)
    yield script
    script("stop")  # also after a failed assertion


@pytest.fixture
def receivers():
    made = [Receiver(), Receiver()]
    yield made
    for r in made:
        r.close()


def test_init_script_is_portable_sh():
    subprocess.run(["sh", "-n", str(INIT_SCRIPT)], check=True)
    if shutil.which("dash"):
        subprocess.run(["dash", "-n", str(INIT_SCRIPT)], check=True)


def test_init_script_header_is_lsb():
    text = INIT_SCRIPT.read_text()
    header = re.search(r"^### BEGIN INIT INFO\n(.*?)^### END INIT INFO$", text, re.M | re.S)
    assert header, "no LSB header"
    fields = dict(re.findall(r"^# ([A-Za-z-]+):\s+(.*)$", header.group(1), re.M))
    assert fields["Provides"] == "hsagent"
    assert fields["Default-Start"].split() == ["2", "3", "4", "5"]
    assert fields["Default-Stop"].split() == ["0", "1", "6"]
    assert "$network" in fields["Required-Start"]


@pytest.mark.root
def test_start_status_reload_stop(init_script, receivers):
    first, second = receivers
    write_conf(init_script.conf, first)

    started = init_script("start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = init_script.pid()
    assert alive(pid)
    assert init_script("status").returncode == 0
    assert first.wait_for(lambda r: r.samples(ds_class=2)), "no host counters from the daemon"

    assert init_script("start").returncode == 0, "start when running must succeed"
    assert init_script.pid() == pid, "a second start must not start another agent"

    # reload: the running agent (same pid) now sends to the second collector only
    write_conf(init_script.conf, second)
    reloaded = init_script("reload")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert second.wait_for(lambda r: r.samples(ds_class=2)), "reload did not apply the new file"
    assert init_script.pid() == pid and alive(pid)

    # a bad file: reload says so, and the agent keeps running with what it had
    init_script.conf.write_text("sflow {\n  polling = soon\n}\n")
    assert init_script("reload").returncode == 1
    assert init_script("status").returncode == 0 and alive(pid)

    stopped = init_script("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    deadline = time.monotonic() + 2
    while alive(pid) and time.monotonic() < deadline:  # reaped by init a moment after it exits
        time.sleep(0.05)
    assert not alive(pid)
    assert not init_script.pidfile.exists()
    assert init_script("status").returncode == LSB_NOT_RUNNING
    assert init_script("stop").returncode == 0, "stop when stopped must succeed"


@pytest.mark.root
def test_start_with_bad_config_fails(init_script):
    init_script.conf.write_text("sflow {\n  collector { ip = not-an-address }\n}\n")
    started = init_script("start")
    assert started.returncode == 1
    assert not init_script.pidfile.exists()
    assert init_script("status").returncode == LSB_NOT_RUNNING


@pytest.fixture
def unit_for_this_machine(tmp_path):
    """The unit with ExecStart pointing at an existing hsagent (verify checks the binary)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no installed hsagent console script at {CONSOLE_SCRIPT}")
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/hsagent " in text
    copy = tmp_path / "hsagent.service"
    copy.write_text(text.replace("/usr/bin/hsagent", str(CONSOLE_SCRIPT)))
    return copy


def test_systemd_unit_verifies(unit_for_this_machine):
    done = subprocess.run(["systemd-analyze", "verify", str(unit_for_this_machine)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "hsagent.service" not in done.stderr, done.stderr  # warnings name the unit


def test_systemd_unit_is_sandboxed(unit_for_this_machine):
    # exposure 0.0 (locked down) .. 10.0 (root, no sandbox); the unit scores 2.1
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=25",
                           "--no-pager", str(unit_for_this_machine)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
