"""hsagent-acld as the tests run it: the real service in a network namespace, driven over HTTP.

The test process stays in the root namespace; conftest's `in_netns` makes each socket inside the
test's namespace (a socket stays in the namespace it was made in), so plain http.client
connections reach a service that listens on the namespace's 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import re
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from conftest import in_netns

TOKEN = "test-token-0123456789abcdef"
READ_TOKEN = "read-only-token-0123456789"
POLICY_COUNTERS = re.compile(r" \[\d+:\d+\]$")


def wire(switch, port: str, switch_address: str, host, host_address: str) -> None:
    """The switch's `port` faces the host's h1 (a veth pair), each addressed (/24) and up."""
    switch.run("ip", "link", "add", port, "type", "veth", "peer", "name", "h1", "netns", host.name)
    for ns, device, address in ((switch, port, switch_address), (host, "h1", host_address)):
        ns.run("ip", "addr", "add", f"{address}/24", "dev", device)
        ns.run("ip", "link", "set", device, "up")


def send_udp(ns, source, destination, port, count, tos=0):
    """`count` datagrams from `source` in `ns` to destination:port."""
    with in_netns(ns.name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((source, 0))
        if tos:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        for _ in range(count):
            sock.sendto(b"x" * 32, (destination, port))
    finally:
        sock.close()


class Connection(http.client.HTTPConnection):
    def __init__(self, netns_name, port, timeout=30.0):
        super().__init__("127.0.0.1", port, timeout=timeout)
        self.netns_name = netns_name

    def connect(self):
        with in_netns(self.netns_name):
            self.sock = socket.create_connection((self.host, self.port), self.timeout)


class TlsConnection(http.client.HTTPSConnection):
    def __init__(self, netns_name, port, context, timeout=30.0):
        super().__init__("127.0.0.1", port, timeout=timeout, context=context)
        self.netns_name = netns_name

    def connect(self):
        with in_netns(self.netns_name):
            sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Reply:
    def __init__(self, response: http.client.HTTPResponse):
        self.status = response.status
        self.headers = response.headers
        self.raw = response.read()
        self.json = json.loads(self.raw) if self.raw and "json" in (
            response.headers.get("Content-Type") or "") else None

    def __repr__(self):
        return f"<{self.status} {self.raw[:300]!r}>"


class Client:
    """Requests over one keep-alive connection (reopened when the server closes it)."""

    def __init__(self, connection: http.client.HTTPConnection, token: str | None = TOKEN):
        self.connection, self.token = connection, token

    def request(self, method, path, body=None, headers=None, token="default", raw=None) -> Reply:
        token = self.token if token == "default" else token
        sent = dict(headers or {})
        if token:
            sent.setdefault("Authorization", f"Bearer {token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            self.connection.request(method, path, body=data, headers=sent)
            return Reply(self.connection.getresponse())
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.connection.close()
            self.connection.request(method, path, body=data, headers=sent)
            return Reply(self.connection.getresponse())

    def put(self, name, lines, wait=True, **kw) -> Reply:
        return self.request("PUT", f"/acl/{name}" + ("?wait=1" if wait else ""), lines, **kw)

    def get(self, path, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def delete(self, path, **kw) -> Reply:
        return self.request("DELETE", path, **kw)

    def close(self):
        self.connection.close()


def free_port(netns_name: str) -> int:
    with in_netns(netns_name), socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tokens(directory: Path) -> Path:
    path = directory / "tokens"
    path.write_text(f"# test tokens\n{TOKEN}\n{READ_TOKEN} read-only\n")
    path.chmod(0o600)
    return path


class Service:
    """`python -m hsagent.acld` inside a namespace; start() waits until it answers."""

    def __init__(self, ns, directory: Path, *options: str, backend="netfilter",
                 swp_pattern="sw-+", env=None):
        self.ns, self.directory = ns, directory
        self.port = free_port(ns.name)
        self.tokens = write_tokens(directory)
        self.state_dir = directory / "state"
        self.argv = [sys.executable, "-m", "hsagent.acld", "--listen", f"127.0.0.1:{self.port}",
                     "--token-file", str(self.tokens), "--backend", backend,
                     "--state-dir", str(self.state_dir), "--swp-pattern", swp_pattern, *options]
        self.env = {**os.environ, **(env or {})}
        self.log = directory / "acld.log"
        self.process: subprocess.Popen | None = None
        self.tls: ssl.SSLContext | None = None

    def start(self, timeout=20.0) -> "Service":
        with open(self.log, "ab") as log:
            self.process = self.ns.popen(*self.argv, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"hsagent-acld exited {self.process.returncode}:\n{self.log_text()}")
            try:
                with in_netns(self.ns.name):
                    socket.create_connection(("127.0.0.1", self.port), 1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"hsagent-acld did not listen within {timeout} s:\n{self.log_text()}")

    def client(self, token: str | None = TOKEN) -> Client:
        if self.tls:
            return Client(TlsConnection(self.ns.name, self.port, self.tls), token)
        return Client(Connection(self.ns.name, self.port), token)

    def stop(self, timeout=30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"hsagent-acld ignored SIGTERM:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def iptables_save(ns, family=4, counters=False) -> list[str]:
    """The namespace's rules, without the dated comment lines (and, unless asked for, without
    the built-in chains' policy counters, which the test's own HTTP traffic moves)."""
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    out = ns.run(tool, *(["-c"] if counters else [])).stdout
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    if not counters:
        lines = [POLICY_COUNTERS.sub(" [0:0]", line) if line.startswith(":") else line
                 for line in lines]
    return lines


def rules_of(ns, acl: str, family=4) -> list[str]:
    """Our installed rules of one ACL (they carry an `hsacld:NAME` comment), with counters."""
    return [line for line in iptables_save(ns, family, counters=True) if f'"hsacld:{acl}"' in line]


def packets(line: str) -> int:
    """The packet counter of an iptables-save -c line: `[packets:bytes] -A ...`."""
    return int(line[1:line.index(":")])
