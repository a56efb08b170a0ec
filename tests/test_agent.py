"""The whole agent, as users run it: values decoded from the wire, compared with the kernel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import HSAGENT, Receiver, agent_log, record_of, run_once, start_agent, stop, wait_until
from hsagent.sflow import records as R
from hsagent.sflow.datagram import decode_datagram


def meminfo_bytes(key):
    for line in open("/proc/meminfo"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def host_sample(receiver):
    samples = receiver.samples(2, 1)
    return samples[-1] if samples else None


# --- host values against the kernel ------------------------------------------------------

def test_once_sends_host_counters_that_match_the_kernel(receiver, config, tmp_path):
    result = run_once(config(receiver), tmp_path)
    assert result.returncode == 0, result.stderr
    sample = receiver.wait_for(host_sample)
    assert sample is not None, "no host sample arrived"
    memory, cpu, descr = (record_of(sample, t) for t in (R.HostMemory, R.HostCpu, R.HostDescr))
    assert memory.mem_total == meminfo_bytes("MemTotal")
    assert cpu.cpu_num == os.cpu_count()
    assert abs(cpu.uptime - float(open("/proc/uptime").read().split()[0])) < 5
    assert descr.hostname == os.uname().nodename
    assert descr.os_release == os.uname().release
    assert descr.os_name == R.OS_NAME_LINUX


def snmp_table():
    lines = open("/proc/net/snmp").read().splitlines()
    table = {}
    for head, values in zip(lines[::2], lines[1::2]):
        proto, names = head.split(":")
        table.update({f"{proto.lower()}{n}": int(v)
                      for n, v in zip(names.split(), values.split(":")[1].split())})
    return table


def test_ip_tcp_udp_counters_match_proc_net_snmp(receiver, config, tmp_path):
    before = snmp_table()
    assert run_once(config(receiver), tmp_path).returncode == 0
    after = snmp_table()
    sample = receiver.wait_for(host_sample)
    for record_type in (R.Mib2IpGroup, R.Mib2TcpGroup, R.Mib2UdpGroup):
        record = record_of(sample, record_type)
        assert record is not None, record_type.spec.name
        for name, value in record._asdict().items():
            if name == "tcpMaxConn":
                assert value == 0xFFFFFFFF  # Linux says -1: unknown
                continue
            low, high = sorted((before[name], after[name]))
            assert low <= value <= high, f"{name}={value}, /proc/net/snmp said {low}..{high}"


@pytest.mark.slow
def test_cpu_user_grows_a_second_per_busy_cpu_second(receiver, config, tmp_path):
    agent = start_agent(config(receiver, body="  polling = 1"), tmp_path)
    burner = subprocess.Popen([sys.executable, "-c",
                               "import time\nend=time.time()+6\nwhile time.time()<end: pass"])
    try:
        time.sleep(1.5)  # the burner is running at full speed by now
        first = receiver.wait_for(host_sample)
        time.sleep(3)
        last = host_sample(receiver)
    finally:
        burner.kill()
        stop(agent)
    busy = lambda s: (lambda c: c.cpu_user + c.cpu_nice + c.cpu_system)(record_of(s, R.HostCpu))
    elapsed = record_of(last, R.HostCpu).uptime - record_of(first, R.HostCpu).uptime
    assert elapsed >= 2
    rate = (busy(last) - busy(first)) / elapsed  # ms of CPU per second of wall time
    assert 800 <= rate <= 2000 + 200, f"{rate:.0f} ms/s with one CPU busy"


# --- interfaces in a test namespace ------------------------------------------------------

NS_RECEIVER = """
import socket, sys, time
s = socket.socket(); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: --once sends hundreds at once
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1], flush=True); s.settimeout(3)
while True:
    try: data = s.recv(65535)
    except socket.timeout: break
    print(data.hex(), flush=True)
"""


def receive_in_namespace(ns, run):
    """Start a UDP receiver inside `ns`, call run(port), return the datagrams it got."""
    proc = ns.popen(sys.executable, "-c", NS_RECEIVER, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    run(port)
    out, _ = proc.communicate(timeout=60)
    return [bytes.fromhex(line) for line in out.split()]


def veth_namespace(netns, pairs):
    ns = netns("hst")
    batch = "".join(f"link add a{i} type veth peer name b{i}\n" for i in range(pairs))
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=batch, text=True, check=True)
    return ns


def ns_conf(tmp_path, port, body=""):
    path = tmp_path / "ns.conf"
    path.write_text(f"sflow {{\n DNSSD = off\n user = root\n"
                    f" collector {{ ip = 127.0.0.1 udpport = {port} }}\n{body}\n}}\n")
    return str(path)


def interface_samples(datagrams):
    return {s.ds_index: s for d in datagrams for s in decode_datagram(d).samples if s.ds_class == 0}


def test_veth_octets_speed_and_status_match_the_kernel(netns, tmp_path):
    ns, peer = veth_namespace(netns, 2), netns("hst")
    ns.run("ip", "link", "set", "b0", "netns", peer.name)
    ns.run("ip", "addr", "add", "198.18.0.1/24", "dev", "a0")
    peer.run("ip", "addr", "add", "198.18.0.2/24", "dev", "b0")
    ns.run("ip", "link", "set", "a0", "up")
    peer.run("ip", "link", "set", "b0", "up")
    # 200 pings of 1000 bytes each way: at least 200 * 1028 bytes out of a0 and into it
    ns.run("ping", "-q", "-c", "200", "-i", "0.002", "-s", "1000", "198.18.0.2")
    ns.run("ip", "link", "set", "a1", "up")  # its peer b1 stays down: admin up, no carrier
    index = {name: int(ns.run("cat", f"/sys/class/net/{name}/ifindex").stdout) for name in ("a0", "a1", "b1")}
    speed = int(ns.run("cat", "/sys/class/net/a0/speed").stdout)
    datagrams = receive_in_namespace(ns, lambda port: run_once(ns_conf(tmp_path, port), tmp_path, ns=ns))
    samples = interface_samples(datagrams)
    a0, a1, b1 = (record_of(samples[index[n]], R.IfCounters) for n in ("a0", "a1", "b1"))
    assert record_of(samples[index["a0"]], R.PortName).name == "a0"
    sysfs = lambda name: int(ns.run("cat", f"/sys/class/net/a0/statistics/{name}").stdout)
    assert sysfs("tx_bytes") >= a0.out_octets >= 200 * 1028
    assert sysfs("rx_bytes") >= a0.in_octets >= 200 * 1028
    assert a0.if_speed == speed * 1_000_000
    assert a0.if_status == 3  # admin up, oper up
    assert a1.if_status == 1  # admin up, oper down
    assert b1.if_status == 0  # admin down


@pytest.mark.slow
def test_hundreds_of_interfaces_arrive_in_small_datagrams_without_gaps(netns, tmp_path):
    ns = veth_namespace(netns, 200)
    datagrams = receive_in_namespace(
        ns, lambda port: run_once(ns_conf(tmp_path, port, " datagramBytes = 600"), tmp_path, ns=ns))
    assert max(len(d) for d in datagrams) <= 600
    decoded = [decode_datagram(d) for d in datagrams]
    assert [d.sequence for d in decoded] == list(range(1, len(decoded) + 1))
    names = {record_of(s, R.PortName).name for d in decoded for s in d.samples if s.ds_class == 0}
    assert names == {f"{p}{i}" for p in "ab" for i in range(200)}
    assert len(decoded) > 50


# --- delivery ----------------------------------------------------------------------------

def test_a_dead_collector_does_not_stop_the_others(receiver, receiver6, config, tmp_path):
    dead = Receiver()
    dead.close()  # nothing listens on its port any more
    agent = start_agent(config(dead, receiver, receiver6, body="  polling = 1"), tmp_path)
    try:
        assert receiver.wait_for(lambda r: len(r.raw) >= 3, timeout=15)
        assert receiver6.wait_for(lambda r: len(r.raw) >= 3, timeout=5)
        assert agent.poll() is None
    finally:
        assert stop(agent) == 0


def test_sigterm_stops_within_a_second(receiver, config, tmp_path):
    agent = start_agent(config(receiver), tmp_path)
    # the first tick writes the status file: the loop runs, its signal handlers are in place
    wait_until(lambda: (tmp_path / "status").exists(), 15)
    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(5) == 0
    assert time.monotonic() - started < 1.0


def test_sighup_reloads_and_keeps_running_settings_when_the_file_is_bad(receiver, config, tmp_path):
    other = Receiver()
    conf = config(receiver, body="  polling = 1")
    agent = start_agent(conf, tmp_path)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=10)
        with open(conf, "a") as f:
            f.write("sflow { polling = banana }\n")
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeping the running settings" in agent_log(tmp_path), 10)
        count = len(receiver.raw)
        assert receiver.wait_for(lambda r: len(r.raw) > count, timeout=5), "stopped sending"
        config(other, body="  polling = 1")  # rewrites the same file, now valid
        agent.send_signal(signal.SIGHUP)
        assert other.wait_for(lambda r: r.raw, timeout=10), "new collector got nothing"
        auto = (tmp_path / "hsagent.auto").read_text()
        assert f"collector=127.0.0.1 {other.port}" in auto
    finally:
        other.close()
        stop(agent)
    assert "keeping the running settings" in agent_log(tmp_path)


def test_sighup_logs_the_files_warnings(receiver, config, tmp_path):
    conf = config(receiver, body="  polling = 1")
    agent = start_agent(conf, tmp_path)
    try:
        wait_until(lambda: (tmp_path / "status").exists(), 15)
        config(receiver, body="  polling = 1\n  kvm { }")  # rewrites the same file
        agent.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "configuration reloaded" in agent_log(tmp_path), 10)
    finally:
        stop(agent)
    assert f"{conf}:6:3: warning: kvm {{ }}: hsflowd feature not implemented by hsagent; ignored" \
        in agent_log(tmp_path)


def test_sighup_with_a_fifo_or_dev_zero_in_place_of_the_file_keeps_sending(receiver, config, tmp_path):
    """A FIFO without a writer blocked the loop for good; /dev/zero ended it with a traceback."""
    conf = config(receiver, body="  polling = 1")
    agent = start_agent(conf, tmp_path)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=10)
        os.unlink(conf)
        os.mkfifo(conf)
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: "a FIFO" in agent_log(tmp_path), 10)
        count = len(receiver.raw)
        assert receiver.wait_for(lambda r: len(r.raw) > count + 1, timeout=5), "stopped sending"
        os.unlink(conf)
        os.symlink("/dev/zero", conf)
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: "a character device" in agent_log(tmp_path), 10)
        count = len(receiver.raw)
        assert receiver.wait_for(lambda r: len(r.raw) > count + 1, timeout=5), "stopped sending"
        assert agent.poll() is None
    finally:
        stop(agent)
    log = agent_log(tmp_path)
    assert f"keeping the running settings: {conf}: cannot read the file: not a regular file but a FIFO" in log
    assert "not a regular file but a character device" in log


def test_auto_file_shows_the_settings_in_force(receiver, config, tmp_path):
    assert run_once(config(receiver, body="  polling = 17\n  sampling.10G = 2000"), tmp_path).returncode == 0
    auto = (tmp_path / "hsagent.auto").read_text().splitlines()
    assert "polling=17" in auto and "sampling.10G=2000" in auto
    assert f"collector=127.0.0.1 {receiver.port}" in auto
    assert any(line.startswith("agentIP=") for line in auto)


def test_print_shows_each_datagram_sent(receiver, config, tmp_path):
    agent = subprocess.Popen([*HSAGENT, "--print", "-c", config(receiver), "--auto-file",
                              str(tmp_path / "a")], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 40
        while "endDatagram" not in "".join(lines[-1:]) and time.monotonic() < deadline:
            lines.append(agent.stdout.readline())
    finally:
        stop(agent)
    text = "".join(lines)
    assert "startDatagram" in text and "datagramVersion 5" in text


# --- configuration errors ----------------------------------------------------------------

@pytest.mark.parametrize("body, problem", [
    ("  polling = banana", "polling"),
    ("  samplingg = 10", "samplingg"),
    ("  collector { ip = 300.1.1.1 }", "300.1.1.1"),
])
def test_a_bad_config_exits_2_naming_file_line_and_problem(tmp_path, body, problem):
    conf = tmp_path / "bad.conf"
    conf.write_text(f"sflow {{\n{body}\n}}\n")
    for cmd in (["check", "-c", str(conf)], ["-f", "-c", str(conf)]):
        result = subprocess.run([*HSAGENT, *cmd], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert f"{conf}:2:" in result.stderr and problem in result.stderr


def test_missing_config_file_exits_2(tmp_path):
    result = subprocess.run([*HSAGENT, "check", "-c", str(tmp_path / "nope.conf")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "nope.conf" in result.stderr


def test_check_prints_settings_and_their_origins(config, receiver):
    result = subprocess.run([*HSAGENT, "check", "-c", config(receiver, body="  polling = 20")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "20" in lines["polling"] and "[file]" in lines["polling"]
    assert "[default]" in lines["sampling"]
    assert f"127.0.0.1:{receiver.port}" in lines["collectors"]


def test_status_shows_the_running_agents_telemetry(receiver, config, tmp_path):
    agent = start_agent(config(receiver, body="  polling = 1"), tmp_path)
    status = lambda: subprocess.run([*HSAGENT, "status", "--runtime-dir", str(tmp_path)],
                                    capture_output=True, text=True, timeout=30)
    try:
        assert receiver.wait_for(lambda r: r.raw, timeout=10)
        result = status()
        assert result.returncode == 0, result.stdout
        assert f"pid {agent.pid}" in result.stdout and "datagrams_sent" in result.stdout
        assert f"127.0.0.1:{receiver.port}" in result.stdout
    finally:
        stop(agent)
    assert status().returncode == 3
