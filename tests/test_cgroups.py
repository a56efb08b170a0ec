"""hsagent.cgroups: pure parsers on recorded kernel text; readers on this host's own cgroups."""

import os
import resource

import pytest

from hsagent import cgroups

MOUNTINFO_V1 = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
38 33 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
39 33 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
40 33 0:35 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,blkio
"""
MOUNTINFO_V2 = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""
CID = "7e9e94e98e1ab831808d4aa3bcd27c4b60b6c540c5c15a2a7dbe146d5f9c57fc"
PROC_CGROUP_V1 = f"""\
12:memory:/docker/{CID}
5:cpu,cpuacct:/docker/{CID}
4:blkio:/docker/{CID}
1:name=systemd:/docker/{CID}
0::/docker/{CID}
"""
PROC_CGROUP_V2_SYSTEMD = f"0::/system.slice/docker-{CID}.scope\n"
CPU_STAT = "usage_usec 1081660\nuser_usec 1000000\nsystem_usec 81660\nnr_periods 0\n"
IO_STAT = ("254:0 rbytes=4096 wbytes=8388608 rios=1 wios=8 dbytes=0 dios=0\n"
           "8:16 rbytes=100 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n")
BLKIO_BYTES = ("254:0 Read 4096\n254:0 Write 8388608\n254:0 Sync 8388608\n254:0 Async 4096\n"
               "254:0 Discard 0\n254:0 Total 8392704\n8:16 Read 100\n8:16 Write 200\n"
               "8:16 Total 300\nTotal 8393004\n")


def test_v1_layout_and_container_dirs():
    layout = cgroups.parse_mountinfo(MOUNTINFO_V1)
    assert layout.version == 1
    assert layout.v2 == "/sys/fs/cgroup/unified"
    dirs = cgroups.cgroup_dirs(layout, cgroups.parse_proc_cgroup(PROC_CGROUP_V1))
    assert dirs == cgroups.CgroupDirs(1, f"/sys/fs/cgroup/cpu,cpuacct/docker/{CID}",
                                      f"/sys/fs/cgroup/memory/docker/{CID}",
                                      f"/sys/fs/cgroup/blkio/docker/{CID}")


def test_v2_systemd_driver_dirs():
    layout = cgroups.parse_mountinfo(MOUNTINFO_V2)
    assert layout.version == 2
    dirs = cgroups.cgroup_dirs(layout, cgroups.parse_proc_cgroup(PROC_CGROUP_V2_SYSTEMD))
    expected = f"/sys/fs/cgroup/system.slice/docker-{CID}.scope"
    assert dirs == cgroups.CgroupDirs(2, expected, expected, expected)


def test_v1_without_the_controller_mounted_is_a_key_error():
    layout = cgroups.parse_mountinfo(MOUNTINFO_V1.replace("rw,blkio", "rw,pids"))
    with pytest.raises(KeyError):
        cgroups.cgroup_dirs(layout, cgroups.parse_proc_cgroup(PROC_CGROUP_V1))


def test_parsers():
    assert cgroups.parse_keyed(CPU_STAT, "usage_usec") == 1081660
    assert cgroups.parse_io_stat(IO_STAT) == cgroups.BlockIo(4196, 8388808, 4, 12)
    assert cgroups.parse_blkio(BLKIO_BYTES) == (4196, 8388808)
    assert cgroups.parse_blkio("Total 0\n") == (0, 0)
    assert cgroups.parse_limit("max\n") is None
    assert cgroups.parse_limit("9223372036854771712\n") is None
    assert cgroups.parse_limit("67108864\n") == 64 << 20
    with pytest.raises(ValueError):
        cgroups.parse_keyed("user_usec 5\n", "usage_usec")


def test_readers_on_a_fixture_tree(tmp_path):
    (tmp_path / "cpu.stat").write_text(CPU_STAT)
    (tmp_path / "memory.current").write_text("573440\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "io.stat").write_text(IO_STAT)
    d = str(tmp_path)
    dirs = cgroups.CgroupDirs(2, d, d, d)
    assert cgroups.cpu_ms(dirs) == 1081
    assert cgroups.memory(dirs) == cgroups.Memory(573440, None)
    assert cgroups.block_io(dirs).write_bytes == 8388808
    gone = cgroups.CgroupDirs(2, d + "/gone", d + "/gone", d + "/gone")
    assert not cgroups.exists(gone)
    with pytest.raises(OSError):
        cgroups.cpu_ms(gone)


def test_readers_on_this_process():
    """Our own cgroup's counters, next to what the kernel says about this process."""
    layout = cgroups.read_layout()
    dirs = cgroups.process_cgroup_dirs(os.getpid(), layout)
    burn_until = resource.getrusage(resource.RUSAGE_SELF).ru_utime + 0.2
    while resource.getrusage(resource.RUSAGE_SELF).ru_utime < burn_until:
        pass
    own = resource.getrusage(resource.RUSAGE_SELF)
    # The cgroup holds this process and maybe others, so it used at least our CPU time.
    assert cgroups.cpu_ms(dirs) >= int((own.ru_utime + own.ru_stime) * 1000) - 10
    with open(f"/proc/{os.getpid()}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    mem = cgroups.memory(dirs)
    assert mem.usage >= rss_kb * 1024 // 2  # shared pages may be charged to another cgroup
    assert mem.limit is None or mem.limit > 0
    io = cgroups.block_io(dirs)
    assert min(io) >= 0
