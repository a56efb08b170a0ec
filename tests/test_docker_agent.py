"""The agent with `docker { }`, started as root and running as nobody, reports containers."""

from __future__ import annotations

import os
import signal
import subprocess

from conftest import HSAGENT, record_of
from hsagent.sflow import records as R


def test_unprivileged_agent_reports_containers_and_virt_node(run, client, receiver, readable_dir):
    containers = [run("sleep 600") for _ in range(2)]
    directory = str(readable_dir)
    conf = os.path.join(directory, "hsagent.conf")
    with open(conf, "w") as f:
        f.write(f"sflow {{\n DNSSD = off\n user = nobody\n polling = 2\n docker {{ }}\n"
                f" collector {{ ip = 127.0.0.1 udpport = {receiver.port} }}\n}}\n")
    with open(os.path.join(directory, "agent.log"), "w") as log:
        agent = subprocess.Popen([*HSAGENT, "-f", "-c", conf, "--auto-file", os.path.join(directory, "auto"),
                                  "--runtime-dir", directory], stderr=log)
    try:
        expected = {c.id[:32] for c in containers}
        seen = lambda r: {record_of(s, R.HostDescr).uuid.hex() for s in r.samples(3)} >= expected
        assert receiver.wait_for(seen, timeout=15), open(os.path.join(directory, "agent.log")).read()
        running = len(client.containers.list())
        assert receiver.wait_for(lambda r: any(
            record_of(s, R.VirtNode) and record_of(s, R.VirtNode).num_domains == running
            for s in r.samples(2, 1)), timeout=10)
        for container in containers:
            container.reload()
            sample = next(s for s in receiver.samples(3)
                          if record_of(s, R.HostDescr).uuid.hex() == container.id[:32])
            assert record_of(sample, R.HostDescr).hostname == container.name
            assert record_of(sample, R.HostParent) == R.HostParent(2, 1)
            macs = {m.hex() for a in record_of(sample, R.HostAdapters).adapters for m in a.macs}
            inspected = {n["MacAddress"].replace(":", "")
                         for n in container.attrs["NetworkSettings"]["Networks"].values()}
            assert macs == inspected, "adapters need CAP_NET_ADMIN, which the agent keeps"
        status = dict(line.split(":", 1) for line in open(f"/proc/{agent.pid}/status"))
        assert status["Uid"].split()[0] == subprocess.run(["id", "-u", "nobody"], capture_output=True,
                                                          text=True).stdout.strip()
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
