"""Fixtures shared by the test files: a loopback sFlow receiver, network namespaces, config files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from typing import NamedTuple

import pytest

from hsagent.sflow.datagram import decode_datagram

HSAGENT = [sys.executable, "-m", "hsagent"]


class Endpoint(NamedTuple):
    host: str
    port: int


class Receiver:
    """A UDP socket on loopback that keeps every datagram it gets, raw and decoded."""

    def __init__(self, family=socket.AF_INET, host="127.0.0.1"):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.raw: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        while not self._stop:
            try:
                data, _ = self.sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.raw.append(data)

    @property
    def datagrams(self):
        return [decode_datagram(d) for d in list(self.raw)]

    def samples(self, ds_class=None, ds_index=None):
        return [s for d in self.datagrams for s in d.samples
                if (ds_class is None or s.ds_class == ds_class)
                and (ds_index is None or s.ds_index == ds_index)]

    def wait_for(self, predicate, timeout=10.0):
        """Wait until predicate(self) is true; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.05)

    def close(self):
        self._stop = True
        self.sock.close()
        self._thread.join(2)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def receiver6():
    r = Receiver(socket.AF_INET6, "::1")
    yield r
    r.close()


@pytest.fixture
def readable_dir():
    """A directory an agent that switched to an unprivileged user can still read (and so
    re-read its configuration on SIGHUP); pytest's tmp_path is root-only."""
    path = Path(tempfile.mkdtemp(prefix="hsagent-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def record_of(sample, record_type):
    """The first record of that type in a sample, or None."""
    return next((r for r in sample.records if isinstance(r, record_type)), None)


def write_config(path, body: str) -> str:
    path.write_text(f"sflow {{\n{body}\n}}\n")
    return str(path)


@pytest.fixture
def config(tmp_path):
    """config(body, receivers...) -> path of an hsagent.conf with DNSSD off."""

    def make(*receivers, body: str = "", name: str = "hsagent.conf", user: str = "root") -> str:
        # user = root: the test's files live in root-only temporary directories
        lines = ["  DNSSD = off", f"  user = {user}"]
        lines += [f"  collector {{ ip = {r.host} udpport = {r.port} }}" for r in receivers]
        lines.append(body)
        return write_config(tmp_path / name, "\n".join(lines))

    return make


class Netns:
    """A network namespace for one test, removed afterwards with everything in it."""

    def __init__(self, prefix="hst"):
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *cmd, check=True, **kw):
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], check=check,
                              capture_output=True, text=True, **kw)

    def popen(self, *cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)

    def delete(self):
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    made = []

    def make(prefix="hst"):
        ns = Netns(prefix)
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.delete()


# --- Open vSwitch: a private instance per test (tests/ovs.sh) --------------------------------

OVS_SH = str(Path(__file__).with_name("ovs.sh"))
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


class in_netns:
    """`with in_netns(name):` this thread is in that namespace; sockets made inside stay there."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(there)
        finally:
            os.close(there)
        return self

    def __exit__(self, *exc):
        try:
            _setns(self._home)
        finally:
            os.close(self._home)


class PrivateOvs:
    """ovsdb-server and ovs-vswitchd of one test, in its namespace, every file in `dir`."""

    def __init__(self, ns: Netns, directory: Path):
        self.ns, self.dir = ns, directory
        self.db = subprocess.run([OVS_SH, "start", ns.name, str(directory)], check=True,
                                 capture_output=True, text=True).stdout.strip()

    def vsctl(self, *args: str) -> str:
        result = subprocess.run(["ovs-vsctl", f"--db={self.db}", "--timeout=10", *args],
                                env={**os.environ, "OVS_RUNDIR": str(self.dir)},
                                capture_output=True, text=True)
        if result.returncode:
            raise AssertionError(f"ovs-vsctl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def table(self, table: str, *columns: str) -> list[dict]:
        """Every row of a table as ovs-vsctl reads it: {column: value in OVSDB JSON}."""
        import json

        args = ["--format=json", f"--columns={','.join(('_uuid',) + columns)}"] if columns else ["--format=json"]
        data = json.loads(self.vsctl(*args, "list", table))
        return [dict(zip(data["headings"], row)) for row in data["data"]]

    def sflow_rows(self) -> dict[str, dict | None]:
        """bridge name -> the sFlow row its `sflow` column points at (None: no row). Bridges
        are read first: a row deleted in between reads as none, never as a dangling reference."""
        bridges = self.table("Bridge", "name", "sflow")
        rows = {r["_uuid"][1]: r for r in self.table("sFlow")}
        return {b["name"]: rows.get(b["sflow"][1]) if b["sflow"][0] == "uuid" else None for b in bridges}

    @staticmethod
    def sflow_values(row: dict) -> dict:
        """An sFlow row's settings in plain Python (sets sorted, maps as dicts)."""
        def atoms(value):
            return sorted(value[1]) if isinstance(value, list) and value[0] == "set" else [value]
        return {"agent": row["agent"], "targets": atoms(row["targets"]), "polling": row["polling"],
                "header": row["header"], "sampling": row["sampling"],
                "external_ids": dict(row["external_ids"][1])}

    def hsagent_changes(self) -> list[str]:
        """`Table.column` for every value hsagent's transactions (comment "hsagent: ...") ever
        wrote, from the database file's own log (ovsdb-tool show-log: `table T insert row`,
        `table T row R diff:`, then `    column=value` or `    delete row`)."""
        import re

        log = subprocess.run(["ovsdb-tool", "show-log", "-mm", str(self.dir / "conf.db")],
                             capture_output=True, text=True, check=True).stdout
        changes = []
        for record in log.split("\nrecord ")[1:]:
            header, *lines = record.splitlines()
            if '"hsagent: ' not in header:
                continue
            table = None
            for line in lines:
                if m := re.match(r"  table (\S+) ", line):
                    table = m.group(1)
                elif m := re.match(r"    (\w+)=", line):
                    changes.append(f"{table}.{m.group(1)}")
                elif line.strip() == "delete row":
                    changes.append(f"{table}.delete")
        return changes

    def touched_only_sflow(self) -> bool:
        """hsagent wrote something, and only sFlow rows, Bridge.sflow and next_cfg."""
        changes = set(self.hsagent_changes())
        return bool(changes) and all(c.startswith("sFlow.") or c in ("Bridge.sflow", "Open_vSwitch.next_cfg")
                                     for c in changes)

    def add_bridge(self, name: str, *ports: str) -> None:
        args = ["add-br", name, "--", "set", "bridge", name, "datapath_type=netdev"]
        for port in ports:
            args += ["--", "add-port", name, port]
        self.vsctl(*args)

    def stop_db(self) -> None:
        subprocess.run([OVS_SH, "stop-db", str(self.dir)], check=True)

    def start_db(self) -> None:
        subprocess.run([OVS_SH, "start-db", self.ns.name, str(self.dir)], check=True)


@pytest.fixture
def private_ovs(netns):
    """A running private Open vSwitch inside a new namespace; stopped and removed afterwards.
    Its directory is world-traversable so an agent that dropped root can reach files in it."""
    ns = netns("hso")
    directory = Path(tempfile.mkdtemp(prefix="hsagent-ovs-"))
    directory.chmod(0o755)
    try:
        yield PrivateOvs(ns, directory)
    finally:  # also after a start that failed half-way
        subprocess.run([OVS_SH, "stop", str(directory)], check=False)
        shutil.rmtree(directory, ignore_errors=True)
