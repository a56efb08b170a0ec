"""hsagent-acld's settings (file, command line, errors naming file and line) and its
independence from the agent: neither imports the other's heavy parts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hsagent.acld import cli, config


def settings_from(tmp_path, text, *argv):
    path = tmp_path / "acld.conf"
    path.write_text(text)
    return cli.load_settings(cli.parser().parse_args(["-c", str(path), *argv])), path


def test_file_then_command_line(tmp_path):
    settings, _ = settings_from(tmp_path, "# example\nlisten = [::1]:9000\nmax-rules = 50  # cap\n"
                                          "backend = netfilter\nswp-pattern = eth+\n",
                                "--max-rules", "70")
    assert settings.listen == ("::1", 9000)
    assert settings.max_rules == 70  # the command line wins
    assert settings.backend_name == "netfilter" and settings.swp_pattern == "eth+"
    assert settings.token_file == config.Settings().token_file


@pytest.mark.parametrize("text, message", [
    ("listen = 127.0.0.1:8081\nfrobnicate = 1\n", ":2: unknown setting 'frobnicate'"),
    ("max-rules = 0\n", ":1: max-rules '0': expected 1-1000000"),
    ("listen = localhost:80\n", ":1: listen 'localhost:80': expected ADDRESS:PORT"),
    ("backend = iptables\n", ":1: backend 'iptables': expected one of auto, netfilter, cumulus"),
    ("swp-pattern = sw+p\n", ":1: swp-pattern"),
    ("listen\n", ":1: expected 'name = value'"),
    ("tls-cert = /etc/cert.pem\n", "tls-cert and tls-key go together"),
])
def test_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(config.ConfigError) as refused:
        settings_from(tmp_path, text)
    assert message in str(refused.value)


def test_bad_file_exits_2(tmp_path):
    path = tmp_path / "acld.conf"
    path.write_text("max-body = lots\n")
    done = subprocess.run([sys.executable, "-m", "hsagent.acld", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{path}:1: max-body 'lots'" in done.stderr


def test_the_service_and_the_agent_stay_apart():
    """The service imports nothing heavy of the agent's; the agent never imports aiohttp."""
    service = ("import sys, hsagent.acld.cli, hsagent.acld.app\n"
               "heavy = [m for m in ('psutil', 'docker', 'pyroute2', 'dns', 'hsagent.agent',"
               " 'hsagent.sflow') if m in sys.modules]\nassert not heavy, heavy\n")
    agent = ("import sys, hsagent.cli, hsagent.agent\n"
             "assert 'aiohttp' not in sys.modules and 'hsagent.acld' not in sys.modules\n")
    for script in (service, agent):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_the_example_configuration_is_valid():
    example = Path(__file__).parent.parent / "etc" / "hsagent-acld.conf"
    settings = cli.load_settings(cli.parser().parse_args(["-c", str(example)]))
    assert settings.listen == ("127.0.0.1", 8081) and settings.backend == "auto"
