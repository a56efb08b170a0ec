"""Samplers under pressure, with the agent as a process in a namespace of the test's own:
ports deleted in bulk (churn), more ports than descriptors, and the samples-per-second budget.

Every datagram the agent sends goes to a receiver inside the namespace, which streams them
back with their arrival times, so a test can ask what arrived while something else happened.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

from conftest import HSAGENT, wait_until
from hsagent.sflow.datagram import CountersSample, FlowSample, decode_datagram

RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1], flush=True)
while True:
    data = s.recv(65535)
    print(f"{time.monotonic():.3f} {data.hex()}", flush=True)
"""


class Agent:
    """hsagent -f in namespace `ns` with `body` in sflow { }, its datagrams collected as
    (arrival time, decoded datagram); `prefix` runs before it (e.g. prlimit)."""

    def __init__(self, ns, directory, body: str, prefix=()):
        self.ns, self.directory = ns, directory
        self.receiver = ns.popen(sys.executable, "-c", RECEIVER, stdout=subprocess.PIPE, text=True)
        port = int(self.receiver.stdout.readline())
        self.datagrams: list[tuple[float, object]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        conf = os.path.join(directory, "hsagent.conf")
        with open(conf, "w") as f:
            f.write(f"sflow {{\n DNSSD = off\n user = root\n"
                    f" collector {{ ip = 127.0.0.1 udpport = {port} }}\n{body}\n}}\n")
        self.log_path = os.path.join(directory, "agent.log")
        with open(self.log_path, "w") as log:
            self.proc = ns.popen(*prefix, *HSAGENT, "-f", "-c", conf, "--auto-file",
                                 os.path.join(directory, "auto"), "--runtime-dir", directory,
                                 stderr=log)

    def _read(self):
        for line in self.receiver.stdout:
            when, data = line.split()
            self.datagrams.append((float(when), decode_datagram(bytes.fromhex(data))))

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def host_counters_since(self, since: float) -> int:
        return sum(1 for when, d in list(self.datagrams) if when >= since for s in d.samples
                   if isinstance(s, CountersSample) and s.ds_class == 2)

    def flow_samples(self):
        return [s for _, d in list(self.datagrams) for s in d.samples if isinstance(s, FlowSample)]

    def stop(self, timeout=20) -> tuple[int, float]:
        """(exit code, seconds SIGTERM took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.receiver.kill()
            self.receiver.wait()
            self._reader.join(5)
        return code, time.monotonic() - started


def add_veths(ns, count: int, first: int = 0) -> None:
    """`count` veth pairs vNa/vNb, up (a switch port is sampled whatever its state)."""
    batch = "".join(f"link add v{i}a type veth peer name v{i}b\nlink set v{i}a up\nlink set v{i}b up\n"
                    for i in range(first, first + count))
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=batch, text=True, check=True)


def delete_veths(ns, count: int, first: int = 0) -> None:
    batch = "".join(f"link del v{i}a\n" for i in range(first, first + count))
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=batch, text=True, check=True)


def sampling_lines(log: str) -> int:
    return len(re.findall(r"pcap v\d+a: sampling 1 in", log))


def open_packet_sockets(pid: int) -> int:
    """The agent's AF_PACKET sockets, from the kernel's own table (/proc/net/packet lists
    inodes; /proc/PID/fd links name them)."""
    inodes = {line.split()[-1] for line in open(f"/proc/{pid}/net/packet").read().splitlines()[1:]}
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


# --- churn: ports deleted in bulk ---------------------------------------------------------------

PORTS = 200


def test_ports_deleted_in_bulk_are_closed_quietly(netns, tmp_path):
    ns = netns("hsc")
    ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    agent = Agent(ns, str(tmp_path), " polling = 5\n switchport = v[0-9]+a")
    try:
        add_veths(ns, PORTS)
        assert wait_until(lambda: sampling_lines(agent.log()) >= PORTS, 60), agent.log()[-2000:]
        assert wait_until(lambda: open_packet_sockets(agent.proc.pid) == PORTS, 30)
        delete_veths(ns, PORTS)
        assert wait_until(lambda: open_packet_sockets(agent.proc.pid) == 0, 30)
        add_veths(ns, PORTS // 2)  # ... and come back
        assert wait_until(lambda: open_packet_sockets(agent.proc.pid) == PORTS // 2, 60)
        assert agent.proc.poll() is None
    finally:
        code, _ = agent.stop()
    log = agent.log()
    assert code == 0, log[-2000:]
    # no EBADF from a sampler closed earlier in the same selector round, no ENETDOWN noise
    assert not re.search(r"ERROR|WARNING|Traceback", log), log[-3000:]


def test_repeated_failures_of_one_callback_are_counted_not_logged_each_time(caplog):
    """The throttle key names the failing function, not a callable's repr (an address each)."""
    import errno
    import functools
    import logging

    from hsagent.agent import Agent as InProcessAgent

    agent = InProcessAgent(auto_file=None)
    try:
        def read_sampler(sampler):
            raise OSError(errno.EBADF, "Bad file descriptor")

        with caplog.at_level(logging.ERROR, logger="hsagent"):
            for sampler in range(50):
                agent._run_callback(functools.partial(read_sampler, sampler))
                agent._run_callback(lambda: read_sampler(None))
        assert len(caplog.records) == 2, [r.getMessage() for r in caplog.records]
    finally:
        agent.close()


def test_a_sampler_step_that_fails_does_not_stop_housekeeping(tmp_path, monkeypatch):
    """iptables refusing a rate change (say) must not stop the status file being written."""
    import json

    from hsagent.agent import Agent as InProcessAgent
    from hsagent.settings import Settings

    agent = InProcessAgent(auto_file=None, status_file=str(tmp_path / "status"))
    try:
        agent.configure(Settings(dnssd=False))

        def refuse(settings):
            raise OSError("iptables: Permission denied (you must be root)")

        monkeypatch.setattr(agent.samplers, "apply", refuse)
        agent._tick(time.monotonic())
        assert json.loads((tmp_path / "status").read_text())["pid"] == os.getpid()
    finally:
        agent.close()


# --- descriptors: more ports than the open files limit allows ---------------------------------

MANY = 300  # switch ports, more than a 256-descriptor agent may sample


def wait_host_counters(agent, seconds) -> bool:
    """Host counters (polled every second) keep arriving: some within each 3 s of `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        since = time.monotonic()
        if not wait_until(lambda: agent.host_counters_since(since), 5):
            return False
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
    return True


def read_status(directory) -> dict:
    import json

    with open(os.path.join(directory, "status")) as f:
        return json.load(f)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(netns, tmp_path):
    ns = netns("hsd")
    add_veths(ns, MANY)
    agent = Agent(ns, str(tmp_path), " polling = 1\n switchport = v[0-9]+a",
                  prefix=("prlimit", "--nofile=256:2048"))
    try:
        assert wait_until(lambda: open_packet_sockets(agent.proc.pid) == MANY, 60), agent.log()[-2000:]
        limits = open(f"/proc/{agent.proc.pid}/limits").read()
        assert re.search(r"Max open files\s+2048\s+2048", limits), limits
    finally:
        code, seconds = agent.stop()
    assert code == 0
    # 300 AF_PACKET closes, each an RCU grace period in the kernel, overlap on threads
    assert seconds < 3.0, seconds


def test_ports_beyond_the_descriptor_limit_are_refused_and_the_agent_recovers(netns, tmp_path):
    ns = netns("hsd")
    agent = Agent(ns, str(tmp_path), " polling = 1\n switchport = v[0-9]+a",
                  prefix=("prlimit", "--nofile=256:256"))
    cap = 256 - 128  # the limit less the agent's reserve
    try:
        assert wait_until(lambda: agent.host_counters_since(0), 10)
        add_veths(ns, MANY)
        assert wait_until(lambda: open_packet_sockets(agent.proc.pid) == cap, 60), agent.log()[-2000:]
        # while every sampler it may have is open, the rest of the agent works
        assert wait_host_counters(agent, 6), agent.log()[-2000:]
        status = wait_until(lambda: read_status(tmp_path) if os.path.exists(tmp_path / "status") else None, 40)
        assert status and status["sample_budget"]["max_samplers"] == cap
        # the ports go; the agent closes every sampler without needing a descriptor to find them
        delete_veths(ns, MANY)
        assert wait_until(lambda: open_packet_sockets(agent.proc.pid) == 0, 30)
        add_veths(ns, 50, first=1000)  # new ports are sampled again
        assert wait_until(lambda: open_packet_sockets(agent.proc.pid) == 50, 30)
        assert wait_host_counters(agent, 4)
    finally:
        code, seconds = agent.stop()
    log = agent.log()
    assert code == 0, log[-2000:]
    assert len(re.findall(r"WARNING.*not sampling \d+ more ports", log)) == 1, log[-3000:]
    assert "Too many open files" not in log and "ERROR" not in log, log[-3000:]
    assert seconds < 3.0, seconds


# --- the samples-per-second budget ---------------------------------------------------------------

BUDGET, FLOOD_PPS, QUIET_PPS, SECONDS = 200, 4_000, 40, 7
PACED_SENDER = """
import socket, sys, time
flood_pps, quiet_pps, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
sent = [0, 0]
while (now := time.monotonic() - start) < seconds:
    for i, (sock, pps, dst) in enumerate(((flood, flood_pps, "198.18.10.1"), (quiet, quiet_pps, "198.18.11.1"))):
        while sent[i] < now * pps:
            sock.sendto(b"x" * 100, (dst, 5555))
            sent[i] += 1
    time.sleep(0.005)
print(sent[0], sent[1])
"""


def interface_packets(ns, dev) -> int:
    read = lambda name: int(ns.run("cat", f"/sys/class/net/{dev}/statistics/{name}").stdout)
    return read("rx_packets") + read("tx_packets")


def test_the_budget_raises_n_on_the_busy_port_and_every_sample_carries_the_rate_applied(netns, tmp_path):
    a, b = netns("hsb"), netns("hsb")
    for ns in (a, b):
        ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    for n in (0, 1):  # a0 198.18.10.1 <-> b0, a1 198.18.11.1 <-> b1
        subprocess.run(["ip", "link", "add", f"a{n}", "netns", a.name, "type", "veth", "peer", "name",
                        f"b{n}", "netns", b.name], check=True)
        for ns, end, host in ((a, "a", 1), (b, "b", 2)):
            ns.run("ip", "addr", "add", f"198.18.{10 + n}.{host}/24", "dev", f"{end}{n}")
            ns.run("ip", "link", "set", f"{end}{n}", "up")
    # every packet asked for (as a hostile DNS-SD could), against a budget of 200 samples/s
    agent = Agent(a, str(tmp_path), f" polling = 30\n sampling.10G = 1\n maxSamplesPerSecond = {BUDGET}\n"
                                    " pcap { dev = a0 }\n pcap { dev = a1 }")
    try:
        assert wait_until(lambda: len(re.findall(r"pcap a\d: sampling 1 in 1\b", agent.log())) == 2, 20)
        before = {dev: interface_packets(a, dev) for dev in ("a0", "a1")}
        started = time.monotonic()
        sender = b.popen(sys.executable, "-c", PACED_SENDER, str(FLOOD_PPS), str(QUIET_PPS), str(SECONDS))
        time.sleep(SECONDS / 2)
        status = read_status(tmp_path)  # rewritten when the budget changes a rate
        assert sender.wait(60) == 0
        ended = time.monotonic()
        time.sleep(1.5)  # the last samples leave within a second
        seen = {dev: interface_packets(a, dev) - before[dev] for dev in ("a0", "a1")}
    finally:
        code, _ = agent.stop()
    log = agent.log()
    assert code == 0, log[-2000:]
    index = {dev: int(a.run("cat", f"/sys/class/net/{dev}/ifindex").stdout) for dev in ("a0", "a1")}
    timed = [(when, s) for when, d in agent.datagrams for s in d.samples if isinstance(s, FlowSample)]
    busy = [s for _, s in timed if s.ds_index == index["a0"]]
    quiet = [s for _, s in timed if s.ds_index == index["a1"]]
    # each sample stands for the packets its own rate says: together, the packets really seen
    represented = sum(s.sampling_rate for s in busy)
    assert abs(represented - seen["a0"]) <= 0.15 * seen["a0"], (represented, seen)
    # once the agent has measured (a second), the host keeps to the budget
    steady = [s for when, s in timed if started + 2.5 <= when <= ended]
    per_second = len(steady) / (ended - started - 2.5)
    assert 0.6 * BUDGET <= per_second <= 1.25 * BUDGET, per_second
    # max-min fairness: the quiet port's 40 samples/s fit its share, so it keeps 1 in 1 ...
    assert {s.sampling_rate for s in quiet} == {1} and len(quiet) >= 0.95 * seen["a1"], (len(quiet), seen)
    # ... and the busy port gets the rest: N = its packet rate / (budget - the quiet port's)
    steady_rates = sorted(s.sampling_rate for s in steady if s.ds_index == index["a0"])
    applied = steady_rates[len(steady_rates) // 2]
    expected = (seen["a0"] / (ended - started)) / (BUDGET - seen["a1"] / (ended - started))
    assert 0.65 * expected <= applied <= 1.5 * expected, (applied, expected)
    # `hsagent status` shows the rate in force beside the configured one
    assert status["samplers"]["pcap a0"]["configured"] == 1
    assert status["samplers"]["pcap a0"]["rate"] in set(steady_rates)
    assert status["samplers"]["pcap a1"]["rate"] == 1
    assert f"budget of {BUDGET} samples/s" in log, log[-2000:]


def test_the_service_files_allow_4096_ports_and_the_reserve():
    from pathlib import Path

    from hsagent.sampling.samplers import DESCRIPTOR_RESERVE

    init = Path(__file__).resolve().parent.parent / "init"
    unit = re.search(r"^LimitNOFILE=(\d+)$", (init / "hsagent.service").read_text(), re.M)
    sysv = re.search(r'MAX_OPEN_FILES:=(\d+)', (init / "hsagent").read_text())
    for found in (unit, sysv):
        assert found and int(found.group(1)) >= 4096 + DESCRIPTOR_RESERVE
