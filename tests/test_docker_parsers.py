"""hsagent.pollers.docker's pure parts: what a container is, its indexes and names, its
network totals, and the counters of a container read from a fixture tree."""

from hsagent import cgroups, procfs
from hsagent.pollers import docker as dockmod
from hsagent.sflow import records


# --- pure parts: no dockerd needed ------------------------------------------------------------------------

def test_indexes_probe_linearly_and_stay_in_range():
    cid = "ab" * 32
    first = dockmod.assign_index(cid, set())
    assert first == dockmod.preferred_index(cid)
    assert 100000 <= first < 150000
    assert dockmod.assign_index(cid, {first}) == first + 1
    assert dockmod.assign_index(cid, {first, first + 1}) == first + 2
    assert dockmod.assign_index(cid, set(range(first, 150000))) == 100000  # wraps in the range


def test_duplicate_names_get_the_short_id():
    c = dockmod.Container("0123456789abcdef" * 4, "web", 1, False, 1)
    assert dockmod.unique_hostname(c, set()) == "web"
    assert dockmod.unique_hostname(c, {"web"}) == "web.0123456789ab"


def test_cpu_count_rules():
    assert dockmod.container_cpus({"NanoCpus": 1_500_000_000}, 8) == 2
    assert dockmod.container_cpus({"CpuQuota": 50_000, "CpuPeriod": 100_000}, 8) == 1
    assert dockmod.container_cpus({"CpusetCpus": "0-2,5"}, 8) == 4
    assert dockmod.container_cpus({"NanoCpus": 0, "CpuQuota": 0, "CpusetCpus": ""}, 8) == 8


def test_describe_only_running():
    attrs = {"Id": "ab" * 32, "Name": "/web", "State": {"Running": True, "Paused": True, "Pid": 42},
             "HostConfig": {}}
    assert dockmod.describe(attrs, 2) == dockmod.Container("ab" * 32, "web", 42, True, 2)
    attrs["State"] = {"Running": False, "Pid": 0}
    assert dockmod.describe(attrs, 2) is None


def test_net_dev_parser_sums_all_but_lo():
    text = ("Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed "
            "multicast|bytes packets errs drop fifo colls carrier compressed\n"
            "    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n"
            "  eth0: 572 6 1 2 0 0 0 0 70 1 3 4 0 0 0 0\n"
            "  eth1: 28 1 0 0 0 0 0 0 30 2 0 0 0 0 0 0\n")
    assert dockmod.net_dev_totals(procfs.parse_net_dev(text)) == [600, 7, 1, 2, 100, 3, 3, 4]


def test_a_container_located_and_counted_on_a_fixture_tree(tmp_path):
    """cgroup v2, systemd driver: the pid's cgroup line leads to the counter files."""
    cid = "cd" * 32
    scope = tmp_path / f"sys/fs/cgroup/system.slice/docker-{cid}.scope"
    files = {
        "proc/self/mountinfo": f"30 1 0:26 / {tmp_path}/sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "proc/4242/cgroup": f"0::/system.slice/docker-{cid}.scope\n",
        "proc/4242/net/dev": ("h\nh\n    lo: 9 9 0 0 0 0 0 0 9 9 0 0 0 0 0 0\n"
                              "  eth0: 572 6 1 2 0 0 0 0 70 1 3 4 0 0 0 0\n"),
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    scope.mkdir(parents=True)
    (scope / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (scope / "memory.current").write_text("1048576\n")
    (scope / "memory.max").write_text("max\n")
    (scope / "io.stat").write_text("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n")
    roots = procfs.Roots(str(tmp_path / "proc"), str(tmp_path / "sys"))

    container = dockmod.locate(dockmod.Container(cid, "web", 4242, False, 1),
                               cgroups.read_layout(roots), roots)
    assert container.dirs == cgroups.CgroupDirs(2, str(scope), str(scope), str(scope))
    assert dockmod.virt_cpu(container, cgroups.cpu_ms(container.dirs)) == records.VirtCpu(
        records.VIR_DOMAIN_RUNNING, 2500, 1)
    assert dockmod.virt_memory(cgroups.memory(container.dirs), 1 << 30) == records.VirtMemory(
        1048576, 1 << 30)
    assert dockmod.virt_disk_io(cgroups.block_io(container.dirs)) == records.VirtDiskIo(
        0, 0, 0, 1, 4096, 2, 8192, 0)
    net_dev = procfs.read_text(roots.proc_path("4242", "net", "dev"))
    assert dockmod.virt_net_io(dockmod.net_dev_totals(procfs.parse_net_dev(net_dev))) == \
        records.VirtNetIo(572, 6, 1, 2, 70, 1, 3, 4)
