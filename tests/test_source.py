"""hsagent.config.source: the file and DNS-SD composed into the settings in force."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hsagent.config.source import SettingsSource, lookup_now
from hsagent.settings import Collector, Settings

FILE = Settings(dnssd=False, collectors=(Collector("127.0.0.1"),), polling=7)


def test_dnssd_off_means_the_files_settings_and_no_watcher():
    watched = []
    source = SettingsSource(FILE, watch=watched.append)
    assert source.settings is FILE
    assert source.lookup_now() is FILE
    assert source.state() == "off"
    assert watched == []
    assert lookup_now(FILE) == (FILE, None, None)
    source.close()


def test_reload_takes_the_new_file_and_a_bad_file_changes_nothing():
    files = [FILE.replace("file", polling=9)]

    def reread():
        if not files:
            raise ValueError("test.conf:1:1: bad")
        return files.pop()

    source = SettingsSource(FILE, reread)
    assert source.reload().polling == 9
    with pytest.raises(ValueError, match="bad"):
        source.reload()
    assert source.settings.polling == 9


def test_dnssd_on_builds_a_watcher_in_the_loops_selector_and_closes_it():
    watched, unwatched = [], []
    settings = Settings(dnssd_domain="example.invalid", dnssd_server="127.0.0.1", dnssd_port=9)
    source = SettingsSource(settings, watch=watched.append, unwatch=unwatched.append)
    try:
        assert len(watched) == 1 and source.state().startswith("DNS-SD")
        assert source.settings is settings  # no answer yet: the file's settings
    finally:
        source.close()
    assert unwatched == watched and source.state() == "off"


def test_dnspython_is_loaded_only_when_dnssd_is_on():
    code = ("import sys\n"
            "from hsagent.config.source import SettingsSource, lookup_now\n"
            "from hsagent.settings import Settings\n"
            "s = Settings(dnssd=False)\n"
            "SettingsSource(s).close(); lookup_now(s)\n"
            "print(sorted(m for m in sys.modules if m == 'dns' or m.startswith('dns.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
