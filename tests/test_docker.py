"""hsagent.pollers.docker against a real dockerd (tests/dockerd.sh) and the kernel's own files.

Every value is taken from samples encoded and decoded through hsagent.sflow.datagram and compared
with the container's cgroup files, /proc/<pid>/net/dev or `docker inspect`.
"""

import os
import platform
import re
import selectors
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import DOCKERD_SH, LABEL, PREFIX, remove_test_containers, start_dockerd
from hsagent import cgroups, procfs
from hsagent.settings import Settings
from hsagent.sflow import datagram, records

pytestmark = [pytest.mark.root, pytest.mark.service,
              pytest.mark.skipif(shutil.which("dockerd") is None,
                                 reason="docker.io is not installed (no dockerd)")]

docker = pytest.importorskip("docker")
from hsagent.pollers import docker as dockmod  # noqa: E402  (needs the SDK)

GOLDEN = Path(__file__).parent / "data" / "hsflowd-docker.sflowtool.txt"


# --- fixtures and helpers --------------------------------------------------------------

@pytest.fixture
def poller(image):
    col = dockmod.Poller(Settings(docker=True))
    yield col
    col.close()


def wait_for(col, condition, timeout=5.0) -> float:
    """Play the agent loop (select on fileno, handle_events) until condition(); seconds taken."""
    started = time.monotonic()
    with selectors.DefaultSelector() as sel:
        sel.register(col.fileno(), selectors.EVENT_READ)
        while not condition():
            left = started + timeout - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met within {timeout} s")
            if sel.select(min(left, 0.2)):
                col.handle_events()
    return time.monotonic() - started


def decoded(col, container_id):
    """The container's sample after an encode/decode round trip: {record class: record}."""
    index = col.indexes[container_id]
    samples = col.poll({(datagram.DS_LOGICAL, index)})
    if not samples:
        return None
    wire = datagram.encode_datagram(datagram.Datagram(
        datagram.ipaddress.ip_address("127.0.0.1"), 0, 1, 0, samples))
    (sample,) = datagram.decode_datagram(wire).samples
    assert (sample.ds_class, sample.ds_index) == (3, index)
    return {type(r): r for r in sample.records} | {"order": [r.spec.tag for r in sample.records]}


def tracked(col, container):
    return wait_for(col, lambda: container.id in col.containers)


def dirs_of(container) -> cgroups.CgroupDirs:
    container.reload()
    return cgroups.process_cgroup_dirs(container.attrs["State"]["Pid"], cgroups.read_layout())


def read_int(path) -> int:
    return int(Path(path).read_text())


# --- against dockerd -------------------------------------------------------------------

def hsflowd_container_order():
    """Record tags of the first container sample in the hsflowd capture."""
    tags, inside = [], False
    for line in GOLDEN.read_text().splitlines():
        if re.fullmatch(r"sourceId 3:\d+", line):
            inside = True
        elif inside and line.startswith("counterBlock_tag "):
            e, f = line.split()[1].split(":")
            tags.append((int(e) << 12) | int(f))
        elif inside and line.startswith("endSample"):
            return tags
    raise AssertionError("no container sample in the capture")


def test_identity_matches_inspect(run, poller, client):
    c = run("sleep 600")
    tracked(poller, c)
    c.reload()
    rec = decoded(poller, c.id)
    assert rec["order"] == hsflowd_container_order()
    descr = rec[records.HostDescr]
    assert descr.hostname == c.name
    assert descr.uuid == bytes.fromhex(c.id[:32])
    assert descr.os_name == records.OS_NAME_LINUX and descr.os_release == platform.release()
    assert descr.machine_type == (records.MACHINE_TYPE_X86_64 if platform.machine() == "x86_64"
                                  else descr.machine_type)
    assert rec[records.HostParent] == records.HostParent(2, 1)
    (adapter,) = rec[records.HostAdapters].adapters
    inspect_mac = c.attrs["NetworkSettings"]["Networks"]["bridge"]["MacAddress"]
    assert adapter.macs == [bytes.fromhex(inspect_mac.replace(":", ""))]
    ifindex = c.exec_run("cat /sys/class/net/eth0/ifindex").output.decode()
    assert adapter.if_index == int(ifindex)
    cpu = rec[records.VirtCpu]
    assert cpu.state == records.VIR_DOMAIN_RUNNING and cpu.nr_virt_cpu == os.cpu_count()
    disk = rec[records.VirtDiskIo]
    assert (disk.capacity, disk.allocation, disk.available) == (0, 0, 0)
    assert poller.domain_count() == len(client.containers.list())


def test_cpu_of_a_burner(run, poller):
    c = run("yes >/dev/null", nano_cpus=1_000_000_000)
    tracked(poller, c)
    usage = dirs_of(c).cpu + "/cpuacct.usage"

    def bracketed_sample():
        before = read_int(usage) // 1_000_000
        cpu = decoded(poller, c.id)[records.VirtCpu]
        assert before <= cpu.cpu_time <= read_int(usage) // 1_000_000  # what the kernel says
        return cpu, time.monotonic()

    first, t1 = bracketed_sample()
    time.sleep(2)
    second, t2 = bracketed_sample()
    assert first.nr_virt_cpu == 1
    per_second = (second.cpu_time - first.cpu_time) / (t2 - t1)
    # ~1000 ms per second: capped at one CPU by --cpus 1; other work on this 2-core machine
    # may take some of it, hence the generous lower bound.
    assert 500 <= per_second <= 1100


def test_memory_held_in_shm(run, poller):
    idle = run("sleep 600")
    hog = run("dd if=/dev/zero of=/dev/shm/hold bs=1M count=48 2>/dev/null; sleep 600",
              mem_limit="256m")
    tracked(poller, idle)
    tracked(poller, hog)
    deadline = time.monotonic() + 10
    while read_int(dirs_of(hog).memory + "/memory.usage_in_bytes") < 48 << 20:
        assert time.monotonic() < deadline, "the container never held 48 MiB"
        time.sleep(0.2)
    mem = decoded(poller, hog.id)[records.VirtMemory]
    kernel = read_int(dirs_of(hog).memory + "/memory.usage_in_bytes")
    assert abs(mem.memory - kernel) < 1 << 20
    assert mem.memory >= 48 << 20
    assert mem.max_memory == 256 << 20
    quiet = decoded(poller, idle.id)[records.VirtMemory]
    assert quiet.memory < 16 << 20 < mem.memory - quiet.memory
    assert quiet.max_memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def docker_disk() -> str:
    """The device node of the disk holding Docker's data (a path `--device-write-bps` accepts)."""
    st = os.stat("/var/lib/docker")
    uevent = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/uevent").read_text()
    return "/dev/" + re.search(r"^DEVNAME=(.+)$", uevent, re.M).group(1)


def test_disk_bytes_of_a_writer(run, poller):
    # Cgroup v1 on recent kernels counts blkio.throttle.* only for cgroups that have a throttle
    # rule, so the writer gets a generous one; cgroup v2's io.stat counts without it.
    c = run("dd if=/dev/zero of=/data bs=1M count=8 oflag=direct 2>/dev/null; sleep 600",
            device_write_bps=[{"Path": docker_disk(), "Rate": 10 << 30}])
    tracked(poller, c)
    dirs = dirs_of(c)
    deadline = time.monotonic() + 10
    while cgroups.block_io(dirs).write_bytes < 8 << 20:
        assert time.monotonic() < deadline, "the kernel never counted the 8 MiB written"
        time.sleep(0.2)
    disk = decoded(poller, c.id)[records.VirtDiskIo]
    kernel = cgroups.block_io(dirs)
    assert disk.wr_bytes >= 8 << 20 and disk.wr_req >= 8
    assert (disk.rd_bytes, disk.wr_bytes, disk.rd_req, disk.wr_req) == (
        kernel.read_bytes, kernel.write_bytes, kernel.reads, kernel.writes)


def test_ping_from_the_host_shows_in_net_io(run, poller):
    c = run("sleep 600")
    tracked(poller, c)
    c.reload()
    ip = c.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    before = decoded(poller, c.id)[records.VirtNetIo]
    subprocess.run(["busybox", "ping", "-q", "-c", "20", "-i", "0.02", "-s", "1000", ip],
                   check=True, capture_output=True, timeout=30)
    after = decoded(poller, c.id)[records.VirtNetIo]
    assert after.rx_packets - before.rx_packets >= 20
    assert after.rx_bytes - before.rx_bytes >= 20 * 1000
    assert after.tx_packets - before.tx_packets >= 20  # the echo replies
    pid = c.attrs["State"]["Pid"]
    totals = dockmod.net_dev_totals(procfs.parse_net_dev(Path(f"/proc/{pid}/net/dev").read_text()))
    assert after.rx_bytes <= totals[0] <= after.rx_bytes + 1000  # nothing else talks to it


def test_start_pause_and_remove_are_followed(run, poller):
    before = poller.changes
    c = run("sleep 600")
    assert tracked(poller, c) < 2.0
    started = poller.changes
    assert started > before  # the agent reads sources() again
    c.pause()
    wait_for(poller, lambda: poller.containers[c.id].paused, timeout=2)
    assert decoded(poller, c.id)[records.VirtCpu].state == records.VIR_DOMAIN_PAUSED
    c.unpause()
    wait_for(poller, lambda: not poller.containers[c.id].paused, timeout=2)
    c.rename(c.name + "-renamed")
    wait_for(poller, lambda: poller._hostnames[c.id].endswith("-renamed"), timeout=2)
    assert poller.changes == started  # the same data source all along
    index = poller.indexes[c.id]
    c.remove(force=True)
    wait_for(poller, lambda: c.id not in poller.containers, timeout=2)
    assert (3, index) not in poller.sources()
    assert poller.changes > started


def test_vanished_container_is_skipped_quietly(run, poller, caplog):
    c = run("sleep 600")
    tracked(poller, c)
    dirs = dirs_of(c)
    c.kill()
    deadline = time.monotonic() + 5
    while cgroups.exists(dirs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The table still holds it (events not handled yet); the poll must leave it out silently.
    assert c.id in poller.containers
    assert decoded(poller, c.id) is None
    assert "cannot read" not in caplog.text


@pytest.mark.slow
def test_dockerd_restart_keeps_surviving_containers(run, poller, client):
    c = run("yes >/dev/null", nano_cpus=200_000_000)  # a fifth of a CPU: counters that grow
    tracked(poller, c)
    index = poller.indexes[c.id]
    before = decoded(poller, c.id)[records.VirtCpu].cpu_time
    subprocess.run(["bash", str(DOCKERD_SH), "stop"], check=True, timeout=60)
    try:
        time.sleep(1)
        poller.handle_events()
        during = decoded(poller, c.id)  # --live-restore: still running and polled
        assert during is not None and during[records.VirtCpu].cpu_time > before
    finally:
        start_dockerd()
    restarted = docker.DockerClient(base_url=dockmod.DOCKER_URL, version="auto")
    try:
        later = restarted.containers.run(start_dockerd(), ["sleep", "600"], detach=True,
                                         name=f"{PREFIX}{uuid.uuid4().hex[:10]}", labels=[LABEL])
        wait_for(poller, lambda: later.id in poller.containers, timeout=40)  # backoff
        assert poller.indexes[c.id] == index
        after = decoded(poller, c.id)
        assert after[records.HostDescr].hostname == c.name
        assert after[records.VirtCpu].cpu_time > during[records.VirtCpu].cpu_time
    finally:
        remove_test_containers(restarted)
        restarted.close()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.slow
def test_churn_leaks_no_fds_or_memory(client, image, poller):
    def cycle(n):
        batch = [client.containers.create(image, ["sleep", "600"], labels=[LABEL],
                                          name=f"{PREFIX}{uuid.uuid4().hex[:10]}")
                 for _ in range(n)]
        for c in batch:
            c.start()
        wait_for(poller, lambda: all(c.id in poller.containers for c in batch), timeout=30)
        poller.poll(set(poller.sources()))
        for c in batch:
            c.remove(force=True)
        wait_for(poller, lambda: not any(c.id in poller.containers for c in batch),
                 timeout=30)

    try:
        # Warm-up: the Docker SDK keeps a connection pool per URL (so per container id), up to
        # 25 of them, in both the poller's client and ours; fill those first.
        for _ in range(3):
            cycle(10)
        fds, rss = fd_count(), rss_kb()
        for _ in range(10):
            cycle(10)
        assert fd_count() <= fds + 2
        assert rss_kb() <= rss + 4096
        assert poller.domain_count() == len(client.containers.list())
    finally:
        remove_test_containers(client)
