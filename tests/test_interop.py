"""Collectors nobody here wrote receive the agent's datagrams: pmacct's sfacctd and Wireshark's tshark."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import Endpoint, record_of, run_once
from hsagent.sflow import records as R
from hsagent.sflow.pcap import write_udp


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sfacctd(tmp_path):
    """A real sfacctd on loopback logging every counter sample it gets as JSON."""
    if not shutil.which("sfacctd"):
        pytest.skip("sfacctd (Debian pmacct) is not installed")
    port = free_udp_port()
    counters, log = tmp_path / "counters.json", tmp_path / "sfacctd.log"
    conf = tmp_path / "sfacctd.conf"
    conf.write_text(f"daemonize: false\nsfacctd_ip: 127.0.0.1\nsfacctd_port: {port}\n"
                    f"sfacctd_counter_file: {counters}\nsfacctd_counter_output: json\n"
                    f"plugins: print\nprint_output_file: {tmp_path / 'flows.txt'}\n")
    with open(log, "w") as out:
        proc = subprocess.Popen(["sfacctd", "-f", str(conf)], stdout=out, stderr=out,
                                start_new_session=True)  # its plugins are children: kill them too
    deadline = time.monotonic() + 10
    while "waiting for sFlow data" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    yield Endpoint("127.0.0.1", port), counters
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def test_sfacctd_logs_our_interface_counters(sfacctd, receiver, config, tmp_path):
    target, counters = sfacctd
    assert run_once(config(target, receiver), tmp_path).returncode == 0
    ours = {s.ds_index: record_of(s, R.IfCounters) for s in receiver.wait_for(
        lambda r: [s for s in r.samples(0)], timeout=10)}
    deadline = time.monotonic() + 10
    logged = {}
    while len(logged) < len(ours) and time.monotonic() < deadline:
        time.sleep(0.2)
        lines = counters.read_text().splitlines() if counters.exists() else []
        logged = {e["ifIndex"]: e for e in map(json.loads, lines)
                  if e.get("sf_cnt_type") == "sflow_cnt_generic"}
    assert set(logged) == set(ours), "sfacctd did not log every interface"
    for index, record in ours.items():
        entry = logged[index]
        assert entry["ifInOctets"] == record.in_octets
        assert entry["ifOutOctets"] == record.out_octets
        assert entry["ifSpeed"] == record.if_speed
        assert entry["ifStatus"] == record.if_status


def counter_samples_from_tshark(pcap) -> list[dict]:
    """Every counters sample tshark dissected, as {field name: shown value}."""
    pdml = subprocess.run(["tshark", "-r", str(pcap), "-T", "pdml"], capture_output=True,
                          text=True, check=True).stdout
    samples = []
    for node in ET.fromstring(pdml).iter("field"):
        names = [child.get("name") for child in node]
        if "sflow.counters_sample.source_id_type" in names:
            samples.append({f.get("name"): f.get("show") for f in node.iter("field")})
    return samples


def test_tshark_decodes_the_agents_interface_counters(receiver, config, tmp_path):
    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed")
    assert run_once(config(receiver), tmp_path).returncode == 0
    ours = {s.ds_index: record_of(s, R.IfCounters) for s in receiver.wait_for(lambda r: r.samples(0))}
    pcap = tmp_path / "agent.pcap"
    with open(pcap, "wb") as f:
        write_udp(f, receiver.raw)
    verbose = subprocess.run(["tshark", "-r", str(pcap), "-V"], capture_output=True, text=True).stdout
    assert "Malformed" not in verbose
    theirs = [s for s in counter_samples_from_tshark(pcap)
              if s["sflow.counters_sample.source_id_type"] == "0"]
    assert len(theirs) == len(ours)
    for sample in theirs:
        record = ours[int(sample["sflow.counters_sample.source_id_index"])]
        assert int(sample["sflow_245.ifindex"]) == record.if_index
        assert int(sample["sflow_245.ifinoct"]) == record.in_octets
        assert int(sample["sflow_245.ifoutoct"]) == record.out_octets
        assert int(sample["sflow_245.ifspeed"]) == record.if_speed
        assert int(sample["sflow_245.ifoper_status"]) == record.if_status >> 1
