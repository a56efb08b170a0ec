"""What the test files share: a loopback sFlow receiver, config files, network namespaces and
veth pairs, the agent as a process, named (BIND) and dockerd, and the `root` and `service`
markers that tests using them carry (see FIXTURE_MARKERS)."""

from __future__ import annotations

import math
import os
import pickle
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest

from hsagent.sflow.datagram import DatagramBuilder, decode_datagram

HSAGENT = [sys.executable, "-m", "hsagent"]
HERE = Path(__file__).resolve().parent


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


# Fixtures that need root or start a service: every test using one carries the marker, so
# `-m "not root and not service"` leaves it out without each test having to say so.
FIXTURE_MARKERS = {
    "netns": ("root",),
    "named": ("root", "service"),
    "own_named": ("root", "service"),
    "image": ("root", "service"),
    "private_ovs": ("root", "service"),
}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture in FIXTURE_MARKERS.keys() & set(item.fixturenames):
            for marker in FIXTURE_MARKERS[fixture]:
                item.add_marker(marker)


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


# --- the agent as a process --------------------------------------------------------------

@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (its own CA): (cert file, key file)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def run_once(conf, tmp_path, *extra, ns=None, timeout=60):
    cmd = [*HSAGENT, "--once", "-c", conf, "--auto-file", str(tmp_path / "hsagent.auto"), *extra]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def start_agent(conf, tmp_path, *extra):
    """hsagent in the foreground; its log goes to tmp_path/agent.log (see agent_log)."""
    with open(tmp_path / "agent.log", "w") as log:
        return subprocess.Popen([*HSAGENT, "-f", "-c", conf, "--auto-file", str(tmp_path / "hsagent.auto"),
                                 "--runtime-dir", str(tmp_path), *extra], stderr=log)


def agent_log(tmp_path) -> str:
    return (tmp_path / "agent.log").read_text()


def stop(proc, timeout=5):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


# --- named (BIND) serving a DNS-SD zone: tests/named.sh ----------------------------------------

ZONE = "hsagent.test"  # the zone `Named.serve` writes: what the agent tests point hsagent at
NAMED_SH = HERE / "named.sh"


def free_port() -> int:
    """A loopback port free for both UDP and TCP (named listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


def wait_until(predicate, timeout: float):
    """Poll `predicate` until it returns something true or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: named is not our child to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Named:
    """named (BIND) serving one zone from a file on 127.0.0.1 (of `netns`, if given), started
    by tests/named.sh. `write` replaces the zone file and has a running named reload it;
    `serve` writes the agent tests' zone around the given records."""

    def __init__(self, workdir: Path, zone: str = ZONE, text: str | None = None, netns=None):
        self.workdir, self.zone, self.netns = workdir, zone, netns
        self.zone_file = workdir / f"{zone}.zone"
        self.port = free_port()
        self.pid: int | None = None
        self.serial = 1
        self._mtime = 0.0
        if text is None:
            self.serve("")
        else:
            self.write(text)

    def start(self) -> None:
        prefix = ["ip", "netns", "exec", self.netns.name] if self.netns else []
        out = subprocess.run([*prefix, "bash", str(NAMED_SH), self.zone, str(self.zone_file),
                              str(self.port), str(self.workdir / "named")],
                             check=True, capture_output=True, text=True, timeout=120)
        self.pid = int(out.stdout.split()[-1])

    def write(self, text: str) -> None:
        self.zone_file.write_text(text)
        # named skips a zone file whose mtime is not newer than its last load; an edit within
        # the same second as start-up (or as the last edit) would go unnoticed
        self._mtime = max(time.time() + 2, self._mtime + 1)
        os.utime(self.zone_file, (self._mtime, self._mtime))
        if self.pid is not None:
            os.kill(self.pid, signal.SIGHUP)

    def serve(self, records: str) -> None:
        """SOA, NS, collector1 and collector2 on 127.0.0.1, collector6 on ::1, and `records`."""
        self.serial += 1
        self.write(f"$TTL 10\n@ IN SOA ns admin ( {self.serial} 3600 600 86400 10 )\n@ IN NS ns\n"
                   f"ns IN A 127.0.0.1\ncollector1 IN A 127.0.0.1\ncollector2 IN A 127.0.0.1\n"
                   f"collector6 IN AAAA ::1\n{records}\n")

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not wait_until(lambda: gone(pid), 5):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def named(tmp_path):
    """named serving the agent tests' zone (ZONE), empty until the test calls serve()."""
    server = Named(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def srv(port, target="collector1", ttl=10):
    return f"_sflow._udp {ttl} IN SRV 0 0 {port} {target}\n"


def txt(*pairs, ttl=10):
    return f"_sflow._udp {ttl} IN TXT ( {' '.join(repr(p).replace(chr(39), chr(34)) for p in pairs)} )\n"


# --- two namespaces joined by a veth pair, a UDP sender, samplers read as the agent does ---------

SAMPLING_SRC, SAMPLING_DST, SRC_PORT, DST_PORT = "198.18.1.1", "198.18.1.2", 40_001, 5_555
PAYLOAD = 200

SENDER = """
import socket, sys
src, dst, sport, dport, count, size = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, int(sport)))
data, target = b"s" * int(size), (dst, int(dport))
for _ in range(int(count)):
    s.sendto(data, target)
"""


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def make_veth_pair(ns_a, ns_b, dev_a, dev_b, addr_a, addr_b=None):
    """Two namespaces joined by a veth pair; IPv6 off; addr_b None: b has no address and a
    static neighbour entry stands in for ARP."""
    for ns in (ns_a, ns_b):
        ip("netns", "add", ns)
        ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1")
        ip("-n", ns, "link", "set", "lo", "up")
    ip("link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b)
    ip("-n", ns_a, "addr", "add", f"{addr_a}/24", "dev", dev_a)
    if addr_b:
        ip("-n", ns_b, "addr", "add", f"{addr_b}/24", "dev", dev_b)
    ip("-n", ns_a, "link", "set", dev_a, "up")
    ip("-n", ns_b, "link", "set", dev_b, "up")


def delete_namespaces(*names):
    for ns in names:
        ip("netns", "del", ns, check=False)


def run_in_netns(ns, func, *args, timeout=55):
    """func(*args) in a fresh Python under `ip netns exec` (which also remounts /sys for the
    namespace); arguments and result travel pickled. func must be a module-level function."""
    code = ("import pickle, sys; sys.path[:0] = sys.argv[1:3]; import importlib; "
            "f = getattr(importlib.import_module(sys.argv[3]), sys.argv[4]); "
            "r = f(*pickle.loads(sys.stdin.buffer.read())); sys.stdout.buffer.write(pickle.dumps(r))")
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, str(HERE),
                           str(HERE.parent), func.__module__, func.__name__],
                          input=pickle.dumps(args), capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return pickle.loads(done.stdout)


def start_sender(count, dst=SAMPLING_DST, src=SAMPLING_SRC, size=PAYLOAD, ns=None):
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.Popen([*prefix, sys.executable, "-c", SENDER, src, dst, str(SRC_PORT),
                             str(DST_PORT), str(count), str(size)])


def read_while(sampler, sender, idle=0.3, limit=40.0):
    """Samples read the way the agent does (selector loop) until the sender has exited and
    nothing more arrived for `idle` seconds."""
    samples, deadline = [], time.monotonic() + limit
    with selectors.DefaultSelector() as selector:
        selector.register(sampler, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            ready = selector.select(idle)
            if ready:
                samples += sampler.read()
            elif sender.poll() is not None:
                break
    sender.wait(timeout=5)
    assert sender.returncode == 0
    return samples


def to_datagrams(samples) -> list[bytes]:
    """Encoded datagrams: what crosses back from the namespace (and what the agent sends)."""
    builder = DatagramBuilder(SAMPLING_SRC)
    return [d for d in (builder.add(s) for s in samples) if d] + [builder.flush()]


def decoded_samples(datagrams) -> list:
    return [s for d in datagrams if d for s in decode_datagram(d).samples]


def within_4_sd(count, n, rate):
    p = 1 / rate
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def udp_fields(frame: bytes):
    """(ethertype, src, dst, protocol, sport, dport) of an Ethernet/IPv4/UDP header."""
    ethertype = struct.unpack_from(">H", frame, 12)[0]
    ihl = (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack_from(">HH", frame, 14 + ihl)
    return (ethertype, socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]),
            frame[23], sport, dport)


# --- a real dockerd: tests/dockerd.sh (marker `docker`) ---------------------------------------

DOCKERD_SH = HERE / "dockerd.sh"
LABEL = "hsd-test"  # every test container carries it, so all are removed afterwards
PREFIX = "hsd-"

def start_dockerd() -> str:
    return subprocess.run(["bash", str(DOCKERD_SH)], check=True, capture_output=True,
                          text=True, timeout=120).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def image():
    return start_dockerd()


@pytest.fixture(scope="session")
def client(image):
    import docker

    from hsagent.pollers.docker import DOCKER_URL

    c = docker.DockerClient(base_url=DOCKER_URL, version="auto")
    yield c
    c.close()


@pytest.fixture
def run(client, image):
    """Start busybox containers named hsd-...; all are removed afterwards, also on failure."""
    def start(command, **kwargs):
        name = f"{PREFIX}{uuid.uuid4().hex[:10]}"
        return client.containers.run(image, ["sh", "-c", command], name=name, detach=True,
                                     labels=[LABEL], **kwargs)
    yield start
    remove_test_containers(client)


def remove_test_containers(client):
    from docker.errors import NotFound

    for c in client.containers.list(all=True, filters={"label": LABEL}):
        try:
            c.remove(force=True)
        except NotFound:
            pass
